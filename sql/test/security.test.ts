// Who may call what (90_security.sql). Real login roles, each granted one engine role, connect
// with their own password; the checks run against what Postgres enforces, not against the
// grant statements. Roles are cluster-wide, so their names carry a random suffix and are
// dropped afterwards.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import postgres from "postgres";
import {
  at, expectSqlState, harness, reset, runRow, startAndClaim, startRun, type Harness, type Sql,
} from "./support.js";
import { quiet } from "../../sdk/testing/database.js";

let h: Harness;
const suffix = randomBytes(4).toString("hex");
const logins = { client: `aiki_t_client_${suffix}`, worker: `aiki_t_worker_${suffix}`, admin: `aiki_t_admin_${suffix}` };
const as: Record<keyof typeof logins, Sql> = {} as any;

before(async () => {
  h = await harness();
  await reset(h.sql);
  for (const [role, login] of Object.entries(logins)) {
    await h.sql.unsafe(`create role ${login} login password 'pw-${suffix}' in role aiki_${role}`);
    const url = new URL(h.db.url);
    url.username = login;
    url.password = `pw-${suffix}`;
    as[role as keyof typeof logins] = postgres(url.toString(), { max: 1, ...quiet });
  }
});

after(async () => {
  await Promise.all(Object.values(as).map((s) => s.end({ timeout: 1 })));
  for (const login of Object.values(logins)) await h.sql.unsafe(`drop role if exists ${login}`);
  await h.close();
});

const denied = (p: PromiseLike<unknown>, what: RegExp) => expectSqlState(p, "42501", what);

describe("aiki_client", () => {
  it("can start, read, find, list, send events to, pause, resume and cancel runs", async () => {
    const [started] = await as.client`select * from aiki.start_workflow('order', '1', '{"a": 1}', 'client-key')`;
    const id = started!.run_id;
    const [run] = await as.client`select aiki.get_run(${id}::uuid) as r`;
    assert.equal(run!.r.status, "pending");
    const [found] = await as.client`select aiki.find_run('order', 'client-key') as r`;
    assert.equal(found!.r.id, id);
    assert.ok((await as.client`select * from aiki.list_runs('order')`).some((r) => r.id === id));
    await as.client`select aiki.send_event(${id}::uuid, 'hello', '1')`;
    await as.client`select aiki.pause(${id}::uuid)`;
    await as.client`select aiki.resume(${id}::uuid)`;
    const [c] = await as.client`select aiki.cancel(${id}::uuid)::text as s`;
    assert.equal(c!.s, "cancelled");
  });

  it("can retry runs and call the operator reads (search_runs, count_runs, run_timeline, list_workers, list_queues)", async () => {
    const [started] = await as.client`select * from aiki.start_workflow('order', '1', '{"a": 2}', 'client-retry')`;
    const id = started!.run_id;
    await as.client`select aiki.cancel(${id}::uuid)`;
    const [r] = await as.client`select aiki.retry_run(${id}::uuid)::text as s`;
    assert.equal(r!.s, "pending");
    const [s] = await as.client`select aiki.search_runs('{"idempotency_key": "client-retry"}') as s`;
    assert.equal(s!.s.runs[0].id, id);
    const [c] = await as.client`select aiki.count_runs('{"workflow": "order"}') as c`;
    assert.ok(c!.c.pending >= 1);
    const [t] = await as.client`select aiki.run_timeline(${id}::uuid) as t`;
    assert.equal(t!.t.attempts_before[0].status, "cancelled");
    await as.client`select aiki.list_workers(), aiki.list_queues()`;
    await as.client`select aiki.cancel(${id}::uuid)`;
  });

  it("can read the engine's version (schema_version)", async () => {
    const [v] = await as.client`select aiki.schema_version() as v`;
    assert.ok(v!.v >= 6, `schema_version ${v!.v}`);
  });

  it("cannot claim, or make any worker call (42501)", async () => {
    const run = await startAndClaim(h.sql);
    await denied(as.client`select aiki.claim('intruder')`, /permission denied for function claim/);
    await denied(as.client`select aiki.next_due()`, /permission denied for function next_due/);
    await denied(as.client`select * from aiki.heartbeat('intruder')`, /permission denied for function heartbeat/);
    await denied(as.client`select aiki.register_worker('intruder', null, null)`, /permission denied for function register_worker/);
    await denied(as.client`select aiki.unregister_worker('w-sec')`, /permission denied for function unregister_worker/);
    await denied(as.client`select aiki.complete_run(${run.id}::uuid, ${run.lease_token}::uuid)`, /permission denied for function complete_run/);
    await denied(as.client`select aiki.start_attempt(${run.id}::uuid, ${run.lease_token}::uuid, 't#1', 't', 1000)`, /permission denied for function start_attempt/);
    await denied(as.client`select aiki.complete_step(${run.id}::uuid, ${run.lease_token}::uuid, 'k', 'task', 'n', '1')`, /permission denied/);
    await denied(as.client`select aiki.suspend(${run.id}::uuid, ${run.lease_token}::uuid, '[]')`, /permission denied/);
    assert.equal((await runRow(h.sql, run.id)).status, "running");
  });

  it("cannot read, insert into or update the tables", async () => {
    const id = await startRun(h.sql);
    await denied(as.client`select * from aiki.runs`, /permission denied for table runs/);
    await denied(as.client`insert into aiki.runs (id, created_at, updated_at, status, workflow, version, queue)
                           values (gen_random_uuid(), now(), now(), 'pending', 'x', '1', 'default')`, /permission denied for table runs/);
    await denied(as.client`update aiki.runs set status = 'completed' where id = ${id}::uuid`, /permission denied for table runs/);
    await denied(as.client`delete from aiki.events`, /permission denied for table events/);
  });

  it("cannot call admin functions", async () => {
    await denied(as.client`select aiki.set_queue('q', 1)`, /permission denied for function set_queue/);
    await denied(as.client`select aiki.purge_runs(now())`, /permission denied for function purge_runs/);
  });
});

describe("aiki_worker", () => {
  it("can claim, record, suspend and finish runs", async () => {
    // Due in 2020: this session runs on the wall clock, the harness on the fake one (2030).
    const id = await startRun(h.sql, { queue: "sec", startAt: "2020-01-01T00:00:00Z" });
    const [due] = await as.worker`select aiki.next_due(array['sec']) as d`;
    assert.equal(due!.d.due_at, null, "a worker (and so a relay on a worker role) may ask when the next timer falls due");
    const [row] = await as.worker`select aiki.claim('w-sec', null, array['sec']) as c`;
    const run = row!.c.runs[0];
    assert.equal(run.id, id);
    await as.worker`select aiki.register_worker('w-sec', array['x@1'], array['sec'])`;
    await as.worker`select * from aiki.heartbeat('w-sec')`;
    await as.worker`select aiki.schema_version()`;
    await as.worker`select aiki.complete_step(${id}::uuid, ${run.lease_token}::uuid, 'a#1', 'task', 'a', '1')`;
    await as.worker`select aiki.start_attempt(${id}::uuid, ${run.lease_token}::uuid, 't#1', 't', 60000)`;
    await as.worker`select aiki.record(${JSON.stringify([{ run_id: id, lease_token: run.lease_token, steps: [{ key: "t#1", kind: "task", name: "t", output: 2 }] }])}::text::jsonb)`;
    await as.worker`select aiki.start_child(${id}::uuid, ${run.lease_token}::uuid, 'c#1', 'kid', '1')`;
    await as.worker`select aiki.complete_run(${id}::uuid, ${run.lease_token}::uuid, '"ok"')`;
    assert.equal((await runRow(h.sql, id)).status, "completed");
    await as.worker`select aiki.unregister_worker('w-sec')`;
  });

  it("cannot purge runs or change queues (42501)", async () => {
    await denied(as.worker`select aiki.purge_runs(now())`, /permission denied for function purge_runs/);
    await denied(as.worker`select aiki.set_queue('q', 1)`, /permission denied for function set_queue/);
    await denied(as.worker`select aiki.pause_queue('q')`, /permission denied for function pause_queue/);
    await denied(as.worker`select aiki.resume_queue('q')`, /permission denied for function resume_queue/);
  });

  it("cannot write the tables directly", async () => {
    await denied(as.worker`update aiki.runs set lease_expires_at = 'infinity'`, /permission denied for table runs/);
    await denied(as.worker`insert into aiki.steps (run_id, step_key, kind, status, name, created_at)
                           values (gen_random_uuid(), 'k', 'task', 'completed', 'n', now())`, /permission denied for table steps/);
  });
});

describe("aiki_admin", () => {
  it("can manage queues, purge, and read the tables, but not write them", async () => {
    await as.admin`select aiki.set_queue('adm', 2)`;
    await as.admin`select aiki.pause_queue('adm')`;
    await as.admin`select aiki.purge_runs(now())`;
    await as.admin`select count(*) from aiki.runs`;
    await denied(as.admin`delete from aiki.runs`, /permission denied for table runs/);
  });
});

describe("helpers", () => {
  it("no underscore helper is executable by aiki_client, aiki_worker or aiki_admin", async () => {
    const rows = await h.sql`
      select p.oid::regprocedure::text as fn,
             has_function_privilege('aiki_client', p.oid, 'execute') as client,
             has_function_privilege('aiki_worker', p.oid, 'execute') as worker,
             has_function_privilege('aiki_admin', p.oid, 'execute') as admin
      from pg_proc p join pg_namespace n on n.oid = p.pronamespace
      where n.nspname = 'aiki' and p.proname like '\\_%'`;
    assert.ok(rows.length >= 10, `found only ${rows.length} helpers`);
    const callable = rows.filter((r) => r.client || r.worker || r.admin).map((r) => r.fn);
    assert.deepEqual(callable, []);
  });

  it("and calling one as a client is refused", async () => {
    const id = await startRun(h.sql);
    await denied(as.client`select aiki._wake(${id}::uuid)`, /permission denied for function _wake/);
    await denied(as.worker`select aiki._notify_queue('x')`, /permission denied for function _notify_queue/);
  });
});

describe("functions", () => {
  it("every public function is security definer with search_path pinned to pg_catalog, pg_temp", async () => {
    const rows = await h.sql`
      select p.proname, p.oid::regprocedure::text as fn, p.prosecdef, p.proconfig
      from pg_proc p join pg_namespace n on n.oid = p.pronamespace
      where n.nspname = 'aiki' and p.proname not like '\\_%'`;
    const names = new Set(rows.map((r) => r.proname));
    for (const expected of ["start_workflow", "get_run", "find_run", "list_runs", "cancel", "pause", "resume",
      "claim", "heartbeat", "release", "complete_step", "start_attempt", "fail_step", "complete_run", "fail_run", "suspend",
      "sleep", "wait_event", "wait_child", "send_event", "start_children", "start_child", "set_queue",
      "pause_queue", "resume_queue", "purge_runs", "now", "next_due"]) {
      assert.ok(names.has(expected), `aiki.${expected} exists`);
    }
    // aiki.now() is the one exception: it reads nothing but the caller's own session and must
    // stay an inlinable SQL function, so it runs as the caller (see the next test for its guard).
    const wrong = rows
      .filter((r) => r.proname !== "now")
      .filter((r) => !r.prosecdef || !(r.proconfig ?? []).includes("search_path=pg_catalog, pg_temp"))
      .map((r) => `${r.fn} secdef=${r.prosecdef} config=${JSON.stringify(r.proconfig)}`);
    assert.deepEqual(wrong, []);
  });

  it("every public function is executable by the roles 90_security.sql names, and no others", async () => {
    // Exact for the client (the widest audience) and for the admin-only verbs; any other public
    // function is a worker call, so one added later is closed to clients unless listed here.
    const client = ["now", "test_clock_now", "schema_version", "start_workflow", "send_event", "cancel", "pause", "resume", "get_run", "find_run", "list_runs",
      "retry_run", "search_runs", "count_runs", "run_timeline", "list_workers", "list_queues",
      "get_schedule", "list_schedules", "cron_fires", "pause_schedule", "resume_schedule", "trigger_schedule"];
    const adminOnly = ["set_queue", "pause_queue", "resume_queue", "purge_runs", "advance_clock", "test_clock_state"];
    const rows = await h.sql`
      select p.proname,
             has_function_privilege('aiki_client', p.oid, 'execute') as client,
             has_function_privilege('aiki_worker', p.oid, 'execute') as worker,
             has_function_privilege('aiki_admin', p.oid, 'execute') as admin,
             has_function_privilege('public', p.oid, 'execute') as public
      from pg_proc p join pg_namespace n on n.oid = p.pronamespace
      where n.nspname = 'aiki' and p.proname not like '\\_%'`;
    for (const r of rows) {
      assert.equal(r.client, client.includes(r.proname), `aiki_client on ${r.proname}`);
      assert.equal(r.worker, !adminOnly.includes(r.proname), `aiki_worker on ${r.proname}`);
      assert.equal(r.admin, true, `aiki_admin on ${r.proname}`);
      assert.equal(r.public, false, `public on ${r.proname}`);
    }
  });

  it("a client or worker cannot move the engine's clock; a superuser (tests) or aiki_admin can", async () => {
    for (const role of ["client", "worker"] as const) {
      const [row] = await as[role]`select set_config('aiki.fake_now', ${at(0)}, false), aiki.now() = now() as real`;
      assert.equal(row!.real, true, `${role}: aiki.fake_now must be ignored`);
    }
    const [adm] = await as.admin`select set_config('aiki.fake_now', ${at(0)}, false), aiki.now() as t`;
    assert.equal((adm!.t as Date).toISOString(), at(0));
    const [su] = await h.sql`select aiki.now() as t`;
    assert.equal((su!.t as Date).toISOString(), at(0));
  });

  it("a worker that sets a fake clock cannot wake sleeping runs early", async () => {
    const run = await startAndClaim(h.sql, { queue: "sleepers" });
    await h.sql`select aiki.sleep(${run.id}::uuid, ${run.lease_token}::uuid, 'nap#1', 'nap', 3600000)`;
    // The run sleeps until an hour after the test clock (year 2030): years after the wall clock.
    await as.worker`select set_config('aiki.fake_now', '2100-01-01T00:00:00Z', false)`;
    const [row] = await as.worker`select aiki.claim('w-evil', null, array['sleepers']) as c`;
    assert.deepEqual(row!.c.runs, []);
    assert.equal((await runRow(h.sql, run.id)).status, "sleeping");
  });
});
