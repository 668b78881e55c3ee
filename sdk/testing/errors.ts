// The test kit's own errors. Both say what the engine was doing, so a test that waits for the
// wrong thing fails with the reason instead of a timeout.
import { AikiError } from "../errors.js";

/**
 * The engine of a test environment did not settle (runs still running, or claimable by a live
 * worker and not claimed) within `settleTimeout`; the message names up to 20 of those runs.
 */
export class NotSettledError extends AikiError {
  constructor(message: string) {
    super("not_settled", message);
  }
}

/**
 * `env.result(run)` found the run unfinished with the engine settled: it sleeps, waits for an
 * event or a child, or retries later. `status` is its status, `dueAt` when it falls due (null:
 * only an event or a child wakes it).
 */
export class RunNotFinishedError extends AikiError {
  readonly status: string;
  readonly dueAt: string | null;
  constructor(message: string, status: string, dueAt: string | null) {
    super("not_finished", message);
    this.status = status;
    this.dueAt = dueAt;
  }
}
