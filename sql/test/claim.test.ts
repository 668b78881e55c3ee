// aiki.claim, aiki.heartbeat and aiki.release: how workers take runs, keep them, give them back —
// and every timer that claim's promotion moves (delayed starts, sleeps, wait timeouts, retries,
// expired leases, deadlines), driven by the fake clock.
import { after, afterEach, before, beforeEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  T0, at, claim, claimOne, completeRun, completeStep, expectSqlState, failStep, getRun, harness, ms, reset,
  runRow, setNow, startAndClaim, startRun, status, step, suspend, type Harness,
} from "./support.js";

let h: Harness;
before(async () => {
  h = await harness();
});
after(() => h.close());
beforeEach(() => reset(h.sql));

describe("claim", () => {
  it("leases a pending run: running, a fresh token, lease and started_at from aiki.now()", async () => {
    const id = await startRun(h.sql, { input: { n: 1 } });
    await setNow(h.sql, at(100));
    const { runs } = await claim(h.sql, { worker: "w-a", leaseMs: 5000 });
    assert.equal(runs.length, 1);
    const run = runs[0]!;
    assert.equal(run.id, id);
    assert.equal(run.status, "running");
    assert.deepEqual(run.input, { n: 1 });
    assert.match(run.lease_token!, /^[0-9a-f-]{36}$/);
    assert.equal(ms(run.lease_expires_at), Date.parse(at(5100)));
    assert.equal(ms(run.available_at), Date.parse(at(5100)), "a lease's expiry is its timer");
    assert.equal(ms(run.started_at), Date.parse(at(100)));
    assert.deepEqual(run.journal, []);
    const row = await runRow(h.sql, id);
    assert.equal(row.lease_owner, "w-a");
    assert.equal(row.lease_token, run.lease_token);
  });

  it("returns nothing, and no next due time, when there is nothing to do", async () => {
    const result = await claim(h.sql);
    assert.deepEqual(result.runs, []);
    assert.equal(result.next_due_at, null);
  });

  it("never leases the same run twice", async () => {
    const id = await startRun(h.sql);
    await claimOne(h.sql, { expect: id });
    assert.deepEqual((await claim(h.sql, { worker: "w-b" })).runs, []);
  });

  it("takes up to the limit, and no more", async () => {
    for (let i = 0; i < 5; i++) await startRun(h.sql);
    assert.equal((await claim(h.sql, { limit: 3 })).runs.length, 3);
    assert.equal((await claim(h.sql, { limit: 3 })).runs.length, 2);
  });

  it("returns each run with its whole journal, in the order the steps were written", async () => {
    const first = await startAndClaim(h.sql);
    await completeStep(h.sql, first, "b#1", "b", 1);
    await setNow(h.sql, at(1));
    await completeStep(h.sql, first, "a#1", "a", 2);
    await completeStep(h.sql, first, "now#1", "now", "2030-01-01", "value");
    await h.sql`select aiki.release(${first.id}::uuid, ${first.lease_token}::uuid)`;
    const again = await claimOne(h.sql, { expect: first.id });
    assert.deepEqual(again.journal.map((s) => [s.key, s.kind, s.status, s.output]), [
      ["b#1", "task", "completed", 1],
      ["a#1", "task", "completed", 2],
      ["now#1", "value", "completed", "2030-01-01"],
    ]);
    assert.notEqual(again.lease_token, first.lease_token, "every claim issues a new token");
  });

  it("takes only the workflow@version pairs asked for", async () => {
    const v1 = await startRun(h.sql, { workflow: "order", version: "1" });
    const v2 = await startRun(h.sql, { workflow: "order", version: "2" });
    const other = await startRun(h.sql, { workflow: "mail", version: "1" });
    const { runs } = await claim(h.sql, { workflows: ["order@2", "mail@1"], limit: 10 });
    assert.deepEqual(runs.map((r) => r.id).sort(), [v2, other].sort());
    assert.equal(await status(h.sql, v1), "pending");
    assert.deepEqual((await claim(h.sql, { workflows: [], limit: 10 })).runs, [], "an empty list matches nothing");
  });

  it("takes only from the queues asked for, in the order given", async () => {
    const a = await startRun(h.sql, { queue: "a" });
    const b = await startRun(h.sql, { queue: "b" });
    const c = await startRun(h.sql, { queue: "c" });
    assert.equal((await claimOne(h.sql, { queues: ["b", "a"] })).id, b);
    assert.equal((await claimOne(h.sql, { queues: ["b", "a"] })).id, a);
    assert.deepEqual((await claim(h.sql, { queues: ["b", "a"] })).runs, []);
    assert.equal(await status(h.sql, c), "pending");
  });

  it("orders by priority, highest first, then by due time, oldest first", async () => {
    await setNow(h.sql, at(0));
    const lowOld = await startRun(h.sql, { priority: -1 });
    await setNow(h.sql, at(10));
    const midNew = await startRun(h.sql);
    const midOld = await startRun(h.sql, { startAt: at(5) });
    await setNow(h.sql, at(20));
    const high = await startRun(h.sql, { priority: 5 });
    const order = [];
    for (let i = 0; i < 4; i++) order.push((await claimOne(h.sql)).id);
    assert.deepEqual(order, [high, midOld, midNew, lowOld]);
  });

  describe("next_due (for the relay)", () => {
    const nextDue = async (queues: string[] | null, after: string | null = null) => {
      const [row] = await h.sql`select aiki.next_due(${queues}::text[], ${after}::timestamptz) as d`;
      return row!.d as { now: string; queue: string | null; due_at: string | null };
    };

    it("answers the earliest timer of the queues asked, after a time, leaving lease expiries out, and writes nothing", async () => {
      assert.deepEqual(await nextDue(null).then((d) => [d.queue, d.due_at]), [null, null]);
      await startAndClaim(h.sql, { leaseMs: 1_000 });
      await startRun(h.sql, { queue: "b", delayMs: 5_000 });
      await startRun(h.sql, { queue: "a", delayMs: 8_000 });
      const first = await nextDue(null);
      assert.deepEqual([first.queue, ms(first.due_at)], ["b", Date.parse(at(5_000))], "the 1 s lease expiry is no hint");
      assert.equal(ms(first.now), Date.parse(T0));
      assert.equal((await nextDue(["a"])).queue, "a");
      assert.equal((await nextDue(null, first.due_at)).queue, "a");
      assert.equal((await nextDue(null, at(8_000))).due_at, null);
      await setNow(h.sql, at(60_000));
      assert.equal((await nextDue(null)).queue, "b", "an overdue timer nobody promoted is still answered");
      assert.equal((await h.sql`select count(*)::int as n from aiki.runs where status = 'pending'`)[0]!.n, 0);
    });

    it("refuses an empty queue list (AK003)", async () => {
      await expectSqlState(h.sql`select aiki.next_due('{}'::text[])`, "AK003", /at least one queue/);
    });
  });

  describe("next_due_at", () => {
    it("is the earliest future timer of any kind and any queue", async () => {
      await startRun(h.sql, { delayMs: 50_000 });
      await startRun(h.sql, { delayMs: 40_000, queue: "elsewhere" });
      const sleeper = await startAndClaim(h.sql);
      await suspend(h.sql, sleeper, [{ key: "nap#1", kind: "sleep", name: "nap", duration_ms: 30_000 }]);
      assert.equal(ms((await claim(h.sql)).next_due_at), Date.parse(at(30_000)));
    });

    it("includes the lease expiry of a running run, which is when it could be reclaimed", async () => {
      await startAndClaim(h.sql, { worker: "w-a" });
      const result = await claim(h.sql, { leaseMs: 60_000 });
      assert.deepEqual(result.runs, []);
      assert.equal(ms(result.next_due_at), Date.parse(at(30_000)));
    });

    it("is null when nothing is scheduled", async () => {
      const run = await startAndClaim(h.sql);
      await completeRun(h.sql, run);
      assert.equal((await claim(h.sql)).next_due_at, null);
    });
  });

  describe("delayed start", () => {
    it("stays scheduled before its start time and becomes pending, then claimed, at it", async () => {
      const id = await startRun(h.sql, { delayMs: 10_000 });
      await setNow(h.sql, at(9_999));
      const early = await claim(h.sql);
      assert.deepEqual(early.runs, []);
      assert.equal(ms(early.next_due_at), Date.parse(at(10_000)));
      assert.equal(await status(h.sql, id), "scheduled");
      await setNow(h.sql, at(10_000));
      const run = await claimOne(h.sql, { expect: id });
      assert.equal(ms(run.started_at), Date.parse(at(10_000)));
    });

    it("is promoted to pending by a claim of another queue, so any live worker keeps timers moving", async () => {
      const id = await startRun(h.sql, { delayMs: 1000, queue: "slow" });
      await setNow(h.sql, at(1000));
      assert.deepEqual((await claim(h.sql, { queues: ["default"] })).runs, []);
      assert.equal(await status(h.sql, id), "pending");
      assert.equal(ms((await getRun(h.sql, id)).available_at), Date.parse(at(1000)), "keeps its due time for ordering");
    });
  });

  describe("sleep", () => {
    it("wakes when the clock passes its end: the claim promotes it and completes the sleep step", async () => {
      const run = await startAndClaim(h.sql);
      const r = await suspend(h.sql, run, [{ key: "nap#1", kind: "sleep", name: "nap", duration_ms: 60_000 }]);
      assert.equal(r.suspended, true);
      await setNow(h.sql, at(59_999));
      assert.deepEqual((await claim(h.sql)).runs, []);
      assert.equal(await status(h.sql, run.id), "sleeping");
      assert.equal((await step(h.sql, run.id, "nap#1"))!.status, "waiting");
      await setNow(h.sql, at(60_000));
      const again = await claimOne(h.sql, { expect: run.id });
      const nap = again.journal.find((s) => s.key === "nap#1")!;
      assert.equal(nap.status, "completed");
      assert.equal(nap.output, null);
      assert.equal(nap.wake_at, null);
      const [row] = await h.sql`select completed_at from aiki.steps where step_key = 'nap#1'`;
      assert.equal(ms(row!.completed_at), Date.parse(at(60_000)));
    });
  });

  describe("event wait timeout", () => {
    it("completes the wait with {timeout: true} when the clock passes the timeout", async () => {
      const run = await startAndClaim(h.sql);
      await suspend(h.sql, run, [{ key: "ok#1", kind: "event", name: "approved", timeout_ms: 5000 }]);
      assert.equal(await status(h.sql, run.id), "waiting");
      await setNow(h.sql, at(5000));
      const again = await claimOne(h.sql, { expect: run.id });
      const wait = again.journal.find((s) => s.key === "ok#1")!;
      assert.equal(wait.status, "completed");
      assert.deepEqual(wait.output, { timeout: true });
    });

    it("a wait without a timeout never times out", async () => {
      const run = await startAndClaim(h.sql);
      const r = await suspend(h.sql, run, [{ key: "ok#1", kind: "event", name: "approved" }]);
      assert.equal(r.available_at, null);
      await setNow(h.sql, at(10 * 365 * 24 * 3600 * 1000));
      assert.deepEqual((await claim(h.sql)).runs, []);
      assert.equal(await status(h.sql, run.id), "waiting");
    });
  });

  describe("lease expiry", () => {
    it("lets another worker reclaim the run; the old token then gets AK001", async () => {
      const first = await startAndClaim(h.sql, { worker: "w-a" });
      await setNow(h.sql, at(29_999));
      assert.deepEqual((await claim(h.sql, { worker: "w-b" })).runs, [], "not before the lease ends");
      await setNow(h.sql, at(30_000));
      const second = await claimOne(h.sql, { worker: "w-b", expect: first.id });
      assert.notEqual(second.lease_token, first.lease_token);
      assert.equal((await runRow(h.sql, first.id)).lease_expiries, 1);
      await expectSqlState(completeStep(h.sql, first, "a#1", "a", 1), "AK001",
        /^lease lost: run .* was claimed again by w-b$/);
      await expectSqlState(completeRun(h.sql, first), "AK001", /lease lost/);
      await completeRun(h.sql, second, "done");
      assert.equal(await status(h.sql, first.id), "completed");
    });

    it("an expired lease is lost even before anyone reclaims the run", async () => {
      const run = await startAndClaim(h.sql);
      await setNow(h.sql, at(30_000));
      await expectSqlState(completeStep(h.sql, run, "a#1", "a", 1), "AK001", /^lease lost: the lease on run .* expired at /);
    });

    it("fails the run as CrashLoop once its lease expired max_lease_expiries times", async () => {
      const id = await startRun(h.sql, { maxLeaseExpiries: 3 });
      let t = 0;
      for (let expiry = 1; expiry <= 2; expiry++) {
        await claimOne(h.sql, { expect: id, leaseMs: 1000 });
        t += 1000;
        await setNow(h.sql, at(t));
        await claim(h.sql, { limit: 1, queues: ["none"] });
        assert.equal(await status(h.sql, id), "pending");
        assert.equal((await runRow(h.sql, id)).lease_expiries, expiry);
      }
      await claimOne(h.sql, { expect: id, leaseMs: 1000 });
      await setNow(h.sql, at(t + 1000));
      assert.deepEqual((await claim(h.sql)).runs, [], "the crash-looping run is not handed out again");
      const run = await getRun(h.sql, id);
      assert.equal(run.status, "failed");
      assert.equal(run.error.name, "CrashLoop");
      assert.match(run.error.message, /lost its lease 3 times/);
      assert.equal(ms(run.finished_at), Date.parse(at(t + 1000)));
      assert.equal((await runRow(h.sql, id)).lease_token, null);
    });

    it("a release does not count as a lease expiry", async () => {
      const id = await startRun(h.sql, { maxLeaseExpiries: 1 });
      for (let i = 0; i < 3; i++) {
        const run = await claimOne(h.sql, { expect: id });
        await h.sql`select aiki.release(${run.id}::uuid, ${run.lease_token}::uuid)`;
      }
      assert.equal((await runRow(h.sql, id)).lease_expiries, 0);
      assert.equal(await status(h.sql, id), "pending");
    });
  });

  describe("run deadline", () => {
    it("caps the lease at the deadline, then fails the run with DeadlineExceeded", async () => {
      const id = await startRun(h.sql, { timeoutMs: 10_000 });
      const run = await claimOne(h.sql, { expect: id, leaseMs: 60_000 });
      assert.equal(ms(run.lease_expires_at), Date.parse(at(10_000)));
      await setNow(h.sql, at(10_000));
      await expectSqlState(completeRun(h.sql, run), "AK001", /expired/);
      assert.deepEqual((await claim(h.sql)).runs, []);
      const failed = await getRun(h.sql, id);
      assert.equal(failed.status, "failed");
      assert.equal(failed.error.name, "DeadlineExceeded");
      assert.match(failed.error.message, /run passed its deadline/);
    });

    it("heartbeats never extend a lease past the deadline", async () => {
      const run = await startAndClaim(h.sql, { timeoutMs: 10_000 });
      await setNow(h.sql, at(5_000));
      const renewed = await h.sql`select * from aiki.heartbeat('worker-1', 60000, ${[run.lease_token]}::uuid[])`;
      assert.equal(renewed.length, 1);
      assert.equal(ms(renewed[0]!.lease_expires_at), Date.parse(at(10_000)));
      assert.equal(run.id, renewed[0]!.run_id);
    });

    it("wakes a sleeping run at its deadline, not at its sleep's end, and fails it", async () => {
      const run = await startAndClaim(h.sql, { timeoutMs: 10_000 });
      const r = await suspend(h.sql, run, [{ key: "nap#1", kind: "sleep", name: "nap", duration_ms: 3_600_000 }]);
      assert.equal(ms(r.available_at), Date.parse(at(10_000)));
      await setNow(h.sql, at(10_000));
      await claim(h.sql);
      const failed = await getRun(h.sql, run.id);
      assert.equal(failed.status, "failed");
      assert.equal(failed.error.name, "DeadlineExceeded");
    });

    it("measures a delayed run's deadline from its start time, not from the start request", async () => {
      const id = await startRun(h.sql, { timeoutMs: 1000, delayMs: 5000 });
      assert.equal(ms((await getRun(h.sql, id)).deadline_at), Date.parse(at(6000)));
      await setNow(h.sql, at(5000));
      assert.deepEqual((await claim(h.sql)).runs.map((r: { id: string }) => r.id), [id]);
      await setNow(h.sql, at(6000));
      await claim(h.sql);
      assert.equal((await getRun(h.sql, id)).error.name, "DeadlineExceeded");
    });

    it("never hands out a pending run whose deadline already passed, and fails it", async () => {
      const id = await startRun(h.sql, { timeoutMs: 1000 });
      await setNow(h.sql, at(1000));
      assert.deepEqual((await claim(h.sql)).runs, [], "a worker could record nothing for it");
      const run = await getRun(h.sql, id);
      assert.equal(run.status, "failed");
      assert.equal(run.error.name, "DeadlineExceeded");
    });

    it("a claim that withheld an overdue run says to claim again at once (next_due_at = now)", async () => {
      const overdue = await startRun(h.sql, { timeoutMs: 1000 });
      await setNow(h.sql, at(500));
      const behind = await startRun(h.sql);
      await setNow(h.sql, at(1000));
      const first = await claim(h.sql, { limit: 1 });
      assert.deepEqual(first.runs, []);
      assert.equal(ms(first.next_due_at), Date.parse(at(1000)), "the worker must not sleep: runs are waiting");
      assert.equal(await status(h.sql, overdue), "failed");
      await claimOne(h.sql, { expect: behind });
    });
  });

  describe("retry delay", () => {
    it("a suspended task retry is pending again at retry_at, its step still retrying", async () => {
      const run = await startAndClaim(h.sql);
      const r = await failStep(h.sql, run, "pay#1", "pay", { message: "503" },
        { retry: { type: "fixed", maxAttempts: 3, baseDelayMs: 20_000 } });
      assert.equal(r.suspended, true);
      assert.equal(await status(h.sql, run.id), "retrying");
      await setNow(h.sql, at(19_999));
      assert.deepEqual((await claim(h.sql)).runs, []);
      await setNow(h.sql, at(20_000));
      const again = await claimOne(h.sql, { expect: run.id });
      assert.equal(again.journal[0]!.status, "retrying");
      assert.equal(again.journal[0]!.attempts, 1);
    });
  });
});

describe("claim and one run's data", () => {
  // A journal past what one jsonb value holds (256 MiB) makes building the claim's answer fail
  // with 54000; so does an answer over aiki.max_claim_bytes, a limit only the superuser these
  // tests run as may lower. Both take the same error path; the lowered limit spares building
  // 270 MB of JSON (15 s and as much temporary disk per claim) to reach it.
  const limitAnswer = (bytes: number) => h.sql`select set_config('aiki.max_claim_bytes', ${String(bytes)}, false)`;
  afterEach(() => h.sql`select set_config('aiki.max_claim_bytes', '', false)`);

  /** A pending run whose journal holds one task result of `bytes` bytes. */
  const withJournal = async (bytes: number, o: { priority?: number } = {}) => {
    const run = await startAndClaim(h.sql, o);
    await completeStep(h.sql, run, "big#1", "big", "x".repeat(bytes));
    await h.sql`select aiki.release(${run.id}::uuid, ${run.lease_token}::uuid)`;
    return run.id;
  };

  it("a run whose journal cannot be handed out fails; the runs behind it are claimed and due timers promoted", async () => {
    const poisoned = await withJournal(150_000, { priority: 10 });
    const a = await startRun(h.sql);
    const b = await startRun(h.sql);
    const timer = await startRun(h.sql, { queue: "timers", delayMs: 1000 });
    await setNow(h.sql, at(1000));
    await limitAnswer(100_000);

    const result = await claim(h.sql, { limit: 10 });
    assert.deepEqual(result.runs.map((r) => r.id).sort(), [a, b].sort(), "the healthy runs are claimed");
    for (const r of result.runs) assert.match(r.lease_token, /^[0-9a-f-]{36}$/);
    assert.equal(ms(result.next_due_at), Date.parse(at(1000)), "an answer built run by run asks for another claim now");
    assert.equal(await status(h.sql, timer), "pending", "the due timer was promoted, and stays promoted");
    const failed = await runRow(h.sql, poisoned);
    assert.equal(failed.status, "failed");
    assert.equal(failed.error.name, "JournalTooLarge");
    assert.equal(failed.error.code, "AK008");
    assert.match(failed.error.message,
      /^run .* cannot be handed to a worker: its journal of 1 steps is too large \(\d+ bytes of JSON, over the 100000 a claim can hand out\)$/);
    assert.deepEqual((await claim(h.sql, { limit: 10 })).runs, [], "nothing is left to claim in the queue");
  });

  it("runs that would take the answer over its limit are left pending for the next claim", async () => {
    // Rising priorities, so each set-up claim takes the newest run: the answer's order is 3, 2, 1.
    const [low, mid, high] = [await withJournal(40_000, { priority: 1 }), await withJournal(40_000, { priority: 2 }),
      await withJournal(40_000, { priority: 3 })];
    await limitAnswer(100_000);
    const first = await claim(h.sql, { limit: 10 });
    assert.deepEqual(first.runs.map((r) => r.id), [high, mid]);
    assert.equal(ms(first.next_due_at), Date.parse(T0), "claim again now");
    assert.equal(await status(h.sql, low), "pending");
    const second = await claim(h.sql, { limit: 10 });
    assert.deepEqual(second.runs.map((r) => r.id), [low]);
  });

  it("the limit cannot be lowered by a session that is not an admin's", async () => {
    // The worker session reads the real clock (it may not fake it either): start in the past.
    await setNow(h.sql, "2020-01-01T00:00:00.000Z");
    const id = await withJournal(150_000);
    const role = `max_claim_probe_${process.pid}`;
    await h.sql.unsafe(`create role ${role}; grant aiki_worker to ${role}`);
    try {
      const [row] = await h.sql.begin(async (tx) => {
        await tx.unsafe(`set local session authorization ${role}`);
        await tx`select set_config('aiki.max_claim_bytes', '1', true)`;
        return tx`select aiki.claim('w', null, '{default}', 1, 30000) as c`;
      });
      assert.deepEqual(row!.c.runs.map((r: { id: string }) => r.id), [id]);
    } finally {
      await h.sql.unsafe(`drop role ${role}`);
    }
  });
});

describe("heartbeat", () => {
  it("renews every lease the worker holds and presents, and only those", async () => {
    const a = await startAndClaim(h.sql, { worker: "w-a" });
    const b = await startAndClaim(h.sql, { worker: "w-a" });
    const other = await startAndClaim(h.sql, { worker: "w-b" });
    await setNow(h.sql, at(20_000));
    const tokens = [a.lease_token, b.lease_token, other.lease_token];
    const rows = await h.sql`select * from aiki.heartbeat('w-a', 30000, ${tokens}::uuid[]) order by run_id`;
    assert.deepEqual(rows.map((r) => r.run_id), [a.id, b.id].sort());
    for (const r of rows) {
      assert.equal(ms(r.lease_expires_at), Date.parse(at(50_000)));
      assert.ok([a.lease_token, b.lease_token].includes(r.lease_token), "the token stays the same");
    }
    assert.equal(ms((await runRow(h.sql, a.id)).available_at), Date.parse(at(50_000)));
    assert.equal(ms((await runRow(h.sql, other.id)).lease_expires_at), Date.parse(at(30_000)));
    await setNow(h.sql, at(40_000));
    await completeStep(h.sql, a, "x#1", "x", 1);
  });

  it("does not revive an expired lease", async () => {
    const run = await startAndClaim(h.sql, { worker: "w-a" });
    await setNow(h.sql, at(30_000));
    assert.equal((await h.sql`select * from aiki.heartbeat('w-a', 30000, ${[run.lease_token]}::uuid[])`).length, 0);
    await expectSqlState(completeStep(h.sql, run, "x#1", "x", 1), "AK001", /expired/);
  });

  it("renews no lease of another worker: naming its id without its tokens, or presenting them under another id", async () => {
    const theirs = await startAndClaim(h.sql, { worker: "w-b" });
    await setNow(h.sql, at(20_000));
    assert.deepEqual([...(await h.sql`select * from aiki.heartbeat('w-b', 86400000)`)], []);
    assert.deepEqual([...(await h.sql`select * from aiki.heartbeat('w-a', 86400000, ${[theirs.lease_token]}::uuid[])`)], []);
    assert.equal(ms((await runRow(h.sql, theirs.id)).lease_expires_at), Date.parse(at(30_000)));
  });

  it("without tokens renews nothing, and records the worker as alive", async () => {
    const run = await startAndClaim(h.sql, { worker: "w-a" });
    await setNow(h.sql, at(1000));
    assert.equal((await h.sql`select * from aiki.heartbeat('w-a', 30000, '{}')`).length, 0);
    assert.equal(ms((await runRow(h.sql, run.id)).lease_expires_at), Date.parse(at(30_000)));
    const [row] = await h.sql`select last_seen from aiki.workers where id = 'w-a'`;
    assert.equal(ms(row!.last_seen), Date.parse(at(1000)));
  });

  it("a new worker's first heartbeat forgets workers not seen for a day; others stay", async () => {
    for (const id of ["old-1", "old-2", "recent"]) await h.sql`select * from aiki.heartbeat(${id})`;
    await setNow(h.sql, at(3_600_000));
    await h.sql`select * from aiki.heartbeat('recent')`;
    await setNow(h.sql, at(86_400_001));
    await h.sql`select * from aiki.heartbeat('recent')`;
    const kept = async () => (await h.sql`select id from aiki.workers order by id`).map((r) => r.id);
    assert.deepEqual(await kept(), ["old-1", "old-2", "recent"], "a known worker's beat prunes nothing");
    await h.sql`select * from aiki.heartbeat('newcomer')`;
    assert.deepEqual(await kept(), ["newcomer", "recent"]);
  });

  it("records the worker as alive", async () => {
    await h.sql`select * from aiki.heartbeat('w-z')`;
    await setNow(h.sql, at(5000));
    await h.sql`select * from aiki.heartbeat('w-z')`;
    const [row] = await h.sql`select started_at, last_seen from aiki.workers where id = 'w-z'`;
    assert.equal(ms(row!.started_at), Date.parse(T0));
    assert.equal(ms(row!.last_seen), Date.parse(at(5000)));
  });
});

describe("release", () => {
  it("gives the run back, claimable at once, and fences the old token", async () => {
    const run = await startAndClaim(h.sql, { worker: "w-a" });
    await h.sql`select aiki.release(${run.id}::uuid, ${run.lease_token}::uuid)`;
    const row = await runRow(h.sql, run.id);
    assert.equal(row.status, "pending");
    assert.equal(row.lease_token, null);
    assert.equal(row.lease_owner, null);
    await expectSqlState(completeStep(h.sql, run, "x#1", "x", 1), "AK001", /^lease lost: run .* is pending$/);
    await claimOne(h.sql, { worker: "w-b", expect: run.id });
  });

  it("keeps the journal for the next worker", async () => {
    const run = await startAndClaim(h.sql);
    await completeStep(h.sql, run, "x#1", "x", 42);
    await h.sql`select aiki.release(${run.id}::uuid, ${run.lease_token}::uuid)`;
    assert.equal((await claimOne(h.sql, { expect: run.id })).journal[0]!.output, 42);
  });
});
