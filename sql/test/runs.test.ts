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
  it("returns the run with its journal, the same shape claim returns less the lease token, plus unserved and the chain links", async () => {
    const run = await startAndClaim(h.sql, { workflow: "order", input: { id: 1 } });
    await completeStep(h.sql, run, "charge#1", "charge", "r-1");
    await suspend(h.sql, run, [{ key: "nap#1", kind: "sleep", name: "nap", duration_ms: 1000 }]);
    const r = await getRun(h.sql, run.id);
    assert.deepEqual(Object.keys(r).sort(), [...Object.keys(run).filter((k) => k !== "lease_token"), "unserved", "continued_from", "continued_to", "latest_id"].sort());
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

describe("lease tokens", () => {
  it("get_run, find_run and list_runs never show a run's lease token; claim hands it to the worker", async () => {
    const run = await startAndClaim(h.sql, { workflow: "order", idempotencyKey: "o-1" });
    assert.match(run.lease_token, /^[0-9a-f-]{36}$/);
    const [read] = await h.sql`select aiki.get_run(${run.id}::uuid) as g, aiki.find_run('order', 'o-1') as f`;
    for (const r of [read!.g, read!.f]) {
      assert.equal(r.status, "running");
      assert.equal("lease_token" in r, false);
      assert.doesNotMatch(JSON.stringify(r), new RegExp(run.lease_token));
    }
    const listed = await h.sql`select * from aiki.list_runs()`;
    assert.doesNotMatch(JSON.stringify(listed), new RegExp(run.lease_token));
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
    assert.deepEqual(all.map((r) => r.id), [c.id, b, a], "newest first");
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

  it("orders by creation time (aiki.now() of the start), not by id: a run started later is listed first", async () => {
    // Real clocks on both sessions: A's transaction begins first (its created_at is earlier) but
    // inserts after B, so A's UUIDv7, taken from the wall clock at insert, is the larger one.
    const a = await h.session();
    const b = await h.session();
    for (const s of [a, b]) await s`select set_config('aiki.fake_now', '', false)`;
    let older!: string;
    let newer!: string;
    await a.begin(async (tx) => {
      await tx`select 1`;
      await b`select pg_sleep(0.002)`;
      newer = (await b<{ run_id: string }[]>`select run_id from aiki.start_workflow('wf', '1')`)[0]!.run_id;
      await tx`select pg_sleep(0.002)`;
      older = (await tx<{ run_id: string }[]>`select run_id from aiki.start_workflow('wf', '1')`)[0]!.run_id;
    });
    await a.end();
    await b.end();
    assert.ok(older > newer, "the older run got the larger id: the case that listed a newer run second");
    const rows = await h.sql<{ id: string; created_at: Date }[]>`select id, created_at from aiki.list_runs()`;
    assert.deepEqual(rows.map((r) => r.id), [newer, older]);
    assert.ok(rows[0]!.created_at > rows[1]!.created_at);
    const page = await h.sql`select id from aiki.list_runs(p_before_id => ${newer}::uuid)`;
    assert.deepEqual(page.map((r) => r.id), [older], "pages follow the same order");
  });

  it("treats a null time bound as no bound", async () => {
    const id = await startRun(h.sql);
    const rows = await h.sql`select id from aiki.list_runs(p_created_after => null, p_created_before => null)`;
    assert.deepEqual(rows.map((r) => r.id), [id]);
  });

  it("pages with runs created at the same time without skipping or repeating one", async () => {
    const ids = await h.sql.begin(async (tx) => {
      const out: string[] = [];
      for (let i = 0; i < 5; i++) out.push((await tx`select run_id from aiki.start_workflow('wf', '1')`)[0]!.run_id);
      return out;
    });
    const seen: string[] = [];
    let before: string | null = null;
    for (;;) {
      const page: { id: string }[] = await h.sql`select id from aiki.list_runs(p_limit => 2, p_before_id => ${before}::uuid)`;
      if (page.length === 0) break;
      seen.push(...page.map((r) => r.id));
      before = page[page.length - 1]!.id;
    }
    assert.deepEqual(seen, [...ids].sort().reverse(), "one creation time: by id, descending");
  });
});
