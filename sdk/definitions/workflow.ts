import type { Client } from "../client.js";
import { toMilliseconds, type Duration } from "../duration.js";
import { decodePayload, encodePayload, sameJson } from "../codec/payloads.js";
import * as engine from "../engine.js";
import { DefinitionError, IdempotencyConflictError } from "../errors.js";
import type { EventData, EventMap, EventWaitResult } from "./event.js";
import { RunHandle, type WaitResult } from "../handle.js";
import type { RetryPolicy } from "../retry.js";
import type { Logger } from "../logger.js";
export type { Logger } from "../logger.js";
import { check, childStartRules, startRules, versionRules, workflowRules } from "../options.js";
import { validate, type Schema } from "../schema.js";
import { executionOf } from "../worker/run.js";
import { ContinueAsNew } from "./continue.js";
import { traceStart } from "../tracing/start.js";
export { ContinueAsNew } from "./continue.js";

export type RunEvents<E extends EventMap> = {
  [K in keyof E]: { wait(options?: { timeout?: Duration }): Promise<EventWaitResult<EventData<E[K]>>> };
};

/** What a workflow handler gets: the run's identity and its durable operations. */
export interface WorkflowRun<E extends EventMap = EventMap, I = any> {
  readonly id: string;
  readonly workflow: string;
  readonly version: string;
  /** The run-level attempt: 1, or more after the run's retry policy restarted it. */
  readonly attempt: number;
  readonly events: RunEvents<E>;
  /** Sleeps durably: the run is released and resumed when the time has passed. */
  sleep(name: string, duration: Duration): Promise<void>;
  /** Deterministic clock, random number and UUID: recorded once, replayed after. */
  now(): Promise<Date>;
  random(): Promise<number>;
  uuid(): Promise<string>;
  /** Silent while the run replays recorded steps, so each line is logged once. */
  readonly logger: Logger;
  /**
   * `return run.continueAsNew(input)` ends this run as `continued` and starts the workflow afresh
   * with `input` and an empty journal, as the same run to its parent, its idempotency key and
   * handles that wait on it. For loops that would otherwise grow the journal without bound.
   * `options.version`: a newer version of this workflow for the successor. Default: this one.
   */
  continueAsNew(input: I, options?: { version?: WorkflowVersion<I, any, any> }): ContinueAsNew<I>;
}

export interface StartOptions {
  idempotencyKey?: string;
  queue?: string;
  priority?: number;
  startAt?: Date;
  delay?: Duration;
  concurrencyKey?: string;
  /** The run fails with DeadlineExceeded if not finished this long after the start. */
  timeout?: Duration;
  /** Lease expiries (crashed or frozen workers) after which the run fails as CrashLoop. Default: 5. */
  maxLeaseExpiries?: number;
}

export interface ChildStartOptions {
  queue?: string;
  priority?: number;
  concurrencyKey?: string;
  timeout?: Duration;
}

/** A child run as its parent sees it from inside the workflow. */
export interface ChildRunHandle<O> {
  readonly id: string;
  /** Waits durably for the child to finish; any terminal status wakes the parent. */
  waitForStatus(status: "completed" | "failed" | "cancelled"): Promise<Exclude<WaitResult<O>, { cause: "timeout" }>>;
}

export interface WorkflowVersionOptions<I, O, E extends EventMap> {
  /** Returns the run's output, or `run.continueAsNew(input)` to go on in a fresh run. */
  handler: (run: WorkflowRun<E, I>, input: I) => Promise<O | ContinueAsNew<I>>;
  events?: E;
  schema?: { input?: Schema<I>; output?: Schema<O> };
  /** Run-level retry when the handler throws. Default: never. */
  retry?: RetryPolicy;
  /** Queue for starts that name none. Default: "default". */
  queue?: string;
}

export class WorkflowVersion<I = any, O = any, E extends EventMap = EventMap> {
  readonly events: E;

  constructor(
    readonly name: string,
    readonly version: string,
    readonly options: WorkflowVersionOptions<I, O, E>,
  ) {
    check("workflow version option", options, versionRules);
    this.events = options.events ?? ({} as E);
  }

  /** `name@version`, the key a worker claims by. */
  get key(): string {
    return `${this.name}@${this.version}`;
  }

  /** Starts a run; with an idempotency key, a repeated start returns the first run. */
  async start(client: Client, input: I, options: StartOptions = {}): Promise<RunHandle<O, E>> {
    check("start option", options, startRules);
    const valid = validate(this.options.schema?.input, input, `input of workflow ${this.key}`);
    await client.ready();
    const queue = options.queue ?? this.options.queue ?? "default";
    const codec = client.codec;
    const stored = codec
      ? await encodePayload(codec, valid, { kind: "workflow.input", workflow: this.name }, "workflow input")
      : valid;
    const { run_id } = await traceStart({ workflow: this.name, version: this.version, queue }, (traceContext) =>
      engine.startWorkflow(client.sql, this.name, this.version, stored, {
        idempotencyKey: options.idempotencyKey,
        queue,
        priority: options.priority,
        startAt: options.startAt,
        delayMs: options.delay === undefined ? undefined : toMilliseconds(options.delay),
        concurrencyKey: options.concurrencyKey,
        timeoutMs: options.timeout === undefined ? undefined : toMilliseconds(options.timeout),
        retry: this.options.retry,
        maxLeaseExpiries: options.maxLeaseExpiries,
        traceContext,
      })).catch((error: unknown) => {
        if (!(codec && error instanceof IdempotencyConflictError && options.idempotencyKey !== undefined)) throw error;
        return this.sameStart(client, options.idempotencyKey, valid, error);
      });
    return new RunHandle<O, E>(client, run_id, this.events);
  }

  /**
   * With a codec, equal inputs encode differently (a fresh IV each time), so the engine sees a
   * repeated start as another input (AK004): the run the key started is read back, and it is the
   * same start if its version and decoded input equal this one's. One more query, only on a repeat
   * (two once the run continued as new: findRun answers with the chain's newest run, whose input
   * is the continueAsNew input; the key is the first run's, as is the start it is compared with).
   */
  private async sameStart(client: Client, idempotencyKey: string, input: unknown, conflict: IdempotencyConflictError) {
    const newest = await engine.findRun(client.sql, this.name, idempotencyKey);
    const run = newest.chain_id === undefined || newest.chain_id === newest.id ? newest : await engine.getRun(client.sql, newest.chain_id);
    if (run.version !== this.version) throw conflict;
    const recorded = await decodePayload(client.codec, run.input, { kind: "workflow.input", workflow: this.name });
    if (!sameJson(recorded, JSON.parse(JSON.stringify(input ?? null)))) throw conflict;
    return { run_id: run.id, created: false };
  }

  /** Starts this workflow as a durable child step of `run` (replays return the same child). */
  startAsChild(run: WorkflowRun<any>, input: I, options: ChildStartOptions = {}): Promise<ChildRunHandle<O>> {
    check("child start option", options, childStartRules);
    const valid = validate(this.options.schema?.input, input, `input of workflow ${this.key}`);
    return executionOf(run).startChild(this, valid, options);
  }

  handle(client: Client, runId: string): RunHandle<O, E> {
    return new RunHandle<O, E>(client, runId, this.events);
  }

  /** The run this workflow started under `idempotencyKey`; RunNotFoundError if none. */
  async handleByIdempotencyKey(client: Client, idempotencyKey: string): Promise<RunHandle<O, E>> {
    const run = await engine.findRun(client.sql, this.name, idempotencyKey);
    return new RunHandle<O, E>(client, run.id, this.events);
  }
}

export interface Workflow {
  readonly name: string;
  v<I, O, E extends EventMap = {}>(version: string, options: WorkflowVersionOptions<I, O, E>): WorkflowVersion<I, O, E>;
}

export function workflow(options: { name: string }): Workflow {
  check("workflow option", options, workflowRules);
  return {
    name: options.name,
    v(version, versionOptions) {
      if (typeof version !== "string") {
        throw new DefinitionError("definition", `workflow ${options.name}: .v(version, options) takes the version as a string, got ${typeof version}`);
      }
      return new WorkflowVersion(options.name, version, versionOptions);
    },
  };
}
