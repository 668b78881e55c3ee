import { toMilliseconds, type Duration } from "../duration.js";
import { InvalidInputError } from "../errors.js";
import type { Schema } from "../schema.js";
import type { RetryPolicy } from "../retry.js";
import type { WorkflowRun } from "./workflow.js";
import { check, taskRules } from "../options.js";
import { executionOf } from "../worker/run.js";

export interface TaskContext {
  /** 1 on the first attempt, 2 on the first retry, … */
  attempt: number;
  /**
   * Aborted when the worker loses the run (lease lost, cancelled) or shuts down, and when the
   * attempt times out (its reason is then the TaskTimeoutError).
   */
  signal: AbortSignal;
  /** Stable across attempts and replays: `<run id>:<step key>`. Hand it to outside systems. */
  idempotencyKey: string;
  runId: string;
  stepKey: string;
  /**
   * Says the task is alive: with `heartbeatTimeout`, the attempt fails if these stop coming.
   * `details` (JSON: progress to resume from) are journalled for the next attempt.
   */
  heartbeat(details?: unknown): void;
  /** The details of the last heartbeat a previous attempt journalled (with `heartbeatTimeout`). */
  heartbeatDetails: unknown;
}

export interface TaskOptions<I, O> {
  name: string;
  handler: (input: I, context: TaskContext) => Promise<O> | O;
  retry?: RetryPolicy;
  schema?: { input?: Schema<I>; output?: Schema<O> };
  /**
   * An attempt running longer fails with TaskTimeoutError (its signal aborts; the retry policy
   * decides what follows), also when its worker died: the next replay fails it. Default: none.
   */
  timeout?: Duration;
  /** An attempt that calls ctx.heartbeat() no more often than this fails the same way. Default: none. */
  heartbeatTimeout?: Duration;
}

export interface Task<I, O> {
  readonly name: string;
  readonly options: TaskOptions<I, O>;
  /** Runs the task as a durable step of `run`; on replay returns the recorded result. */
  start(run: WorkflowRun<any>, input: I): Promise<O>;
}

export function task<I, O>(options: TaskOptions<I, O>): Task<I, O> {
  check("task option", options, taskRules);
  for (const what of ["timeout", "heartbeatTimeout"] as const) {
    const value = options[what];
    if (value !== undefined && toMilliseconds(value) < 1) {
      throw new InvalidInputError("AK003", `invalid ${what} of task ${options.name}: use at least 1 ms`);
    }
  }
  return {
    name: options.name,
    options,
    start: (run, input) => executionOf(run).task(options, input),
  };
}
