// The clock of one timed task attempt: a task declared with `timeout` and/or `heartbeatTimeout`.
//
// In process, the attempt expires when its timeout passes, or when its heartbeat timeout passes
// without a ctx.heartbeat(): `expired` rejects with a TaskTimeoutError and the attempt's signal
// aborts with it, so the execution fails the attempt (its retry policy decides) even if the
// handler never settles. In the database, the attempt's deadline is journalled at its start
// (aiki.start_attempt) and pushed on by heartbeats, at most three times per heartbeat timeout
// (a heartbeat skipped so is journalled when the next slot comes, so the last details are kept),
// so a worker that dies or hangs has its attempt failed by the next replay instead of run again,
// and the next attempt starts with the details of the last heartbeat journalled.
import { checkJson } from "../engine.js";
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
  private trailingTimer: NodeJS.Timeout | undefined;
  private done = false;

  constructor(
    private readonly what: string,
    private readonly timing: AttemptTiming,
    runSignal: AbortSignal,
    /** Journals a new deadline, `ms` from now, and the heartbeat's details (fire and forget). */
    private readonly persist: (ms: number, details: unknown) => void,
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

  /** The task is alive: its heartbeat timeout starts over; `details` are journalled for the next attempt. */
  heartbeat(details: unknown): void {
    const ms = this.timing.heartbeatTimeoutMs;
    if (this.done || ms === undefined) return;
    if (details !== undefined) checkJson(`heartbeat details of ${this.what}`, details);
    this.armHeartbeat();
    clearTimeout(this.trailingTimer);
    const wait = this.lastPersisted + ms / 3 - performance.now();
    if (wait <= 0) this.journal(details);
    else this.trailingTimer = setTimeout(() => this.journal(details), wait);
  }

  private journal(details: unknown): void {
    if (this.done) return;
    const now = performance.now();
    this.lastPersisted = now;
    const ms = this.timing.heartbeatTimeoutMs!;
    const left = this.timing.timeoutMs === undefined ? Infinity : this.timing.timeoutMs - (now - this.startedAt);
    this.persist(Math.max(0, Math.round(Math.min(ms, left))), details);
  }

  /** The attempt ended (settled, failed or expired): timers stop, heartbeats are no-ops. */
  dispose(): void {
    this.done = true;
    clearTimeout(this.timeoutTimer);
    clearTimeout(this.heartbeatTimer);
    clearTimeout(this.trailingTimer);
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
