import type { Schema } from "../schema.js";
import type { RetryPolicy } from "../retry.js";
import type { WorkflowRun } from "./workflow.js";
import { check, taskRules } from "../options.js";
import { executionOf } from "../worker/execution.js";

export interface TaskContext {
  /** 1 on the first attempt, 2 on the first retry, … */
  attempt: number;
  /** Aborted when the worker loses the run (lease lost, cancelled) or shuts down. */
  signal: AbortSignal;
  /** Stable across attempts and replays: `<run id>:<step key>`. Hand it to outside systems. */
  idempotencyKey: string;
  runId: string;
  stepKey: string;
}

export interface TaskOptions<I, O> {
  name: string;
  handler: (input: I, context: TaskContext) => Promise<O> | O;
  retry?: RetryPolicy;
  schema?: { input?: Schema<I>; output?: Schema<O> };
}

export interface Task<I, O> {
  readonly name: string;
  readonly options: TaskOptions<I, O>;
  /** Runs the task as a durable step of `run`; on replay returns the recorded result. */
  start(run: WorkflowRun<any>, input: I): Promise<O>;
}

export function task<I, O>(options: TaskOptions<I, O>): Task<I, O> {
  check("task option", options, taskRules);
  return {
    name: options.name,
    options,
    start: (run, input) => executionOf(run).task(options, input),
  };
}
