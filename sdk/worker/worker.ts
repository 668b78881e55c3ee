// The worker: claims runs of the workflow versions it registers and executes them.
//
// Loop. Claim as many runs as there are free slots (one statement, journals included). When the
// claim comes back short, sleep until the earliest of: a wake-up notification for one of our
// queues, a slot freeing up, the next due timer the claim reported (database clock), or the
// slow safety poll. A full claim claims again at once.
//
// Leases. One heartbeat statement renews every lease this worker holds, named by its tokens. A
// run whose row another transaction holds comes back unrenewed, with its current expiry, and is
// kept; the heartbeat runs between the recorder's flushes, so the worker's own journal writes do
// not hold its runs' rows then (recorder.ts, "Heartbeats"). A run missing from the heartbeat's
// answer was lost (expired and reclaimed, cancelled, paused): its execution ends quietly and its
// tasks' abort signals fire. Executions are kept by lease token, not run id: a claim that hands
// back a run this worker still executes (its lease expired meanwhile) ends the older execution
// first, so one worker never holds two executions of a run, and the older one's end cannot take
// the newer one's bookkeeping with it. Lease times are judged on the monotonic clock
// (performance.now) plus the database clock's offset taken at the claim, so moving the wall
// clock loses no lease.
//
// Stop. Stop claiming, let in-flight executions finish up to a timeout, then release the rest
// back to the queue so another worker resumes them at once rather than after lease expiry.
//
// Registration. The worker records the workflow versions and queues it serves in aiki.workers
// at spawn and on every heartbeat tick, and removes itself on stop, so the engine can mark a
// pending run no live worker serves (get_run's `unserved`). It reports through the client's
// logger: start, stop, losing the database and getting it back, task and run failures.
import { hostname } from "node:os";
import { randomBytes } from "node:crypto";
import type { Client } from "../client.js";
import type { WorkflowVersion } from "../definitions/workflow.js";
import * as engine from "../engine.js";
import { isConnectionError } from "../db/pool.js";
import { AikiError, DefinitionError, InvalidInputError, serializeError } from "../errors.js";
import { check, workerRules } from "../options.js";
import { sleep } from "../sleep.js";
import { Execution, type ExecutionEnd } from "./execution.js";
import { Recorder } from "./recorder.js";

export interface WorkerOptions {
  workflows: WorkflowVersion<any, any, any>[];
  /** Queues to claim from, in order. Default: ["default"]. */
  queues?: string[];
  /** Runs executed at once. Default: 10. */
  concurrency?: number;
  /** Lease length. Default: 30 s. */
  leaseMs?: number;
  /** Heartbeat interval. Default: a third of the lease. */
  heartbeatMs?: number;
  /** Safety poll when no notification arrives. Default: 5 s. */
  pollMs?: number;
  /**
   * Wake on LISTEN/NOTIFY. Default: true. With false the worker finds work by polling every
   * `pollMs` only (e.g. behind a pooler in transaction mode, where LISTEN does not work).
   */
  listen?: boolean;
  /** Task retries due within this wait in-process; longer ones suspend the run. Default: 2 s. */
  inlineRetryMaxMs?: number;
  /** How long stop() lets in-flight runs finish before releasing them. Default: 10 s. */
  shutdownTimeoutMs?: number;
  /** Worker id recorded as lease owner. Default: host-pid-random. */
  id?: string;
}

export interface WorkerStats {
  claimed: number;
  ended: Record<ExecutionEnd, number>;
}

export interface WorkerHandle {
  readonly id: string;
  readonly stats: WorkerStats;
  /** Ids of runs executing now. */
  active(): string[];
  stop(options?: { timeoutMs?: number }): Promise<void>;
}

export interface WorkerDefinition {
  readonly options: WorkerOptions;
  spawn(client: Client): Promise<WorkerHandle>;
}

export function worker(options: WorkerOptions): WorkerDefinition {
  check("worker option", options, workerRules);
  const registered = new Map<string, WorkflowVersion>();
  for (const definition of options.workflows) {
    if (registered.has(definition.key)) {
      throw new DefinitionError("definition", `workflow ${definition.key} is registered twice; a worker runs one handler per version`);
    }
    registered.set(definition.key, definition);
  }
  if (registered.size === 0) throw new DefinitionError("definition", "a worker needs at least one workflow version");
  const concurrency = options.concurrency ?? 10;
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 1000) {
    throw new InvalidInputError("AK003", `invalid worker concurrency ${concurrency}: use 1-1000`);
  }
  return {
    options,
    spawn: (client) => Worker.spawn(client, options, registered, concurrency),
  };
}

class Worker implements WorkerHandle {
  readonly id: string;
  readonly stats: WorkerStats = {
    claimed: 0,
    ended: { completed: 0, failed: 0, retrying: 0, suspended: 0, lost: 0, abandoned: 0 },
  };
  /** By lease token. */
  private readonly executions = new Map<string, { execution: Execution; claimSeq: number }>();
  /** The lease token of each run executing now. */
  private readonly leases = new Map<string, string>();
  private readonly queues: string[];
  private readonly keys: string[];
  private readonly leaseMs: number;
  private readonly pollMs: number;
  private stopping = false;
  private claimSeq = 0;
  private wake: () => void = () => {};
  private loop: Promise<void> = Promise.resolve();
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private unsubscribe: Array<() => void> = [];
  private readonly recorder: Recorder;
  /** Executions whose handler has not settled yet: the ones that hold a slot. */
  private running = 0;
  /**
   * Whether the last look may have left claimable runs behind (the claim was full, or no slot
   * was free): only then does a freed slot claim at once. After a short claim, new work comes
   * with a notification, a due timer or the poll; claiming on every run's end would only add
   * empty claims (three per run, measured, in a serial start-to-task test).
   */
  private leftBehind = true;
  /** What failed while the database was out of reach (logged once per outage), or undefined. */
  private trouble: string | undefined;
  /** Whether the last registration failed other than by a lost connection (logged once). */
  private unregistered = false;

  private constructor(
    private readonly client: Client,
    private readonly options: WorkerOptions,
    private readonly registered: Map<string, WorkflowVersion>,
    private readonly concurrency: number,
  ) {
    this.id = options.id ?? `${hostname()}-${process.pid}-${randomBytes(3).toString("hex")}`;
    this.queues = options.queues ?? ["default"];
    this.keys = [...registered.keys()];
    this.leaseMs = options.leaseMs ?? 30_000;
    this.pollMs = options.pollMs ?? 5_000;
    this.recorder = new Recorder(client.sql);
  }

  static async spawn(client: Client, options: WorkerOptions, registered: Map<string, WorkflowVersion>, concurrency: number) {
    const w = new Worker(client, options, registered, concurrency);
    // An engine that is missing, older or newer fails the spawn with SchemaVersionError. A
    // database out of reach does not: the worker starts and claims once it is back.
    try {
      await client.ready();
      await w.register();
    } catch (error) {
      if (!isConnectionError(error)) throw error;
      w.troubled("cannot reach the database", error);
    }
    if (options.listen ?? true) {
      const notifications = client.notifications();
      const queues = new Set(w.queues);
      w.unsubscribe.push(await notifications.listen("aiki_wake", (queue) => {
        if (queues.has(queue)) w.wake();
      }));
      w.unsubscribe.push(notifications.onReconnect(() => w.wake()));
    }
    w.heartbeatTimer = setInterval(() => void w.heartbeat(), w.heartbeatMs);
    w.loop = w.run();
    client.logger.info(`worker ${w.id} started: ${w.keys.join(", ")} on queue${w.queues.length === 1 ? "" : "s"} ` +
      `${w.queues.join(", ")}, concurrency ${concurrency}`);
    return w;
  }

  private get heartbeatMs(): number {
    return this.options.heartbeatMs ?? Math.floor(this.leaseMs / 3);
  }

  /** Records this worker as alive and what it serves; dead after three missed heartbeat ticks. */
  private register(): Promise<void> {
    const staleAfterMs = Math.min(86_400_000, Math.max(1_000, 3 * this.heartbeatMs));
    return engine.registerWorker(this.client.sql, this.id, this.keys, this.queues, staleAfterMs,
      { host: hostname(), pid: process.pid, concurrency: this.concurrency });
  }

  /** Logs the first failure of an outage; the rest of it stays quiet until `recovered`. */
  private troubled(what: string, error: unknown): void {
    if (this.trouble !== undefined) return;
    this.trouble = what;
    const { name, message } = serializeError(error);
    this.client.logger[error instanceof AikiError ? "error" : "warn"](`worker ${this.id}: ${what}: ${name}: ${message}; retrying`);
  }

  private recovered(): void {
    if (this.trouble === undefined) return;
    this.trouble = undefined;
    this.client.logger.info(`worker ${this.id}: the database answers again; claiming`);
  }

  active(): string[] {
    return [...this.leases.keys()];
  }

  private async run(): Promise<void> {
    while (!this.stopping) {
      const signalled = new Promise<void>((resolve) => (this.wake = resolve));
      let delay = this.pollMs;
      // A run whose handler has settled holds no slot while its last write is on its way; at
      // most `concurrency` such runs wait for theirs.
      const free = Math.min(this.concurrency - this.running, 2 * this.concurrency - this.executions.size);
      this.leftBehind = free <= 0;
      if (free > 0) {
        try {
          // Taken before the claim: a process frozen while the answer was on its way must not read
          // the freeze as clock skew and think its (long expired) leases still valid.
          const sentAt = performance.now();
          const claimed = await engine.claim(this.client.sql, this.id, this.keys, this.queues, free, this.leaseMs);
          this.recovered();
          this.leftBehind = claimed.runs.length === free;
          const clockOffsetMs = Date.parse(claimed.now) - sentAt;
          for (const record of claimed.runs) this.execute(record, clockOffsetMs);
          if (claimed.runs.length === free) continue;
          if (claimed.next_due_at) {
            delay = Math.min(delay, Date.parse(claimed.next_due_at) - Date.parse(claimed.now));
          }
        } catch (error) {
          this.troubled("claim failed", error);
          delay = Math.min(delay, 1_000);
        }
      }
      if (this.stopping) break;
      // The nap's timer is cleared on wake-up, so none outlives the worker after stop().
      // (A timer, not an AbortController: aborting one builds a DOMException, 8% of the worker's
      // CPU in a burn-down.)
      let nap: NodeJS.Timeout | undefined;
      await Promise.race([signalled, new Promise<void>((resolve) => (nap = setTimeout(resolve, Math.max(0, delay))))]);
      clearTimeout(nap);
    }
  }

  private execute(record: engine.ClaimedRun, clockOffsetMs: number): void {
    this.stats.claimed++;
    const definition = this.registered.get(`${record.workflow}@${record.version}`)!;
    let holdsSlot = true;
    const releaseSlot = () => {
      if (!holdsSlot) return;
      holdsSlot = false;
      this.running--;
      if (this.leftBehind) this.wake();
    };
    const execution = new Execution(record, definition, {
      sql: this.client.sql,
      logger: this.client.logger,
      inlineRetryMaxMs: this.options.inlineRetryMaxMs ?? 2_000,
      clockOffsetMs,
      recorder: this.recorder,
      onSettled: releaseSlot,
    });
    const older = this.leases.get(record.id);
    if (older !== undefined) this.executions.get(older)?.execution.end("lost");
    this.running++;
    this.executions.set(record.lease_token, { execution, claimSeq: ++this.claimSeq });
    this.leases.set(record.id, record.lease_token);
    void execution.start().then((end) => {
      this.stats.ended[end]++;
      this.executions.delete(record.lease_token);
      if (this.leases.get(record.id) === record.lease_token) this.leases.delete(record.id);
      releaseSlot();
      if (this.leftBehind) this.wake();
    });
  }

  private async heartbeat(): Promise<void> {
    // Beside the lease renewal, not before it: a slow registration must not delay the leases.
    void this.register().then(() => (this.unregistered = false), (error: unknown) => {
      if (this.unregistered || isConnectionError(error)) return;
      this.unregistered = true;
      const { name, message } = serializeError(error);
      this.client.logger.warn(`worker ${this.id}: registration failed: ${name}: ${message}; its runs may show as unserved`);
    });
    if (this.executions.size === 0) return;
    const seq = this.claimSeq;
    // Only the leases this worker knows of: one whose claim answer was lost must expire.
    const tokens = [...this.executions.values()].map(({ execution }) => execution.leaseToken);
    let renewed: { run_id: string; lease_token: string; lease_expires_at: string }[];
    try {
      // Between the recorder's flushes: a record in flight locks its runs, and the heartbeat
      // would skip their leases (see Recorder, "Heartbeats").
      renewed = await this.recorder.whileIdle(() => engine.heartbeat(this.client.sql, this.id, this.leaseMs, tokens), Math.min(this.leaseMs / 10, 1_000));
    } catch (error) {
      this.troubled("heartbeat failed", error);
      return;
    }
    const held = new Set(renewed.map((r) => r.lease_token));
    for (const r of renewed) this.executions.get(r.lease_token)?.execution.renewed(r.lease_expires_at);
    for (const { execution, claimSeq } of this.executions.values()) {
      // Runs claimed after the heartbeat was sent cannot be in its answer.
      if (claimSeq <= seq && !held.has(execution.leaseToken)) execution.end("lost");
    }
  }

  async stop(options: { timeoutMs?: number } = {}): Promise<void> {
    this.stopping = true;
    this.wake();
    await this.loop;
    const timeoutMs = options.timeoutMs ?? this.options.shutdownTimeoutMs ?? 10_000;
    const drained = Promise.all([...this.executions.values()].map((e) => e.execution.done));
    const drainTimer = new AbortController();
    await Promise.race([drained, sleep(timeoutMs, drainTimer.signal)]);
    drainTimer.abort();
    clearInterval(this.heartbeatTimer);
    await Promise.all([...this.executions.values()].map(async ({ execution }) => {
      execution.end("abandoned");
      await engine.release(this.client.sql, execution.id, execution.leaseToken).catch(() => undefined);
    }));
    for (const unsubscribe of this.unsubscribe) unsubscribe();
    await engine.unregisterWorker(this.client.sql, this.id).catch(() => undefined);
    this.client.logger.info(`worker ${this.id} stopped`);
  }
}
