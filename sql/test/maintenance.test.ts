// aiki.purge_runs: deleting finished runs with their journal and inbox, in batches.
import { after, before, beforeEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  at, cancel, claim, claimOne, completeRun, completeStep, harness, reset, sendEvent, setNow, startAndClaim,
  startChildren, startRun, status, suspend, type Harness,
} from "./support.js";

let h: Harness;
before(async () => {
  h = await harness();
});
after(() => h.close());
beforeEach(() => reset(h.sql));

const purge = async (cutoff: string, batch = 1000) => {
  const [row] = await h.sql`select aiki.purge_runs(${cutoff}::timestamptz, ${batch}) as n`;
  return row!.n as number;
};
const count = async (table: "runs" | "steps" | "events") => {
  const [row] = await h.sql.unsafe(`select count(*)::int as n from aiki.${table}`);
  return row!.n as number;
};

describe("purge_runs", () => {
  it("deletes runs finished before the cutoff, with their steps and events; keeps the rest", async () => {
    const old = await startAndClaim(h.sql);
    await completeStep(h.sql, old, "a#1", "a", 1);
    await sendEvent(h.sql, old.id, "e", 1);
    await completeRun(h.sql, old);
    await setNow(h.sql, at(10_000));
    const recent = await startAndClaim(h.sql);
    await completeRun(h.sql, recent);
    const live = await startAndClaim(h.sql);
    await completeStep(h.sql, live, "b#1", "b", 1);
    const cancelledOld = await startRun(h.sql);
    await setNow(h.sql, at(0));
    await cancel(h.sql, cancelledOld);

    assert.equal(await purge(at(5000)), 4, "2 runs, 1 step, 1 event");
    const left = await h.sql`select id from aiki.runs`;
    assert.deepEqual(new Set(left.map((r) => r.id)), new Set([recent.id, live.id]));
    assert.equal(await count("steps"), 1);
    assert.equal(await count("events"), 0);
  });

  it("works in batches: call it until it returns 0", async () => {
    for (let i = 0; i < 5; i++) await completeRun(h.sql, await startAndClaim(h.sql));
    const batches = [];
    for (let n = -1; n !== 0;) batches.push((n = await purge(at(1), 2)));
    assert.deepEqual(batches, [2, 2, 1, 0]);
    assert.equal(await count("runs"), 0);
  });

  it("skips runs another session holds locked, instead of waiting", async () => {
    const done = await startAndClaim(h.sql);
    await completeRun(h.sql, done);
    const other = await h.session();
    await other.begin(async (tx) => {
      await tx`select 1 from aiki.runs where id = ${done.id}::uuid for update`;
      assert.equal(await purge(at(1)), 0);
    });
    assert.equal(await purge(at(1)), 1);
  });

  it("a child whose finished parent was purged can still finish, time out and be cancelled", async () => {
    const parent = await startAndClaim(h.sql);
    const [a, b, c] = await startChildren(h.sql, parent, [
      { key: "a#1", workflow: "kid", version: "1", queue: "kids" },
      { key: "b#1", workflow: "kid", version: "1", queue: "kids", timeout_ms: 60_000 },
      { key: "c#1", workflow: "kid", version: "1", queue: "kids" },
    ]);
    await completeRun(h.sql, parent);
    const kidA = await claimOne(h.sql, { queues: ["kids"], expect: a });
    const kidB = await claimOne(h.sql, { queues: ["kids"], expect: b });
    await suspend(h.sql, kidB, [{ key: "n#1", kind: "sleep", name: "n", duration_ms: 3_600_000 }]);
    assert.equal(await purge(at(1)), 4, "the parent and its 3 child steps");

    await completeRun(h.sql, kidA, "orphan done");
    assert.equal(await status(h.sql, a!), "completed");
    await setNow(h.sql, at(60_000));
    await claim(h.sql, { queues: ["none"] });
    assert.equal(await status(h.sql, b!), "failed", "deadline still enforced without the parent");
    await cancel(h.sql, c!);
    assert.equal(await status(h.sql, c!), "cancelled");
  });

  it("keeps a finished child while its parent is unfinished; the parent can still wait for it", async () => {
    const parent = await startAndClaim(h.sql);
    const [kid] = await startChildren(h.sql, parent, [{ key: "k#1", workflow: "kid", version: "1", queue: "kids" }]);
    await completeRun(h.sql, await claimOne(h.sql, { queues: ["kids"], expect: kid }), "kid done");
    await setNow(h.sql, at(10_000));
    assert.equal(await purge(at(5000)), 0, "the child's parent is still running");
    const r = await suspend(h.sql, parent, [{ key: "w#1", kind: "wait_child", name: "kid", child_id: kid }]);
    assert.equal(r.suspended, false);
    assert.equal(r.resolved[0].output.output, "kid done");
    await completeRun(h.sql, parent);
    assert.ok((await purge(at(20_000))) > 0, "with the parent finished, both go");
    assert.equal(await count("runs"), 0);
  });

  it("deletes at most a batch of events (and of steps) per call: a run with many events takes many calls", async () => {
    const run = await startAndClaim(h.sql);
    for (let i = 0; i < 3; i++) await completeStep(h.sql, run, `s#${i}`, "s", i);
    await h.sql`
      insert into aiki.events (run_id, name, data, created_at)
      select ${run.id}::uuid, 'tick', to_jsonb(i), aiki.now() from generate_series(1, 25) i`;
    await completeRun(h.sql, run);
    const calls = [];
    for (let n = -1; n !== 0;) calls.push((n = await purge(at(1), 10)));
    assert.deepEqual(calls, [13, 10, 6, 0], "10 events and the 3 steps, 10 events, the last 5 and the run");
    assert.deepEqual([await count("runs"), await count("steps"), await count("events")], [0, 0, 0]);
  });
});
