// What journal entries hand the code, and the small pure helpers the worker's Execution and the
// replayer's DryRun share: a task's attempt timing, an event or child wait's result (checked on
// receipt against its schema), a task's failure as the code sees it, and an error for log lines.
import type { WorkflowVersion } from "../definitions/workflow.js";
import type { EventWaitResult } from "../definitions/event.js";
import type { TaskOptions } from "../definitions/task.js";
import { toMilliseconds } from "../duration.js";
import type * as engine from "../engine.js";
import { TaskFailedError, serializeError, type SerializedError } from "../errors.js";
import { validate, type Schema } from "../schema.js";
import type { AttemptTiming } from "./attempt.js";

/** What a durable call of an ended execution hands the code: a promise that never settles. */
export const never = <T>(): Promise<T> => new Promise<T>(() => {});

/** The timing of a task's attempts, or undefined for an untimed task (which journals no start). */
export function attemptTiming(options: TaskOptions<any, any>): AttemptTiming | undefined {
  if (options.timeout === undefined && options.heartbeatTimeout === undefined) return undefined;
  return {
    timeoutMs: options.timeout === undefined ? undefined : toMilliseconds(options.timeout),
    heartbeatTimeoutMs: options.heartbeatTimeout === undefined ? undefined : toMilliseconds(options.heartbeatTimeout),
  };
}

/**
 * What an event wait's journal entry hands the code. Event data is checked on receipt too
 * (aiki.send_event from SQL bypasses the SDK's check): data that does not fit fails the wait,
 * and the handler never sees it.
 */
export function eventWaitResult<T>(step: engine.StepRecord, definition: WorkflowVersion, runId: string): EventWaitResult<T> {
  const output = step.output as { timeout?: boolean; data?: T } | null;
  if (output?.timeout) return { timeout: true };
  const schema = definition.events[step.name]?.schema;
  return { timeout: false, data: validate(schema, output?.data, `event ${step.name} received by run ${runId}`) as T };
}

/** What a child wait's journal entry hands the code; a typed child's result is checked on receipt (a run completed from SQL may hold anything). */
export function childWaitResult<O>(step: engine.StepRecord, childId: string, name: string, expected: engine.RunStatus, schema: Schema<O> | undefined) {
  const outcome = step.output as { status: engine.RunStatus; output: O; error: unknown };
  const output = outcome.status === "completed"
    ? validate(schema, outcome.output, `output of child run ${childId} (workflow ${name})`)
    : outcome.output;
  return outcome.status === expected
    ? { success: true as const, state: { status: outcome.status, output } }
    : { success: false as const, cause: "run_terminated" as const, state: { status: outcome.status, error: outcome.error } };
}

/** `Name: message` of an error, for log lines. */
export function describe(error: unknown): string {
  const { name, message } = serializeError(error);
  return `${name}: ${message}`;
}

export function taskFailed(name: string, error: SerializedError | null): TaskFailedError {
  return new TaskFailedError(`task ${name} failed: ${error?.message ?? "unknown error"}`, error ?? { name: "Error", message: "unknown" });
}
