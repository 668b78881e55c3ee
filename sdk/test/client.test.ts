// The client side: workflow.start and its options, RunHandle (status, result, waitForStatus,
// pause, resume, lookups), and zod schemas, validated where data enters the engine.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { z } from "zod";
import {
  IdempotencyConflictError, InvalidTransitionError, PayloadTooLargeError, RunFailedError, RunNotFoundError, SchemaValidationError,
  TaskFailedError, event, task, workflow, type Client,
} from "../index.js";
import * as engine from "../engine.js";
import { Counts, environment, gate, latch, rejects, unique, until, untilStatus, type Env } from "./support.js";

let env: Env;
before(async () => {
  env = await environment();
});
after(() => env.close());

const runsOf = async (name: string) =>
  (await env.sql<{ n: number }[]>`select count(*)::int as n from aiki.runs where workflow = ${name}`)[0]!.n;

describe("workflow.start", () => {
  it("returns the same run for a repeated idempotency key", async () => {
    const wf = workflow({ name: unique("idem") }).v("1", { handler: async (_run, input: { orderId: string }) => input.orderId });
    const first = await wf.start(env.aiki, { orderId: "o-1" }, { idempotencyKey: "o-1" });
    const again = await wf.start(env.aiki, { orderId: "o-1" }, { idempotencyKey: "o-1" });
    assert.equal(again.id, first.id);
    assert.equal(await runsOf(wf.name), 1);
    await rejects(wf.start(env.aiki, { orderId: "o-2" }, { idempotencyKey: "o-1" }), IdempotencyConflictError);
    const other = await wf.start(env.aiki, { orderId: "o-1" }, { idempotencyKey: "o-1b" });
    assert.notEqual(other.id, first.id);
  });

  it("puts the run on the queue it names, or the version's default queue", async () => {
    const wf = workflow({ name: unique("queues") }).v("1", { queue: "billing", handler: async () => null });
    assert.equal((await (await wf.start(env.aiki, null)).get()).queue, "billing");
    assert.equal((await (await wf.start(env.aiki, null, { queue: "urgent" })).get()).queue, "urgent");
  });

  it("claims higher priority first", async () => {
    const order: number[] = [];
    const record = task({ name: "record", handler: (priority: number) => void order.push(priority) });
    const wf = workflow({ name: unique("priority") }).v("1", {
      async handler(run, priority: number) {
        await record.start(run, priority);
      },
    });
    const handles = [];
    for (const priority of [0, 10, -5, 5]) handles.push(await wf.start(env.aiki, priority, { priority }));
    await env.spawn({ workflows: [wf], concurrency: 1 });
    await Promise.all(handles.map((h) => h.result({ timeout: 10_000 })));
    assert.deepEqual(order, [10, 5, 0, -5]);
  });

  it("with a delay, schedules the run and starts it when due", async () => {
    const wf = workflow({ name: unique("delayed") }).v("1", { handler: async () => "started" });
    await env.spawn({ workflows: [wf] });
    const before = Date.now();
    const handle = await wf.start(env.aiki, null, { delay: { milliseconds: 300 } });
    const scheduled = await handle.get();
    assert.equal(scheduled.status, "scheduled");
    assert.ok(Date.parse(scheduled.available_at!) - Date.parse(scheduled.created_at) === 300);
    assert.equal(await handle.result({ timeout: 10_000 }), "started");
    assert.ok(Date.now() - before >= 300, "not before its delay");
  });

  it("with startAt, schedules the run for that time", async () => {
    const wf = workflow({ name: unique("start-at") }).v("1", { handler: async () => "started" });
    await env.spawn({ workflows: [wf] });
    const startAt = new Date(Date.now() + 300);
    const handle = await wf.start(env.aiki, null, { startAt });
    const scheduled = await handle.get();
    assert.equal(scheduled.status, "scheduled");
    assert.equal(Date.parse(scheduled.available_at!), startAt.getTime());
    assert.equal(await handle.result({ timeout: 10_000 }), "started");
    assert.ok(Date.parse((await handle.get()).started_at!) >= startAt.getTime());
  });

  it("with a concurrency key, runs one run of that key at a time", async () => {
    const release = gate();
    const entered = latch("the first run's task to start");
    const counts = new Counts();
    const wf = workflow({ name: unique("keyed") }).v("1", {
      async handler(run) {
        return task({
          name: "exclusive",
          async handler() {
            counts.bump("entered");
            entered.raise();
            await release.wait();
          },
        }).start(run, null);
      },
    });
    const a = await wf.start(env.aiki, null, { concurrencyKey: "customer-1" });
    const b = await wf.start(env.aiki, null, { concurrencyKey: "customer-1" });
    const c = await wf.start(env.aiki, null, { concurrencyKey: "customer-2" });
    const w = await env.spawn({ workflows: [wf], concurrency: 5 });
    await entered.wait();
    await until("one run per key to be in flight", () => (counts.get("entered") === 2 ? true : undefined));
    const statuses = await Promise.all([a, b, c].map((h) => h.status()));
    assert.deepEqual(statuses.sort(), ["pending", "running", "running"]);
    // Another worker asking now gets nothing: the key is taken.
    const probe = await engine.claim(env.sql, "probe", [wf.key], ["default"], 10, 1_000);
    assert.deepEqual(probe.runs, []);
    assert.equal(w.active().length, 2);
    release.open();
    await Promise.all([a, b, c].map((h) => h.result({ timeout: 10_000 })));
    assert.equal(counts.get("entered"), 3);
  });

  it("with a timeout, fails a run still unfinished at its deadline with DeadlineExceeded", async () => {
    const wf = workflow({ name: unique("deadline") }).v("1", {
      async handler(run) {
        await run.sleep("too-long", { days: 1 });
        return "never";
      },
    });
    await env.spawn({ workflows: [wf] });
    const started = Date.now();
    const handle = await wf.start(env.aiki, null, { timeout: { milliseconds: 200 } });
    const error = await rejects(handle.result({ timeout: 10_000 }), RunFailedError);
    assert.ok(Date.now() - started >= 200);
    assert.equal(error.status, "failed");
    assert.equal(error.details?.name, "DeadlineExceeded");
    assert.equal((await handle.get()).status, "failed");
  });

  it("with a timeout, fails a run whose task is still running at the deadline and aborts the task", async () => {
    const aborted = latch("the task's signal to abort");
    const counts = new Counts();
    const wf = workflow({ name: unique("deadline-task") }).v("1", {
      async handler(run) {
        return task({
          name: "endless",
          async handler(_: null, ctx) {
            counts.bump("endless");
            await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve));
            aborted.raise();
            return "too late";
          },
        }).start(run, null);
      },
    });
    // The worker learns of the deadline at its next heartbeat (a third of the lease).
    const w = await env.spawn({ workflows: [wf], leaseMs: 900 });
    const handle = await wf.start(env.aiki, null, { timeout: { milliseconds: 300 } });
    const error = await rejects(handle.result({ timeout: 10_000 }), RunFailedError);
    assert.equal(error.details?.name, "DeadlineExceeded");
    await aborted.wait(5_000);
    await until("the worker to drop the run", () => (w.active().length === 0 ? true : undefined));
    assert.equal(counts.get("endless"), 1);
    assert.deepEqual((await handle.get()).journal, [], "the late result was fenced off");
  });

  it("with maxLeaseExpiries, fails the run as CrashLoop after that many lost leases", async () => {
    const wf = workflow({ name: unique("crashloop") }).v("1", { handler: async () => null });
    const handle = await wf.start(env.aiki, null, { maxLeaseExpiries: 1 });
    // A worker that claims and then dies: its lease runs out unrenewed.
    await engine.claim(env.sql, "dying-worker", [wf.key], ["default"], 1, 100);
    await until("the expired lease to fail the run", async () => {
      await engine.claim(env.sql, "other-worker", ["nothing@0"], ["default"], 1, 100);
      return (await handle.status()) === "failed" ? true : undefined;
    });
    assert.equal(((await handle.get()).error as { name: string }).name, "CrashLoop");
  });

  it("rejects input that does not match the version's zod schema, writing no run", async () => {
    const wf = workflow({ name: unique("validated") }).v("1", {
      schema: { input: z.object({ orderId: z.string().min(1), qty: z.number().int().default(1) }) },
      handler: async (_run, input) => input,
    });
    const error = await rejects(wf.start(env.aiki, { orderId: "" } as never), SchemaValidationError);
    assert.match(error.message, new RegExp(`input of workflow ${wf.key}`));
    await rejects(wf.start(env.aiki, { qty: 2 } as never), SchemaValidationError);
    assert.equal(await runsOf(wf.name), 0);

    // What passes is the parsed value: defaults applied.
    await env.spawn({ workflows: [wf] });
    const handle = await wf.start(env.aiki, { orderId: "o-1" } as never);
    assert.deepEqual((await handle.get()).input, { orderId: "o-1", qty: 1 });
    assert.deepEqual(await handle.result({ timeout: 10_000 }), { orderId: "o-1", qty: 1 });
  });
});

describe("RunHandle", () => {
  it("status, get and result follow the run to its output", async () => {
    const release = gate();
    const wf = workflow({ name: unique("handle") }).v("1", {
      async handler(run, n: number) {
        await task({ name: "wait", handler: () => release.wait() }).start(run, null);
        return n * 2;
      },
    });
    const handle = await wf.start(env.aiki, 21);
    assert.equal(await handle.status(), "pending");
    await env.spawn({ workflows: [wf] });
    await untilStatus(env.aiki, handle.id, "running");
    release.open();
    assert.equal(await handle.result({ timeout: 10_000 }), 42);
    const run = await handle.get();
    assert.equal(run.status, "completed");
    assert.equal(run.output, 42);
    assert.ok(run.finished_at);
  });

  it("result() throws RunFailedError whose message carries the cause's name and message", async () => {
    const wf = workflow({ name: unique("fails") }).v("1", {
      async handler() {
        throw new Error("out of stock");
      },
    });
    await env.spawn({ workflows: [wf] });
    const handle = await wf.start(env.aiki, null);
    const error = await rejects(handle.result({ timeout: 10_000 }), RunFailedError);
    assert.equal(error.status, "failed");
    assert.equal(error.details?.message, "out of stock");
    assert.equal(error.message, `run ${handle.id} ended failed: Error: out of stock`);
  });

  it("waitForStatus is woken by the engine's notification, well before its 5 s re-read", async (t) => {
    const release = gate();
    const entered = latch("the task to start");
    const wf = workflow({ name: unique("notified") }).v("1", {
      async handler(run) {
        await task({ name: "gate", handler: async () => (entered.raise(), release.wait()) }).start(run, null);
        return "done";
      },
    });
    await env.spawn({ workflows: [wf] });
    const handle = await wf.start(env.aiki, null);
    await entered.wait();

    // A client whose reads the test can see: the wait's first read must find the run unfinished,
    // so only a notification (or the 5 s re-read) can make it look again.
    const watcher = env.client();
    const reads: string[] = [];
    const sql = new Proxy(watcher.sql, {
      apply: (target, self, args) => (Reflect.apply(target, self, args) as Promise<{ run: { status: string } }[]>)
        .then((rows) => (reads.push(rows[0]?.run?.status ?? "?"), rows)),
    });
    const reader: Client = { ...watcher, sql };
    const waiting = wf.handle(reader, handle.id).waitForStatus("completed", { timeout: 20_000 });
    await until("the wait's first read", () => (reads.length > 0 ? true : undefined));
    assert.deepEqual(reads, ["running"]);

    const released = performance.now();
    release.open();
    const outcome = await waiting;
    const elapsed = performance.now() - released;
    assert.deepEqual(outcome, { success: true, state: { status: "completed", output: "done" } });
    t.diagnostic(`waitForStatus resolved ${elapsed.toFixed(1)} ms after the last task was released`);
    assert.ok(elapsed < 2_000, `resolved after ${elapsed} ms; the fallback re-read is at 5 s`);
    assert.deepEqual(reads, ["running", "completed"], "one read, one notification, one re-read");
  });

  it("waitForStatus returns {cause: 'timeout'} when the run does not get there in time, saying no worker serves it", async () => {
    const wf = workflow({ name: unique("no-worker") }).v("1", { handler: async () => null });
    const handle = await wf.start(env.aiki, null);
    const started = Date.now();
    const message = `run ${handle.id} is pending, not completed, after 100 ms: no live worker serves ${wf.key} on queue default ` +
      "(is a worker with this workflow version running?)";
    assert.deepEqual(await handle.waitForStatus("completed", { timeout: 100 }),
      { success: false, cause: "timeout", status: "pending", unserved: true, message });
    assert.ok(Date.now() - started >= 100);
    const error = await rejects(handle.result({ timeout: 100 }), RunFailedError);
    assert.equal(error.message, message);
  });

  it("pause holds a waiting run though its event arrives; resume lets it finish", async () => {
    const counts = new Counts();
    const wf = workflow({ name: unique("paused") }).v("1", {
      events: { go: event<string>() },
      async handler(run) {
        counts.bump("handler");
        return run.events.go.wait();
      },
    });
    await env.spawn({ workflows: [wf] });
    const handle = await wf.start(env.aiki, null);
    await untilStatus(env.aiki, handle.id, "waiting");

    assert.equal(await handle.pause(), "paused");
    assert.equal(await handle.pause(), "paused", "pause is idempotent");
    await handle.events.go.send("now");
    assert.equal(await handle.status(), "paused", "the event is kept, the run stays held");
    assert.equal(counts.get("handler"), 1);

    assert.equal(await handle.resume(), "pending");
    assert.deepEqual(await handle.result({ timeout: 10_000 }), { timeout: false, data: "now" });
    await rejects(handle.resume(), InvalidTransitionError);
    await rejects(handle.pause(), InvalidTransitionError);
  });

  it("pause of a running run makes its worker drop it; resume lets another claim finish it", async () => {
    const release = gate();
    const entered = latch("the task to start");
    const counts = new Counts();
    const wf = workflow({ name: unique("pause-running") }).v("1", {
      async handler(run) {
        return task({
          name: "work",
          async handler() {
            if (counts.bump("work") === 1) {
              entered.raise();
              await release.wait();
            }
            return counts.get("work");
          },
        }).start(run, null);
      },
    });
    const w = await env.spawn({ workflows: [wf] });
    const handle = await wf.start(env.aiki, null);
    await entered.wait();
    assert.equal(await handle.pause(), "paused");
    release.open(); // the task finishes, but its result is fenced off: the lease is gone
    await until("the worker to drop the paused run", () => (w.active().length === 0 ? true : undefined));
    assert.equal(w.stats.ended.lost, 1);
    assert.equal(await handle.status(), "paused");
    assert.equal(await handle.resume(), "pending");
    assert.equal(await handle.result({ timeout: 10_000 }), 2, "the task ran again after resume");
  });

  it("is found by id and by idempotency key; unknown ones raise RunNotFoundError", async () => {
    const wf = workflow({ name: unique("lookup") }).v("1", { handler: async (_run, n: number) => n });
    const started = await wf.start(env.aiki, 7, { idempotencyKey: "k-7" });
    const byId = wf.handle(env.aiki, started.id);
    assert.equal(await byId.status(), "pending");
    const byKey = await wf.handleByIdempotencyKey(env.aiki, "k-7");
    assert.equal(byKey.id, started.id);

    await rejects(wf.handleByIdempotencyKey(env.aiki, "k-unknown"), RunNotFoundError);
    const missing = wf.handle(env.aiki, "01a1f000-0000-7000-8000-000000000000");
    await rejects(missing.status(), RunNotFoundError);
    await rejects(missing.cancel(), RunNotFoundError);
    await rejects(missing.waitForStatus("completed", { timeout: 100 }), RunNotFoundError);

    await env.spawn({ workflows: [wf] });
    assert.equal(await byKey.result({ timeout: 10_000 }), 7);
  });
});

describe("zod schemas", () => {
  it("a task's input schema rejects bad input before the task runs", async () => {
    const counts = new Counts();
    const charge = task({
      name: "charge",
      schema: { input: z.object({ cents: z.number().int().positive() }) },
      handler: (input: { cents: number }) => (counts.bump("charge"), input.cents),
    });
    const wf = workflow({ name: unique("task-input") }).v("1", {
      async handler(run, cents: number) {
        try {
          return await charge.start(run, { cents });
        } catch (error) {
          return { rejected: (error as Error).name };
        }
      },
    });
    await env.spawn({ workflows: [wf] });
    assert.deepEqual(await (await wf.start(env.aiki, -5)).result({ timeout: 10_000 }), { rejected: "SchemaValidationError" });
    assert.equal(counts.get("charge"), 0);
    assert.equal(await (await wf.start(env.aiki, 250)).result({ timeout: 10_000 }), 250);
    assert.equal(counts.get("charge"), 1);
  });

  it("a task's output schema fails the task when it returns bad output", async () => {
    const counts = new Counts();
    const quote = task({
      name: "quote",
      schema: { output: z.object({ price: z.number() }) },
      handler: () => (counts.bump("quote"), { price: "free" } as unknown as { price: number }),
    });
    const wf = workflow({ name: unique("task-output") }).v("1", {
      async handler(run) {
        try {
          return await quote.start(run, null);
        } catch (error) {
          assert.ok(error instanceof TaskFailedError);
          return { failed: error.details.name, message: error.details.message };
        }
      },
    });
    await env.spawn({ workflows: [wf] });
    const output = await (await wf.start(env.aiki, null)).result({ timeout: 10_000 }) as { failed: string; message: string };
    assert.equal(output.failed, "SchemaValidationError");
    assert.match(output.message, /output of task quote/);
    assert.equal(counts.get("quote"), 1);
  });

  it("a workflow's output schema fails the run when the handler returns bad output", async () => {
    const wf = workflow({ name: unique("wf-output") }).v("1", {
      schema: { output: z.object({ ok: z.literal(true) }) },
      handler: async () => ({ ok: false }) as unknown as { ok: true },
    });
    await env.spawn({ workflows: [wf] });
    const error = await rejects((await wf.start(env.aiki, null)).result({ timeout: 10_000 }), RunFailedError);
    assert.equal(error.details?.name, "SchemaValidationError");
  });

  it("a child's input schema is checked in the parent; no child run is written", async () => {
    const child = workflow({ name: unique("strict-child") }).v("1", {
      schema: { input: z.object({ n: z.number() }) },
      handler: async (_run, input) => input.n,
    });
    const parent = workflow({ name: unique("parent") }).v("1", {
      async handler(run) {
        try {
          await child.startAsChild(run, { n: "one" } as never);
          return "started";
        } catch (error) {
          return (error as Error).name;
        }
      },
    });
    await env.spawn({ workflows: [parent, child] });
    assert.equal(await (await parent.start(env.aiki, null)).result({ timeout: 10_000 }), "SchemaValidationError");
    assert.equal(await runsOf(child.name), 0);
  });
});

describe("payload limits", () => {
  const big = "x".repeat(1_100_000);

  it("rejects a start whose input is over the engine's limit, writing no run", async () => {
    const wf = workflow({ name: unique("big-input") }).v("1", { handler: async (_run, input: string) => input.length });
    await rejects(wf.start(env.aiki, big), PayloadTooLargeError);
    assert.equal(await runsOf(wf.name), 0);
  });

  it("fails the run with PayloadTooLargeError when the handler returns too much; the worker carries on", async () => {
    const wf = workflow({ name: unique("big-output") }).v("1", {
      handler: async (_run, size: number) => "x".repeat(size),
    });
    const w = await env.spawn({ workflows: [wf] });
    const error = await rejects((await wf.start(env.aiki, big.length)).result({ timeout: 10_000 }), RunFailedError);
    assert.equal(error.status, "failed");
    assert.equal(error.details?.name, "PayloadTooLargeError");
    assert.equal(await (await wf.start(env.aiki, 3)).result({ timeout: 10_000 }), "xxx");
    await until("the worker to count both runs", () => (w.stats.ended.failed + w.stats.ended.completed === 2 ? true : undefined));
  });

  it("hands the workflow PayloadTooLargeError when a task returns too much", async () => {
    const huge = task({ name: "huge", handler: () => big });
    const wf = workflow({ name: unique("big-task") }).v("1", {
      async handler(run) {
        try {
          return await huge.start(run, null);
        } catch (error) {
          return (error as Error).name;
        }
      },
    });
    await env.spawn({ workflows: [wf] });
    assert.equal(await (await wf.start(env.aiki, null)).result({ timeout: 10_000 }), "PayloadTooLargeError");
  });
});

describe("journal limits", () => {
  it("fails the run with JournalTooLargeError when a write would take its journal past the limit; the task runs once", async () => {
    let calls = 0;
    const work = task({ name: "work", handler: () => ++calls });
    const wf = workflow({ name: unique("full-journal") }).v("1", {
      events: { go: event<null>() },
      async handler(run) {
        await run.events.go.wait();
        return work.start(run, null);
      },
    });
    await env.spawn({ workflows: [wf] });
    const handle = await wf.start(env.aiki, null);
    await untilStatus(env.aiki, handle.id, "waiting");
    // A journal at its step limit, written as the superuser: reaching it through the API takes
    // 50,000 steps (sql/test/steps.test.ts does); here only the worker's answer to AK008 counts.
    await env.sql`update aiki.runs set journal_steps = 50000 where id = ${handle.id}::uuid`;
    await handle.events.go.send(null);
    const error = await rejects(handle.result({ timeout: 10_000 }), RunFailedError);
    assert.equal(error.status, "failed");
    assert.equal(error.details?.name, "JournalTooLargeError");
    assert.equal(error.details?.code, "AK008");
    assert.match(error.details!.message, /^journal of run .* is full: 1 more step\(s\)/);
    assert.equal(calls, 1);
  });
});
