// Handles on runs, for application code: read, wait, send events, cancel, pause, resume.
import type { Client } from "./client.js";
import { decodeError, decodePayload, encodePayload } from "./codec/payloads.js";
import type { EventData, EventMap } from "./definitions/event.js";
import { toMilliseconds, type Duration } from "./duration.js";
import * as engine from "./engine.js";
import { InvalidInputError, RunFailedError, type SerializedError } from "./errors.js";
import { check, waitRules } from "./options.js";
import { validate } from "./schema.js";
import { sleep } from "./sleep.js";

export type WaitResult<O> =
  | { success: true; state: { status: engine.RunStatus; output: O } }
  | { success: false; cause: "run_terminated"; state: { status: engine.RunStatus; error: unknown } }
  /**
   * The run was still in `status` when the wait timed out; `message` says so, and names the
   * workflow version and queue when no live worker serves the run (`unserved`).
   */
  | { success: false; cause: "timeout"; status: engine.RunStatus; unserved: boolean; message: string };

export type HandleEvents<E extends EventMap> = {
  [K in keyof E]: { send(data: EventData<E[K]>, options?: { idempotencyKey?: string }): Promise<void> };
};

const notifiedStatuses: ReadonlySet<engine.RunStatus> = new Set(["completed", "failed", "cancelled", "paused"]);

export class RunHandle<O = unknown, E extends EventMap = EventMap> {
  readonly events: HandleEvents<E>;

  constructor(
    readonly client: Client,
    readonly id: string,
    eventDefinitions: E,
  ) {
    // Refused here rather than by Postgres (22P02 invalid input syntax for type uuid).
    if (typeof id !== "string" || !/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(id)) {
      throw new InvalidInputError("AK003", `invalid run id '${String(id).slice(0, 200).replaceAll("'", "''")}': expected a UUID`);
    }
    const events = {} as Record<string, { send(data: unknown, options?: { idempotencyKey?: string }): Promise<void> }>;
    for (const [name, definition] of Object.entries(eventDefinitions)) {
      events[name] = {
        send: async (data, options) => {
          const valid = validate(definition.schema, data, `event ${name}`);
          const stored = client.codec
            ? await encodePayload(client.codec, valid, { kind: "event.data", runId: await this.chainId(), event: name }, "event data")
            : valid;
          await engine.sendEvent(client.sql, id, name, stored, options?.idempotencyKey);
        },
      };
    }
    this.events = events as HandleEvents<E>;
  }

  private chain: Promise<string> | undefined;

  /**
   * The first run of this run's continue-as-new chain (the run itself outside one), read once:
   * a codec binds event data to it, as the event may reach another run of the chain (send_event
   * forwards it to the newest run; continue_as_new moves unconsumed events on).
   */
  private chainId(): Promise<string> {
    this.chain ??= engine.getRun(this.client.sql, this.id).then((run) => run.chain_id ?? run.id);
    this.chain.catch(() => (this.chain = undefined));
    return this.chain;
  }

  /** This run's own status: `continued` once it continued as new (see waitForStatus). */
  async status(): Promise<engine.RunStatus> {
    return (await engine.getRun(this.client.sql, this.id)).status;
  }

  /** The run with its journal; see Client.getRun. */
  get(): Promise<engine.RunRecord> {
    return this.client.getRun(this.id);
  }

  /**
   * Resolves when the run reaches `status`, or when it ends in another terminal status, or after
   * `timeout`. Woken by the engine's `aiki_status` notifications; it re-reads on each.
   * A run that continued as new (`run.continueAsNew`) is followed to the newest run of its chain,
   * so the wait ends with the chain's final outcome; only a wait for `"continued"` itself stops at
   * the first run that continued.
   */
  async waitForStatus(status: engine.RunStatus, options: { timeout?: Duration } = {}): Promise<WaitResult<O>> {
    check("wait option", options, waitRules);
    const timeoutMs = options.timeout === undefined ? undefined : toMilliseconds(options.timeout);
    const notifications = this.client.notifications();
    let wake: () => void = () => {};
    let current = this.id;
    const unlisten = await notifications.listen("aiki_status", (payload) => {
      if (payload.startsWith(this.id) || payload.startsWith(current)) wake();
    });
    const unhook = notifications.onReconnect(() => wake());
    const deadline = timeoutMs === undefined ? Infinity : Date.now() + timeoutMs;
    try {
      for (;;) {
        const signalled = new Promise<void>((resolve) => (wake = resolve));
        const run = await engine.getRun(this.client.sql, current);
        if (run.status === status) {
          const output = await decodePayload(this.client.codec, run.output, { kind: "workflow.output", runId: run.id });
          return { success: true, state: { status: run.status, output: output as O } };
        }
        if (run.status === "continued" && run.latest_id !== undefined && run.latest_id !== run.id) {
          current = run.latest_id;
          continue;
        }
        if (engine.terminalStatuses.has(run.status)) {
          const error = await decodeError(this.client.codec, run.error, { kind: "workflow.error", runId: run.id });
          return { success: false, cause: "run_terminated", state: { status: run.status, error } };
        }
        const left = deadline - Date.now();
        if (left <= 0) return timedOut(run, status, timeoutMs ?? 0);
        // The engine notifies terminal states, pauses and resumes; other states (running,
        // sleeping, …) change too often to notify on the hot path, so waits for them re-read
        // every 250 ms. The slow re-read bounds a notification lost to a dropped connection.
        const nap = new AbortController();
        const reread = notifiedStatuses.has(status) ? 5_000 : 250;
        await Promise.race([signalled, sleep(Math.min(left, reread), nap.signal)]);
        nap.abort();
      }
    } finally {
      unlisten();
      unhook();
    }
  }

  /**
   * Waits for completion and returns the output; throws RunFailedError if it failed or was
   * cancelled. Follows a continue-as-new chain to its last run, as waitForStatus does.
   */
  async result(options: { timeout?: Duration } = {}): Promise<O> {
    const outcome = await this.waitForStatus("completed", options);
    if (outcome.success) return outcome.state.output;
    if (outcome.cause === "timeout") throw new RunFailedError(outcome.message, "timeout", null);
    const error = outcome.state.error as SerializedError | null;
    const cause = error ? `: ${error.name}: ${error.message}` : "";
    throw new RunFailedError(`run ${this.id} ended ${outcome.state.status}${cause}`, outcome.state.status, error);
  }

  cancel(reason?: string): Promise<engine.RunStatus> {
    return engine.cancel(this.client.sql, this.id, reason);
  }

  pause(): Promise<engine.RunStatus> {
    return engine.pause(this.client.sql, this.id);
  }

  resume(): Promise<engine.RunStatus> {
    return engine.resume(this.client.sql, this.id);
  }
}

function timedOut(run: engine.RunRecord, awaited: engine.RunStatus, timeoutMs: number): WaitResult<never> {
  const unserved = run.unserved === true;
  const why = unserved
    ? `: no live worker serves ${run.workflow}@${run.version} on queue ${run.queue} (is a worker with this workflow version running?)`
    : "";
  return {
    success: false,
    cause: "timeout",
    status: run.status,
    unserved,
    message: `run ${run.id} is ${run.status}, not ${awaited}, after ${timeoutMs} ms${why}`,
  };
}
