// Task timeouts and task heartbeats: an attempt that runs past its `timeout`, or past its
// `heartbeatTimeout` without ctx.heartbeat(), fails with TaskTimeoutError, its signal aborted,
// and the retry policy decides what follows — in process, and, when the worker is gone, in SQL:
// the attempt's deadline is journalled, and the next replay fails it instead of running it again.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { TaskTimeoutError, task, workflow } from "../index.js";
import { environment, unique, until, untilStatus, within, type Env } from "./support.js";

const root = fileURLToPath(new URL("../../", import.meta.url));
const fixture = fileURLToPath(new URL("./fixtures/timeout-worker.ts", import.meta.url));

let env: Env;
before(async () => {
  env = await environment();
  await env.sql`create table side_effects (run_id uuid not null, step text not null, n integer not null)`;
});
after(() => env.close());

const message = (run: { error: unknown }) => (run.error as { message?: string } | null)?.message ?? "";

describe("task timeouts", () => {
  it("a handler that never settles fails by timeout; with concurrency 2, two such tasks starve no other run", async () => {
    const reasons: unknown[] = [];
    const hang = task({
      name: "hang",
      timeout: 300,
      handler: (_input: null, ctx) => new Promise<never>(() => ctx.signal.addEventListener("abort", () => reasons.push(ctx.signal.reason))),
    });
    const quick = task({ name: "quick", handler: (n: number) => n + 1 });
    const hanging = workflow({ name: unique("hanging") }).v("1", { handler: (run) => hang.start(run, null) });
    const healthy = workflow({ name: unique("healthy") }).v("1", { handler: (run, n: number) => quick.start(run, n) });
    const stuck = [await hanging.start(env.aiki, null), await hanging.start(env.aiki, null)];
    const others = await Promise.all([1, 2, 3].map((n) => healthy.start(env.aiki, n)));
    await env.spawn({ workflows: [hanging, healthy], concurrency: 2 });
    assert.deepEqual(await Promise.all(others.map((r) => r.result({ timeout: 15_000 }))), [2, 3, 4]);
    for (const r of stuck) {
      const failed = await untilStatus(env.aiki, r.id, "failed");
      assert.match(message(failed), /^task hang failed: task hang \(step hang#1\) timed out after 300 ms$/);
      const [step] = (failed.journal ?? []).filter((s) => s.key === "hang#1");
      assert.deepEqual([step!.status, step!.attempts, (step!.error as { name: string }).name], ["failed", 1, "TaskTimeoutError"]);
    }
    assert.equal(reasons.length, 2);
    for (const reason of reasons) assert.ok(reason instanceof TaskTimeoutError, "the attempt's signal aborts with the TaskTimeoutError");
  });

  it("the retry policy decides what follows a timed-out attempt", async () => {
    const flaky = task({
      name: "flaky",
      timeout: 200,
      retry: { type: "fixed", maxAttempts: 2, baseDelayMs: 0 },
      handler: (_input: null, ctx) => (ctx.attempt === 1 ? new Promise<string>(() => {}) : `attempt ${ctx.attempt}`),
    });
    const wf = workflow({ name: unique("retried") }).v("1", { handler: (run) => flaky.start(run, null) });
    await env.spawn({ workflows: [wf] });
    const handle = await wf.start(env.aiki, null);
    assert.equal(await handle.result({ timeout: 10_000 }), "attempt 2");
    const [step] = (await handle.get()).journal!;
    assert.deepEqual([step!.status, step!.attempts], ["completed", 2]);
  });

  it("a task that stops heartbeating fails the same way; its heartbeats kept it alive until then", async () => {
    let beats = 0;
    const beating = task({
      name: "beating",
      heartbeatTimeout: 1_000,
      async handler(_input: null, ctx) {
        // 25 beats 50 ms apart outlive the heartbeat timeout; then silence.
        for (; beats < 25; beats++) {
          assert.equal(ctx.signal.aborted, false, `alive at beat ${beats}`);
          ctx.heartbeat();
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
        return new Promise<never>(() => {});
      },
    });
    const wf = workflow({ name: unique("heartbeat") }).v("1", { handler: (run) => beating.start(run, null) });
    await env.spawn({ workflows: [wf], leaseMs: 5_000 });
    const handle = await wf.start(env.aiki, null);
    const failed = await untilStatus(env.aiki, handle.id, "failed");
    assert.equal(beats, 25);
    assert.match(message(failed), /^task beating failed: task beating \(step beating#1\) sent no heartbeat for 1000 ms$/);
  });

  it("the next attempt starts from the details of the last heartbeat", async () => {
    const resumable = task({
      name: "resumable",
      heartbeatTimeout: 600,
      retry: { type: "fixed", maxAttempts: 2, baseDelayMs: 0 },
      async handler(_input: null, ctx) {
        if (ctx.attempt === 2) return ctx.heartbeatDetails;
        for (let page = 1; page <= 3; page++) ctx.heartbeat({ page });
        return new Promise<never>(() => {});
      },
    });
    const wf = workflow({ name: unique("resumable") }).v("1", { handler: (run) => resumable.start(run, null) });
    await env.spawn({ workflows: [wf], leaseMs: 5_000 });
    const handle = await wf.start(env.aiki, null);
    assert.deepEqual(await handle.result({ timeout: 10_000 }), { page: 3 });
  });

  it("a worker killed mid-attempt: the next worker fails the attempt by its journalled deadline instead of running it again", async () => {
    const name = unique("killed");
    const wf = workflow({ name }).v("1", { handler: async () => null });
    const spawnWorker = () => {
      const child = spawn(process.execPath, ["--import", "tsx", fixture, env.url, name], { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
      let output = "";
      child.stdout!.on("data", (chunk) => (output += chunk));
      child.stderr!.on("data", (chunk) => (output += chunk));
      const exited = new Promise<unknown>((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
      return { child, exited, output: () => output };
    };
    const doomed = spawnWorker();
    const replacement: { current?: ReturnType<typeof spawnWorker> } = {};
    try {
      const handle = await wf.start(env.aiki, null);
      await until("the attempt to start", async () => {
        const [row] = await env.sql`select count(*)::int as n from side_effects where run_id = ${handle.id}::uuid`;
        return row!.n > 0 || undefined;
      }, 30_000);
      doomed.child.kill("SIGKILL");
      assert.deepEqual(await within(doomed.exited, 10_000, "the killed worker to exit"), { code: null, signal: "SIGKILL" });
      const [journalled] = await env.sql`select status::text, wake_at is not null as has_deadline from aiki.steps where run_id = ${handle.id}::uuid`;
      assert.deepEqual({ ...journalled }, { status: "started", has_deadline: true });
      replacement.current = spawnWorker();
      const failed = await untilStatus(env.aiki, handle.id, "failed", 30_000);
      assert.match(message(failed), /^task hang failed: task hang \(step hang#1\) timed out: attempt 1 passed its deadline /, replacement.current.output());
      const [row] = await env.sql`select count(*)::int as n from side_effects where run_id = ${handle.id}::uuid`;
      assert.equal(row!.n, 1, "the task did not run again");
    } finally {
      for (const w of [doomed, replacement.current]) if (w && w.child.exitCode === null && w.child.signalCode === null) w.child.kill("SIGKILL");
    }
  });
});
