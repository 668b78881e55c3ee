// Wake-ups that never wait for the safety poll. Each test runs an idle worker whose poll is
// ten minutes, so a run that is left waiting for it fails the test by the test's own timeout:
// nothing here measures time. Where a race is the point, the interleaving is forced with a lock
// held by the test (a transaction left open) and the worker's claim counter as the signal.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { event, task, workflow } from "../index.js";
import { environment, gate, latch, unique, until, type Env } from "./support.js";

const NEVER = { pollMs: 600_000 } as const;
const T = { timeout: 60_000 };

let env: Env;
before(async () => {
  env = await environment();
});
after(() => env.close());

describe("an idle worker wakes without the poll", () => {
  it("for a lone sleep: the worker arms its timer from its own suspend", T, async () => {
    const wf = workflow({ name: unique("nap") }).v("1", {
      async handler(run) {
        await run.sleep("nap", 200);
        return "rested";
      },
    });
    const queue = unique("q");
    const w = await env.spawn({ workflows: [wf], queues: [queue], ...NEVER });
    const handle = await wf.start(env.aiki, null, { queue });
    assert.equal(await handle.result({ timeout: 30_000 }), "rested");
    assert.equal(w.stats.ended.suspended, 1);
  });

  it("for a task retry scheduled by fail_step (suspended) and a run retry scheduled by fail_run", T, async () => {
    let failures = 0;
    const flaky = task({
      name: unique("flaky"),
      retry: { type: "fixed", maxAttempts: 3, baseDelayMs: 150 },
      handler: () => {
        if (++failures === 1) throw new Error("first attempt fails");
        return "ok";
      },
    });
    let attempts = 0;
    const wf = workflow({ name: unique("retry") }).v("1", {
      retry: { type: "fixed", maxAttempts: 2, baseDelayMs: 150 },
      async handler(run) {
        const value = await flaky.start(run, null);
        if (++attempts === 1) throw new Error("the run's first attempt fails");
        return value;
      },
    });
    const queue = unique("q");
    const w = await env.spawn({ workflows: [wf], queues: [queue], inlineRetryMaxMs: 0, ...NEVER });
    const handle = await wf.start(env.aiki, null, { queue });
    assert.equal(await handle.result({ timeout: 30_000 }), "ok");
    assert.equal(w.stats.ended.retrying, 2, "one suspended task retry, one run retry");
  });

  it("for a start in the future: the start announces its due time", T, async () => {
    const wf = workflow({ name: unique("later") }).v("1", { handler: async () => "started" });
    const queue = unique("q");
    const w = await env.spawn({ workflows: [wf], queues: [queue], ...NEVER });
    await until("the worker's first claim", () => (w.stats.claims > 0 ? true : undefined));
    const handle = await wf.start(env.aiki, null, { queue, delay: 300 });
    assert.equal(await handle.result({ timeout: 30_000 }), "started");
  });

  it("for a run resumed until its start time: the resume announces it", T, async () => {
    const wf = workflow({ name: unique("resumed") }).v("1", { handler: async () => "started" });
    const queue = unique("q");
    const handle = await wf.start(env.aiki, null, { queue, delay: 3_000 });
    await handle.pause();
    const w = await env.spawn({ workflows: [wf], queues: [queue], ...NEVER });
    await until("the worker's first claim", () => (w.stats.claims > 0 ? true : undefined));
    assert.equal(await handle.resume(), "scheduled", "the test must resume before the start time (3 s)");
    assert.equal(await handle.result({ timeout: 30_000 }), "started");
  });

  it("for a run started and sent an event at once, when its claim skipped the run the send_event held", T, async () => {
    const wf = workflow({ name: unique("greet") }).v("1", {
      async handler(run) {
        const hello = await run.events.hello.wait();
        return hello.timeout ? "no one" : hello.data;
      },
      events: { hello: event<string>() },
    });
    const queue = unique("q");
    await env.sql`select aiki.pause_queue(${queue})`;
    const handle = await wf.start(env.aiki, null, { queue });
    const w = await env.spawn({ workflows: [wf], queues: [queue], ...NEVER });
    await until("the worker's first claim", () => (w.stats.claims > 0 ? true : undefined));
    await env.sql.begin(async (tx) => {
      // The event is buffered under the run's row lock: a pending run, so no notification.
      await tx`select aiki.send_event(${handle.id}::uuid, 'hello', '"world"'::jsonb)`;
      const before = w.stats.claims;
      await env.sql`select aiki.resume_queue(${queue})`;
      await until("a claim that skips the locked run", () => (w.stats.claims > before ? true : undefined));
      assert.equal(w.stats.claimed, 0, "the run is locked: the claim must have skipped it");
    });
    assert.equal(await handle.result({ timeout: 30_000 }), "world");
  });

  it("for a run a paused or cancelled keyed run kept back", T, async () => {
    for (const act of ["pause", "cancel"] as const) {
      const blocked = gate();
      const started = latch(`the ${act} holder's task`);
      const hold = task({
        name: unique("hold"),
        handler: async () => {
          started.raise();
          await blocked.wait();
        },
      });
      const wf = workflow({ name: unique("keyed") }).v("1", {
        async handler(run, input: string) {
          if (input === "holder") await hold.start(run, null);
          return input;
        },
      });
      const queue = unique("q");
      await env.spawn({ workflows: [wf], queues: [queue], ...NEVER });
      const holder = await wf.start(env.aiki, "holder", { queue, concurrencyKey: "k" });
      await started.wait();
      const next = await wf.start(env.aiki, "next", { queue, concurrencyKey: "k" });
      await (act === "pause" ? holder.pause() : holder.cancel());
      assert.equal(await next.result({ timeout: 30_000 }), "next", `after ${act}`);
      blocked.open();
    }
  });

  it("for a parent whose child finishes: the child's end wakes it", T, async () => {
    const child = workflow({ name: unique("child") }).v("1", { handler: async (_run, n: number) => n * 2 });
    const parent = workflow({ name: unique("parent") }).v("1", {
      async handler(run) {
        const kid = await child.startAsChild(run, 21);
        const outcome = await kid.waitForStatus("completed");
        return outcome.success ? outcome.state.output : -1;
      },
    });
    const queue = unique("q");
    await env.spawn({ workflows: [parent, child], queues: [queue], ...NEVER });
    const handle = await parent.start(env.aiki, null, { queue });
    assert.equal(await handle.result({ timeout: 30_000 }), 42);
  });
});

describe("a flood of notifications", () => {
  it("costs an idle worker a few claims, not one each, and a real run after it is still claimed", T, async (t) => {
    const wf = workflow({ name: unique("flood") }).v("1", { handler: async () => "done" });
    const queue = unique("q");
    const w = await env.spawn({ workflows: [wf], queues: [queue], ...NEVER });
    await until("the worker's first claim", () => (w.stats.claims > 0 ? true : undefined));
    const before = w.stats.claims;
    const startedAt = Date.now();
    // 2,000 notifications in 2,000 transactions (one transaction would fold them into one).
    for (let i = 0; i < 2_000; i += 100) {
      await Promise.all(Array.from({ length: 100 }, () => env.sql`select pg_notify('aiki_wake', ${queue})`));
    }
    const floodMs = Date.now() - startedAt;
    // The damping's bound: two claims, then quiet periods of 10, 20, 40 … ms capped at 1 s.
    const bound = 12 + Math.ceil(floodMs / 1_000);
    const spent = w.stats.claims - before;
    t.diagnostic(`2,000 notifications in ${floodMs} ms cost ${spent} claims (bound ${bound})`);
    assert.ok(spent <= bound, `the flood (${floodMs} ms) cost ${spent} claims, over the bound ${bound}`);
    const handle = await wf.start(env.aiki, null, { queue });
    assert.equal(await handle.result({ timeout: 30_000 }), "done");
  });
});
