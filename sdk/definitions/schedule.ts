// Schedules in code: `schedule({ name, workflow, cron, … })` declares one, `.apply(client)` makes
// the database match it (created, or updated when it differs), and `worker({ schedules })`
// applies a list at start-up. A schedule is only removed when the code says so, with
// `removedSchedule(name)` in the list: dropping a schedule from the code leaves it running, so
// a deploy of a worker that does not know a schedule never deletes it. The engine fires
// schedules (sql/72_schedules.sql); the SDK only declares them.
import type { Client } from "../client.js";
import { toMilliseconds, type Duration } from "../duration.js";
import * as engine from "../engine.js";
import { CodecError, IdempotencyConflictError, RunNotFoundError } from "../errors.js";
import { decodePayload, encodePayload, sameJson } from "../codec/payloads.js";
import { check, scheduleRules } from "../options.js";
import { validate } from "../schema.js";
import type { WorkflowVersion } from "./workflow.js";

export interface ScheduleOptions<I> {
  /** 1-128 letters, digits or `_ . : / -`; the runs' idempotency keys are `schedule:<name>:<fire time>`. */
  name: string;
  /** The workflow version each fire starts. */
  workflow: WorkflowVersion<I, any, any>;
  /**
   * Five fields (minute hour day-of-month month day-of-week), or six with seconds first;
   * @hourly, @daily, @weekly, @monthly, @yearly; or `@every 30s` (fixed intervals).
   */
  cron: string;
  /** IANA time zone the cron's local times are read in. Default: "UTC". */
  timezone?: string;
  /** Input of every run it starts (validated against the workflow's input schema). */
  input?: I;
  /** While the previous run is unfinished, a fire skips (default), buffers one, starts anyway, or cancels it. */
  overlap?: engine.OverlapPolicy;
  /** After downtime, fires missed by at most this long start too. Default: only the most recent. */
  catchup?: Duration;
  /** Default: the workflow version's queue, else "default". */
  queue?: string;
  priority?: number;
}

export class Schedule<I = any> {
  readonly name: string;
  private readonly input: I;

  constructor(readonly options: ScheduleOptions<I>) {
    check("schedule option", options, scheduleRules);
    this.name = options.name;
    this.input = validate(options.workflow.options.schema?.input, options.input, `input of schedule ${options.name}`);
  }

  /** The engine's fields for this schedule. */
  definition(): engine.ScheduleDefinition {
    const o = this.options;
    return {
      name: o.name, workflow: o.workflow.name, version: o.workflow.version, cron: o.cron,
      timezone: o.timezone ?? "UTC", input: this.input ?? null, overlap: o.overlap ?? "skip",
      catchupMs: o.catchup === undefined ? 0 : toMilliseconds(o.catchup),
      queue: o.queue ?? o.workflow.options.queue ?? "default", priority: o.priority ?? 0,
      // The workflow version's run retry policy, as its start() passes it; none: never retry.
      retry: o.workflow.options.retry ?? { type: "never" },
    };
  }

  /**
   * Makes the database's schedule of this name match this one: creates it, or updates the one
   * there (a paused schedule stays paused). AK003 on a bad cron, zone or name, nothing written.
   */
  async apply(client: Client): Promise<engine.ScheduleInfo> {
    await client.ready();
    const definition = this.definition();
    if (client.codec) {
      // A codec encodes equal inputs differently (a fresh IV each time), so the engine would see
      // every start-up as a change: when the schedule there holds this input, its ciphertext is
      // kept, and the engine compares the rest as without a codec.
      const codec = client.codec;
      const context = { kind: "workflow.input", workflow: definition.workflow } as const;
      const there = await engine.getSchedule(client.sql, this.name).catch((error: unknown) => {
        if (error instanceof RunNotFoundError) return undefined;
        throw error;
      });
      // Kept only for the same workflow (the input is bound to it) and when it still decodes: a
      // key rotated out, or another codec, makes it a change to write anew, not a failed start-up.
      const plain = JSON.parse(JSON.stringify(definition.input ?? null));
      const stored = there?.workflow === definition.workflow
        ? await decodePayload(codec, there.input, context).then((value) => ({ value }), (error: unknown) => {
          if (error instanceof CodecError) return undefined;
          throw error;
        })
        : undefined;
      definition.input = there && stored && sameJson(stored.value, plain)
        ? there.input
        : await encodePayload(codec, definition.input, context, `input of schedule ${this.name}`);
    }
    try {
      return await engine.createSchedule(client.sql, definition);
    } catch (error) {
      if (!(error instanceof IdempotencyConflictError)) throw error;
      return engine.updateSchedule(client.sql, definition);
    }
  }
}

/** Declares a schedule; nothing is written until `.apply(client)` or a worker's start-up. */
export function schedule<I>(options: ScheduleOptions<I>): Schedule<I> {
  return new Schedule(options);
}

/** A schedule the code removes: `.apply(client)` deletes it, if it is there. */
export class RemovedSchedule {
  constructor(readonly name: string) {}

  /** Whether there was such a schedule. */
  async apply(client: Client): Promise<boolean> {
    await client.ready();
    return engine.deleteSchedule(client.sql, this.name);
  }
}

/** Says, in a worker's `schedules`, that the schedule of this name must not exist. */
export function removedSchedule(name: string): RemovedSchedule {
  return new RemovedSchedule(name);
}
