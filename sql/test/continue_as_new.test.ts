// aiki.continue_as_new — a run hands its work to a successor with a new input and an empty
// journal: fenced by the lease, linked both ways, found by the first run's idempotency key, and
// standing for one run to parents (woken by the chain's last run), events and cancel.
import { after, before, beforeEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  claimOne, completeRun, completeStep, expectSqlState, getRun, harness, jsonb, listen, reset, runRow, sendEvent,
  startAndClaim, startChildren, startRun, startWorkflow, status, step, suspend, type Harness, type Lease, type Sql,
} from "./support.js";

let h: Harness;
before(async () => {
  h = await harness();
});
after(() => h.close());
beforeEach(() => reset(h.sql));

async function continueAsNew(sql: Sql, r: Lease, input: unknown, version: string | null = null): Promise<string> {
  const [row] = await sql<{ id: string }[]>`
    select aiki.continue_as_new(${r.id}::uuid, ${r.lease_token}::uuid, ${jsonb(sql, input)}, ${version}::text) as id`;
  return row!.id;
}

async function eventRun(eventId: string): Promise<string> {
  const [row] = await h.sql<{ run_id: string }[]>`select run_id from aiki.events where id = ${eventId}::bigint`;
  return row!.run_id;
}

describe("continue_as_new", () => {
  it("ends the run as continued and starts its successor: new input, empty journal, same settings, linked both ways", async () => {
    const first = await startAndClaim(h.sql, {
      input: { n: 0 }, queue: "loops", priority: 7, concurrencyKey: "k", retry: { type: "fixed", maxAttempts: 3 },
    });
    await completeStep(h.sql, first, "tick#1", "tick", 1);
    const next = await continueAsNew(h.sql, first, { n: 1 });

    const old = await runRow(h.sql, first.id);
    assert.equal(old.status, "continued");
    assert.ok(old.finished_at);
    assert.deepEqual([old.continued_to, old.chain_id, old.lease_token], [next, first.id, null]);
    const successor = await runRow(h.sql, next);
    assert.deepEqual(
      [successor.status, successor.input, successor.queue, successor.priority, successor.concurrency_key,
       successor.retry.maxAttempts, successor.attempt, successor.journal_steps, successor.continued_from, successor.chain_id],
      ["pending", { n: 1 }, "loops", 7, "k", 3, 1, 0, first.id, first.id]);
    const claimed = await claimOne(h.sql, { queues: ["loops"], expect: next });
    assert.deepEqual(claimed.journal, []);
    // The old run keeps its journal and stays readable by id.
    assert.equal((await step(h.sql, first.id, "tick#1"))?.output, 1);
    const read = await getRun(h.sql, first.id) as any;
    assert.deepEqual([read.status, read.continued_to, read.latest_id], ["continued", next, next]);
  });

  it("get_run and claim name the chain's first run as chain_id, and leave it out of a run that never continued", async () => {
    const first = await startAndClaim(h.sql);
    assert.equal("chain_id" in first, false);
    assert.equal("chain_id" in (await getRun(h.sql, first.id) as object), false);
    const next = await continueAsNew(h.sql, first, null);
    assert.equal((await getRun(h.sql, first.id) as any).chain_id, first.id);
    assert.equal((await claimOne(h.sql, { expect: next }) as any).chain_id, first.id);
    assert.equal((await getRun(h.sql, next) as any).chain_id, first.id);
  });

  it("hands the run's trace context to its successor, so a chain stays one trace", async () => {
    const traceContext = { traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" };
    const first = await startAndClaim(h.sql, { traceContext });
    const next = await continueAsNew(h.sql, first, null);
    assert.deepEqual((await claimOne(h.sql, { expect: next })).trace_context, traceContext);
  });

  it("wakes the queue, like a start, and tells status waiters the run continued", async () => {
    const first = await startAndClaim(h.sql);
    const wake = await listen(h.db.sql, "aiki_wake");
    const statuses = await listen(h.db.sql, "aiki_status");
    await continueAsNew(h.sql, first, null);
    assert.ok((await wake.drain()).includes("default"));
    assert.deepEqual(await statuses.drain(), [`${first.id} continued`]);
    await wake.close();
    await statuses.close();
  });

  it("keeps the version, or takes the newer one it names; a malformed version is AK003 and writes nothing", async () => {
    const first = await startAndClaim(h.sql, { version: "1.0.0" });
    await expectSqlState(continueAsNew(h.sql, first, null, "bad version"), "AK003", /invalid version/);
    assert.equal(await status(h.sql, first.id), "running");
    const next = await continueAsNew(h.sql, first, null, "2.0.0");
    assert.equal((await runRow(h.sql, next)).version, "2.0.0");
  });

  it("is fenced by the lease: a stale token or a run that left running is AK001, nothing written", async () => {
    const first = await startAndClaim(h.sql);
    await expectSqlState(continueAsNew(h.sql, { id: first.id, lease_token: crypto.randomUUID() }, null), "AK001", /lease lost/);
    await completeRun(h.sql, first);
    await expectSqlState(continueAsNew(h.sql, first, null), "AK001", /is completed/);
    const [n] = await h.sql`select count(*)::int as n from aiki.runs`;
    assert.equal(n!.n, 1);
  });

  it("the first run's idempotency key finds the chain's newest run; a repeated start returns the first", async () => {
    const { run_id } = await startWorkflow(h.sql, { idempotencyKey: "loop-1", input: 0 });
    const first = await claimOne(h.sql, { expect: run_id });
    const second = await continueAsNew(h.sql, first, 1);
    const third = await continueAsNew(h.sql, await claimOne(h.sql, { expect: second }), 2);
    const [found] = await h.sql`select aiki.find_run('wf', 'loop-1') as run`;
    assert.deepEqual([found!.run.id, found!.run.continued_from, found!.run.latest_id], [third, second, third]);
    assert.deepEqual(await startWorkflow(h.sql, { idempotencyKey: "loop-1", input: 0 }), { run_id, created: false });
    assert.equal((await runRow(h.sql, second)).continued_to, third);
  });

  it("a parent waiting on the chain wakes only when its last run ends, with that run's outcome and id (run_id)", async () => {
    const parent = await startAndClaim(h.sql, { workflow: "parent" });
    const [childId] = await startChildren(h.sql, parent, [{ key: "child#1", workflow: "wf", version: "1.0.0" }]);
    const waited = await suspend(h.sql, parent, [{ key: "wait#1", kind: "wait_child", name: "wf", child_id: childId }]);
    assert.equal(waited.suspended, true);

    const child = await claimOne(h.sql, { expect: childId! });
    const next = await continueAsNew(h.sql, child, "again");
    assert.equal(await status(h.sql, parent.id), "waiting");
    assert.deepEqual([(await runRow(h.sql, next)).parent_id, (await runRow(h.sql, next)).parent_step_key], [parent.id, "child#1"]);

    await completeRun(h.sql, await claimOne(h.sql, { expect: next }), { done: true });
    assert.equal(await status(h.sql, parent.id), "pending");
    assert.deepEqual((await step(h.sql, parent.id, "wait#1"))?.output,
      { status: "completed", output: { done: true }, error: null, run_id: next });
  });

  it("a parent that waits after the child continued waits on; after the chain ended it resolves at once, naming the run that ended", async () => {
    const parent = await startAndClaim(h.sql, { workflow: "parent" });
    const [childId] = await startChildren(h.sql, parent, [{ key: "child#1", workflow: "wf", version: "1.0.0" }]);
    const next = await continueAsNew(h.sql, await claimOne(h.sql, { expect: childId! }), null);
    const waits = [{ key: "wait#1", kind: "wait_child", name: "wf", child_id: childId }];
    assert.equal((await suspend(h.sql, parent, waits)).suspended, true);

    await completeRun(h.sql, await claimOne(h.sql, { expect: next }), 42);
    const later = await claimOne(h.sql, { expect: parent.id });
    const answer = await suspend(h.sql, later, [{ key: "wait#2", kind: "wait_child", name: "wf", child_id: childId }]);
    assert.equal(answer.suspended, false);
    assert.deepEqual(answer.resolved[0].output, { status: "completed", output: 42, error: null, run_id: next });
  });

  it("cancel of any run of the chain cancels the newest; events sent to the first run reach the newest", async () => {
    const first = await startAndClaim(h.sql);
    await sendEvent(h.sql, first.id, "buffered", 1);
    const next = await continueAsNew(h.sql, first, null);
    await sendEvent(h.sql, first.id, "later", 2);
    const [inbox] = await h.sql`select array_agg(name order by id) as names from aiki.events where run_id = ${next}::uuid`;
    assert.deepEqual(inbox!.names, ["buffered", "later"]);

    const [c] = await h.sql`select aiki.cancel(${first.id}::uuid) as s`;
    assert.equal(c!.s, "cancelled");
    assert.deepEqual([await status(h.sql, first.id), await status(h.sql, next)], ["continued", "cancelled"]);
  });

  it("an event key is one event across the chain: resent after the run that took it continued, it is not delivered again", async () => {
    const first = await startAndClaim(h.sql);
    const sent = await sendEvent(h.sql, first.id, "go", 1, "k1");
    const taken = await suspend(h.sql, first, [{ key: "go#1", kind: "event", name: "go" }]);
    assert.equal(taken.suspended, false, "the buffered event was taken at once; the run goes on");
    const next = await continueAsNew(h.sql, first, null);
    assert.equal(await sendEvent(h.sql, first.id, "go", 1, "k1"), sent);
    assert.equal(await sendEvent(h.sql, next, "go", 1, "k1"), sent);
    const [inbox] = await h.sql`select count(*)::int as n from aiki.events where run_id = ${next}::uuid`;
    assert.equal(inbox!.n, 0);
    // A key the chain has not seen still delivers, to the newest run.
    const other = await sendEvent(h.sql, first.id, "go", 2, "k2");
    assert.deepEqual(await eventRun(other), next);
  });

  it("pause and resume of a continued run act on the chain's newest run", async () => {
    const first = await startAndClaim(h.sql);
    const next = await continueAsNew(h.sql, first, null);
    const [p] = await h.sql`select aiki.pause(${first.id}::uuid) as s`;
    assert.equal(p!.s, "paused");
    assert.deepEqual([await status(h.sql, first.id), await status(h.sql, next)], ["continued", "paused"]);
    const [r] = await h.sql`select aiki.resume(${first.id}::uuid) as s`;
    assert.deepEqual([r!.s, await status(h.sql, next)], ["pending", "pending"]);
  });

  it("pause, cancel and send_event to a continued run whose newest run was purged are AK005: the chain has ended", async () => {
    const first = await startAndClaim(h.sql);
    const next = await continueAsNew(h.sql, first, null);
    await completeRun(h.sql, await claimOne(h.sql, { expect: next }));
    // As a purge batch that took the newest run and left the continued one for the next batch.
    await h.sql`delete from aiki.runs where id = ${next}::uuid`;
    await expectSqlState(h.sql`select aiki.pause(${first.id}::uuid)`, "AK005", /is already continued and cannot be paused/);
    await expectSqlState(h.sql`select aiki.cancel(${first.id}::uuid)`, "AK005", /is already continued and cannot be cancelled/);
    await expectSqlState(sendEvent(h.sql, first.id, "go", 1), "AK005", /is continued and takes no more events/);
    assert.equal(await status(h.sql, first.id), "continued");
    const [events] = await h.sql`select count(*)::int as n from aiki.events`;
    assert.equal(events!.n, 0);
  });

  it("cancels the continued run's unfinished children: nothing can wait for them any more", async () => {
    const first = await startAndClaim(h.sql, { workflow: "parent" });
    const [childId] = await startChildren(h.sql, first, [{ key: "child#1", workflow: "wf", version: "1.0.0" }]);
    await continueAsNew(h.sql, first, null);
    assert.equal(await status(h.sql, childId!), "cancelled");
  });

  it("purge keeps a continued run while its chain's newest run is unfinished", async () => {
    const { run_id } = await startWorkflow(h.sql, { idempotencyKey: "loop-1" });
    const next = await continueAsNew(h.sql, await claimOne(h.sql, { expect: run_id }), null);
    const [kept] = await h.sql`select aiki.purge_runs('infinity') as n`;
    assert.equal(kept!.n, 0);
    await completeRun(h.sql, await claimOne(h.sql, { expect: next }));
    const [gone] = await h.sql`select aiki.purge_runs('infinity') as n`;
    assert.equal(gone!.n, 2);
  });
});
