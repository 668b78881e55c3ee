// The attributes of the SDK's spans, all in the `aiki.` namespace (README, "Tracing").
export const RUN_ID = "aiki.run.id";
export const WORKFLOW = "aiki.workflow.name";
export const VERSION = "aiki.workflow.version";
export const QUEUE = "aiki.queue";
/** The run-level attempt (1, more after the run's retry policy restarted it). */
export const RUN_ATTEMPT = "aiki.run.attempt";
/** False when a start found the run its idempotency key had started. */
export const RUN_CREATED = "aiki.run.created";
/** The parent run of a child start. */
export const PARENT_RUN_ID = "aiki.parent.run.id";
export const STEP_KEY = "aiki.step.key";
export const TASK_NAME = "aiki.task.name";
/** The task attempt, 1 for the first. */
export const TASK_ATTEMPT = "aiki.task.attempt";
/** sleep, event or child. */
export const WAIT_KIND = "aiki.wait.kind";
/** The sleep's or event's name, the child's workflow. */
export const WAIT_NAME = "aiki.wait.name";
/** resolved, timeout (an event wait's timeout passed), suspended (the run was released on it), or how the execution ended. */
export const WAIT_OUTCOME = "aiki.wait.outcome";
/** How an execution ended: completed, failed, retrying, suspended, lost or abandoned. */
export const EXECUTION_END = "aiki.execution.end";
/** The event an execution span gets for each wait it resumed past. */
export const RESUMED_EVENT = "aiki.wait.resumed";
