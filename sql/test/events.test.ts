// aiki.send_event: the per-run inbox — buffering, per-name order, idempotency, and waking.
import { after, before, beforeEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  claimOne, completeRun, expectRejected, harness, listen, reset, sendEvent, startAndClaim, startRun, status,
  step, suspend, tableCounts, type Harness,
} from "./support.js";

let h: Harness;
before(async () => {
  h = await harness();
});
after(() => h.close());
beforeEach(() => reset(h.sql));

const event = (name: string, key = `${name}#1`, timeout_ms?: number) => ({ key, kind: "event", name, timeout_ms });

describe("send_event", () => {
  it("buffers an event sent before anyone waits, and the next wait receives it at once", async () => {
    const run = await startAndClaim(h.sql);
    const id = await sendEvent(h.sql, run.id, "accepted", { eta: 25 });
    const [buffered] = await h.sql`select * from aiki.events where id = ${id}`;
    assert.equal(buffered!.consumed_by, null);
    assert.deepEqual(buffered!.data, { eta: 25 });
    assert.equal(await status(h.sql, run.id), "running", "an event alone does not move a running run");

    const r = await suspend(h.sql, run, [event("accepted")]);
    assert.equal(r.suspended, false);
    assert.deepEqual(r.resolved[0].output, { data: { eta: 25 } });
    const [consumed] = await h.sql`select consumed_by, consumed_at from aiki.events where id = ${id}`;
    assert.equal(consumed!.consumed_by, "accepted#1");
    assert.ok(consumed!.consumed_at);
  });

  it("buffers events for a run that has not started yet", async () => {
    const id = await startRun(h.sql, { delayMs: 60_000 });
    await sendEvent(h.sql, id, "early", 1);
    assert.equal(await status(h.sql, id), "scheduled");
    const [row] = await h.sql`select count(*)::int as n from aiki.events where run_id = ${id}::uuid and consumed_by is null`;
    assert.equal(row!.n, 1);
  });

  it("delivers events of one name in the order they were sent, independently of other names", async () => {
    const run = await startAndClaim(h.sql);
    await sendEvent(h.sql, run.id, "tick", 1);
    await sendEvent(h.sql, run.id, "tock", "a");
    await sendEvent(h.sql, run.id, "tick", 2);
    await sendEvent(h.sql, run.id, "tick", 3);
    const got = [];
    for (let i = 1; i <= 3; i++) {
      const r = await suspend(h.sql, run, [event("tick", `tick#${i}`)]);
      got.push(r.resolved[0].output.data);
    }
    assert.deepEqual(got, [1, 2, 3]);
    const r = await suspend(h.sql, run, [event("tock")]);
    assert.equal(r.resolved[0].output.data, "a");
  });

  it("an idempotency key makes a resend a no-op that returns the first event's id", async () => {
    const run = await startAndClaim(h.sql);
    const first = await sendEvent(h.sql, run.id, "paid", { amount: 1 }, "payment-7");
    const before = await tableCounts(h.sql);
    const again = await sendEvent(h.sql, run.id, "paid", { amount: 999 }, "payment-7");
    assert.equal(again, first);
    assert.deepEqual(await tableCounts(h.sql), before);
    const other = await sendEvent(h.sql, run.id, "refunded", null, "payment-7");
    assert.notEqual(other, first, "the key is scoped to the event name");
  });

  it("a resend after the event was consumed is still a no-op", async () => {
    const run = await startAndClaim(h.sql);
    await suspend(h.sql, run, [event("paid")]);
    const first = await sendEvent(h.sql, run.id, "paid", 1, "k");
    const again = await claimOne(h.sql, { expect: run.id });
    assert.equal(await sendEvent(h.sql, run.id, "paid", 1, "k"), first);
    const r = await suspend(h.sql, again, [event("paid", "paid#2")]);
    assert.equal(r.suspended, true, "the duplicate did not become a second event");
  });

  it("to a run already waiting: completes the wait, wakes the run (waiting → pending) and notifies its queue", async () => {
    const run = await startAndClaim(h.sql, { queue: "orders" });
    await suspend(h.sql, run, [event("accepted", "ok#1", 60_000)]);
    assert.equal(await status(h.sql, run.id), "waiting");
    const wake = await listen(h.db.sql, "aiki_wake");
    try {
      await wake.drain();
      await sendEvent(h.sql, run.id, "accepted", { eta: 5 });
      assert.deepEqual(await wake.drain(), ["orders"]);
    } finally {
      await wake.close();
    }
    assert.equal(await status(h.sql, run.id), "pending");
    const s = (await step(h.sql, run.id, "ok#1"))!;
    assert.equal(s.status, "completed");
    assert.deepEqual(s.output, { data: { eta: 5 } });
    assert.equal(s.wake_at, null, "the timeout is disarmed");
    const [row] = await h.sql`select consumed_by from aiki.events`;
    assert.equal(row!.consumed_by, "ok#1");
  });

  it("goes to the oldest open wait of its name", async () => {
    const run = await startAndClaim(h.sql);
    await suspend(h.sql, run, [event("go", "go#1"), event("go", "go#2")]);
    await sendEvent(h.sql, run.id, "go", "first");
    assert.equal((await step(h.sql, run.id, "go#1"))!.status, "completed");
    assert.equal((await step(h.sql, run.id, "go#2"))!.status, "waiting");
  });

  it("to a sleeping run: buffered, and the run sleeps on", async () => {
    const run = await startAndClaim(h.sql);
    await suspend(h.sql, run, [{ key: "nap#1", kind: "sleep", name: "nap", duration_ms: 1000 }]);
    await sendEvent(h.sql, run.id, "poke");
    assert.equal(await status(h.sql, run.id), "sleeping");
  });

  it("to a paused run with an open wait: the wait takes it, the run stays paused", async () => {
    const run = await startAndClaim(h.sql);
    await suspend(h.sql, run, [event("go")]);
    await h.sql`select aiki.pause(${run.id}::uuid)`;
    await sendEvent(h.sql, run.id, "go", 1);
    assert.equal(await status(h.sql, run.id), "paused");
    assert.equal((await step(h.sql, run.id, "go#1"))!.status, "completed");
  });

  it("to a finished run is AK005 and writes nothing", async () => {
    const run = await startAndClaim(h.sql);
    await completeRun(h.sql, run);
    await expectRejected(h.sql, () => sendEvent(h.sql, run.id, "late"), "AK005",
      /^run .* is completed and takes no more events$/);
  });

  it("live events go to open waits of one name in wait creation order, not step key text order", async () => {
    const run = await startAndClaim(h.sql);
    const keys = Array.from({ length: 12 }, (_, i) => `vote#${i + 1}`);
    await suspend(h.sql, run, keys.map((key) => event("vote", key)));
    for (let i = 1; i <= 12; i++) await sendEvent(h.sql, run.id, "vote", i);
    for (const [i, key] of keys.entries()) {
      assert.deepEqual((await step(h.sql, run.id, key))!.output, { data: i + 1 }, `${key} takes event ${i + 1}`);
    }
  });

  it("a wait created by a later suspend is served after the older ones, even at the same clock time", async () => {
    const run = await startAndClaim(h.sql);
    await suspend(h.sql, run, [event("vote", "vote#9"), event("other", "other#1")]);
    await sendEvent(h.sql, run.id, "other");
    const again = await claimOne(h.sql, { expect: run.id });
    await suspend(h.sql, again, [event("vote", "vote#10")]);
    await sendEvent(h.sql, run.id, "vote", "first");
    assert.equal((await step(h.sql, run.id, "vote#9"))!.status, "completed");
    assert.equal((await step(h.sql, run.id, "vote#10"))!.status, "waiting");
  });

  it("a full inbox (10,000 events no wait took) refuses another with AK009 and writes nothing; a wait still takes one", async () => {
    const run = await startRun(h.sql);
    // 9,999 buffered events inserted directly (fast), then the 10,000th through send_event.
    await h.sql`
      insert into aiki.events (run_id, name, data, created_at)
      select ${run}::uuid, 'tick', to_jsonb(i), aiki.now() from generate_series(1, 9999) i`;
    await sendEvent(h.sql, run, "tick", 10000);
    await expectRejected(h.sql, () => sendEvent(h.sql, run, "tick", 10001), "AK009",
      /^inbox of run .* is full: 10000 events wait for a wait to take them$/);
    const claimed = await claimOne(h.sql, { expect: run });
    const r = await suspend(h.sql, claimed, [event("tick")]);
    assert.deepEqual(r.resolved[0].output, { data: 1 });
    await sendEvent(h.sql, run, "tick", 10001);
  });
});
