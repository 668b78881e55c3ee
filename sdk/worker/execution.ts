// One execution of a claimed run: replays the handler against the run's journal and performs
// the durable calls the journal does not answer yet. The handler's `run` object is built by
// run.ts; what journal entries hand the code, by results.ts (both shared with the replayer).
//
// Replay. Every durable call gets a step key, and its journal entry, from the run's Replay
// (replay.ts: keys, journal look-ups, what is unreached, divergence). A completed key answers
// from the journal without running anything; a key recorded with another kind or name is
// non-determinism and fails the run. So is code that goes somewhere new (runs a task, records a
// value, starts a child, waits, returns) while journal entries remain that it has not reached:
// recorded results arrive in microtasks, so once the handler is idle (setImmediate) a
// deterministic replay has reached every entry, and the new call is held until then — a task of
// changed code never runs.
//
// Blocking. Waits (sleep, event, child) are collected instead of sent one by one. When the
// handler can make no progress — nothing in flight, at least one wait open — all open waits go
// to the engine in one `suspend`: either some resolved at once (the handler continues) or the
// run is released and this execution ends, its handler left pending forever.
//
// Deferred records. With a recorder (the worker's group commit), a small task result reaches the
// code before it is durable, and is recorded before the run's next durable effect — the next
// task's body, a value step (now, random, uuid), a wait, a child start, the run's end — or at the
// latest once the handler is idle (setImmediate). So the journal is written in code order: no
// task starts and no value is recorded before the steps before it are recorded, and a workflow
// that returns right after its last task records that step and its end in one write. A crash in
// between costs what a crash just before the record costs: the task runs again. The code sees
// the result as JSON, exactly as a replay will.
//
// Timed tasks. A task with a timeout journals each attempt's deadline first (attempt.ts): an
// attempt past it fails with TaskTimeoutError, in process or, when the worker died, at replay.
//
// Continue-as-new. A handler that returns run.continueAsNew(input) ends like one that returns a
// value: its deferred steps are recorded, then aiki.continue_as_new ends the run as `continued`
// and starts its successor with an empty journal (no replay of this run ever happens again).
//
// Codec. With the client's codec (sdk/codec), `codec` decodes payloads as they arrive and encodes
// them just before their write; a payload it cannot decode fails the run for good
// (execution-codec.ts). Without one it is undefined and nothing is awaited for it.
//
// End states: completed, continued, failed, retrying (the engine scheduled another attempt), suspended,
// lost (the lease is gone: reclaimed, cancelled or paused), abandoned (the database stayed
// unreachable; the lease will expire and another worker replays the run).
//
// Tracing. With OpenTelemetry on, `trace` records the execution's spans (tracing/execution.ts);
// off, it is undefined and each hook costs one check.
import type { Sql } from "postgres";
import type { ChildRunHandle, ChildStartOptions, Logger, WorkflowRun, WorkflowVersion } from "../definitions/workflow.js";
import type { EventWaitResult } from "../definitions/event.js";
import type { TaskOptions } from "../definitions/task.js";
import { toMilliseconds, type Duration } from "../duration.js";
import * as engine from "../engine.js";
import {
  AikiError, CodecError, LeaseLostError, NonDeterminismError, NonRetryableError,
  serializeError, type SerializedError,
} from "../errors.js";
import type { Codec } from "../codec/codec.js";
import { assertPlainRun } from "../codec/payloads.js";
import { validate, type Schema } from "../schema.js";
import { sleep } from "../sleep.js";
import type { Recorder, StepWrite } from "./recorder.js";
import { Replay, type DurableCall } from "./replay.js";
import { AttemptClock } from "./attempt.js";
import { ExecutionCodec, plainSteps } from "./execution-codec.js";
import { runLogger, workflowRun, type RunCalls } from "./run.js";
import { attemptTiming, childWaitResult, describe, eventWaitResult, never, taskFailed } from "./results.js";
import { ContinueAsNew } from "../definitions/continue.js";
import { ExecutionTrace } from "../tracing/execution.js";

export type ExecutionEnd = "completed" | "continued" | "failed" | "retrying" | "suspended" | "lost" | "abandoned";

export interface ExecutionSettings {
  sql: Sql;
  logger: Logger;
  /** Task retries due within this many ms wait in-process instead of suspending the run. */
  inlineRetryMaxMs: number;
  /**
   * The database clock minus this process's monotonic clock (performance.now()), taken at the
   * claim: turns the journal's and the lease's times into local waits that moving the wall
   * clock does not disturb.
   */
  clockOffsetMs?: number;
  /** Batches step records and run ends with other executions' (group commit). Default: none. */
  recorder?: Recorder;
  /** Called once the handler has returned or thrown and the run's last write is on its way. */
  onSettled?: () => void;
  /** Called with the database time the released run falls due (a suspend, a scheduled retry). */
  onDue?: (at: string) => void;
  /**
   * Records OpenTelemetry spans while a tracer provider is registered (tracing/execution.ts).
   * Default: false, so an execution outside a worker (a replay of a recorded run) traces nothing.
   */
  tracing?: boolean;
  /** The client's codec: payloads are decoded and encoded with it (see "Codec"). Default: none. */
  codec?: Codec;
}

/**
 * A JSON value as jsonb hands it back: object keys shorter first, then by their UTF-8 bytes. The
 * code must see a deferred result exactly as a replay will read it from the journal.
 */
function asJsonb(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(asJsonb);
  if (value === null || typeof value !== "object") return value;
  const entries = Object.entries(value).map(([k, v]) => [Buffer.from(k), k, v] as const);
  entries.sort(([a], [b]) => a.length - b.length || Buffer.compare(a, b));
  return Object.fromEntries(entries.map(([, k, v]) => [k, asJsonb(v)]));
}

/** Names the engine accepts (aiki._check_name); others take the undeferred path and its error. */
const STEP_NAME = /^[A-Za-z0-9][A-Za-z0-9_.:\/-]{0,127}$/;

const MISMATCH = Symbol("aiki.mismatch");

/** The abort reason of every ended execution: one object, as a DOMException per run is costly. */
const ENDED = new DOMException("the run's execution ended", "AbortError");

interface OpenWait {
  wait: engine.Wait;
  resolve(step: engine.StepRecord): void;
  reject(error: unknown): void;
}

interface QueuedChild {
  start: engine.ChildStart;
  resolve(id: string): void;
  reject(error: unknown): void;
}

export class Execution implements RunCalls {
  readonly done: Promise<ExecutionEnd>;
  readonly abort = new AbortController();
  readonly run: WorkflowRun<any>;
  private resolveDone!: (end: ExecutionEnd) => void;
  private ended = false;
  private settled = false;
  private readonly replay: Replay;
  private busy = 0;
  private checkQueued = false;
  private suspending = false;
  private readonly waits = new Map<string, OpenWait>();
  private childQueue: QueuedChild[] = [];
  /** When the lease runs out, on the database clock (claim, then each heartbeat). */
  private leaseExpiresAtMs: number;
  /** Task results the code has, not recorded yet (see "Deferred records"). */
  private deferred: StepWrite[] = [];
  private deferredWrite: Promise<void> = Promise.resolve();
  /** The run's input failed its schema: no retry can mend it. */
  private invalidInput = false;
  private readonly trace: ExecutionTrace | undefined;
  /** The codec plumbing, with the client's codec only (see "Codec"). */
  private readonly codec: ExecutionCodec | undefined;

  constructor(
    readonly record: engine.ClaimedRun,
    readonly definition: WorkflowVersion,
    private readonly settings: ExecutionSettings,
  ) {
    this.done = new Promise((resolve) => (this.resolveDone = resolve));
    this.replay = new Replay(record.id, record.journal);
    this.run = workflowRun(record, definition, runLogger(settings.logger, `[${definition.key} ${record.id}]`, this.replay), this);
    this.leaseExpiresAtMs = Date.parse(record.lease_expires_at ?? "");
    this.trace = settings.tracing ? ExecutionTrace.open(record) : undefined;
    this.codec = settings.codec ? new ExecutionCodec(settings.codec, record, (error) => void this.failRun(error)) : undefined;
  }

  /** A heartbeat renewed this execution's lease until `expiresAt` (database clock). */
  renewed(expiresAt: string): void {
    this.leaseExpiresAtMs = Date.parse(expiresAt);
  }

  /** Now on the database clock, as this process reckons it from the monotonic clock. */
  private databaseNow(): number {
    return performance.now() + (this.settings.clockOffsetMs ?? 0);
  }

  /**
   * Whether the lease may still be held. A process frozen (SIGSTOP, a long GC pause) past its
   * lease wakes with timers firing before any heartbeat: another worker may have replayed and
   * recorded the very task it is about to retry, so it must not start another attempt.
   */
  private leaseHeld(): boolean {
    return !(this.databaseNow() >= this.leaseExpiresAtMs);
  }

  get id(): string {
    return this.record.id;
  }

  get leaseToken(): string {
    return this.record.lease_token;
  }

  /** Runs the handler to its end or its next suspension; `done` tells which. */
  start(): Promise<ExecutionEnd> {
    const codec = this.codec;
    const handler = () => this.definition.options.handler(this.run, this.receivedInput());
    const traced = () => this.trace ? this.trace.call(handler) : handler();
    Promise.resolve()
      .then(() => codec ? codec.decodeRun().then(traced) : (assertPlainRun(this.record), traced()))
      .then((output) => this.onReturn(output), (error) => this.onThrow(error))
      .catch((error) => {
        // The engine refused even the run's failure: leave the run to lease expiry.
        this.settings.logger.error(`run ${this.id} (${this.definition.key}): could not record the run's end: ${describe(error)}`);
        this.end("abandoned");
      });
    return this.done;
  }

  /**
   * The run's input, checked against the workflow's schema here too: a client calling
   * aiki.start_workflow from SQL bypasses the SDK that validates on start. Data that does not fit
   * fails the run for good; the handler never sees it.
   */
  private receivedInput(): unknown {
    try {
      return validate(this.definition.options.schema?.input, this.record.input, `input of workflow ${this.definition.key} (run ${this.id})`);
    } catch (error) {
      this.invalidInput = true;
      throw error;
    }
  }

  /** Stops this execution without writing anything: the lease is gone or the worker is leaving. */
  end(how: ExecutionEnd): void {
    if (this.ended) return;
    this.ended = true;
    this.trace?.end(how);
    this.abort.abort(ENDED);
    this.resolveDone(how);
  }

  // ---- durable calls -------------------------------------------------------------------------

  async task<I, O>(options: TaskOptions<I, O>, input: I): Promise<O> {
    const key = this.replay.nextKey(options.name);
    const step = this.recorded(key, "task", options.name);
    if (step === MISMATCH || this.ended) return never();
    if (step?.status === "completed") return step.output as O;
    if (step?.status === "failed") throw taskFailed(options.name, step.error as SerializedError);
    const valid = validate(options.schema?.input, input, `input of task ${options.name}`);
    let attempts = step?.attempts ?? 0;
    this.busy++;
    try {
      if (!(await this.replayReached({ key, kind: "task", name: options.name }))) return never();
      if (!(await this.recordDeferred())) return never();
      if (step?.status === "retrying" && step.wake_at) {
        // An in-process retry delay interrupted by a crash: the next attempt keeps its due time.
        const dueInMs = Date.parse(step.wake_at) - this.databaseNow();
        if (dueInMs > 0) await sleep(dueInMs, this.abort.signal);
        if (this.ended) return never();
      }
      // After a failed attempt: false when the run is suspended or over; throws when the task failed for good.
      const afterFailure = async (outcome: engine.FailStepResult, error: SerializedError): Promise<boolean> => {
        const what = `task ${options.name} of run ${this.id} (${this.definition.key}) failed on attempt ${outcome.attempts}: ${error.name}: ${error.message}`;
        if (outcome.status === "failed") {
          this.settings.logger.error(`${what}; no retries left`);
          throw taskFailed(options.name, error);
        }
        this.settings.logger.warn(`${what}; retrying in ${outcome.delay_ms} ms`);
        if (outcome.suspended) {
          this.settings.onDue?.(outcome.retry_at);
          this.end("retrying");
          return false;
        }
        attempts = outcome.attempts;
        await sleep(outcome.delay_ms, this.abort.signal);
        return !this.ended;
      };
      const timing = attemptTiming(options);
      let heartbeatDetails: unknown;
      for (;;) {
        if (!this.leaseHeld()) {
          this.end("lost");
          return never();
        }
        let clock: AttemptClock | undefined;
        if (timing) {
          const started = await this.write(() => engine.startAttempt(
            this.settings.sql, this.id, this.leaseToken, key, options.name, AttemptClock.firstDeadlineMs(timing),
            options.retry, this.settings.inlineRetryMaxMs));
          if (started.status !== "started") {
            // An earlier attempt passed its deadline while its worker was gone: it failed by timeout.
            if (!(await afterFailure(started, started.error))) return never();
            continue;
          }
          const codec = this.codec;
          heartbeatDetails = (codec && started.details != null ? await codec.heartbeatDetails(key, started.details) : started.details) ?? undefined;
          clock = new AttemptClock(`task ${options.name} (step ${key})`, timing, this.abort.signal, (ms, details) => {
            (codec && details !== undefined ? codec.storedDetails(key, details) : Promise.resolve(details))
              .then((stored) => engine.startAttempt(this.settings.sql, this.id, this.leaseToken, key, options.name, ms, options.retry,
                this.settings.inlineRetryMaxMs, stored))
              .catch((error) => this.settings.logger.warn(`run ${this.id}: task heartbeat not journalled: ${String(error)}`));
          });
        }
        let output: O;
        const span = this.trace?.taskAttempt(options.name, key, attempts + 1);
        try {
          const attempt = () => options.handler(valid, {
            attempt: attempts + 1,
            signal: clock?.signal ?? this.abort.signal,
            idempotencyKey: `${this.id}:${key}`,
            runId: this.id,
            stepKey: key,
            heartbeat: (details?: unknown) => clock?.heartbeat(details),
            heartbeatDetails,
          });
          const result = span ? span.call(attempt) : attempt();
          output = await (clock ? Promise.race([result, clock.expired]) : result);
          output = validate(options.schema?.output, output, `output of task ${options.name}`);
          // A result Postgres cannot store fails this attempt here, naming the step; sent, it
          // would only come back as a data error.
          engine.checkJson(`output of task ${options.name} (step ${key})`, output ?? null);
        } catch (error) {
          span?.fail(error);
          if (this.ended) return never();
          const stored = this.codec
            ? await this.codec.storedError(error, { kind: "task.error", runId: this.id, stepKey: key })
            : serializeError(error);
          const outcome = await this.write(() => engine.failStep(
            this.settings.sql, this.id, this.leaseToken, key, options.name, stored,
            options.retry, error instanceof NonRetryableError, this.settings.inlineRetryMaxMs, attempts + 1));
          if (!(await afterFailure(outcome, serializeError(error)))) return never();
          continue;
        } finally {
          clock?.dispose();
          span?.end();
        }
        if (this.ended) return never();
        const deferred = this.defer(key, options.name, output);
        if (deferred) return deferred.output as O;
        if (this.codec) {
          return await this.codec.completeEncoded(key, options.name, output, (stored) => this.write(() => this.completeStep(key, "task", options.name, stored))) as O;
        }
        const recorded = await this.write(() => this.completeStep(key, "task", options.name, output));
        return recorded.output as O;
      }
    } finally {
      this.busy--;
      this.scheduleCheck();
    }
  }

  sleep(name: string, duration: Duration): Promise<void> {
    const durationMs = toMilliseconds(duration);
    const key = this.replay.nextKey(name);
    const step = this.recorded(key, "sleep", name);
    if (step === MISMATCH) return never();
    if (step?.status === "completed") return Promise.resolve();
    return this.openWait({ key, kind: "sleep", name, duration_ms: durationMs }).then(() => undefined);
  }

  waitEvent<T>(name: string, timeout: Duration | undefined): Promise<EventWaitResult<T>> {
    const timeoutMs = timeout === undefined ? null : toMilliseconds(timeout);
    const key = this.replay.nextKey(name);
    const step = this.recorded(key, "event", name);
    if (step === MISMATCH) return never();
    const toResult = (s: engine.StepRecord) => eventWaitResult<T>(s, this.definition, this.id);
    if (step?.status === "completed") return Promise.resolve(step).then(toResult);
    return this.openWait({ key, kind: "event", name, timeout_ms: timeoutMs }).then(toResult);
  }

  async startChild<O>(child: WorkflowVersion<any, O, any>, input: unknown, options: ChildStartOptions): Promise<ChildRunHandle<O>> {
    const key = this.replay.nextKey(child.name);
    const step = this.recorded(key, "child", child.name);
    if (step === MISMATCH) return never();
    const childId = step?.child_id ?? await this.queueChild({
      key,
      workflow: child.name,
      version: child.version,
      input,
      queue: options.queue ?? child.options.queue,
      priority: options.priority,
      concurrency_key: options.concurrencyKey,
      timeout_ms: options.timeout === undefined ? undefined : toMilliseconds(options.timeout),
      retry: child.options.retry,
    });
    return {
      id: childId,
      waitForStatus: (status) => this.waitChild<O>(key, childId, child.name, status, child.options.schema?.output),
    };
  }

  private waitChild<O>(childKey: string, childId: string, name: string, expected: engine.RunStatus, schema: Schema<O> | undefined) {
    const key = this.replay.nextKey(`${childKey}/wait`);
    const step = this.recorded(key, "wait_child", name);
    if (step === MISMATCH) return never<never>();
    const toResult = (s: engine.StepRecord) => childWaitResult<O>(s, childId, name, expected, schema);
    if (step?.status === "completed") return Promise.resolve(step).then(toResult);
    return this.openWait({ key, kind: "wait_child", name, child_id: childId }).then(toResult);
  }

  async value<T>(name: "now" | "random" | "uuid", produce: () => T): Promise<T> {
    const key = this.replay.nextKey(name);
    const step = this.recorded(key, "value", name);
    if (step === MISMATCH || this.ended) return never();
    if (step?.status === "completed") return step.output as T;
    this.busy++;
    try {
      if (!(await this.replayReached({ key, kind: "value", name }))) return never();
      // Journal writes reach the database in code order: a value recorded before the task
      // result it follows would, after a crash, be a journal the code cannot replay.
      if (!(await this.recordDeferred())) return never();
      const recorded = await this.write(() => name === "now"
        ? engine.completeStepWithNow(this.settings.sql, this.id, this.leaseToken, key)
        : this.completeStep(key, "value", name, produce()));
      return recorded.output as T;
    } finally {
      this.busy--;
      this.scheduleCheck();
    }
  }

  // ---- replay ------------------------------------------------------------------------------

  /** The journal entry for key, checked against the call the code makes now (see Replay). */
  private recorded(key: string, kind: engine.StepKind, name: string): engine.StepRecord | undefined | typeof MISMATCH {
    const found = this.replay.lookup(key, kind, name);
    if ("mismatch" in found) {
      void this.failRun(new NonDeterminismError("AK006", found.mismatch));
      return MISMATCH;
    }
    this.trace?.reached(found.step, this.replay.caughtUp);
    return found.step;
  }

  /**
   * Whether the code, about to make `call` (or to return, without one), has left journal entries
   * behind; if so, the run fails with a non-determinism error naming the first entry missed.
   */
  private diverged(call: DurableCall | undefined): boolean {
    if (this.ended || this.settled) return false;
    const divergence = this.replay.divergence(call);
    if (divergence === undefined) return false;
    void this.failRun(new NonDeterminismError("AK006", divergence));
    return true;
  }

  /** Holds a new call until the handler is idle, when replay has reached all it can; false if it diverged. */
  private async replayReached(call: DurableCall): Promise<boolean> {
    if (this.replay.caughtUp) return true;
    await new Promise((resolve) => setImmediate(resolve));
    return !this.diverged(call) && !this.ended;
  }

  private openWait(wait: engine.Wait): Promise<engine.StepRecord> {
    if (this.ended) return never();
    this.trace?.waitOpened(wait);
    return new Promise((resolve, reject) => {
      this.waits.set(wait.key, { wait, resolve, reject });
      this.scheduleCheck();
    });
  }

  private queueChild(start: engine.ChildStart): Promise<string> {
    if (this.ended) return never();
    this.busy++;
    const id = new Promise<string>((resolve, reject) => {
      this.childQueue.push({ start, resolve, reject });
      // Children started in the same turn (Promise.all fan-out) go in one start_children call.
      if (this.childQueue.length === 1) setImmediate(() => void this.flushChildren());
    });
    // Gives the start its trace context before the flush (setImmediate) sends it.
    this.trace?.childStart(start, id);
    return id.finally(() => {
      this.busy--;
      this.scheduleCheck();
    });
  }

  private async flushChildren(): Promise<void> {
    const batch = this.childQueue;
    this.childQueue = [];
    // Runs in setImmediate, when replay has reached every entry it can.
    const first = batch[0]!.start;
    if (this.diverged({ key: first.key, kind: "child", name: first.workflow })) return;
    if (!(await this.recordDeferred())) return;
    try {
      const codec = this.codec;
      const starts = codec
        ? await Promise.all(batch.map(async ({ start }) => ({
            ...start,
            input: await codec.storedInput(start.workflow, start.input, `input of child workflow ${start.workflow}`),
          })))
        : batch.map((c) => c.start);
      const ids = await this.write(() => engine.startChildren(this.settings.sql, this.id, this.leaseToken, starts));
      batch.forEach((c, i) => c.resolve(ids[i]!));
    } catch (error) {
      for (const c of batch) c.reject(error);
    }
  }

  private scheduleCheck(): void {
    if (this.checkQueued || this.ended) return;
    this.checkQueued = true;
    // setImmediate runs after every pending microtask, i.e. once the handler went as far as it can.
    setImmediate(() => {
      this.checkQueued = false;
      void this.suspendIfBlocked();
    });
  }

  private async suspendIfBlocked(): Promise<void> {
    if (this.ended || this.settled || this.busy > 0 || this.suspending || this.waits.size === 0) return;
    const open = [...this.waits.values()];
    const fresh = open.find((w) => !this.replay.has(w.wait.key)) ?? open[0]!;
    if (this.diverged(fresh.wait)) return;
    this.suspending = true;
    try {
      if (!(await this.recordDeferred())) return;
      const result = await this.write(() => engine.suspend(
        this.settings.sql, this.id, this.leaseToken, open.map((w) => w.wait)));
      if (result.suspended) {
        if (result.available_at) this.settings.onDue?.(result.available_at);
        this.end("suspended");
        return;
      }
      const decoded = this.codec
        ? await this.codec.decodeSteps(result.resolved)
        : plainSteps(this.record, result.resolved, (error) => void this.failRun(error));
      if (!decoded) return;
      for (const step of result.resolved) {
        this.replay.learn(step);
        const wait = this.waits.get(step.key);
        if (!wait) continue;
        this.waits.delete(step.key);
        this.trace?.waitResolved(step);
        wait.resolve(step);
      }
    } catch (error) {
      for (const wait of open) {
        this.waits.delete(wait.wait.key);
        this.trace?.waitFailed(wait.wait.key, error);
        wait.reject(error);
      }
    } finally {
      this.suspending = false;
      this.scheduleCheck();
    }
  }

  // ---- writes and the run's end --------------------------------------------------------------

  /** Hands a small task result to the code unrecorded (see "Deferred records"), as JSON. */
  private defer(key: string, name: string, output: unknown): { output: unknown } | undefined {
    if (!this.settings.recorder || !STEP_NAME.test(name)) return undefined;
    let json: string | undefined;
    try {
      json = JSON.stringify(output ?? null);
    } catch {
      return undefined;
    }
    // Large results, NUL and lone surrogates (jsonb refuses both) take the path that reports errors.
    if (json === undefined || json.length > 65_536 || json.includes("\\u0000") || json.includes("\\ud")) return undefined;
    // With a codec the journal holds the result's JSON text, encoded: a replay sees JSON.parse of
    // it. The code gets its own copy, as what it does to it must not reach the encoding.
    const codec = this.settings.codec;
    const step: StepWrite = { key, kind: "task", name, output: codec ? JSON.parse(json) : asJsonb(JSON.parse(json)) };
    this.deferred.push(step);
    setImmediate(() => void this.recordDeferred());
    return { output: codec ? JSON.parse(json) : step.output };
  }

  /** Records the deferred steps, after any such write in flight; false once the run is over. */
  private async recordDeferred(): Promise<boolean> {
    if (this.deferred.length > 0) {
      const steps = this.deferred.splice(0);
      const write = (stored: StepWrite[]) => this.write(() => this.settings.recorder!.completeSteps(this.id, this.leaseToken, stored));
      this.deferredWrite = this.deferredWrite
        .then(() => this.codec ? this.codec.storedSteps(steps).then(write) : write(steps))
        .catch((error) => void this.failRun(error));
    }
    await this.deferredWrite;
    return !this.ended && !this.settled;
  }

  private completeStep(key: string, kind: "task" | "value", name: string, output: unknown): Promise<engine.StepRecord> {
    return this.settings.recorder
      ? this.settings.recorder.completeStep(this.id, this.leaseToken, key, kind, name, output)
      : engine.completeStep(this.settings.sql, this.id, this.leaseToken, key, kind, name, output);
  }

  /**
   * A journal write. A lost lease ends the execution quietly; a non-determinism verdict fails the
   * run; other engine errors reach the handler. Connection trouble is retried with backoff (the
   * writes are idempotent or fenced), then the execution is abandoned to lease expiry.
   */
  private async write<T>(perform: () => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      if (this.ended) return never();
      try {
        return await perform();
      } catch (error) {
        if (error instanceof LeaseLostError) {
          this.end("lost");
          return never();
        }
        if (error instanceof NonDeterminismError) {
          void this.failRun(error);
          return never();
        }
        if (error instanceof AikiError) throw error;
        if (attempt >= 8) {
          this.settings.logger.error(`run ${this.id} (${this.definition.key}): giving up on the database after ${attempt + 1} tries, ` +
            `the lease will expire and another worker resumes the run: ${describe(error)}`);
          this.end("abandoned");
          return never();
        }
        await sleep(Math.min(100 * 2 ** attempt, 3_000));
      }
    }
  }

  private async onReturn(output: unknown): Promise<void> {
    if (this.ended || this.settled) return;
    if (!this.replay.caughtUp) {
      await new Promise((resolve) => setImmediate(resolve));
      if (this.diverged(undefined) || this.ended || this.settled) return;
    }
    if (output instanceof ContinueAsNew) return this.continueAsNew(output);
    let valid: unknown;
    try {
      valid = validate(this.definition.options.schema?.output, output, `output of workflow ${this.definition.key}`);
      engine.checkJson(`output of workflow ${this.definition.key}`, valid ?? null);
    } catch (error) {
      return this.onThrow(error);
    }
    this.settled = true;
    this.settings.onSettled?.();
    await this.deferredWrite;
    if (this.ended) return;
    let steps = this.deferred.splice(0);
    try {
      const codec = this.codec;
      if (codec) [valid, steps] = await Promise.all([codec.storedOutput(valid, this.definition.key), codec.storedSteps(steps)]);
      const output = valid;
      await this.write(() => this.settings.recorder
        ? this.settings.recorder.completeRun(this.id, this.leaseToken, output, steps)
        : engine.completeRun(this.settings.sql, this.id, this.leaseToken, output));
    } catch (error) {
      // The engine refused the output (e.g. AK007, over the size limit): the run fails with that.
      this.settled = false;
      return this.failRun(error);
    }
    this.end("completed");
  }

  private async continueAsNew(next: ContinueAsNew): Promise<void> {
    let input: unknown;
    try {
      input = validate(this.definition.options.schema?.input, next.input, `input of workflow ${this.definition.key} (continued as new)`);
      engine.checkJson(`input of workflow ${this.definition.key} (continued as new)`, input ?? null);
    } catch (error) {
      return this.onThrow(error);
    }
    if (!(await this.recordDeferred())) return;
    this.settled = true;
    this.settings.onSettled?.();
    try {
      const stored = this.codec
        ? await this.codec.storedInput(this.definition.name, input, `input of workflow ${this.definition.key} (continued as new)`)
        : input;
      await this.write(() => engine.continueAsNew(this.settings.sql, this.id, this.leaseToken, stored, next.version));
    } catch (error) {
      // The engine refused the input (e.g. AK007, over the size limit): the run fails with that.
      this.settled = false;
      return this.failRun(error);
    }
    this.end("continued");
  }

  private async onThrow(error: unknown): Promise<void> {
    if (this.ended || this.settled) return;
    await this.failRun(error);
  }

  private async failRun(error: unknown): Promise<void> {
    if (this.ended || this.settled) return;
    this.settled = true;
    this.trace?.runFailed(error);
    this.settings.onSettled?.();
    await this.recordDeferred();
    if (this.ended) return;
    const nonRetryable = error instanceof NonRetryableError || error instanceof NonDeterminismError || error instanceof CodecError ||
      this.invalidInput;
    const stored = this.codec ? await this.codec.storedError(error, { kind: "workflow.error", runId: this.id }) : serializeError(error);
    if (this.ended) return;
    const outcome = await this.write(() => engine.failRun(this.settings.sql, this.id, this.leaseToken, stored, nonRetryable));
    const what = `run ${this.id} (${this.definition.key}) failed: ${describe(error)}`;
    if (outcome.status === "failed") this.settings.logger.error(what);
    else this.settings.logger.warn(`${what}; the run will be retried`);
    if (outcome.status === "retrying") this.settings.onDue?.(outcome.retry_at);
    this.end(outcome.status === "failed" ? "failed" : "retrying");
  }
}
