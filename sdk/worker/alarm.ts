// When the worker's claim loop looks at the database again.
//
// Between two claims the loop waits for the earliest of:
//   wake       a slot freed while runs were left behind, or stop()                     at once
//   due        the claim's next_due_at, or a due time the worker's own executions
//              learnt from the engine (suspend's available_at, fail_step's and
//              fail_run's retry_at)                                                     at that time
//   skipped    the claim passed over runs another transaction held locked: their
//              holder may commit without a notification                                after 1, 2, 4 … 100 ms
//   notified   a notification for one of its queues ("<queue>"), or the due time one
//              announced ("<queue> <time>")                                             at once / then, damped
//   poll       the safety poll                                                          pollMs after the claim
// A signal that arrives while a claim is in flight is kept, so the next wait returns at once:
// a notification whose commit the claim's snapshot missed always leads to another claim.
//
// Damping. Anyone who may connect may NOTIFY aiki_wake, and an idle worker that claimed on every
// notification ran 725 claims in a second under a flood of 2,000. Notifications are hints: after
// two claims in a row that a notification caused and that found nothing (no run, none skipped,
// none held back by a concurrency limit — those mean the notification was real), the next
// notification-caused claim waits for a quiet period that doubles from 10 ms up to 1 s, and a
// claim that finds work ends it. Empty claims more than 1 s apart start the count again, so a
// fleet's losers of an ordinary trickle of runs are never damped. The loop's own signals (wake,
// due, skipped, poll) come from the engine's answers and are never damped.
export type Cause = "wake" | "due" | "notified" | "poll";

/** The answer of a claim that came back short, as the alarm needs it. */
export interface ShortClaim {
  found: boolean;
  skipped: boolean;
  held: boolean;
  /** The claim's next_due_at on this process's clock (ms), if any. */
  nextDueMs: number | undefined;
}

const QUIET_MIN_MS = 10;
const QUIET_MAX_MS = 1_000;
const SKIP_MIN_MS = 1;
const SKIP_MAX_MS = 100;

export class Alarm {
  /** Claims a notification caused that found nothing, in a row (see "Damping"). */
  emptyStreak = 0;
  private woken = false;
  private notifiedPending = false;
  private dueMs = Infinity;
  private hintDueMs = Infinity;
  private retryAtMs = Infinity;
  private pollAtMs = Infinity;
  private quietUntilMs = 0;
  private lastEmptyMs = -Infinity;
  private skipStreak = 0;
  private waiter: { resolve(cause: Cause): void; wakeOnly: boolean } | undefined;
  private timer: NodeJS.Timeout | undefined;

  /**
   * `now` is the clock due times are given on: the monotonic clock by default, so that moving
   * the wall clock neither delays nor hurries a wake-up (tests pass a mocked Date.now).
   */
  constructor(private readonly pollMs: number, private readonly now: () => number = () => performance.now()) {}

  /** A trusted reason to claim at once (a slot freed, stop). */
  wake(): void {
    this.woken = true;
    this.arm();
  }

  /** A notification for one of the worker's queues: claim soon (damped). */
  notified(): void {
    this.notifiedPending = true;
    this.arm();
  }

  /**
   * A run falls due at `atMs` (this process's clock). `trusted`: learnt from the engine's answer
   * to this worker; otherwise announced by a notification, and damped like one.
   */
  dueAt(atMs: number, trusted: boolean): void {
    if (trusted) this.dueMs = Math.min(this.dueMs, atMs);
    else this.hintDueMs = Math.min(this.hintDueMs, atMs);
    this.arm();
  }

  /** A claim starts: it answers every signal that came before it. */
  claiming(): void {
    const now = this.now();
    this.woken = false;
    this.notifiedPending = false;
    if (this.dueMs <= now) this.dueMs = Infinity;
    if (this.hintDueMs <= now) this.hintDueMs = Infinity;
    this.retryAtMs = Infinity;
  }

  /** A claim's answer (after a full one the loop claims again at once, without waiting). */
  claimed(answer: ShortClaim, cause: Cause): void {
    const now = this.now();
    if (answer.found) {
      this.emptyStreak = 0;
      this.quietUntilMs = 0;
    } else if (cause === "notified" && !answer.skipped && !answer.held) {
      if (now - this.lastEmptyMs > QUIET_MAX_MS) this.emptyStreak = 0;
      this.emptyStreak++;
      this.lastEmptyMs = now;
      if (this.emptyStreak >= 2) this.quietUntilMs = now + Math.min(QUIET_MIN_MS * 2 ** (this.emptyStreak - 2), QUIET_MAX_MS);
    }
    if (answer.skipped) {
      this.retryAtMs = now + Math.min(SKIP_MIN_MS * 2 ** this.skipStreak, SKIP_MAX_MS);
      this.skipStreak++;
    } else {
      this.skipStreak = 0;
    }
    if (answer.nextDueMs !== undefined) this.dueMs = Math.min(this.dueMs, answer.nextDueMs);
    this.pollAtMs = now + this.pollMs;
  }

  /** A claim failed (the database is away): look again within `retryMs`. */
  failed(retryMs: number): void {
    this.pollAtMs = this.now() + Math.min(this.pollMs, retryMs);
  }

  /**
   * Resolves with the cause of the next claim. With `wakeOnly` (no slot is free, so no claim
   * could take a run), only a wake or the poll ends the wait.
   */
  wait(wakeOnly = false): Promise<Cause> {
    if (wakeOnly && this.pollAtMs <= this.now()) this.pollAtMs = this.now() + this.pollMs;
    return new Promise((resolve) => {
      this.waiter = { resolve, wakeOnly };
      this.arm();
    });
  }

  private arm(): void {
    const waiter = this.waiter;
    if (!waiter) return;
    clearTimeout(this.timer);
    this.timer = undefined;
    const now = this.now();
    const candidates: [Cause, number][] = [["poll", this.pollAtMs]];
    if (this.woken) candidates.push(["wake", -Infinity]);
    if (!waiter.wakeOnly) {
      candidates.push(["due", Math.min(this.dueMs, this.retryAtMs)]);
      if (this.notifiedPending) candidates.push(["notified", Math.max(now, this.quietUntilMs)]);
      candidates.push(["notified", Math.max(this.hintDueMs, this.quietUntilMs)]);
    }
    const [cause, at] = candidates.reduce((a, b) => (b[1] < a[1] ? b : a));
    if (at <= now) {
      this.waiter = undefined;
      // A wake answered without a claim (no free slot) must not answer the next wait too.
      if (cause === "wake") this.woken = false;
      waiter.resolve(cause);
      return;
    }
    // Capped to what a Node timer holds (24.8 days); it re-arms when it fires.
    this.timer = setTimeout(() => this.arm(), Math.min(at - now, 2 ** 31 - 1));
  }
}
