// The `run` object a workflow handler gets (WorkflowRun): the run's identity, its logger, and its
// durable calls. Those are served by what the run object keeps under EXECUTION: the worker's
// Execution, or the replayer's DryRun, which builds the same object with a silent logger so a
// handler replays exactly as it runs. Definitions reach the task and child calls through
// executionOf (task.ts, workflow.ts).
import type { ChildRunHandle, ChildStartOptions, Logger, WorkflowRun, WorkflowVersion } from "../definitions/workflow.js";
import type { EventWaitResult } from "../definitions/event.js";
import type { TaskOptions } from "../definitions/task.js";
import { ContinueAsNew } from "../definitions/continue.js";
import type { Duration } from "../duration.js";
import type { RunRecord } from "../engine.js";
import { InvalidInputError } from "../errors.js";
import type { Replay } from "./replay.js";

/** Where a workflow's `run` object keeps what serves its durable calls (an Execution, or the replayer's DryRun). */
export const EXECUTION = Symbol("aiki.execution");

/** The durable calls definitions make through a `run` (task.ts, workflow.ts). */
export interface DurableCalls {
  task<I, O>(options: TaskOptions<I, O>, input: I): Promise<O>;
  startChild<O>(child: WorkflowVersion<any, O, any>, input: unknown, options: ChildStartOptions): Promise<ChildRunHandle<O>>;
}

/** All the durable calls a `run` makes: the definitions' and its own (sleep, events, values). */
export interface RunCalls extends DurableCalls {
  sleep(name: string, duration: Duration): Promise<void>;
  waitEvent<T>(name: string, timeout: Duration | undefined): Promise<EventWaitResult<T>>;
  value<T>(name: "now" | "random" | "uuid", produce: () => T): Promise<T>;
}

export function executionOf(run: WorkflowRun<any>): DurableCalls {
  const execution = (run as unknown as { [EXECUTION]?: DurableCalls })[EXECUTION];
  if (!execution) throw new InvalidInputError("AK003", "durable calls need the `run` passed to a workflow handler");
  return execution;
}

/** The `run` a handler of `definition` gets for the run `record`, its durable calls served by `calls`. */
export function workflowRun(
  record: Pick<RunRecord, "id" | "workflow" | "version" | "attempt">, definition: WorkflowVersion, logger: Logger, calls: RunCalls,
): WorkflowRun<any> {
  const events: Record<string, { wait(options?: { timeout?: Duration }): Promise<EventWaitResult<unknown>> }> = {};
  for (const name of Object.keys(definition.events)) {
    events[name] = { wait: (options) => calls.waitEvent(name, options?.timeout) };
  }
  const run = {
    id: record.id,
    workflow: record.workflow,
    version: record.version,
    attempt: record.attempt,
    events,
    logger,
    sleep: (name: string, duration: Duration) => calls.sleep(name, duration),
    now: async () => new Date(await calls.value("now", () => null) as unknown as string),
    random: () => calls.value("random", () => Math.random()),
    uuid: () => calls.value("uuid", () => crypto.randomUUID()),
    continueAsNew: (input: unknown, options?: { version?: WorkflowVersion }) => {
      if (options?.version !== undefined && options.version.name !== definition.name) {
        throw new InvalidInputError("AK003",
          `run ${record.id} of workflow ${definition.name} cannot continue as workflow ${options.version.name}`);
      }
      return new ContinueAsNew(input, options?.version?.version);
    },
    [EXECUTION]: calls,
  };
  return run as unknown as WorkflowRun<any>;
}

/** A run's logger: each line prefixed with `prefix`, and silent while the run replays recorded steps (so each line is logged once). */
export function runLogger(logger: Logger, prefix: string, replay: Replay): Logger {
  const line = (level: keyof Logger) => (message: string, fields?: Record<string, unknown>) => {
    if (replay.replaying) return;
    if (fields === undefined) logger[level](`${prefix} ${message}`);
    else logger[level](`${prefix} ${message}`, fields);
  };
  return { info: line("info"), warn: line("warn"), error: line("error") };
}
