// The worker's alarm (sdk/worker/alarm.ts) on a mocked clock: when the claim loop looks again,
// and how a flood of notifications is damped. No database: the claims are played by the test.
import { afterEach, beforeEach, describe, it, mock } from "node:test";
import assert from "node:assert/strict";
import { Alarm, type Cause } from "../worker/alarm.js";

const POLL = 600_000;
const empty = { found: false, skipped: false, held: false, nextDueMs: undefined };

beforeEach(() => mock.timers.enable({ apis: ["setTimeout", "Date"], now: 1_000_000 }));
afterEach(() => mock.timers.reset());

/** The wait's outcome after `ms` of mocked time, or "pending". */
async function after(wait: Promise<Cause>, ms: number): Promise<Cause | "pending"> {
  let outcome: Cause | "pending" = "pending";
  void wait.then((cause) => (outcome = cause));
  mock.timers.tick(ms);
  await Promise.resolve();
  await Promise.resolve();
  return outcome;
}

describe("Alarm", () => {
  it("a signal that arrives while a claim is in flight makes the next wait return at once", async () => {
    const alarm = new Alarm(POLL, Date.now);
    alarm.claiming();
    alarm.notified(); // the claim's snapshot may have missed the commit this announces
    alarm.claimed(empty, "wake");
    assert.equal(await after(alarm.wait(), 0), "notified");
  });

  it("waits until the earliest due time: the claim's, or one an execution reported later", async () => {
    const alarm = new Alarm(POLL, Date.now);
    alarm.claiming();
    alarm.claimed({ ...empty, nextDueMs: Date.now() + 500 }, "wake");
    const wait = alarm.wait();
    alarm.dueAt(Date.now() + 200, true);
    assert.equal(await after(wait, 199), "pending");
    assert.equal(await after(wait, 1), "due");
  });

  it("a due time announced by a notification wakes at that time", async () => {
    const alarm = new Alarm(POLL, Date.now);
    alarm.claiming();
    alarm.claimed(empty, "wake");
    const wait = alarm.wait();
    alarm.dueAt(Date.now() + 300, false);
    assert.equal(await after(wait, 299), "pending");
    assert.equal(await after(wait, 1), "notified");
  });

  it("a claim that skipped locked runs looks again after 1, 2, 4 … ms, capped at 100 ms", async () => {
    const alarm = new Alarm(POLL, Date.now);
    const gaps: number[] = [];
    for (let i = 0; i < 9; i++) {
      alarm.claiming();
      alarm.claimed({ ...empty, skipped: true }, "due");
      const from = Date.now();
      const wait = alarm.wait();
      let cause: Cause | "pending" = "pending";
      while (cause === "pending") cause = await after(wait, 1);
      assert.equal(cause, "due");
      gaps.push(Date.now() - from);
    }
    assert.deepEqual(gaps, [1, 2, 4, 8, 16, 32, 64, 100, 100]);
  });

  it("falls back to the poll when nothing else comes", async () => {
    const alarm = new Alarm(POLL, Date.now);
    alarm.claiming();
    alarm.claimed(empty, "wake");
    const wait = alarm.wait();
    assert.equal(await after(wait, POLL - 1), "pending");
    assert.equal(await after(wait, 1), "poll");
  });

  it("with no free slot, only a wake ends the wait, not a notification or a due time", async () => {
    const alarm = new Alarm(POLL, Date.now);
    const wait = alarm.wait(true);
    alarm.notified();
    alarm.dueAt(Date.now(), true);
    assert.equal(await after(wait, 10), "pending");
    alarm.wake();
    assert.equal(await after(wait, 0), "wake");
  });

  describe("damping", () => {
    /** Plays a flood: a notification arrives every ms for `ms`; every claim finds nothing. */
    async function flood(alarm: Alarm, ms: number): Promise<number> {
      let claims = 0;
      let cause: Cause = "notified";
      const end = Date.now() + ms;
      while (Date.now() < end) {
        alarm.claiming();
        claims++;
        alarm.claimed(empty, cause);
        const wait = alarm.wait();
        let outcome: Cause | "pending" = "pending";
        while (outcome === "pending" && Date.now() < end) {
          alarm.notified();
          outcome = await after(wait, 1);
        }
        if (outcome === "pending") break;
        cause = outcome;
      }
      return claims;
    }

    it("a second of notifications that find nothing costs 8 claims, then about one a second", async () => {
      assert.equal(await flood(new Alarm(POLL, Date.now), 1_000), 8);
      const long = await flood(new Alarm(POLL, Date.now), 10_000);
      assert.ok(long <= 8 + 10, `${long} claims in 10 s`);
    });

    it("a claim that finds work ends the quiet period: the next notification claims at once", async () => {
      const alarm = new Alarm(POLL, Date.now);
      await flood(alarm, 200);
      alarm.claiming();
      alarm.claimed({ ...empty, found: true }, "notified");
      alarm.notified();
      assert.equal(await after(alarm.wait(), 0), "notified");
      assert.equal(alarm.emptyStreak, 0);
    });

    it("empty claims that were skipped or held back by a limit are no false alarm", async () => {
      const alarm = new Alarm(POLL, Date.now);
      for (let i = 0; i < 5; i++) {
        alarm.claiming();
        alarm.claimed({ ...empty, held: true }, "notified");
      }
      alarm.notified();
      assert.equal(await after(alarm.wait(), 0), "notified");
      assert.equal(alarm.emptyStreak, 0);
    });

    it("empty claims more than a second apart are never damped (a fleet's losers of a trickle)", async () => {
      const alarm = new Alarm(POLL, Date.now);
      for (let i = 0; i < 5; i++) {
        alarm.claiming();
        alarm.claimed(empty, "notified");
        mock.timers.tick(1_001);
      }
      alarm.notified();
      assert.equal(await after(alarm.wait(), 0), "notified");
      assert.equal(alarm.emptyStreak, 1);
    });
  });
});
