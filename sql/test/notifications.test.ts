// Wake-ups: `aiki_wake` (payload: the queue name) is notified by every act that makes a run
// claimable now, at most once per queue per transaction. A run due later that no worker set a
// timer for itself (a start in the future, a resume until a retry time) is announced as
// "<queue> <due time>", so idle workers arm their wake timer instead of waiting for the poll.
// `aiki_status` (payload: "<run id> <status>") tells waitForStatus clients to look again.
import { after, afterEach, before, beforeEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  at, cancel, claim, claimOne, completeRun, failRun, harness, jsonb, listen, reset, sendEvent, setNow,
  startAndClaim, startChildren, startRun, suspend, type Harness, type Listener,
} from "./support.js";

let h: Harness;
let wake: Listener;
before(async () => {
  h = await harness();
});
after(() => h.close());
beforeEach(async () => {
  await reset(h.sql);
  wake = await listen(h.db.sql, "aiki_wake");
  await wake.drain();
});
afterEach(() => wake.close());

describe("aiki_wake", () => {
  it("start_workflow of a run claimable now notifies its queue", async () => {
    await startRun(h.sql, { queue: "orders" });
    assert.deepEqual(await wake.drain(), ["orders"]);
  });

  it("a delayed start and a start in the future announce their due time, not a claimable run", async () => {
    await startRun(h.sql, { queue: "orders", delayMs: 1000 });
    await startRun(h.sql, { queue: "orders", startAt: "2030-01-01T00:00:05.000400Z" });
    assert.deepEqual(await wake.drain(), ["orders 2030-01-01T00:00:01.000Z", "orders 2030-01-01T00:00:05.001Z"],
      "due times are rounded up to the millisecond, so a timer armed on them never fires early");
  });

  it("a repeated idempotent start does not notify again", async () => {
    await startRun(h.sql, { idempotencyKey: "k" });
    await wake.drain();
    await startRun(h.sql, { idempotencyKey: "k" });
    assert.deepEqual(await wake.drain(), []);
  });

  it("many starts in one transaction notify once per queue", async () => {
    await h.sql.begin(async (tx) => {
      for (let i = 0; i < 10; i++) await tx`select aiki.start_workflow('wf', '1', ${jsonb(tx, i)}, null, 'a')`;
      for (let i = 0; i < 5; i++) await tx`select aiki.start_workflow('wf', '1', ${jsonb(tx, i)}, null, 'b')`;
      await tx`select aiki.start_workflow('wf', '1', 'null', null, 'c', 0, null, 60000)`;
    });
    assert.deepEqual((await wake.drain()).sort(), ["a", "b", "c 2030-01-01T00:01:00.000Z"]);
  });

  it("a rolled-back start does not notify", async () => {
    await h.sql.begin(async (tx) => {
      await tx`select aiki.start_workflow('wf', '1')`;
      await tx`select 1/0`;
    }).catch(() => {});
    assert.deepEqual(await wake.drain(), []);
  });

  it("start_children of 20 children notifies each queue once", async () => {
    const parent = await startAndClaim(h.sql, { queue: "parents" });
    await wake.drain();
    await startChildren(h.sql, parent, [
      ...Array.from({ length: 20 }, (_, i) => ({ key: `k#${i}`, workflow: "kid", version: "1", queue: "kids" })),
      { key: "other#1", workflow: "kid", version: "1", queue: "other" },
    ]);
    assert.deepEqual((await wake.drain()).sort(), ["kids", "other"]);
  });

  it("a claim that promotes due timers notifies their queues once each", async () => {
    for (let i = 0; i < 3; i++) await startRun(h.sql, { queue: "later", delayMs: 1000 });
    await startRun(h.sql, { queue: "also", delayMs: 500 });
    await startRun(h.sql, { queue: "not-yet", delayMs: 5000 });
    await wake.drain();
    await setNow(h.sql, at(1000));
    await claim(h.sql, { queues: ["unrelated"] });
    assert.deepEqual((await wake.drain()).sort(), ["also", "later"]);
  });

  it("a claim that promotes due timers and leases them all notifies nobody (its worker would only claim in vain)", async () => {
    await startRun(h.sql, { queue: "later", delayMs: 1000 });
    await startRun(h.sql, { queue: "later", delayMs: 1000 });
    await wake.drain();
    await setNow(h.sql, at(1000));
    const first = await claim(h.sql, { queues: ["later"], limit: 1 });
    assert.equal(first.runs.length, 1);
    assert.deepEqual(await wake.drain(), ["later"], "one promoted run is left pending: its queue is told");
    await startRun(h.sql, { queue: "soon", delayMs: 500 });
    await wake.drain();
    await setNow(h.sql, at(1500));
    assert.equal((await claim(h.sql, { queues: ["soon"], limit: 5 })).runs.length, 1);
    assert.deepEqual(await wake.drain(), []);
  });

  it("suspending does not notify; the event that wakes the run does", async () => {
    const run = await startAndClaim(h.sql, { queue: "q1" });
    await wake.drain();
    await suspend(h.sql, run, [{ key: "e#1", kind: "event", name: "go" }]);
    assert.deepEqual(await wake.drain(), []);
    await sendEvent(h.sql, run.id, "other");
    assert.deepEqual(await wake.drain(), [], "a buffered event wakes nobody");
    await sendEvent(h.sql, run.id, "go");
    assert.deepEqual(await wake.drain(), ["q1"]);
  });

  it("a child's outcome that wakes its parent notifies the parent's queue", async () => {
    const parent = await startAndClaim(h.sql, { queue: "parents" });
    const [child] = await startChildren(h.sql, parent, [{ key: "k#1", workflow: "kid", version: "1", queue: "kids" }]);
    await suspend(h.sql, parent, [{ key: "w#1", kind: "wait_child", name: "kid", child_id: child }]);
    const c = await claimOne(h.sql, { queues: ["kids"], expect: child });
    await wake.drain();
    await completeRun(h.sql, c);
    assert.deepEqual(await wake.drain(), ["parents"]);
  });

  it("release and resume notify; a retry due later does not; a retry due now does", async () => {
    const run = await startAndClaim(h.sql, { queue: "q", retry: { type: "fixed", maxAttempts: 3, baseDelayMs: 1000 } });
    await wake.drain();
    await h.sql`select aiki.release(${run.id}::uuid, ${run.lease_token}::uuid)`;
    assert.deepEqual(await wake.drain(), ["q"]);

    const again = await claimOne(h.sql, { queues: ["q"], expect: run.id });
    await h.sql`select aiki.pause(${run.id}::uuid)`;
    await wake.drain();
    await h.sql`select aiki.resume(${run.id}::uuid)`;
    assert.deepEqual(await wake.drain(), ["q"]);

    const third = await claimOne(h.sql, { queues: ["q"], expect: run.id });
    await failRun(h.sql, third, { message: "later" });
    assert.deepEqual(await wake.drain(), [], "the worker that failed the run learns retry_at from fail_run");
    assert.ok(again);

    await h.sql`select aiki.pause(${run.id}::uuid)`;
    await wake.drain();
    await h.sql`select aiki.resume(${run.id}::uuid)`;
    assert.deepEqual(await wake.drain(), ["q 2030-01-01T00:00:01.000Z"], "resumed until its retry time: announced");

    const now = await startAndClaim(h.sql, { queue: "r", retry: { type: "fixed", maxAttempts: 2, baseDelayMs: 0 } });
    await wake.drain();
    await failRun(h.sql, now, { message: "at once" });
    assert.deepEqual(await wake.drain(), ["r"]);
  });

  it("a keyed or queue-limited run that finishes or suspends notifies its queue; an unlimited, unkeyed one does not", async () => {
    const keyed = await startAndClaim(h.sql, { queue: "keyed", concurrencyKey: "customer-1" });
    await startRun(h.sql, { queue: "keyed", concurrencyKey: "customer-1" });
    await wake.drain();
    await completeRun(h.sql, keyed);
    assert.deepEqual(await wake.drain(), ["keyed"], "the run waiting for the key is claimable now");

    await h.sql`select aiki.set_queue('limited', 1)`;
    const limited = await startAndClaim(h.sql, { queue: "limited" });
    await wake.drain();
    await suspend(h.sql, limited, [{ key: "nap#1", kind: "sleep", name: "nap", duration_ms: 60_000 }]);
    assert.deepEqual(await wake.drain(), ["limited"], "the queue's slot is free again");

    const plain = await startAndClaim(h.sql, { queue: "plain" });
    await wake.drain();
    await completeRun(h.sql, plain);
    assert.deepEqual(await wake.drain(), []);
  });

  it("pausing a running keyed or queue-limited run frees its slot and notifies its queue", async () => {
    const keyed = await startAndClaim(h.sql, { queue: "keyed", concurrencyKey: "customer-1" });
    await startRun(h.sql, { queue: "keyed", concurrencyKey: "customer-1" });
    await wake.drain();
    await h.sql`select aiki.pause(${keyed.id}::uuid)`;
    assert.deepEqual(await wake.drain(), ["keyed"], "the run waiting for the key is claimable now");

    await h.sql`select aiki.set_queue('limited', 1)`;
    const limited = await startAndClaim(h.sql, { queue: "limited" });
    await wake.drain();
    await h.sql`select aiki.pause(${limited.id}::uuid)`;
    assert.deepEqual(await wake.drain(), ["limited"]);
  });

  it("cancelling a parent frees the slots of its running keyed or queue-limited descendants and notifies their queues", async () => {
    await h.sql`select aiki.set_queue('limited', 1)`;
    const parent = await startAndClaim(h.sql, { queue: "parents" });
    const [keyedKid, limitedKid] = await startChildren(h.sql, parent, [
      { key: "k#1", workflow: "kid", version: "1", queue: "keyed", concurrency_key: "customer-1" },
      { key: "l#1", workflow: "kid", version: "1", queue: "limited" },
    ]);
    await claimOne(h.sql, { queues: ["keyed"], expect: keyedKid });
    await claimOne(h.sql, { queues: ["limited"], expect: limitedKid });
    await wake.drain();
    await cancel(h.sql, parent.id);
    assert.deepEqual((await wake.drain()).sort(), ["keyed", "limited"]);
  });

  it("pausing or cancelling a running keyed run frees its slot and notifies; so does a cancelled running descendant", async () => {
    const paused = await startAndClaim(h.sql, { queue: "keyed", concurrencyKey: "customer-1" });
    await startRun(h.sql, { queue: "keyed", concurrencyKey: "customer-1" });
    await wake.drain();
    await h.sql`select aiki.pause(${paused.id}::uuid)`;
    assert.deepEqual(await wake.drain(), ["keyed"]);

    const cancelled = await startAndClaim(h.sql, { queue: "k2", concurrencyKey: "c" });
    await wake.drain();
    await cancel(h.sql, cancelled.id);
    assert.deepEqual(await wake.drain(), ["k2"]);

    await h.sql`select aiki.set_queue('kids', 1)`;
    const parent = await startAndClaim(h.sql, { queue: "parents" });
    const [kid] = await startChildren(h.sql, parent, [{ key: "k#1", workflow: "kid", version: "1", queue: "kids" }]);
    await claimOne(h.sql, { queues: ["kids"], expect: kid });
    await wake.drain();
    await cancel(h.sql, parent.id);
    assert.deepEqual(await wake.drain(), ["kids"], "the running child held the kids queue's only slot");

    const idle = await startRun(h.sql, { queue: "keyed3", concurrencyKey: "x" });
    await wake.drain();
    await h.sql`select aiki.pause(${idle}::uuid)`;
    assert.deepEqual(await wake.drain(), [], "a pending run held no slot");
  });

  it("set_queue and resume_queue notify; pause_queue does not", async () => {
    await h.sql`select aiki.pause_queue('q')`;
    assert.deepEqual(await wake.drain(), []);
    await h.sql`select aiki.set_queue('q', 5)`;
    assert.deepEqual(await wake.drain(), ["q"]);
    await h.sql`select aiki.resume_queue('q')`;
    assert.deepEqual(await wake.drain(), ["q"]);
  });
});

describe("aiki_status", () => {
  it("reports terminal outcomes, pauses and resumes as '<run id> <status>'", async () => {
    const status = await listen(h.db.sql, "aiki_status");
    try {
      await status.drain();
      const a = await startAndClaim(h.sql);
      await completeRun(h.sql, a);
      const b = await startRun(h.sql);
      await h.sql`select aiki.pause(${b}::uuid)`;
      await h.sql`select aiki.resume(${b}::uuid)`;
      await cancel(h.sql, b);
      assert.deepEqual(await status.drain(), [
        `${a.id} completed`, `${b} paused`, `${b} pending`, `${b} cancelled`,
      ]);
    } finally {
      await status.close();
    }
  });

  it("a cascading cancel reports every cancelled descendant", async () => {
    const status = await listen(h.db.sql, "aiki_status");
    try {
      const parent = await startAndClaim(h.sql);
      const kids = await startChildren(h.sql, parent, [
        { key: "a#1", workflow: "kid", version: "1", queue: "kids" },
        { key: "b#1", workflow: "kid", version: "1", queue: "kids" },
      ]);
      await status.drain();
      await cancel(h.sql, parent.id);
      assert.deepEqual((await status.drain()).sort(), [parent.id, ...kids].map((id) => `${id} cancelled`).sort());
    } finally {
      await status.close();
    }
  });
});
