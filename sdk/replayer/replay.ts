// replay(workflowVersion, run): checks a workflow version's current code against a recorded run
// without side effects (dry-run.ts), so a change that would break runs in flight is caught before
// it is deployed. The run is what client.getRun(id) returns or what `aiki runs show <id> --json`
// printed (recorded-run.ts); only the latter carries the completion times that order is judged by.
import { WorkflowVersion } from "../definitions/workflow.js";
import type { RunStatus } from "../engine.js";
import { InvalidInputError } from "../errors.js";
import { DryRun, type ReplayEnd } from "./dry-run.js";
import { recordedRun } from "./recorded-run.js";

export type { ReplayEnd } from "./dry-run.js";

export interface ReplayResult {
  runId: string;
  /** The run's recorded status. */
  status: RunStatus;
  /** returned, threw (as the failed or retrying run did), or journal-end (a run in flight: the code would go on from there). */
  end: ReplayEnd;
  /** Journal entries replayed. */
  steps: number;
  /** Whether order was judged: the run came with each step's completion time (`aiki runs show --json`). */
  orderChecked: boolean;
}

/**
 * Runs `workflowVersion`'s handler against the recorded `run`: no task runs, nothing is written,
 * `now()`, `random()` and `uuid()` return what the journal holds. Resolves when the code follows
 * the journal to its end; rejects with NonDeterminismError (its `divergence` names the step, the
 * recorded call and the code's call) at the first departure, or with InvalidInputError when the
 * run is malformed or of another workflow version.
 */
export async function replay(workflowVersion: WorkflowVersion<any, any, any>, run: unknown): Promise<ReplayResult> {
  if (!(workflowVersion instanceof WorkflowVersion)) {
    throw new InvalidInputError("AK003", "replay: the first argument must be a workflow version (workflow({ name }).v(version, { … }))");
  }
  const recorded = recordedRun(run);
  if (recorded.workflow !== workflowVersion.name || recorded.version !== workflowVersion.version) {
    throw new InvalidInputError("AK003",
      `replay: run ${recorded.id} is of workflow ${recorded.workflow}@${recorded.version}, not ${workflowVersion.key}`);
  }
  const end = await new DryRun(recorded, workflowVersion).start();
  return {
    runId: recorded.id,
    status: recorded.status,
    end,
    steps: recorded.journal.length,
    orderChecked: recorded.journal.some((step) => step.completed_at),
  };
}
