// aiki.record: the worker's group commit — many runs' complete_step and complete_run writes in
// one call, all or nothing.
import { after, before, beforeEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  completeStep, expectRejected, getRun, harness, jsonb, reset, startAndClaim, startChildren, status, step,
  suspend, type Harness,
} from "./support.js";

let h: Harness;
before(async () => {
  h = await harness();
});
after(() => h.close());
beforeEach(() => reset(h.sql));

const record = async (writes: unknown[]) => {
  const [row] = await h.sql`select aiki.record(${jsonb(h.sql, writes)}) as r`;
  return row!.r as unknown[];
};

describe("record", () => {
  it("records the steps of many runs and completes the runs asked, in one call", async () => {
    const a = await startAndClaim(h.sql);
    const b = await startAndClaim(h.sql);
    const result = await record([
      { run_id: a.id, lease_token: a.lease_token, steps: [{ key: "x#1", kind: "task", name: "x", output: 1 },
        { key: "now#1", kind: "value", name: "now", output: "t" }], complete: true, output: { a: true } },
      { run_id: b.id, lease_token: b.lease_token, steps: [{ key: "y#1", kind: "task", name: "y", output: 2 }] },
    ]);
    assert.deepEqual(result, [null, null, null], "fresh steps are recorded as given");
    const ra = await getRun(h.sql, a.id);
    assert.equal(ra.status, "completed");
    assert.deepEqual(ra.output, { a: true });
    // One transaction, one created_at: the journal orders such steps by key (_run_json sorts by created_at, then step_key).
    assert.deepEqual(ra.journal.map((s) => [s.key, s.kind, s.output]).sort(), [["now#1", "value", "t"], ["x#1", "task", 1]]);
    assert.equal(await status(h.sql, b.id), "running");
    assert.equal((await step(h.sql, b.id, "y#1"))!.output, 2);
  });

  it("returns the journal's first record for a step recorded before", async () => {
    const a = await startAndClaim(h.sql);
    await completeStep(h.sql, a, "x#1", "x", "first");
    const result = await record([{ run_id: a.id, lease_token: a.lease_token, steps: [{ key: "x#1", kind: "task", name: "x", output: "second" }] }]);
    assert.equal((result[0] as any).output, "first");
  });

  it("is all or nothing: one lost lease rejects the batch with AK001 and writes nothing", async () => {
    const a = await startAndClaim(h.sql);
    const b = await startAndClaim(h.sql);
    await suspend(h.sql, b, [{ key: "n#1", kind: "sleep", name: "n", duration_ms: 1000 }]);
    await expectRejected(h.sql, () => record([
      { run_id: a.id, lease_token: a.lease_token, steps: [{ key: "x#1", kind: "task", name: "x", output: 1 }], complete: true },
      { run_id: b.id, lease_token: b.lease_token, complete: true },
    ]), "AK001", /^lease lost: run .* is sleeping$/);
  });

  it("rejects bad input with AK003 and a non-deterministic step with AK006, writing nothing", async () => {
    const a = await startAndClaim(h.sql);
    await completeStep(h.sql, a, "x#1", "x", 1);
    await expectRejected(h.sql, () => record([]), "AK003", /^record needs a JSON array of 1-10000 writes$/);
    await expectRejected(h.sql, () => record([{ run_id: a.id, lease_token: a.lease_token, steps: [{ key: "s#1", kind: "sleep", name: "s" }] }]),
      "AK003", /^invalid step kind 'sleep' for record$/);
    await expectRejected(h.sql, () => record([{ run_id: a.id, lease_token: a.lease_token, steps: [{ key: "", kind: "task", name: "s" }] }]),
      "AK003", /^invalid step key ''$/);
    await expectRejected(h.sql, () => record([{ run_id: a.id, lease_token: a.lease_token, steps: [{ key: "x#1", kind: "task", name: "other" }] }]),
      "AK006", /^non-determinism at step 'x#1'/);
    await expectRejected(h.sql, () => record([{ run_id: "00000000-0000-4000-8000-000000000000", lease_token: a.lease_token }]),
      "AK002", /not found/);
  });

  it("completing a child wakes the parent that waits for it, as complete_run does", async () => {
    const parent = await startAndClaim(h.sql, { queue: "parents" });
    const [childId] = await startChildren(h.sql, parent, [{ key: "k#1", workflow: "kid", version: "1", queue: "kids" }]);
    await suspend(h.sql, parent, [{ key: "w#1", kind: "wait_child", name: "kid", child_id: childId }]);
    const [row] = await h.sql`select aiki.claim('w', null, array['kids']) as c`;
    const child = row!.c.runs[0];
    await record([{ run_id: child.id, lease_token: child.lease_token, complete: true, output: "done" }]);
    assert.equal(await status(h.sql, parent.id), "pending");
    assert.deepEqual((await step(h.sql, parent.id, "w#1"))!.output, { status: "completed", output: "done", error: null });
  });
});
