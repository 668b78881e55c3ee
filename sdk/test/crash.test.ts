// worker crash: a worker process killed with SIGKILL in the middle of a task loses nothing. Its
// lease expires, another worker process claims the run, replays it, re-runs the task that was in
// flight (task side effects are at-least-once) and nothing else: completed tasks answer from the
// journal. Side effects are rows the worker processes write on their own connection.
import { after, before, describe, it, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { environment, unique, until, within, type Env } from "./support.js";
import { crashWorkflow } from "./fixtures/crash-workflow.js";

const root = fileURLToPath(new URL("../../", import.meta.url));
const fixture = fileURLToPath(new URL("./fixtures/crash-worker.ts", import.meta.url));
const orderFixture = fileURLToPath(new URL("./fixtures/order-worker.ts", import.meta.url));

let env: Env;
before(async () => {
  env = await environment();
  await env.sql`create table side_effects (run_id uuid not null, step text not null, n integer not null)`;
});
after(() => env.close());

interface WorkerProcess {
  child: ChildProcess;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  output(): string;
}

/** Starts crash-worker.ts in its own Node process; killed when the test ends, if still alive. */
function workerProcess(t: TestContext, name: string, blockIn?: string, script = fixture): WorkerProcess {
  const child = spawn(process.execPath, ["--import", "tsx", script, env.url, name, ...(blockIn ? [blockIn] : [])], {
    cwd: root,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout!.on("data", (chunk) => (output += chunk));
  child.stderr!.on("data", (chunk) => (output += chunk));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on("exit", (code, signal) => resolve({ code, signal })));
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  });
  return { child, exited, output: () => output };
}

async function sideEffects(runId: string) {
  const rows = await env.sql<{ step: string; n: number }[]>`
    select step, n from side_effects where run_id = ${runId}::uuid order by step, n`;
  return rows.map((r) => `${r.step}#${r.n}`);
}

describe("worker crash", () => {
  it("a worker process killed mid-task is replaced: the killed task runs again, nothing else does", async (t) => {
    const name = unique("crash");
    // The test only starts runs; the definition's tasks never run in this process.
    const wf = crashWorkflow(name, async () => assert.fail("tasks run in the worker processes"));

    const doomed = workerProcess(t, name, "target");
    const handle = await wf.start(env.aiki, "order");
    await until("the first worker to enter the target task", async () =>
      (await sideEffects(handle.id)).includes("target#1") || undefined, 30_000);
    const held = await handle.get();
    assert.equal(held.status, "running");
    assert.deepEqual(held.journal?.map((s) => [s.key, s.status]), [["prepare#1", "completed"]]);

    doomed.child.kill("SIGKILL");
    assert.deepEqual(await within(doomed.exited, 10_000, "the killed worker to exit"), { code: null, signal: "SIGKILL" });

    const replacement = workerProcess(t, name);
    const outcome = await handle.waitForStatus("completed", { timeout: 30_000 });
    assert.deepEqual(outcome, { success: true, state: { status: "completed", output: "order>prepare>target>finish" } },
      replacement.output());

    assert.deepEqual(await sideEffects(handle.id), ["finish#1", "prepare#1", "target#1", "target#2"]);
    const [run] = await env.sql`select lease_expiries, lease_owner from aiki.runs where id = ${handle.id}::uuid`;
    assert.equal(run!.lease_expiries, 1, "the run was recovered by its lease expiring once");
    assert.equal(run!.lease_owner, null);

    replacement.child.kill("SIGTERM");
    assert.deepEqual(await within(replacement.exited, 10_000, "the replacement to stop"), { code: 0, signal: null },
      replacement.output());
  });

  it("journal writes reach the database in code order: killed while a task's record is blocked, run.now() was not journalled before it", async (t) => {
    const name = unique("order");
    // The run is a child; a transaction holding its parent's row blocks the record of the task's
    // result (record locks parents), not a write that locks the run alone.
    const [parent] = await env.sql`select run_id from aiki.start_workflow('holder', '1', 'null')`;
    const [claimed] = await env.sql`select aiki.claim('test-holder', array['holder@1'], array['default'], 1, 86400000) as c`;
    const token = claimed!.c.runs[0].lease_token as string;
    const [child] = await env.sql`select (aiki.start_children(${parent!.run_id}::uuid, ${token}::uuid,
      ${JSON.stringify([{ key: "c#1", workflow: name, version: "1", input: "order" }])}::text::jsonb))[1] as id`;
    const runId = child!.id as string;

    const holder = await env.sql.reserve();
    t.after(() => holder.release());
    await holder`begin`;
    await holder`select 1 from aiki.runs where id = ${parent!.run_id}::uuid for update`;

    const doomed = workerProcess(t, name, undefined, orderFixture);
    await until("the code to ask for run.now()", async () => (await sideEffects(runId)).includes("now-asked#1") || undefined, 30_000);
    await until("the task's record to wait for the parent's lock", async () => {
      const [row] = await env.sql`select count(*)::int as n from pg_stat_activity
                                   where datname = current_database() and wait_event_type = 'Lock' and query like '%aiki.record(%'`;
      return row!.n > 0 || undefined;
    });
    // Give a write that does not wait for the record (the bug) time to land; code order means none comes.
    await new Promise((resolve) => setTimeout(resolve, 500));
    const [journal] = await env.sql`select coalesce(array_agg(step_key order by step_key), '{}') as keys from aiki.steps where run_id = ${runId}::uuid`;
    doomed.child.kill("SIGKILL");
    assert.deepEqual(await within(doomed.exited, 10_000, "the killed worker to exit"), { code: null, signal: "SIGKILL" });
    await holder`rollback`;
    assert.deepEqual(journal!.keys, [], "nothing journalled while the task's record was blocked");

    const replacement = workerProcess(t, name, undefined, orderFixture);
    const done = await until("the run to end", async () => {
      const run = await env.aiki.getRun(runId);
      return ["completed", "failed"].includes(run.status) ? run : undefined;
    }, 30_000);
    assert.equal(done.status, "completed", `${JSON.stringify(done.error)}\n${replacement.output()}`);
    assert.equal(done.output, "order>charged>dated");
  });
});
