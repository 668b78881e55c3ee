// The clock of one timed task attempt: a task declared with `timeout` and/or `heartbeatTimeout`.
//
// In process, the attempt expires when its timeout passes, or when its heartbeat timeout passes
// without a ctx.heartbeat(): `expired` rejects with a TaskTimeoutError and the attempt's signal
// aborts with it, so the execution fails the attempt (its retry policy decides) even if the
// handler never settles. In the database, the attempt's deadline is journalled at its start
// (aiki.start_attempt) and pushed on by heartbeats, at most three times per heartbeat timeout,
// so a worker that dies or hangs has its attempt failed by the next replay instead of run again.
import { TaskTimeoutError } from "../errors.js";

export interface AttemptTiming {
  timeoutMs?: number;
  heartbeatTimeoutMs?: number;
}

export class AttemptClock {
  readonly signal: AbortSignal;
  readonly expired: Promise<never>;
  private readonly controller = new AbortController();
  private readonly startedAt = performance.now();
  private lastPersisted = this.startedAt;
  private expire!: (error: TaskTimeoutError) => void;
  private timeoutTimer: NodeJS.Timeout | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private done = false;

  constructor(
    private readonly what: string,
    private readonly timing: AttemptTiming,
    runSignal: AbortSignal,
    /** Journals a new deadline, `ms` from now (fire and forget). */
    private readonly persist: (ms: number) => void,
  ) {
    this.signal = AbortSignal.any([runSignal, this.controller.signal]);
    this.expired = new Promise<never>((_, reject) => (this.expire = reject));
    // Rejections of `expired` are handled by the race the caller makes; none may go unhandled.
    this.expired.catch(() => undefined);
    if (timing.timeoutMs !== undefined) {
      this.timeoutTimer = setTimeout(() => this.fail(`${what} timed out after ${timing.timeoutMs} ms`), timing.timeoutMs);
    }
    this.armHeartbeat();
  }

  /** The deadline to journal at the attempt's start, in ms from now. */
  static firstDeadlineMs(timing: AttemptTiming): number {
    return Math.min(timing.timeoutMs ?? Infinity, timing.heartbeatTimeoutMs ?? Infinity);
  }

  /** The task is alive: its heartbeat timeout starts over. */
  heartbeat(): void {
    if (this.done || this.timing.heartbeatTimeoutMs === undefined) return;
    this.armHeartbeat();
    const now = performance.now();
    if (now - this.lastPersisted < this.timing.heartbeatTimeoutMs / 3) return;
    this.lastPersisted = now;
    const left = this.timing.timeoutMs === undefined ? Infinity : this.timing.timeoutMs - (now - this.startedAt);
    this.persist(Math.max(0, Math.round(Math.min(this.timing.heartbeatTimeoutMs, left))));
  }

  /** The attempt ended (settled, failed or expired): timers stop, heartbeats are no-ops. */
  dispose(): void {
    this.done = true;
    clearTimeout(this.timeoutTimer);
    clearTimeout(this.heartbeatTimer);
  }

  private armHeartbeat(): void {
    const ms = this.timing.heartbeatTimeoutMs;
    if (ms === undefined) return;
    clearTimeout(this.heartbeatTimer);
    this.heartbeatTimer = setTimeout(() => this.fail(`${this.what} sent no heartbeat for ${ms} ms`), ms);
  }

  private fail(message: string): void {
    if (this.done) return;
    const error = new TaskTimeoutError(message);
    this.dispose();
    this.controller.abort(error);
    this.expire(error);
  }
}
