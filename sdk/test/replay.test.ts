// Replay: the handler re-runs from the top on every claim, and the journal answers every durable
// call it already made. Side effects are counted inside task handlers, so "ran once" means the
// task's code ran once, however often the workflow's code replayed.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { NonDeterminismError, task, workflow } from "../index.js";
import { Counts, environment, latch, stepOf, unique, until, untilStatus, type Env } from "./support.js";

let env: Env;
before(async () => {
  env = await environment();
});
after(() => env.close());

describe("task", () => {
  it("a completed task never runs again when the handler replays", async () => {
    const counts = new Counts();
    const a = task({ name: "a", handler: (n: number) => (counts.bump("a"), n + 1) });
    const b = task({ name: "b", handler: (n: number) => (counts.bump("b"), n * 10) });
    const wf = workflow({ name: unique("replay") }).v("1", {
      async handler(run, input: number) {
        counts.bump("handler");
        const x = await a.start(run, input);
        await run.sleep("pause", 30);
        const y = await b.start(run, x);
        return { x, y };
      },
    });
    await env.spawn({ workflows: [wf] });
    const handle = await wf.start(env.aiki, 4);

    assert.deepEqual(await handle.result({ timeout: 10_000 }), { x: 5, y: 50 });
    assert.equal(counts.get("a"), 1, "task a ran once");
    assert.equal(counts.get("b"), 1, "task b ran once");
    assert.equal(counts.get("handler"), 2, "the handler ran, suspended on the sleep, and replayed once");
    const run = await handle.get();
    assert.deepEqual(run.journal?.map((s) => [s.key, s.kind, s.status]), [
      ["a#1", "task", "completed"], ["pause#1", "sleep", "completed"], ["b#1", "task", "completed"],
    ]);
  });

  it("gives each call of the same task its own step key (name#occurrence)", async () => {
    const counts = new Counts();
    const charge = task({ name: "charge", handler: (cents: number, ctx) => (counts.bump(ctx.stepKey), cents) });
    const wf = workflow({ name: unique("occurrences") }).v("1", {
      async handler(run) {
        const first = await charge.start(run, 100);
        await run.sleep("between", 10);
        const [second, third] = await Promise.all([charge.start(run, 200), charge.start(run, 300)]);
        return [first, second, third];
      },
    });
    await env.spawn({ workflows: [wf] });
    const handle = await wf.start(env.aiki, null);
    assert.deepEqual(await handle.result({ timeout: 10_000 }), [100, 200, 300]);
    assert.deepEqual([counts.get("charge#1"), counts.get("charge#2"), counts.get("charge#3")], [1, 1, 1]);
    const run = await handle.get();
    assert.deepEqual(stepOf(run, "charge#3").output, 300);
  });

  it("hands the task a stable idempotency key: run id and step key", async () => {
    const keys: string[] = [];
    const t = task({ name: "keyed", handler: (_: null, ctx) => void keys.push(ctx.idempotencyKey) });
    const wf = workflow({ name: unique("idem") }).v("1", {
      async handler(run) {
        await t.start(run, null);
      },
    });
    await env.spawn({ workflows: [wf] });
    const handle = await wf.start(env.aiki, null);
    await handle.result({ timeout: 10_000 });
    assert.deepEqual(keys, [`${handle.id}:keyed#1`]);
  });
});

describe("run.now, run.random, run.uuid", () => {
  it("are recorded once and return the same values on every replay", async () => {
    const seen: unknown[] = [];
    const wf = workflow({ name: unique("values") }).v("1", {
      async handler(run) {
        const values = { now: (await run.now()).toISOString(), random: await run.random(), uuid: await run.uuid() };
        seen.push(values);
        await run.sleep("nap", 20);
        await run.sleep("nap", 20);
        return values;
      },
    });
    await env.spawn({ workflows: [wf] });
    const handle = await wf.start(env.aiki, null);
    const output = await handle.result({ timeout: 10_000 });

    assert.equal(seen.length, 3, "the handler ran three times (two sleeps)");
    for (const values of seen) assert.deepEqual(values, output);
    assert.ok(output.random >= 0 && output.random < 1);
    assert.match(output.uuid, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    const run = await handle.get();
    assert.equal(stepOf(run, "random#1").output, output.random);
    assert.equal(stepOf(run, "uuid#1").output, output.uuid);
    assert.equal(new Date(stepOf(run, "now#1").output as string).toISOString(), output.now);
  });

  it("run.now() reads the database clock, not the worker's", async () => {
    const wf = workflow({ name: unique("clock") }).v("1", {
      async handler(run) {
        return (await run.now()).toISOString();
      },
    });
    await env.spawn({ workflows: [wf] });
    const before = await env.sql<{ now: Date }[]>`select now() as now`;
    const handle = await wf.start(env.aiki, null);
    const now = new Date(await handle.result({ timeout: 10_000 }));
    const after = await env.sql<{ now: Date }[]>`select now() as now`;
    assert.ok(now >= before[0]!.now && now <= after[0]!.now, `${now.toISOString()} lies between two database clock reads`);
  });
});

describe("run.logger", () => {
  it("logs each line once although the handler replays", async () => {
    const wf = workflow({ name: unique("logger") }).v("1", {
      async handler(run) {
        run.logger.info("before the sleep", { n: 1 });
        await run.sleep("nap", 20);
        run.logger.warn("after the sleep");
        await run.sleep("nap", 20);
        run.logger.error("at the end");
        return null;
      },
    });
    await env.spawn({ workflows: [wf] });
    const handle = await wf.start(env.aiki, null);
    await handle.result({ timeout: 10_000 });
    const lines = env.logs.filter((line) => line.includes(handle.id));
    assert.deepEqual(lines, [
      `info: [${wf.key} ${handle.id}] before the sleep {"n":1}`,
      `warn: [${wf.key} ${handle.id}] after the sleep`,
      `error: [${wf.key} ${handle.id}] at the end`,
    ]);
  });
});

describe("non-determinism", () => {
  it("fails the run when changed code calls another step than the journal recorded", async () => {
    const name = unique("changed");
    const counts = new Counts();
    const a = task({ name: "a", handler: () => void counts.bump("a") });
    const b = task({ name: "b", handler: () => void counts.bump("b") });
    const v1 = workflow({ name }).v("1", {
      async handler(run) {
        await a.start(run, null);
        await run.sleep("wait", { hours: 1 });
      },
    });
    // The same version, redeployed with code that now calls b first.
    const v1changed = workflow({ name }).v("1", {
      async handler(run) {
        await b.start(run, null);
        await a.start(run, null);
        await run.sleep("wait", { hours: 1 });
      },
    });

    const first = await env.spawn({ workflows: [v1] });
    const handle = await v1.start(env.aiki, null);
    await untilStatus(env.aiki, handle.id, "sleeping");
    await first.stop();
    // Pause and resume make the sleeping run claimable now, so the new code replays it.
    await handle.pause();
    await handle.resume();
    await env.spawn({ workflows: [v1changed] });

    const outcome = await handle.waitForStatus("completed", { timeout: 10_000 });
    assert.equal(outcome.success, false);
    assert.ok(!outcome.success && outcome.cause === "run_terminated");
    assert.equal(outcome.state.status, "failed");
    const error = outcome.state.error as { name: string; message: string };
    assert.equal(error.name, "NonDeterminismError");
    assert.match(error.message, /step 'a#1'/, "names the recorded step");
    assert.match(error.message, /recorded task 'a'/, "names the recorded call");
    assert.match(error.message, /calls task 'b'/, "names the new call");
    assert.equal(counts.get("a"), 1);
    assert.equal(counts.get("b"), 0, "the new call's task never ran");
  });

  it("does not mistake a concurrent branch reaching new steps for changed code", async () => {
    // Journal after the first worker: t1, t2 completed; t3 was running when the worker stopped.
    // On replay t3 is called while t2 is still unreached (t2 follows t1 in another branch).
    const counts = new Counts();
    const t3Started = latch("t3 to start");
    const t1 = task({ name: "t1", handler: () => counts.bump("t1") });
    const t2 = task({ name: "t2", handler: () => counts.bump("t2") });
    const t3 = task({
      name: "t3",
      async handler(_: null, ctx) {
        if (counts.bump("t3") === 1) {
          t3Started.raise();
          await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve));
        }
        return "t3";
      },
    });
    const wf = workflow({ name: unique("branches") }).v("1", {
      async handler(run) {
        return Promise.all([
          (async () => [await t1.start(run, null), await t2.start(run, null)])(),
          t3.start(run, null),
        ]);
      },
    });
    const first = await env.spawn({ workflows: [wf] });
    const handle = await wf.start(env.aiki, null);
    await t3Started.wait();
    await until("t2 to be journalled", async () => (await handle.get()).journal?.some((s) => s.key === "t2#1") || undefined);
    await first.stop({ timeoutMs: 10 });
    await env.spawn({ workflows: [wf] });
    assert.deepEqual(await handle.result({ timeout: 10_000 }), [[1, 1], "t3"]);
    assert.deepEqual([counts.get("t1"), counts.get("t2"), counts.get("t3")], [1, 1, 2]);
  });

  it("fails the run when the code calls another kind of step under a recorded key", async () => {
    const name = unique("kind");
    const v1 = workflow({ name }).v("1", {
      async handler(run) {
        await task({ name: "step", handler: () => 1 }).start(run, null);
        await run.sleep("wait", { hours: 1 });
      },
    });
    const changed = workflow({ name }).v("1", {
      async handler(run) {
        await run.sleep("step", 10);
      },
    });
    const first = await env.spawn({ workflows: [v1] });
    const handle = await v1.start(env.aiki, null);
    await untilStatus(env.aiki, handle.id, "sleeping");
    await first.stop();
    await handle.pause();
    await handle.resume();
    await env.spawn({ workflows: [changed] });
    const outcome = await handle.waitForStatus("completed", { timeout: 10_000 });
    assert.ok(!outcome.success && outcome.cause === "run_terminated");
    const error = outcome.state.error as { name: string; message: string };
    assert.equal(error.name, NonDeterminismError.name);
    assert.match(error.message, /step 'step#1'.*recorded task 'step'.*calls sleep 'step'/);
  });
});
