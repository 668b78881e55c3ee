// aiki.get_run, aiki.find_run, aiki.list_runs: reading runs.
import { after, before, beforeEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  at, completeRun, completeStep, getRun, harness, ms, reset, setNow, startAndClaim, startRun, suspend,
  type Harness,
} from "./support.js";

let h: Harness;
before(async () => {
  h = await harness();
});
after(() => h.close());
beforeEach(() => reset(h.sql));

describe("get_run", () => {
  it("returns the run with its journal, the same shape claim returns, plus unserved", async () => {
    const run = await startAndClaim(h.sql, { workflow: "order", input: { id: 1 } });
    await completeStep(h.sql, run, "charge#1", "charge", "r-1");
    await suspend(h.sql, run, [{ key: "nap#1", kind: "sleep", name: "nap", duration_ms: 1000 }]);
    const r = await getRun(h.sql, run.id);
    assert.deepEqual(Object.keys(r).sort(), [...Object.keys(run), "unserved"].sort());
    assert.equal(r.status, "sleeping");
    assert.deepEqual(r.journal.map((s) => [s.key, s.kind, s.status]), [
      ["charge#1", "task", "completed"],
      ["nap#1", "sleep", "waiting"],
    ]);
    assert.equal(ms(r.journal[1]!.wake_at), Date.parse(at(1000)));
  });

  it("is read-only: it writes nothing and takes no lock a worker would wait for", async () => {
    const id = await startRun(h.sql);
    await h.sql.begin(async (tx) => {
      await tx`select aiki.get_run(${id}::uuid)`;
      const [row] = await tx`
        select count(*)::int as n from pg_locks
        where pid = pg_backend_pid() and locktype = 'tuple'`;
      assert.equal(row!.n, 0);
    });
  });
});

describe("find_run", () => {
  it("finds the run a workflow's idempotency key names", async () => {
    const id = await startRun(h.sql, { workflow: "order", idempotencyKey: "o-7" });
    await startRun(h.sql, { workflow: "other", idempotencyKey: "o-7" });
    const [row] = await h.sql`select aiki.find_run('order', 'o-7') as r`;
    assert.equal(row!.r.id, id);
    assert.deepEqual(row!.r.journal, []);
  });
});

describe("list_runs", () => {
  it("lists newest first, filtered by workflow and status", async () => {
    const a = await startRun(h.sql, { workflow: "order" });
    const b = await startRun(h.sql, { workflow: "mail" });
    const c = await startAndClaim(h.sql, { workflow: "order", queue: "other" });
    await completeRun(h.sql, c);
    const all = await h.sql`select * from aiki.list_runs()`;
    assert.deepEqual(new Set(all.map((r) => r.id)), new Set([a, b, c.id]));
    assert.deepEqual(all.map((r) => r.id), [...all.map((r) => r.id)].sort().reverse(), "by id, descending");
    const orders = await h.sql`select id from aiki.list_runs(p_workflow => 'order')`;
    assert.deepEqual(new Set(orders.map((r) => r.id)), new Set([a, c.id]));
    const done = await h.sql`select id, status::text, finished_at from aiki.list_runs(p_status => 'completed')`;
    assert.deepEqual(done.map((r) => [r.id, r.status]), [[c.id, "completed"]]);
    assert.ok(done[0]!.finished_at);
  });

  it("filters by creation time and pages with p_before_id and p_limit", async () => {
    const ids = [];
    for (let i = 0; i < 5; i++) {
      await setNow(h.sql, at(i * 1000));
      ids.push(await startRun(h.sql));
    }
    const window = await h.sql`
      select id from aiki.list_runs(p_created_after => ${at(500)}::timestamptz, p_created_before => ${at(3500)}::timestamptz)`;
    assert.deepEqual(new Set(window.map((r) => r.id)), new Set(ids.slice(1, 4)));

    const seen: string[] = [];
    let before: string | null = null;
    for (;;) {
      const page: { id: string }[] = await h.sql`select id from aiki.list_runs(p_limit => 2, p_before_id => ${before}::uuid)`;
      if (page.length === 0) break;
      assert.ok(page.length <= 2);
      seen.push(...page.map((r) => r.id));
      before = page[page.length - 1]!.id;
    }
    assert.equal(seen.length, 5);
    assert.deepEqual(new Set(seen), new Set(ids), "every run once");
  });
});
