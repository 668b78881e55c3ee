// aiki.register_worker, aiki.unregister_worker and the `unserved` mark of get_run, find_run and
// list_runs: a pending run that no live worker serves is named as such.
import { after, before, beforeEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  at, expectSqlState, getRun, harness, reset, setNow, startAndClaim, startRun, suspend, type Harness,
} from "./support.js";

let h: Harness;
before(async () => {
  h = await harness();
});
after(() => h.close());
beforeEach(() => reset(h.sql));

const register = (worker: string, workflows: string[] | null, queues: string[] | null, staleAfterMs = 60_000) =>
  h.sql`select aiki.register_worker(${worker}, ${workflows}::text[], ${queues}::text[], ${staleAfterMs})`;
const unserved = async (id: string) => (await getRun(h.sql, id) as unknown as { unserved: boolean }).unserved;
const workers = async () => (await h.sql<{ id: string }[]>`select id from aiki.workers order by id`).map((w) => w.id);

describe("unserved", () => {
  it("a pending run is unserved until a live worker registers its workflow version on its queue", async () => {
    const id = await startRun(h.sql, { workflow: "order", version: "1.0.0", idempotencyKey: "o-1" });
    assert.equal(await unserved(id), true, "no worker at all");
    await register("w-other-version", ["order@2.0.0"], ["default"]);
    assert.equal(await unserved(id), true, "another version");
    await register("w-other-queue", ["order@1.0.0"], ["vip"]);
    assert.equal(await unserved(id), true, "another queue");
    await register("w-serves", ["invoice@1", "order@1.0.0"], ["vip", "default"]);
    assert.equal(await unserved(id), false);
    const [found] = await h.sql`select aiki.find_run('order', 'o-1') ->> 'unserved' as unserved`;
    assert.equal(found!.unserved, "false");
    const [listed] = await h.sql`select unserved from aiki.list_runs(p_workflow => 'order')`;
    assert.equal(listed!.unserved, false);
  });

  it("list_runs marks each run on its own", async () => {
    const served = await startRun(h.sql, { workflow: "served" });
    const orphan = await startRun(h.sql, { workflow: "orphan" });
    await register("w-1", ["served@1.0.0"], ["default"]);
    const rows = await h.sql<{ id: string; unserved: boolean }[]>`select id, unserved from aiki.list_runs()`;
    assert.deepEqual(Object.fromEntries(rows.map((r) => [r.id, r.unserved])), { [served]: false, [orphan]: true });
  });

  it("only a pending run can be unserved: a running, sleeping or finished one is not", async () => {
    const run = await startAndClaim(h.sql, { workflow: "nap" });
    assert.equal(await unserved(run.id), false, "running");
    await suspend(h.sql, run, [{ key: "nap#1", kind: "sleep", name: "nap", duration_ms: 60_000 }]);
    assert.equal(await unserved(run.id), false, "sleeping");
  });

  it("a worker with null lists (known only from its heartbeat) serves any workflow and queue", async () => {
    const id = await startRun(h.sql, { workflow: "anything", queue: "anywhere" });
    await h.sql`select * from aiki.heartbeat('w-sql-caller')`;
    assert.equal(await unserved(id), false);
  });

  it("a worker not seen for stale_after_ms is dead: its runs are unserved again, and a heartbeat revives it", async () => {
    const id = await startRun(h.sql);
    await register("w-1", ["wf@1.0.0"], ["default"], 5_000);
    await setNow(h.sql, at(4_999));
    assert.equal(await unserved(id), false, "seen 4.999 s ago");
    await setNow(h.sql, at(5_000));
    assert.equal(await unserved(id), true, "not seen for 5 s");
    await h.sql`select * from aiki.heartbeat('w-1')`;
    assert.equal(await unserved(id), false, "the heartbeat counts as being seen");
  });

  it("unregister_worker removes the worker: its runs are unserved at once; twice is harmless", async () => {
    const id = await startRun(h.sql);
    await register("w-1", ["wf@1.0.0"], ["default"]);
    await h.sql`select aiki.unregister_worker('w-1')`;
    await h.sql`select aiki.unregister_worker('w-1')`;
    assert.equal(await unserved(id), true);
    assert.deepEqual(await workers(), []);
  });
});

describe("register_worker", () => {
  it("records the worker, and updates it in place when called again", async () => {
    await register("w-1", ["a@1"], ["q"], 10_000);
    await setNow(h.sql, at(1_000));
    await h.sql`select aiki.register_worker('w-1', array['a@1', 'b@1'], array['q'], 20000, '{"pid": 7}')`;
    const rows = await h.sql`select id, started_at, last_seen, workflows, queues, stale_after_ms, info from aiki.workers`;
    assert.deepEqual(rows.map((r) => ({ ...r })), [{
      id: "w-1", started_at: new Date(at(0)), last_seen: new Date(at(1_000)), workflows: ["a@1", "b@1"], queues: ["q"],
      stale_after_ms: 20_000, info: { pid: 7 },
    }]);
  });

  it("prunes workers dead by their own staleness, and no live one", async () => {
    await register("w-short", ["a@1"], null, 1_000);
    await register("w-long", ["a@1"], null, 60_000);
    await setNow(h.sql, at(30_000));
    await register("w-new", ["a@1"], null);
    assert.deepEqual(await workers(), ["w-long", "w-new"]);
  });

  it("refuses a bad worker id, staleness or name list with AK003, writing nothing", async () => {
    await expectSqlState(register("", null, null), "AK003", /^invalid worker id ''$/);
    await expectSqlState(register("w", null, null, 10), "AK003", /^invalid worker staleness 10 ms$/);
    await expectSqlState(h.sql`select aiki.register_worker('w', array['a@1', null], null)`, "AK003", /non-null names/);
    assert.deepEqual(await workers(), []);
  });
});
