// aiki.record: the worker's group commit — many runs' complete_step and complete_run writes in
// one call, with one answer per write.
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
    assert.deepEqual(result, [{ status: "recorded", steps: [null, null] }, { status: "recorded", steps: [null] }],
      "fresh steps are recorded as given");
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
    assert.equal((result[0] as any).status, "recorded");
    assert.equal((result[0] as any).steps[0].output, "first");
  });

  it("answers per write: a lost lease and a bad write fail alone, the healthy writes beside them are recorded", async () => {
    const a = await startAndClaim(h.sql);
    const b = await startAndClaim(h.sql);
    const c = await startAndClaim(h.sql);
    await suspend(h.sql, b, [{ key: "n#1", kind: "sleep", name: "n", duration_ms: 1000 }]);
    const result = await record([
      { run_id: a.id, lease_token: a.lease_token, steps: [{ key: "x#1", kind: "task", name: "x", output: 1 }], complete: true },
      { run_id: b.id, lease_token: b.lease_token, complete: true },
      { run_id: c.id, lease_token: c.lease_token, steps: [{ key: "s#1", kind: "sleep", name: "s" }] },
    ]);
    assert.deepEqual(result, [
      { status: "recorded", steps: [null] },
      { status: "lease_lost", message: `lease lost: run ${b.id} is sleeping` },
      { status: "error", sqlstate: "AK003", message: "invalid step kind 'sleep' for record" },
    ]);
    assert.equal(await status(h.sql, a.id), "completed");
    assert.equal(await status(h.sql, b.id), "sleeping");
    assert.equal(await status(h.sql, c.id), "running");
    assert.equal(await step(h.sql, c.id, "s#1"), undefined);
  });

  it("answers each write with its own error: unknown run, journal clash, failed step", async () => {
    const a = await startAndClaim(h.sql);
    const b = await startAndClaim(h.sql);
    const c = await startAndClaim(h.sql);
    await completeStep(h.sql, a, "x#1", "x", 1);
    await h.sql`select aiki.fail_step(${b.id}::uuid, ${b.lease_token}::uuid, 'f#1', 'f', '{"message": "no"}')`;
    const result = await record([
      { run_id: a.id, lease_token: a.lease_token, steps: [{ key: "x#1", kind: "task", name: "other" }] },
      { run_id: "00000000-0000-4000-8000-000000000000", lease_token: a.lease_token },
      { run_id: b.id, lease_token: b.lease_token, steps: [{ key: "f#1", kind: "task", name: "f", output: 2 }] },
      { run_id: c.id, lease_token: c.lease_token, steps: [{ key: "y#1", kind: "task", name: "y", output: 3 }] },
    ]) as any[];
    assert.equal(result[0].sqlstate, "AK006");
    assert.match(result[0].message, /^non-determinism at step 'x#1': the journal recorded task 'x', the code now calls task 'other'$/);
    assert.deepEqual(result[1], { status: "error", sqlstate: "AK002", message: "run 00000000-0000-4000-8000-000000000000 not found" });
    assert.deepEqual(result[2], { status: "error", sqlstate: "AK005", message: `step 'f#1' of run ${b.id} already failed for good and cannot be completed` });
    assert.deepEqual(result[3], { status: "recorded", steps: [null] });
    assert.equal((await step(h.sql, c.id, "y#1"))!.output, 3);
  });

  it("a write that raises where no check could foresee it fails alone, through the one-by-one path", async () => {
    const a = await startAndClaim(h.sql);
    const b = await startAndClaim(h.sql);
    // The same key twice in one batch: the set-based insert raises 23505, the slow path sorts it out.
    const result = await record([
      { run_id: a.id, lease_token: a.lease_token, steps: [{ key: "x#1", kind: "task", name: "x", output: 1 }] },
      { run_id: a.id, lease_token: a.lease_token, steps: [{ key: "x#1", kind: "task", name: "y", output: 2 }] },
      { run_id: b.id, lease_token: b.lease_token, steps: [{ key: "z#1", kind: "task", name: "z", output: 3 }], complete: true },
    ]) as any[];
    assert.deepEqual(result[0], { status: "recorded", steps: [null] });
    assert.equal(result[1].sqlstate, "AK006");
    assert.deepEqual(result[2], { status: "recorded", steps: [null] });
    assert.equal((await step(h.sql, a.id, "x#1"))!.output, 1);
    assert.equal(await status(h.sql, b.id), "completed");
  });

  it("a retrying task step completes, as complete_step completes it", async () => {
    const a = await startAndClaim(h.sql);
    await h.sql`select aiki.fail_step(${a.id}::uuid, ${a.lease_token}::uuid, 'r#1', 'r', '{"message": "no"}',
                                      '{"type": "fixed", "maxAttempts": 3, "baseDelayMs": 0}', false, 1000)`;
    assert.deepEqual(await record([{ run_id: a.id, lease_token: a.lease_token, steps: [{ key: "r#1", kind: "task", name: "r", output: "ok" }] }]),
      [{ status: "recorded", steps: [null] }]);
    const recorded = (await step(h.sql, a.id, "r#1"))!;
    assert.deepEqual([recorded.status, recorded.attempts, recorded.output], ["completed", 2, "ok"]);
  });

  it("takes no subtransaction per write: 80 writes use at most one subtransaction id", async () => {
    const runs = [];
    for (let n = 0; n < 80; n++) runs.push(await startAndClaim(h.sql));
    // A transaction's subtransaction ids beyond 64 overflow its cache, and every reader pays.
    const subxacts = (writes: unknown[]) => h.sql.begin(async (tx) => {
      await tx`select aiki.record(${jsonb(tx, writes)})`;
      const [row] = await tx`select s.subxact_count::int as n, s.subxact_overflowed as overflowed
                               from pg_stat_get_backend_idset() b, pg_stat_get_backend_subxact(b) s
                              where pg_stat_get_backend_pid(b) = pg_backend_pid()`;
      return { ...row! };
    });
    const writes = runs.map((r, n) => ({ run_id: r.id, lease_token: r.lease_token, steps: [{ key: "x#1", kind: "task", name: "x", output: n }] }));
    assert.deepEqual(await subxacts(writes.slice(0, 70)), { n: 1, overflowed: false });
    // The measure works: a key given twice sends the batch down the one-by-one path, one subtransaction per write.
    const slow = await subxacts([...writes.slice(70), writes[70]]);
    assert.ok(slow.n >= 10, `${slow.n} subtransactions on the one-by-one path`);
    const [counted] = await h.sql`select count(*)::int as n from aiki.steps`;
    assert.equal(counted!.n, 80);
  });

  it("raises AK003 only when the batch itself is malformed", async () => {
    await expectRejected(h.sql, () => record([]), "AK003", /^record needs a JSON array of 1-10000 writes$/);
    await expectRejected(h.sql, () => h.sql`select aiki.record('{"run_id": null}')`, "AK003", /^record needs a JSON array of 1-10000 writes$/);
    await expectRejected(h.sql, () => record(Array.from({ length: 10001 }, () => ({}))), "AK003", /^record needs a JSON array of 1-10000 writes$/);
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
