// aiki.suspend and its one-wait forms aiki.sleep, aiki.wait_event and aiki.wait_child: how a
// run registers what it waits for, what resolves at once, and how it is released meanwhile.
import { after, before, beforeEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  at, claim, claimOne, completeRun, completeStep, expectSqlState, getRun, harness, ms, reset, runRow,
  sendEvent, setNow, startAndClaim, startChildren, status, step, suspend, tableCounts, type Harness,
} from "./support.js";

let h: Harness;
before(async () => {
  h = await harness();
});
after(() => h.close());
beforeEach(() => reset(h.sql));

const nap = (ms: number, key = "nap#1") => ({ key, kind: "sleep", name: "nap", duration_ms: ms });
const event = (name: string, key = `${name}#1`, timeout_ms?: number) => ({ key, kind: "event", name, timeout_ms });

describe("suspend", () => {
  it("with only sleeps, releases the run as sleeping until the earliest one ends", async () => {
    const run = await startAndClaim(h.sql);
    const r = await suspend(h.sql, run, [nap(5000, "a#1"), nap(2000, "b#1")]);
    assert.deepEqual({ ...r, available_at: ms(r.available_at) }, { suspended: true, available_at: Date.parse(at(2000)) });
    const row = await runRow(h.sql, run.id);
    assert.equal(row.status, "sleeping");
    assert.equal(ms(row.available_at), Date.parse(at(2000)));
    assert.equal(row.lease_token, null);
    assert.equal(row.lease_owner, null);
    const journal = (await getRun(h.sql, run.id)).journal;
    assert.deepEqual(journal.map((s) => [s.key, s.kind, s.status, ms(s.wake_at)]), [
      ["a#1", "sleep", "waiting", Date.parse(at(5000))],
      ["b#1", "sleep", "waiting", Date.parse(at(2000))],
    ]);
  });

  it("with an event wait, releases the run as waiting; without a timeout it has no timer", async () => {
    const run = await startAndClaim(h.sql);
    const r = await suspend(h.sql, run, [event("approved")]);
    assert.deepEqual(r, { suspended: true, available_at: null });
    const row = await runRow(h.sql, run.id);
    assert.equal(row.status, "waiting");
    assert.equal(row.available_at, null);
  });

  it("a sleep and an event together: waiting, due at the earlier of the sleep end and the timeout", async () => {
    const run = await startAndClaim(h.sql);
    const r = await suspend(h.sql, run, [nap(9000), event("approved", "ok#1", 4000)]);
    assert.equal(ms(r.available_at), Date.parse(at(4000)));
    assert.equal(await status(h.sql, run.id), "waiting");
  });

  it("fences the lease: the suspended worker can write nothing more", async () => {
    const run = await startAndClaim(h.sql);
    await suspend(h.sql, run, [nap(1000)]);
    await expectSqlState(completeStep(h.sql, run, "x#1", "x", 1), "AK001", /^lease lost: run .* is sleeping$/);
  });

  it("a zero-length sleep resolves at once and the run keeps running", async () => {
    const run = await startAndClaim(h.sql);
    const r = await suspend(h.sql, run, [nap(0)]);
    assert.equal(r.suspended, false);
    assert.deepEqual(r.resolved.map((s: any) => [s.key, s.status]), [["nap#1", "completed"]]);
    assert.equal(await status(h.sql, run.id), "running");
    await completeRun(h.sql, run);
  });

  it("a wait the journal already completed resolves at once, on replay", async () => {
    const run = await startAndClaim(h.sql);
    await suspend(h.sql, run, [nap(1000)]);
    await setNow(h.sql, at(1000));
    const again = await claimOne(h.sql, { expect: run.id });
    const before = await tableCounts(h.sql);
    const r = await suspend(h.sql, again, [nap(1000)]);
    assert.equal(r.suspended, false);
    assert.equal(r.resolved[0].status, "completed");
    assert.deepEqual(await tableCounts(h.sql), before, "replaying a completed wait writes nothing");
  });

  it("a wait already in the journal keeps its first deadline when the code asks again (replay-safe)", async () => {
    const run = await startAndClaim(h.sql);
    await suspend(h.sql, run, [nap(60_000), event("poke")]);
    await setNow(h.sql, at(30_000));
    await sendEvent(h.sql, run.id, "poke");
    const again = await claimOne(h.sql, { expect: run.id });
    const r = await suspend(h.sql, again, [nap(60_000), event("poke", "poke#2")]);
    assert.equal(ms(r.available_at), Date.parse(at(60_000)), "not 60 s after the replay");
    assert.equal(ms((await step(h.sql, run.id, "nap#1"))!.wake_at), Date.parse(at(60_000)));
  });

  it("resolves the waits it can and reports them; the rest stay open", async () => {
    const run = await startAndClaim(h.sql);
    await sendEvent(h.sql, run.id, "a", "A");
    const r = await suspend(h.sql, run, [event("a"), event("b")]);
    assert.equal(r.suspended, false);
    assert.deepEqual(r.resolved.map((s: any) => [s.key, s.output]), [["a#1", { data: "A" }]]);
    assert.equal((await step(h.sql, run.id, "b#1"))!.status, "waiting");
    assert.equal(await status(h.sql, run.id), "running");
  });

  it("never waits past the run's deadline", async () => {
    const run = await startAndClaim(h.sql, { timeoutMs: 3000 });
    const r = await suspend(h.sql, run, [event("never")]);
    assert.equal(ms(r.available_at), Date.parse(at(3000)));
  });

  it("wakes when any sleep or event wait resolves", async () => {
    const run = await startAndClaim(h.sql);
    await suspend(h.sql, run, [event("a"), event("b"), nap(60_000)]);
    await sendEvent(h.sql, run.id, "b", 2);
    assert.equal(await status(h.sql, run.id), "pending");
    const again = await claimOne(h.sql, { expect: run.id });
    const byKey = Object.fromEntries(again.journal.map((s) => [s.key, s.status]));
    assert.deepEqual(byKey, { "a#1": "waiting", "b#1": "completed", "nap#1": "waiting" });
  });
});

describe("sleep", () => {
  it("is suspend with one sleep", async () => {
    const run = await startAndClaim(h.sql);
    const [row] = await h.sql`select aiki.sleep(${run.id}::uuid, ${run.lease_token}::uuid, 'feedback#1', 'feedback', 86400000) as r`;
    assert.equal(row!.r.suspended, true);
    assert.equal(ms(row!.r.available_at), Date.parse(at(86_400_000)));
    const s = (await step(h.sql, run.id, "feedback#1"))!;
    assert.equal(s.kind, "sleep");
    assert.equal(s.name, "feedback");
    await setNow(h.sql, at(86_400_000));
    await claimOne(h.sql, { expect: run.id });
    assert.equal((await step(h.sql, run.id, "feedback#1"))!.status, "completed");
  });
});

describe("wait_event", () => {
  it("is suspend with one event wait; a null timeout waits forever", async () => {
    const run = await startAndClaim(h.sql);
    const [row] = await h.sql`select aiki.wait_event(${run.id}::uuid, ${run.lease_token}::uuid, 'ok#1', 'accepted') as r`;
    assert.deepEqual(row!.r, { suspended: true, available_at: null });
    assert.equal((await step(h.sql, run.id, "ok#1"))!.wake_at, null);
  });

  it("times out with {timeout: true}", async () => {
    const run = await startAndClaim(h.sql);
    await h.sql`select aiki.wait_event(${run.id}::uuid, ${run.lease_token}::uuid, 'ok#1', 'accepted', 300000)`;
    await setNow(h.sql, at(300_000));
    const again = await claimOne(h.sql, { expect: run.id });
    assert.deepEqual(again.journal[0]!.output, { timeout: true });
  });

  it("an event that arrives after the timeout fired is buffered for the next wait", async () => {
    const run = await startAndClaim(h.sql);
    await h.sql`select aiki.wait_event(${run.id}::uuid, ${run.lease_token}::uuid, 'ok#1', 'accepted', 1000)`;
    await setNow(h.sql, at(1000));
    const again = await claimOne(h.sql, { expect: run.id });
    await sendEvent(h.sql, run.id, "accepted", "late");
    assert.deepEqual((await step(h.sql, run.id, "ok#1"))!.output, { timeout: true });
    const [row] = await h.sql`select aiki.wait_event(${again.id}::uuid, ${again.lease_token}::uuid, 'ok#2', 'accepted') as r`;
    assert.deepEqual(row!.r.resolved[0].output, { data: "late" });
  });
});

describe("wait_child", () => {
  it("is suspend with one child wait, named after the child's workflow", async () => {
    const parent = await startAndClaim(h.sql);
    const [child] = await startChildren(h.sql, parent, [{ key: "kid#1", workflow: "kid", version: "1" }]);
    const [row] = await h.sql`select aiki.wait_child(${parent.id}::uuid, ${parent.lease_token}::uuid, 'kid-wait#1', ${child!}::uuid) as r`;
    assert.deepEqual(row!.r, { suspended: true, available_at: null });
    const s = (await step(h.sql, parent.id, "kid-wait#1"))!;
    assert.deepEqual([s.kind, s.name, s.child_id, s.status], ["wait_child", "kid", child, "waiting"]);
    assert.equal(await status(h.sql, parent.id), "waiting");
  });

  it("resolves at once when the child already finished", async () => {
    const parent = await startAndClaim(h.sql);
    const [childId] = await startChildren(h.sql, parent, [{ key: "kid#1", workflow: "kid", version: "1" }]);
    const child = await claimOne(h.sql, { worker: "w-2", expect: childId });
    await completeRun(h.sql, child, { ok: true });
    const [row] = await h.sql`select aiki.wait_child(${parent.id}::uuid, ${parent.lease_token}::uuid, 'w#1', ${childId!}::uuid) as r`;
    assert.equal(row!.r.suspended, false);
    assert.deepEqual(row!.r.resolved[0].output, { status: "completed", output: { ok: true }, error: null });
    assert.equal(await status(h.sql, parent.id), "running");
  });

  it("with some children finished and others not: journals the finished, releases the run until the last", async () => {
    const parent = await startAndClaim(h.sql);
    const [a, b] = await startChildren(h.sql, parent, [
      { key: "a#1", workflow: "kid", version: "1" }, { key: "b#1", workflow: "kid", version: "1" }]);
    await completeRun(h.sql, await claimOne(h.sql, { worker: "w-2", expect: a }), { ok: "a" });
    const kid = (key: string, child_id: string) => ({ key, kind: "wait_child", name: "kid", child_id });
    const r = await suspend(h.sql, parent, [kid("a-wait#1", a!), kid("b-wait#1", b!)]);
    assert.deepEqual(r, { suspended: true, available_at: null });
    assert.deepEqual((await step(h.sql, parent.id, "a-wait#1"))!.output, { status: "completed", output: { ok: "a" }, error: null });
    assert.equal(await status(h.sql, parent.id), "waiting");
    await completeRun(h.sql, await claimOne(h.sql, { worker: "w-2", expect: b }), { ok: "b" });
    assert.equal(await status(h.sql, parent.id), "pending");
  });

  it("a claim does not time out a child wait (it has no timer)", async () => {
    const parent = await startAndClaim(h.sql);
    const [child] = await startChildren(h.sql, parent, [{ key: "kid#1", workflow: "kid", version: "1", queue: "kids" }]);
    await h.sql`select aiki.wait_child(${parent.id}::uuid, ${parent.lease_token}::uuid, 'w#1', ${child!}::uuid)`;
    await setNow(h.sql, at(365 * 24 * 3600 * 1000));
    assert.deepEqual((await claim(h.sql)).runs, []);
    assert.equal(await status(h.sql, parent.id), "waiting");
  });
});
