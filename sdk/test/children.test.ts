// startAsChild and ChildRunHandle.waitForStatus: child runs are journal steps of their parent.
// A replay finds the child it started instead of starting another; any terminal status of the
// child wakes a parent that waits for it; a fan-in over many children wakes the parent once;
// cancelling a parent cancels its whole subtree.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { event, NonRetryableError, task, workflow } from "../index.js";
import { Counts, environment, gate, latch, unique, until, untilStatus, type Env } from "./support.js";

let env: Env;
before(async () => {
  env = await environment();
});
after(() => env.close());

describe("startAsChild", () => {
  it("starts the child once although the parent replays, and returns its output", async () => {
    const counts = new Counts();
    const child = workflow({ name: unique("child") }).v("1", {
      async handler(_run, input: { n: number }) {
        counts.bump("child");
        return input.n * 2;
      },
    });
    const parent = workflow({ name: unique("parent") }).v("1", {
      async handler(run) {
        counts.bump("parent");
        const handle = await child.startAsChild(run, { n: 21 });
        await run.sleep("after-start", 20);
        const outcome = await handle.waitForStatus("completed");
        return { childId: handle.id, outcome };
      },
    });
    await env.spawn({ workflows: [parent, child] });
    const handle = await parent.start(env.aiki, null);
    const output = await handle.result({ timeout: 10_000 });

    assert.deepEqual(output.outcome, { success: true, state: { status: "completed", output: 42 } });
    assert.equal(counts.get("child"), 1);
    assert.ok(counts.get("parent") >= 2, "the parent replayed");
    const children = await env.sql`select id, parent_step_key from aiki.runs where parent_id = ${handle.id}::uuid`;
    assert.deepEqual(children.map((c) => [c.id, c.parent_step_key]), [[output.childId, `${child.name}#1`]]);
  });

  it("wakes the parent with the error when the child fails", async () => {
    const child = workflow({ name: unique("failing-child") }).v("1", {
      async handler() {
        throw new NonRetryableError("the courier crashed");
      },
    });
    const parent = workflow({ name: unique("parent") }).v("1", {
      async handler(run) {
        const handle = await child.startAsChild(run, null);
        return handle.waitForStatus("completed");
      },
    });
    await env.spawn({ workflows: [parent, child] });
    const handle = await parent.start(env.aiki, null);
    const outcome = await handle.result({ timeout: 10_000 });

    assert.equal(outcome.success, false);
    assert.ok(!outcome.success);
    assert.equal(outcome.cause, "run_terminated");
    assert.equal(outcome.state.status, "failed");
    const error = outcome.state.error as { name: string; message: string };
    assert.equal(error.name, "NonRetryableError");
    assert.equal(error.message, "the courier crashed");
  });

  it("wakes the parent when the child is cancelled", async () => {
    const child = workflow({ name: unique("slow-child") }).v("1", {
      async handler(run) {
        await run.sleep("forever", { days: 1 });
      },
    });
    const parent = workflow({ name: unique("parent") }).v("1", {
      async handler(run) {
        const handle = await child.startAsChild(run, null);
        return { childId: handle.id, outcome: await handle.waitForStatus("completed") };
      },
    });
    await env.spawn({ workflows: [parent, child] });
    const handle = await parent.start(env.aiki, null);
    await untilStatus(env.aiki, handle.id, "waiting");
    const [row] = await env.sql`select id from aiki.runs where parent_id = ${handle.id}::uuid`;
    await untilStatus(env.aiki, row!.id, "sleeping");
    assert.equal(await child.handle(env.aiki, row!.id).cancel("no longer needed"), "cancelled");

    const output = await handle.result({ timeout: 10_000 });
    assert.ok(!output.outcome.success);
    assert.equal(output.outcome.cause, "run_terminated");
    assert.equal(output.outcome.state.status, "cancelled");
    assert.deepEqual(output.outcome.state.error, { name: "Cancelled", message: "no longer needed" });
  });

  it("fans out 200 children and fans in with one wake-up of the parent", async () => {
    const N = 200;
    const counts = new Counts();
    const release = gate();
    const work = task({
      name: "work",
      async handler(i: number) {
        counts.bump(`child ${i}`);
        await release.wait();
        return i;
      },
    });
    const child = workflow({ name: unique("leaf") }).v("1", {
      async handler(run, i: number) {
        return work.start(run, i);
      },
    });
    const before = task({ name: "before", handler: () => void counts.bump("before") });
    const afterTask = task({ name: "after", handler: (sum: number) => (counts.bump("after"), sum) });
    const parent = workflow({ name: unique("fan") }).v("1", {
      async handler(run) {
        counts.bump("parent");
        await before.start(run, null);
        const handles = await Promise.all(Array.from({ length: N }, (_, i) => child.startAsChild(run, i)));
        const outcomes = await Promise.all(handles.map((h) => h.waitForStatus("completed")));
        const sum = outcomes.reduce((total, o) => total + (o.success ? (o.state.output as number) : 0), 0);
        return afterTask.start(run, sum);
      },
    });
    const w = await env.spawn({ workflows: [parent, child], concurrency: 50 });
    const handle = await parent.start(env.aiki, null);

    // Hold the children until the parent is suspended on the fan-in, so it cannot see them finish
    // while still running: then exactly one wake-up can resume it.
    await untilStatus(env.aiki, handle.id, "waiting", 30_000);
    assert.equal(counts.get("parent"), 1);
    release.open();

    assert.equal(await handle.result({ timeout: 30_000 }), (N * (N - 1)) / 2);
    assert.equal(counts.get("parent"), 2, "the parent ran twice: until the fan-in, then once after it");
    assert.equal(counts.get("before"), 1);
    assert.equal(counts.get("after"), 1);
    for (let i = 0; i < N; i++) assert.equal(counts.get(`child ${i}`), 1, `child ${i} ran once`);
    const [row] = await env.sql`
      select count(*)::int as n, count(*) filter (where status = 'completed')::int as completed
      from aiki.runs where parent_id = ${handle.id}::uuid`;
    assert.deepEqual({ ...row }, { n: N, completed: N });
    assert.equal(w.stats.ended.failed, 0);
  });
});

describe("RunHandle.cancel", () => {
  it("cancels a sleeping parent's children, grandchildren, and aborts a running task", async () => {
    const entered = latch("the child's task to start");
    const aborted = latch("the child's task signal to abort");
    const counts = new Counts();
    const blocking = task({
      name: "blocking",
      async handler(_: null, ctx) {
        counts.bump("blocking");
        ctx.signal.addEventListener("abort", () => aborted.raise());
        entered.raise();
        await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve));
        return "finished anyway";
      },
    });
    const waiting = workflow({ name: unique("waiting") }).v("1", {
      events: { never: event<null>() },
      async handler(run) {
        return run.events.never.wait();
      },
    });
    const sleeping = workflow({ name: unique("sleeping") }).v("1", {
      async handler(run) {
        await waiting.startAsChild(run, null);
        await run.sleep("long", { hours: 1 });
      },
    });
    const running = workflow({ name: unique("running") }).v("1", {
      async handler(run) {
        return blocking.start(run, null);
      },
    });
    const parent = workflow({ name: unique("parent") }).v("1", {
      async handler(run) {
        await waiting.startAsChild(run, null);
        await sleeping.startAsChild(run, null);
        await running.startAsChild(run, null);
        await run.sleep("long", { hours: 1 });
      },
    });
    const w = await env.spawn({ workflows: [parent, waiting, sleeping, running], leaseMs: 600 });
    const handle = await parent.start(env.aiki, null);
    await untilStatus(env.aiki, handle.id, "sleeping");
    await entered.wait();
    const tree = async () => env.sql<{ id: string; workflow: string; status: string; depth: number }[]>`
      with recursive tree (id, depth) as (
        select id, 1 from aiki.runs where parent_id = ${handle.id}::uuid
        union all
        select r.id, t.depth + 1 from aiki.runs r join tree t on r.parent_id = t.id)
      select r.id, r.workflow, r.status::text, t.depth from tree t join aiki.runs r using (id) order by t.depth, r.workflow`;
    const byWorkflow = (rows: Awaited<ReturnType<typeof tree>>) =>
      Object.fromEntries(rows.map((r) => [`${r.depth}:${r.workflow === waiting.name ? "waiting" : r.workflow === sleeping.name ? "sleeping" : "running"}`, r.status]));
    for (const row of await tree()) await untilStatus(env.aiki, row.id, ["waiting", "sleeping", "running"]);
    const [grandchild] = (await tree()).filter((r) => r.depth === 2);
    assert.ok(grandchild);
    await untilStatus(env.aiki, grandchild.id, "waiting");
    assert.deepEqual(byWorkflow(await tree()), { "1:waiting": "waiting", "1:sleeping": "sleeping", "1:running": "running", "2:waiting": "waiting" });

    assert.equal(await handle.cancel("order withdrawn"), "cancelled");
    assert.equal(await handle.status(), "cancelled");
    assert.deepEqual(byWorkflow(await tree()), { "1:waiting": "cancelled", "1:sleeping": "cancelled", "1:running": "cancelled", "2:waiting": "cancelled" });
    for (const row of await tree()) {
      assert.deepEqual((await env.aiki.getRun(row.id)).error, { name: "Cancelled", message: "order withdrawn" });
    }

    // The worker learns it lost the running child at its next heartbeat and aborts the task.
    await aborted.wait(5_000);
    await untilStatus(env.aiki, (await tree()).find((r) => r.workflow === running.name)!.id, "cancelled");
    await until("the worker to drop the run", () => (w.active().length === 0 ? true : undefined), 5_000);
    assert.equal(counts.get("blocking"), 1);
    const [step] = await env.sql`
      select count(*)::int as n from aiki.steps s join aiki.runs r on r.id = s.run_id
      where r.workflow = ${running.name} and s.kind = 'task'`;
    assert.equal(step!.n, 0, "the aborted task recorded nothing");
    assert.equal(w.stats.ended.lost, 1);
  });
});
