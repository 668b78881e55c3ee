// run.events: a workflow waits for named events; handles send them. Events sent before the wait
// are buffered, a wait with a timeout resolves {timeout: true}, and event(zodSchema) validates
// data where it enters — on send.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { z } from "zod";
import { event, SchemaValidationError, InvalidTransitionError, task, workflow } from "../index.js";
import { Counts, environment, rejects, stepOf, unique, until, untilStatus, type Env } from "./support.js";

let env: Env;
before(async () => {
  env = await environment();
});
after(() => env.close());

describe("run.events", () => {
  it("receives an event sent before the workflow waits for it", async () => {
    const wf = workflow({ name: unique("early") }).v("1", {
      events: { accepted: event<{ eta: number }>() },
      async handler(run) {
        const accepted = await run.events.accepted.wait({ timeout: { seconds: 30 } });
        return accepted;
      },
    });
    // No worker yet: the run has not started, so the event can only be buffered.
    const handle = await wf.start(env.aiki, null);
    await handle.events.accepted.send({ eta: 25 });
    const [buffered] = await env.sql`select consumed_by from aiki.events where run_id = ${handle.id}::uuid`;
    assert.equal(buffered!.consumed_by, null, "buffered, not yet consumed");

    const w = await env.spawn({ workflows: [wf] });
    assert.deepEqual(await handle.result({ timeout: 10_000 }), { timeout: false, data: { eta: 25 } });
    assert.equal(w.stats.ended.suspended, 0, "the wait found the event at once, without suspending");
    const [consumed] = await env.sql`select consumed_by from aiki.events where run_id = ${handle.id}::uuid`;
    assert.equal(consumed!.consumed_by, "accepted#1");
  });

  it("wakes a waiting run when the event arrives", async () => {
    const wf = workflow({ name: unique("late") }).v("1", {
      events: { accepted: event<{ eta: number }>() },
      async handler(run) {
        return run.events.accepted.wait();
      },
    });
    await env.spawn({ workflows: [wf] });
    const handle = await wf.start(env.aiki, null);
    const waiting = await untilStatus(env.aiki, handle.id, "waiting");
    assert.equal(waiting.available_at, null, "a wait without timeout sets no timer");
    await handle.events.accepted.send({ eta: 7 });
    assert.deepEqual(await handle.result({ timeout: 10_000 }), { timeout: false, data: { eta: 7 } });
  });

  it("returns {timeout: true} when no event arrives in time", async () => {
    const counts = new Counts();
    const wf = workflow({ name: unique("timeout") }).v("1", {
      events: { accepted: event<{ eta: number }>() },
      async handler(run) {
        counts.bump("handler");
        const accepted = await run.events.accepted.wait({ timeout: 100 });
        return accepted;
      },
    });
    await env.spawn({ workflows: [wf] });
    const started = Date.now();
    const handle = await wf.start(env.aiki, null);
    assert.deepEqual(await handle.result({ timeout: 10_000 }), { timeout: true });
    assert.ok(Date.now() - started >= 100, "not before the timeout");
    assert.equal(counts.get("handler"), 2, "suspended once, woken once by the timeout");
    const step = stepOf(await handle.get(), "accepted#1");
    assert.deepEqual([step.kind, step.status, step.output], ["event", "completed", { timeout: true }]);
  });

  it("delivers events of one name first sent, first received", async () => {
    const wf = workflow({ name: unique("order") }).v("1", {
      events: { item: event<number>() },
      async handler(run) {
        const got: unknown[] = [];
        for (let i = 0; i < 3; i++) got.push(await run.events.item.wait());
        return got;
      },
    });
    const handle = await wf.start(env.aiki, null);
    await handle.events.item.send(1);
    await handle.events.item.send(2);
    await handle.events.item.send(3);
    await env.spawn({ workflows: [wf] });
    assert.deepEqual(await handle.result({ timeout: 10_000 }), [1, 2, 3].map((data) => ({ timeout: false, data })));
  });

  it("ignores a resend with the same idempotency key", async () => {
    const wf = workflow({ name: unique("dedupe") }).v("1", {
      events: { item: event<number>() },
      async handler(run) {
        const first = await run.events.item.wait();
        const second = await run.events.item.wait();
        return [first, second];
      },
    });
    const handle = await wf.start(env.aiki, null);
    await handle.events.item.send(1, { idempotencyKey: "a" });
    await handle.events.item.send(99, { idempotencyKey: "a" });
    await handle.events.item.send(2, { idempotencyKey: "b" });
    await env.spawn({ workflows: [wf] });
    assert.deepEqual(await handle.result({ timeout: 10_000 }), [{ timeout: false, data: 1 }, { timeout: false, data: 2 }]);
  });

  it("rejects an event to a finished run with InvalidTransitionError", async () => {
    const wf = workflow({ name: unique("finished") }).v("1", {
      events: { late: event<number>() },
      async handler() {
        return "done";
      },
    });
    await env.spawn({ workflows: [wf] });
    const handle = await wf.start(env.aiki, null);
    await handle.result({ timeout: 10_000 });
    await rejects(handle.events.late.send(1), InvalidTransitionError);
  });
});

describe("event(zodSchema)", () => {
  it("rejects bad event data on send with SchemaValidationError, and stores nothing", async () => {
    const wf = workflow({ name: unique("typed") }).v("1", {
      events: { accepted: event(z.object({ eta: z.number().int().positive() })) },
      async handler(run) {
        return run.events.accepted.wait();
      },
    });
    const handle = await wf.start(env.aiki, null);
    const error = await rejects(handle.events.accepted.send({ eta: -1 }), SchemaValidationError);
    assert.match(error.message, /event accepted/);
    // @ts-expect-error: the type says eta is a number, too
    await rejects(handle.events.accepted.send({ eta: "soon" }), SchemaValidationError);
    const [row] = await env.sql`select count(*)::int as n from aiki.events where run_id = ${handle.id}::uuid`;
    assert.equal(row!.n, 0);

    await handle.events.accepted.send({ eta: 3 });
    await env.spawn({ workflows: [wf] });
    assert.deepEqual(await handle.result({ timeout: 10_000 }), { timeout: false, data: { eta: 3 } });
  });

  it("stores the parsed data (defaults applied)", async () => {
    const wf = workflow({ name: unique("defaults") }).v("1", {
      events: { accepted: event(z.object({ eta: z.number(), note: z.string().default("none") })) },
      async handler(run) {
        return run.events.accepted.wait();
      },
    });
    const handle = await wf.start(env.aiki, null);
    await handle.events.accepted.send({ eta: 1 } as { eta: number; note: string });
    await env.spawn({ workflows: [wf] });
    assert.deepEqual(await handle.result({ timeout: 10_000 }), { timeout: false, data: { eta: 1, note: "none" } });
  });
});

describe("run.events between tasks", () => {
  it("runs between event waits without re-running when later events wake the run", async () => {
    const counts = new Counts();
    const t = task({ name: "between", handler: () => counts.bump("between") });
    const wf = workflow({ name: unique("between") }).v("1", {
      events: { go: event<null>() },
      async handler(run) {
        await run.events.go.wait();
        await t.start(run, null);
        await run.events.go.wait();
        return counts.get("between");
      },
    });
    await env.spawn({ workflows: [wf] });
    const handle = await wf.start(env.aiki, null);
    await untilStatus(env.aiki, handle.id, "waiting");
    await handle.events.go.send(null);
    await until("the second wait to be registered", async () =>
      (await handle.get()).journal?.some((s) => s.key === "go#2") || undefined);
    await handle.events.go.send(null);
    assert.equal(await handle.result({ timeout: 10_000 }), 1);
    assert.equal(counts.get("between"), 1);
  });
});
