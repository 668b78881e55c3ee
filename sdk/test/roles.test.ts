// The engine roles, through the SDK. sql/test/security.test.ts checks every grant function by
// function; here real login roles use the SDK as an application and a worker deployment would:
// a role granted aiki_client starts, signals, reads and cancels runs with `client()` but cannot
// claim or write tables; a role granted aiki_worker runs a whole `worker()` (claim, heartbeat,
// group commit, suspend, children, retries) but cannot run admin functions.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import postgres, { type Sql } from "postgres";
import { client, event, task, worker, workflow, type Client, type WorkerHandle } from "../index.js";
import * as engine from "../engine.js";
import { quiet } from "../testing/database.js";
import { environment, untilStatus, type Env } from "./support.js";

let env: Env;
const suffix = randomBytes(4).toString("hex");
const logins = { client: `aiki_rt_client_${suffix}`, worker: `aiki_rt_worker_${suffix}` };
const urls = { client: "", worker: "" };
const clients: Client[] = [];
const handles: WorkerHandle[] = [];
const raws: Sql[] = [];

before(async () => {
  env = await environment();
  for (const [role, login] of Object.entries(logins)) {
    await env.sql.unsafe(`create role ${login} login password 'pw-${suffix}' in role aiki_${role}`);
    const url = new URL(env.url);
    url.username = login;
    url.password = `pw-${suffix}`;
    urls[role as keyof typeof urls] = url.toString();
  }
});

after(async () => {
  await Promise.all(handles.map((h) => h.stop({ timeoutMs: 500 })));
  await Promise.all(clients.map((c) => c.close()));
  await Promise.all(raws.map((r) => r.end({ timeout: 1 })));
  await env.sql`select pg_terminate_backend(pid) from pg_stat_activity where usename in ${env.sql(Object.values(logins))}`;
  for (const login of Object.values(logins)) await env.sql.unsafe(`drop role if exists ${login}`);
  await env.close();
});

function as(role: keyof typeof urls): Client {
  const c = client({ url: urls[role], max: 3, logger: false });
  clients.push(c);
  return c;
}

function rawAs(role: keyof typeof urls): Sql {
  const r = postgres(urls[role], { max: 1, ...quiet });
  raws.push(r);
  return r;
}

async function spawnAs(c: Client, options: Parameters<typeof worker>[0]): Promise<WorkerHandle> {
  const h = await worker({ pollMs: 100, leaseMs: 2_000, ...options }).spawn(c);
  handles.push(h);
  return h;
}

const denied = async (promise: Promise<unknown>, message: RegExp) => {
  await assert.rejects(promise, (error: { code?: string; message?: string }) => {
    assert.equal(error.code, "42501", `expected 42501, got ${error.code}: ${error.message}`);
    assert.match(error.message!, message);
    return true;
  });
};

let attempts = 0;
const flaky = task({
  name: "flaky",
  retry: { type: "fixed", maxAttempts: 3, baseDelayMs: 10 },
  handler: (n: number) => {
    if (++attempts < 2) throw new Error("first attempt fails");
    return n + 1;
  },
});
const child = workflow({ name: `roles-child-${suffix}` }).v("1", {
  async handler(run, n: number) {
    await run.sleep("nap", 20);
    return n * 10;
  },
});
const parent = workflow({ name: `roles-parent-${suffix}` }).v("1", {
  events: { approve: event<{ by: string }>() },
  async handler(run, n: number) {
    const bumped = await flaky.start(run, n);
    const approval = await run.events.approve.wait({ timeout: { minutes: 1 } });
    const kid = await child.startAsChild(run, bumped);
    const done = await kid.waitForStatus("completed");
    return { by: approval.timeout ? null : approval.data.by, kid: done.success ? done.state.output : null, at: (await run.now()).getTime() > 0 };
  },
});

describe("aiki_client through the SDK", () => {
  it("starts, reads, lists, finds, sends events to, waits for and cancels runs", async () => {
    const app = as("client");
    const handle = await parent.start(app, 1, { idempotencyKey: `client-${suffix}` });
    assert.equal((await handle.get()).status, "pending");
    assert.equal((await parent.handleByIdempotencyKey(app, `client-${suffix}`)).id, handle.id);
    assert.ok((await app.listRuns({ workflow: parent.name })).some((r) => r.id === handle.id));
    await handle.events.approve.send({ by: "client" }, { idempotencyKey: "a-1" });
    const waited = await handle.waitForStatus("completed", { timeout: 200 });
    assert.equal(waited.success === false && waited.cause, "timeout", "no worker runs it yet: the wait times out");
    assert.equal(await handle.cancel("changed my mind"), "cancelled");
    const outcome = await handle.waitForStatus("completed", { timeout: 5_000 });
    assert.equal(outcome.success, false);
    assert.equal(outcome.success === false && outcome.cause === "run_terminated" && outcome.state.status, "cancelled");
  });

  it("cannot claim: claim is refused with 42501, and a worker on this role fails to spawn", async () => {
    const app = as("client");
    await denied(engine.claim(app.sql, "intruder", null, ["default"], 1, 1_000), /^permission denied for function claim$/);
    const handle = await parent.start(app, 2);
    await denied(spawnAs(as("client"), { workflows: [parent, child] }), /^permission denied for function register_worker$/);
    assert.equal((await handle.get()).status, "pending", "the run was not leased");
    await handle.cancel();
  });

  it("cannot write or read the tables", async () => {
    const sql = rawAs("client");
    await denied(sql`update aiki.runs set status = 'completed'`, /^permission denied for table runs$/);
    await denied(sql`insert into aiki.steps (run_id, step_key, kind, status, name, created_at)
                     values (gen_random_uuid(), 'k#1', 'task', 'completed', 'k', now())`, /^permission denied for table steps$/);
    await denied(sql`select * from aiki.events`, /^permission denied for table events$/);
  });
});

describe("aiki_worker through the SDK", () => {
  it("runs a worker end to end: claim, heartbeat, retries, group commit, events, children, sleeps", async () => {
    const app = as("client");
    const deployment = as("worker");
    await spawnAs(deployment, { workflows: [parent, child], heartbeatMs: 100 });
    attempts = 0;
    const handle = await parent.start(app, 4);
    await untilStatus(app, handle.id, "waiting", 10_000);
    await handle.events.approve.send({ by: "worker-test" });
    const output = await handle.result({ timeout: 15_000 });
    assert.deepEqual(output, { by: "worker-test", kid: 50, at: true });
    assert.equal(attempts, 2, "the task failed once and was retried");
    assert.equal((await engine.heartbeat(deployment.sql, "idle-worker", 1_000, null)).length, 0, "a worker may heartbeat");
  });

  it("cannot run admin functions: purge_runs, set_queue, pause_queue (42501)", async () => {
    const sql = rawAs("worker");
    await denied(sql`select aiki.purge_runs(now())`, /^permission denied for function purge_runs$/);
    await denied(sql`select aiki.set_queue('default', 1)`, /^permission denied for function set_queue$/);
    await denied(sql`select aiki.pause_queue('default')`, /^permission denied for function pause_queue$/);
    const deployment = as("worker");
    await denied(deployment.sql`select aiki.purge_runs(now(), 10)`, /^permission denied for function purge_runs$/);
  });

  it("cannot rewrite the journal or take over a lease by writing the tables", async () => {
    const sql = rawAs("worker");
    await denied(sql`update aiki.steps set output = '"forged"'`, /^permission denied for table steps$/);
    await denied(sql`update aiki.runs set lease_owner = 'me', lease_expires_at = 'infinity'`, /^permission denied for table runs$/);
    const [count] = await env.sql<{ n: number }[]>`select count(*)::int as n from aiki.steps where output = '"forged"'`;
    assert.equal(count!.n, 0);
  });
});
