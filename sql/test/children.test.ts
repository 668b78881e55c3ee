// aiki.start_children and aiki.start_child: fan-out, replay, and how each terminal status of a
// child reaches the parent that waits for it; cancel's cascade to descendants.
import { after, before, beforeEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  at, cancel, claim, claimOne, completeRun, expectSqlState, failRun, getRun, harness, listen, reset, runRow,
  setNow, startAndClaim, startChildren, status, step, suspend, tableCounts, type Harness, type Lease,
} from "./support.js";

let h: Harness;
before(async () => {
  h = await harness();
});
after(() => h.close());
beforeEach(() => reset(h.sql));

const kid = (key: string, extra: Record<string, unknown> = {}) => ({ key, workflow: "kid", version: "1", queue: "kids", ...extra });
const waitFor = (childId: string, key = `wait-${childId.slice(-4)}`) => ({ key, kind: "wait_child", name: "kid", child_id: childId });

/** A parent in `running` that started one child and now waits for it (status waiting). */
async function parentWaitingForOneChild(): Promise<{ parent: Lease; child: string }> {
  const parent = await startAndClaim(h.sql, { queue: "parents" });
  const [child] = await startChildren(h.sql, parent, [kid("kid#1")]);
  const r = await suspend(h.sql, parent, [waitFor(child!, "kid-wait#1")]);
  assert.equal(r.suspended, true);
  return { parent, child: child! };
}

describe("start_children", () => {
  it("starts the children in one call and journals each start; returns their ids in order", async () => {
    const parent = await startAndClaim(h.sql, { queue: "parents", priority: 3 });
    const ids = await startChildren(h.sql, parent, [
      { key: "a#1", workflow: "kid", version: "1", input: { n: 1 } },
      { key: "b#1", workflow: "other", version: "2", queue: "kids", priority: -2, concurrency_key: "c",
        timeout_ms: 5000, retry: { type: "fixed", maxAttempts: 2 } },
    ]);
    assert.equal(ids.length, 2);
    const a = await getRun(h.sql, ids[0]!);
    assert.deepEqual([a.workflow, a.version, a.status, a.queue, a.priority, a.parent_id, a.parent_step_key, a.input],
      ["kid", "1", "pending", "parents", 3, parent.id, "a#1", { n: 1 }], "inherits queue and priority");
    const b = await runRow(h.sql, ids[1]!);
    assert.deepEqual([b.workflow, b.queue, b.priority, b.concurrency_key, b.retry.maxAttempts, b.parent_step_key],
      ["other", "kids", -2, "c", 2, "b#1"]);
    assert.ok(b.deadline_at);
    const journal = (await getRun(h.sql, parent.id)).journal;
    assert.deepEqual(journal.map((s) => [s.key, s.kind, s.name, s.status, s.child_id, s.output]), [
      ["a#1", "child", "kid", "completed", ids[0], { child_id: ids[0] }],
      ["b#1", "child", "other", "completed", ids[1], { child_id: ids[1] }],
    ]);
  });

  it("a child inherits the parent's trace context unless its start names one", async () => {
    const parentContext = { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" };
    const ownContext = { traceparent: "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01", tracestate: "v=1" };
    const parent = await startAndClaim(h.sql, { queue: "parents", traceContext: parentContext });
    const [inheriting, own] = await startChildren(h.sql, parent, [kid("a#1"), kid("b#1", { trace_context: ownContext })]);
    assert.deepEqual((await getRun(h.sql, inheriting!)).trace_context, parentContext);
    assert.deepEqual((await getRun(h.sql, own!)).trace_context, ownContext);
    const untraced = await startAndClaim(h.sql, { queue: "untraced" });
    const [child] = await startChildren(h.sql, untraced, [kid("c#1")]);
    assert.equal((await getRun(h.sql, child!)).trace_context, null);
  });

  it("is idempotent on replay: a key already journaled returns the same child and writes nothing", async () => {
    const parent = await startAndClaim(h.sql);
    const first = await startChildren(h.sql, parent, [kid("a#1"), kid("b#1")]);
    await h.sql`select aiki.release(${parent.id}::uuid, ${parent.lease_token}::uuid)`;
    const replay = await claimOne(h.sql, { expect: parent.id });
    const before = await tableCounts(h.sql);
    assert.deepEqual(await startChildren(h.sql, replay, [kid("a#1"), kid("b#1")]), first);
    assert.deepEqual(await tableCounts(h.sql), before);
    const more = await startChildren(h.sql, replay, [kid("a#1"), kid("c#1")]);
    assert.equal(more[0], first[0]);
    const [row] = await h.sql`select count(*)::int as n from aiki.runs where parent_id = ${parent.id}::uuid`;
    assert.equal(row!.n, 3);
  });

  it("a replay that names another workflow under a journaled key is AK006", async () => {
    const parent = await startAndClaim(h.sql);
    await startChildren(h.sql, parent, [kid("a#1")]);
    await expectSqlState(startChildren(h.sql, parent, [{ key: "a#1", workflow: "stranger", version: "1" }]), "AK006",
      /journal recorded child 'kid', the code now calls child 'stranger'/);
  });

  it("needs the parent's lease", async () => {
    const parent = await startAndClaim(h.sql);
    await suspend(h.sql, parent, [{ key: "n#1", kind: "sleep", name: "n", duration_ms: 10 }]);
    await expectSqlState(startChildren(h.sql, parent, [kid("a#1")]), "AK001", /is sleeping/);
  });
});

describe("start_child", () => {
  it("starts one child with options and returns its id", async () => {
    const parent = await startAndClaim(h.sql);
    const [row] = await h.sql`
      select aiki.start_child(${parent.id}::uuid, ${parent.lease_token}::uuid, 'ship#1', 'ship', '3.0',
                              '{"to": "x"}', '{"queue": "shipping", "priority": 9}') as id`;
    const child = await getRun(h.sql, row!.id);
    assert.deepEqual([child.workflow, child.version, child.queue, child.priority, child.input, child.parent_id],
      ["ship", "3.0", "shipping", 9, { to: "x" }, parent.id]);
    const [again] = await h.sql`
      select aiki.start_child(${parent.id}::uuid, ${parent.lease_token}::uuid, 'ship#1', 'ship', '3.0') as id`;
    assert.equal(again!.id, row!.id);
  });
});

describe("wait_child: every terminal status of the child reaches the waiting parent", () => {
  it("completed: the parent wakes with {status, output, error}", async () => {
    const { parent, child } = await parentWaitingForOneChild();
    const c = await claimOne(h.sql, { queues: ["kids"], expect: child });
    await completeRun(h.sql, c, { tracking: "T-1" });
    assert.equal(await status(h.sql, parent.id), "pending");
    const s = (await step(h.sql, parent.id, "kid-wait#1"))!;
    assert.equal(s.status, "completed");
    assert.deepEqual(s.output, { status: "completed", output: { tracking: "T-1" }, error: null });
  });

  it("failed: the parent wakes with the child's error", async () => {
    const { parent, child } = await parentWaitingForOneChild();
    const c = await claimOne(h.sql, { queues: ["kids"], expect: child });
    await failRun(h.sql, c, { name: "Error", message: "no stock" });
    assert.equal(await status(h.sql, parent.id), "pending");
    assert.deepEqual((await step(h.sql, parent.id, "kid-wait#1"))!.output,
      { status: "failed", output: null, error: { name: "Error", message: "no stock" } });
  });

  it("a child that retries does not wake the parent until its final outcome", async () => {
    const parent = await startAndClaim(h.sql, { queue: "parents" });
    const [child] = await startChildren(h.sql, parent, [kid("kid#1", { retry: { type: "fixed", maxAttempts: 2, baseDelayMs: 1000 } })]);
    await suspend(h.sql, parent, [waitFor(child!, "kid-wait#1")]);
    const c = await claimOne(h.sql, { queues: ["kids"], expect: child });
    assert.equal((await failRun(h.sql, c, { message: "once" })).status, "retrying");
    assert.equal(await status(h.sql, parent.id), "waiting");
    await setNow(h.sql, at(1000));
    const c2 = await claimOne(h.sql, { queues: ["kids"], expect: child });
    await completeRun(h.sql, c2, "second time lucky");
    assert.equal(await status(h.sql, parent.id), "pending");
  });

  it("cancelled: the parent wakes with status cancelled and the reason", async () => {
    const { parent, child } = await parentWaitingForOneChild();
    assert.equal(await cancel(h.sql, child, "operator says no"), "cancelled");
    assert.equal(await status(h.sql, parent.id), "pending");
    assert.deepEqual((await step(h.sql, parent.id, "kid-wait#1"))!.output,
      { status: "cancelled", output: null, error: { name: "Cancelled", message: "operator says no" } });
  });

  it("failed by its deadline (a timer): the parent wakes with DeadlineExceeded", async () => {
    const parent = await startAndClaim(h.sql, { queue: "parents" });
    const [child] = await startChildren(h.sql, parent, [kid("kid#1", { timeout_ms: 1000 })]);
    await suspend(h.sql, parent, [waitFor(child!, "kid-wait#1")]);
    await claimOne(h.sql, { queues: ["kids"], expect: child });
    await setNow(h.sql, at(1000));
    await claim(h.sql, { queues: ["nothing"] });
    assert.equal(await status(h.sql, child!), "failed");
    assert.equal(await status(h.sql, parent.id), "pending");
    const out = (await step(h.sql, parent.id, "kid-wait#1"))!.output;
    assert.equal(out.status, "failed");
    assert.equal(out.error.name, "DeadlineExceeded");
  });

  it("a child whose deadline passed while it was still pending: failed by the next claim of its queue", async () => {
    const parent = await startAndClaim(h.sql, { queue: "parents" });
    const [child] = await startChildren(h.sql, parent, [kid("kid#1", { timeout_ms: 1000 })]);
    await suspend(h.sql, parent, [waitFor(child!, "kid-wait#1")]);
    await setNow(h.sql, at(1000));
    assert.deepEqual((await claim(h.sql, { queues: ["kids"] })).runs, []);
    assert.equal(await status(h.sql, child!), "failed");
    assert.equal(await status(h.sql, parent.id), "pending");
    assert.equal((await step(h.sql, parent.id, "kid-wait#1"))!.output.error.name, "DeadlineExceeded");
  });

  it("a paused parent takes the outcome but stays paused", async () => {
    const { parent, child } = await parentWaitingForOneChild();
    await h.sql`select aiki.pause(${parent.id}::uuid)`;
    const c = await claimOne(h.sql, { queues: ["kids"], expect: child });
    await completeRun(h.sql, c, 1);
    assert.equal(await status(h.sql, parent.id), "paused");
    assert.equal((await step(h.sql, parent.id, "kid-wait#1"))!.status, "completed");
  });

  it("a parent that does not wait is not moved by its child finishing", async () => {
    const parent = await startAndClaim(h.sql, { queue: "parents" });
    const [child] = await startChildren(h.sql, parent, [kid("kid#1")]);
    await suspend(h.sql, parent, [{ key: "e#1", kind: "event", name: "other" }]);
    const c = await claimOne(h.sql, { queues: ["kids"], expect: child });
    await completeRun(h.sql, c);
    assert.equal(await status(h.sql, parent.id), "waiting");
  });

  it("fan-in: a parent waiting for 50 children wakes exactly once, when the last one finishes", async () => {
    const parent = await startAndClaim(h.sql, { queue: "parents" });
    const kids = Array.from({ length: 50 }, (_, i) => kid(`kid#${i + 1}`));
    const ids = await startChildren(h.sql, parent, kids);
    const r = await suspend(h.sql, parent, ids.map((id, i) => waitFor(id, `wait#${i + 1}`)));
    assert.equal(r.suspended, true);
    const { runs } = await claim(h.sql, { queues: ["kids"], limit: 50 });
    assert.equal(runs.length, 50);
    const wake = await listen(h.db.sql, "aiki_wake");
    try {
      await wake.drain();
      for (const [i, c] of runs.entries()) {
        // Every outcome kind is a finish; the last one wakes the parent.
        if (i % 3 === 0) await completeRun(h.sql, c, i);
        else if (i % 3 === 1) await failRun(h.sql, c, { message: `kid ${i}` });
        else await cancel(h.sql, c.id);
        const expected = i < 49 ? "waiting" : "pending";
        assert.equal(await status(h.sql, parent.id), expected, `after ${i + 1} children`);
      }
      assert.deepEqual((await wake.drain()).filter((q) => q === "parents"), ["parents"], "one wake-up");
    } finally {
      await wake.close();
    }
    const again = await claimOne(h.sql, { queues: ["parents"], expect: parent.id });
    const waits = again.journal.filter((s) => s.kind === "wait_child");
    assert.equal(waits.length, 50);
    assert.ok(waits.every((s) => s.status === "completed"));
    assert.deepEqual(new Set(waits.map((s) => s.output.status)), new Set(["completed", "failed", "cancelled"]));
  });
});

describe("cancel: cascade to descendants", () => {
  it("cancelling a parent cancels every unfinished descendant, and fences their workers", async () => {
    const root = await startAndClaim(h.sql, { queue: "parents" });
    const [childA, childB, done] = await startChildren(h.sql, root, [kid("a#1"), kid("b#1"), kid("done#1")]);
    const a = await claimOne(h.sql, { queues: ["kids"], expect: childA });
    const [grandchild] = await startChildren(h.sql, a, [kid("g#1", { queue: "grand" })]);
    const d = await claimOne(h.sql, { queues: ["kids"], expect: childB });
    await h.sql`select aiki.release(${d.id}::uuid, ${d.lease_token}::uuid)`;
    const finished = await claimOne(h.sql, { queues: ["kids"], expect: done });
    await completeRun(h.sql, finished, "ok");

    assert.equal(await cancel(h.sql, root.id, "shutdown"), "cancelled");
    for (const id of [root.id, childA!, childB!, grandchild!]) {
      const r = await getRun(h.sql, id);
      assert.equal(r.status, "cancelled", `run ${id}`);
      assert.deepEqual(r.error, { name: "Cancelled", message: "shutdown" });
      assert.ok(r.finished_at);
      assert.equal("lease_token" in r, false, "readers never see a lease token");
    }
    assert.equal(await status(h.sql, done!), "completed", "finished descendants keep their outcome");
    await expectSqlState(completeRun(h.sql, a, "late"), "AK001", /is cancelled/);
    await expectSqlState(completeRun(h.sql, root), "AK001", /is cancelled/);
    assert.deepEqual((await claim(h.sql, { queues: ["kids", "grand", "parents"], limit: 10 })).runs, []);
  });

  it("cancelling a child does not cancel its parent or siblings", async () => {
    const parent = await startAndClaim(h.sql, { queue: "parents" });
    const [a, b] = await startChildren(h.sql, parent, [kid("a#1"), kid("b#1")]);
    await cancel(h.sql, a!);
    assert.equal(await status(h.sql, parent.id), "running");
    assert.equal(await status(h.sql, b!), "pending");
  });
});
