// worker: claims runs of the workflow versions it registers, executes them, and stops
// gracefully — waiting for in-flight runs, then releasing the rest to other workers.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { DefinitionError, InvalidInputError, task, worker, workflow } from "../index.js";
import { Counts, environment, gate, latch, unique, until, untilStatus, within, type Env } from "./support.js";

let env: Env;
before(async () => {
  env = await environment();
});
after(() => env.close());

describe("worker", () => {
  it("serves two versions side by side: each run is executed by the worker of its version", async () => {
    const name = unique("order");
    const executed: string[] = [];
    const charge = task({ name: "charge", handler: (cents: number) => cents });
    const v1 = workflow({ name }).v("1", {
      async handler(run, cents: number) {
        executed.push(`code 1 ran ${run.version}`);
        return { total: await charge.start(run, cents) };
      },
    });
    const v2 = workflow({ name }).v("2", {
      async handler(run, cents: number) {
        executed.push(`code 2 ran ${run.version}`);
        return { total: await charge.start(run, cents), currency: "EUR" };
      },
    });
    const a = await env.spawn({ workflows: [v1] });
    const b = await env.spawn({ workflows: [v2] }, env.client());

    const handles = [];
    for (let i = 0; i < 5; i++) {
      handles.push(await v1.start(env.aiki, i), await v2.start(env.aiki, i));
    }
    const outputs = await Promise.all(handles.map((h) => h.result({ timeout: 10_000 })));
    for (let i = 0; i < 5; i++) {
      assert.deepEqual(outputs[2 * i], { total: i });
      assert.deepEqual(outputs[2 * i + 1], { total: i, currency: "EUR" });
    }
    assert.deepEqual(executed.sort(), [...Array(5).fill("code 1 ran 1"), ...Array(5).fill("code 2 ran 2")]);
    // A worker counts a run after its completion committed, so the counts may trail the results.
    await until("both workers to count their runs", () =>
      a.stats.ended.completed + b.stats.ended.completed === 10 ? true : undefined);
    assert.equal(a.stats.ended.completed, 5);
    assert.equal(b.stats.ended.completed, 5);
  });

  it("claims only from its queues", async () => {
    const wf = workflow({ name: unique("queued") }).v("1", {
      async handler(run) {
        return run.id;
      },
    });
    const handle = await wf.start(env.aiki, null, { queue: "priority-lane" });
    const other = await env.spawn({ workflows: [wf], queues: ["default"] });
    const lane = await env.spawn({ workflows: [wf], queues: ["priority-lane"] });
    assert.equal(await handle.result({ timeout: 10_000 }), handle.id);
    assert.equal(lane.stats.claimed, 1);
    assert.equal(other.stats.claimed, 0);
    assert.equal((await handle.get()).queue, "priority-lane");
  });

  it("runs at most `concurrency` runs at once", async () => {
    let inFlight = 0;
    let peak = 0;
    const release = gate();
    const entered = new Counts();
    const busy = task({
      name: "busy",
      async handler() {
        entered.bump("entered");
        peak = Math.max(peak, ++inFlight);
        await release.wait();
        inFlight--;
      },
    });
    const wf = workflow({ name: unique("limited") }).v("1", {
      async handler(run) {
        await busy.start(run, null);
      },
    });
    const w = await env.spawn({ workflows: [wf], concurrency: 2 });
    const handles = await Promise.all(Array.from({ length: 5 }, () => wf.start(env.aiki, null)));
    await until("two runs in flight", () => (entered.get("entered") === 2 ? true : undefined));
    assert.equal(w.active().length, 2);
    const statuses = await Promise.all(handles.map((h) => h.status()));
    assert.deepEqual(statuses.filter((s) => s === "running").length, 2);
    release.open();
    await Promise.all(handles.map((h) => h.result({ timeout: 10_000 })));
    assert.equal(peak, 2);
    assert.equal(entered.get("entered"), 5);
  });
});

describe("worker definition", () => {
  it("rejects two handlers for one version with DefinitionError", () => {
    const name = unique("twice");
    const a = workflow({ name }).v("1", { handler: async () => "a" });
    const b = workflow({ name }).v("1", { handler: async () => "b" });
    assert.throws(() => worker({ workflows: [a, b] }), (error: unknown) =>
      error instanceof DefinitionError && error.message.includes(`${name}@1`) && error.message.includes("registered twice"));
    // Two versions of one workflow are fine.
    const c = workflow({ name }).v("2", { handler: async () => "c" });
    assert.doesNotThrow(() => worker({ workflows: [a, c] }));
  });

  it("rejects a worker without workflows, and a bad concurrency", () => {
    assert.throws(() => worker({ workflows: [] }), DefinitionError);
    const wf = workflow({ name: unique("x") }).v("1", { handler: async () => null });
    assert.throws(() => worker({ workflows: [wf], concurrency: 0 }), InvalidInputError);
    assert.throws(() => worker({ workflows: [wf], concurrency: 1.5 }), InvalidInputError);
  });
});

describe("WorkerHandle.stop", () => {
  it("waits for a short in-flight run to finish", async () => {
    const entered = latch("the task to start");
    const release = gate();
    const wf = workflow({ name: unique("short") }).v("1", {
      async handler(run) {
        return task({
          name: "short",
          async handler() {
            entered.raise();
            await release.wait();
            return "finished";
          },
        }).start(run, null);
      },
    });
    const w = await env.spawn({ workflows: [wf] });
    const handle = await wf.start(env.aiki, null);
    await entered.wait();

    let stopped = false;
    const stopping = w.stop({ timeoutMs: 10_000 }).then(() => (stopped = true));
    assert.equal(await handle.status(), "running");
    assert.equal(stopped, false, "stop() is still waiting for the run");
    release.open();
    await within(stopping, 10_000, "stop() to return");

    const run = await handle.get();
    assert.equal(run.status, "completed", "the stopping worker finished the run itself");
    assert.equal(run.output, "finished");
    assert.deepEqual([w.stats.ended.completed, w.stats.ended.abandoned], [1, 0]);
  });

  it("releases a long in-flight run after its timeout, and another worker completes it", async () => {
    const counts = new Counts();
    const entered = latch("the task to start");
    const aborted = latch("the task's signal to abort");
    const long = task({
      name: "long",
      async handler(_: null, ctx) {
        if (counts.bump("long") === 1) {
          entered.raise();
          await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve));
          aborted.raise();
          return "abandoned attempt";
        }
        return "second attempt";
      },
    });
    const wf = workflow({ name: unique("long") }).v("1", {
      async handler(run) {
        return long.start(run, null);
      },
    });
    const first = await env.spawn({ workflows: [wf] });
    const handle = await wf.start(env.aiki, null);
    await entered.wait();

    await first.stop({ timeoutMs: 50 });
    await aborted.wait();
    const [released] = await env.sql`
      select status::text, lease_token, lease_owner, lease_expiries, available_at <= now() as due
      from aiki.runs where id = ${handle.id}::uuid`;
    assert.deepEqual({ ...released }, { status: "pending", lease_token: null, lease_owner: null, lease_expiries: 0, due: true });
    assert.equal(first.stats.ended.abandoned, 1);
    assert.equal(first.active().length, 0);

    const second = await env.spawn({ workflows: [wf] });
    assert.equal(await handle.result({ timeout: 10_000 }), "second attempt");
    assert.equal(counts.get("long"), 2, "the released task ran again (at-least-once)");
    await until("the second worker to count the run", () => (second.stats.ended.completed === 1 ? true : undefined));
  });

  it("leaves no timer behind: a process exits promptly after stop() and close()", async (t) => {
    const fixture = fileURLToPath(new URL("./fixtures/exit-worker.ts", import.meta.url));
    const child = spawn(process.execPath, ["--import", "tsx", fixture, env.url, unique("exit")], {
      cwd: fileURLToPath(new URL("../../", import.meta.url)),
      stdio: ["ignore", "pipe", "pipe"],
    });
    t.after(() => void (child.exitCode === null && child.signalCode === null && child.kill("SIGKILL")));
    let output = "";
    let closedAt = 0;
    child.stdout.on("data", (chunk) => {
      output += chunk;
      if (!closedAt && output.includes("closed")) closedAt = Date.now();
    });
    child.stderr.on("data", (chunk) => (output += chunk));
    const code = await within(new Promise<number | null>((resolve) => child.on("exit", resolve)), 30_000, "the process to exit");
    assert.equal(code, 0, output);
    assert.match(output, /closed done/);
    const lingered = Date.now() - closedAt;
    assert.ok(lingered < 4_000, `the process lingered ${lingered} ms after close (poll 5 s, shutdown timeout 10 s)`);
  });
});

describe("worker leases", () => {
  it("keeps a long task's lease alive with heartbeats", async () => {
    const release = gate();
    const entered = latch("the task to start");
    const wf = workflow({ name: unique("heartbeat") }).v("1", {
      async handler(run) {
        return task({
          name: "slow",
          async handler() {
            entered.raise();
            await release.wait();
            return "ok";
          },
        }).start(run, null);
      },
    });
    const w = await env.spawn({ workflows: [wf], leaseMs: 600 });
    const handle = await wf.start(env.aiki, null);
    await entered.wait();
    const first = await handle.get();
    // Wait for lease renewals (every 200 ms) to move the expiry well past the first lease's end.
    await until("the lease to be renewed", async () => {
      const run = await handle.get();
      return Date.parse(run.lease_expires_at!) > Date.parse(first.lease_expires_at!) + 300 ? run : undefined;
    }, 5_000);
    release.open();
    assert.equal(await handle.result({ timeout: 10_000 }), "ok");
    const [run] = await env.sql`select lease_expiries from aiki.runs where id = ${handle.id}::uuid`;
    assert.equal(run!.lease_expiries, 0);
    assert.equal(w.stats.ended.lost, 0);
    await untilStatus(env.aiki, handle.id, "completed");
  });

  it("never holds two executions of one run: a re-claim ends the older one, and the newer stays heartbeated", async () => {
    const release = gate();
    const signals: AbortSignal[] = [];
    const abortedBeforeNext: boolean[] = [];
    const wf = workflow({ name: unique("reclaimed") }).v("1", {
      async handler(run) {
        return task({
          name: "held",
          async handler(_input: null, ctx) {
            abortedBeforeNext.push(signals.every((s) => s.aborted));
            signals.push(ctx.signal);
            await release.wait();
            return ctx.attempt;
          },
        }).start(run, null);
      },
    });
    const w = await env.spawn({ workflows: [wf], leaseMs: 3_000 });
    const handle = await wf.start(env.aiki, null);
    await until("the task to start", () => (signals.length === 1 ? true : undefined));
    // The lease ran out (as when heartbeats failed for a while): the same worker claims the run again.
    await env.sql`update aiki.runs set lease_expires_at = now() - interval '1 second', available_at = now() - interval '1 second' where id = ${handle.id}::uuid`;
    await env.sql`select pg_notify('aiki_wake', 'default')`;
    await until("the re-claim to start the task again", () => (signals.length === 2 ? true : undefined));
    assert.deepEqual(abortedBeforeNext, [true, true], "the older execution ended before the newer one began");
    assert.equal(w.stats.ended.lost, 1);
    assert.deepEqual(w.active(), [handle.id], "one execution of the run, the newer one");
    // Heartbeats keep renewing the newer lease (the older execution's end did not drop it).
    const first = await handle.get();
    await until("the newer lease to be renewed", async () => {
      const run = await handle.get();
      return Date.parse(run.lease_expires_at!) > Date.parse(first.lease_expires_at!) ? run : undefined;
    }, 5_000);
    assert.deepEqual(w.active(), [handle.id]);
    release.open();
    assert.equal(await handle.result({ timeout: 10_000 }), 1);
    assert.equal(w.stats.ended.lost, 1);
  });

  it("judges its leases by a monotonic clock: the wall clock jumping 60 s ahead loses no run", async () => {
    const realNow = Date.now;
    const second = latch("the second attempt");
    const wf = workflow({ name: unique("wall-clock") }).v("1", {
      async handler(run) {
        return task({
          name: "jump",
          retry: { type: "fixed", maxAttempts: 2, baseDelayMs: 10 },
          handler(_input: null, ctx) {
            if (ctx.attempt === 1) {
              const at = performance.now();
              const jumped = realNow() + 60_000;
              Date.now = () => jumped + (performance.now() - at);
              throw new Error("first attempt fails while the wall clock jumps");
            }
            Date.now = realNow;
            second.raise();
            return "ok";
          },
        }).start(run, null);
      },
    });
    const w = await env.spawn({ workflows: [wf], leaseMs: 3_000 });
    try {
      const handle = await wf.start(env.aiki, null);
      await second.wait();
      const done = await untilStatus(env.aiki, handle.id, "completed");
      assert.equal(done.output, "ok");
      assert.equal(w.stats.ended.lost, 0);
    } finally {
      Date.now = realNow;
    }
  });
});

describe("registration", () => {
  it("a worker registers the versions and queues it serves at spawn, and removes itself on stop", async () => {
    const name = unique("registered");
    const v1 = workflow({ name }).v("1", { handler: async () => null });
    const pending = await v1.start(env.aiki, null, { queue: "side", startAt: new Date(Date.now() + 60_000) });
    assert.equal((await pending.get()).unserved, false, "scheduled, not pending: not marked");
    await env.sql`update aiki.runs set status = 'pending', available_at = 'infinity' where id = ${pending.id}::uuid`;
    assert.equal((await pending.get()).unserved, true, "pending, and no worker at all");

    const w = await env.spawn({ workflows: [v1], queues: ["side"] });
    const [row] = await env.sql`select workflows, queues, stale_after_ms, info->>'pid' as pid from aiki.workers where id = ${w.id}`;
    assert.deepEqual({ ...row }, { workflows: [v1.key], queues: ["side"], stale_after_ms: 3_000, pid: String(process.pid) });
    assert.equal((await pending.get()).unserved, false, "served by the new worker");
    assert.equal((await env.aiki.listRuns({ workflow: name })).find((r) => r.id === pending.id)?.unserved, false);

    await w.stop();
    assert.equal((await env.sql`select 1 from aiki.workers where id = ${w.id}`).length, 0, "removed on stop");
    assert.equal((await pending.get()).unserved, true);
    await pending.cancel();
  });
});
