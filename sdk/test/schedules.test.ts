// schedule(…) and worker({ schedules }): declaring schedules in code, making the database match
// at start-up, the client's schedule calls, and a worker firing a seconds-level cron on the real
// clock. The engine's own rules (DST, overlap, catch-up) are specified in sql/test/schedules.test.ts.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  aesGcmCodec, DefinitionError, InvalidInputError, RunNotFoundError, removedSchedule, schedule, workflow, type ScheduleOptions,
} from "../index.js";
import { testEnv, type TestEnv } from "../testing/index.js";
import { environment, unique, until, type Env } from "./support.js";

let env: Env;
before(async () => {
  env = await environment();
});
after(() => env.close());

const report = workflow({ name: "report" }).v("1.0.0", {
  async handler(_run, input: { format: string }) {
    return input.format;
  },
});

describe("schedules in the SDK", () => {
  it("a worker with `schedules` starts a run every second, on the real clock: consecutive fire times, none twice", async () => {
    const name = unique("every-second");
    const ticks = workflow({ name: unique("tick") }).v("1", {
      async handler(run) {
        return run.id;
      },
    });
    // allow: a run still finishing never costs a fire; a catch-up window: a worker that falls
    // behind a second (a loaded machine) starts the fire late instead of skipping it.
    await env.spawn({
      workflows: [ticks],
      schedules: [schedule({ name, workflow: ticks, cron: "*/1 * * * * *", overlap: "allow", catchup: { minutes: 1 } })],
    });
    const runs = await until("five runs of the schedule to complete", async () => {
      const rows = await env.sql<{ key: string; created_at: Date; status: string }[]>`
        select idempotency_key as key, created_at, status::text from aiki.runs
        where workflow = ${ticks.name} order by idempotency_key`;
      return rows.filter((r) => r.status === "completed").length >= 5 ? rows : undefined;
    }, 30_000);
    const fireTimes = runs.map((r) => {
      const match = new RegExp(`^schedule:${name}:(.+)$`).exec(r.key);
      assert.ok(match, `run key ${r.key}`);
      return Date.parse(match[1]!);
    });
    assert.equal(new Set(fireTimes).size, fireTimes.length, "no fire started twice");
    for (let i = 1; i < fireTimes.length; i++) assert.equal(fireTimes[i]! - fireTimes[i - 1]!, 1000, "consecutive seconds");
    for (const [i, r] of runs.entries()) {
      assert.equal(fireTimes[i]! % 1000, 0, "fires fall on whole seconds");
      assert.ok(r.created_at.getTime() >= fireTimes[i]!, "no run starts before its fire time");
    }
    await env.aiki.schedules.pause(name);
  });

  it("a worker makes the database match its schedules at start-up; only removedSchedule(name) removes one", async () => {
    const name = unique("nightly");
    const nightly = schedule({ name, workflow: report, cron: "0 2 * * *", timezone: "Europe/Berlin", input: { format: "pdf" } });
    const w1 = await env.spawn({ workflows: [report], schedules: [nightly] });
    const created = await env.aiki.schedules.get(name);
    assert.deepEqual(
      [created.workflow, created.version, created.cron, created.timezone, created.input, created.overlap, created.queue],
      ["report", "1.0.0", "0 2 * * *", "Europe/Berlin", { format: "pdf" }, "skip", "default"]);
    await w1.stop();

    const changed = schedule({ name, workflow: report, cron: "0 3 * * *", timezone: "Europe/Berlin", input: { format: "csv" }, overlap: "buffer_one" });
    const w2 = await env.spawn({ workflows: [report], schedules: [changed] });
    const updated = await env.aiki.schedules.get(name);
    assert.deepEqual([updated.cron, updated.input, updated.overlap], ["0 3 * * *", { format: "csv" }, "buffer_one"]);
    await w2.stop();

    const w3 = await env.spawn({ workflows: [report] });
    assert.equal((await env.aiki.schedules.get(name)).cron, "0 3 * * *", "a worker that does not list it leaves it alone");
    await w3.stop();

    await env.spawn({ workflows: [report], schedules: [removedSchedule(name)] });
    await assert.rejects(env.aiki.schedules.get(name), RunNotFoundError);
  });

  it("apply(client) is idempotent, and the client lists, pauses, resumes, triggers and deletes", async () => {
    const name = unique("hourly");
    const hourly = schedule({ name, workflow: report, cron: "@hourly", input: { format: "txt" }, queue: unique("reports") });
    const first = await hourly.apply(env.aiki);
    assert.deepEqual(await hourly.apply(env.aiki), first);
    assert.ok((await env.aiki.schedules.list()).some((s) => s.name === name));
    assert.equal((await env.aiki.schedules.pause(name)).paused, true);
    assert.equal((await env.aiki.schedules.pause(name)).next_fire_at, null);
    const resumed = await env.aiki.schedules.resume(name);
    assert.equal(resumed.paused, false);
    assert.ok(resumed.next_fire_at);
    const fired = await env.aiki.schedules.trigger(name);
    assert.equal(fired.action, "started");
    const run = await env.aiki.getRun(fired.run_id!);
    assert.equal(run.idempotency_key, `schedule:${name}:${new Date(fired.fired_at).toISOString()}`);
    assert.deepEqual(run.input, { format: "txt" });
    assert.equal(await env.aiki.schedules.delete(name), true);
    assert.equal(await env.aiki.schedules.delete(name), false);
    assert.equal((await env.aiki.getRun(fired.run_id!)).id, run.id, "its runs stay");
  });

  it("a fire starts its run as the workflow version's start() would: its queue and run retry policy", async () => {
    const retried = workflow({ name: unique("retried") }).v("1", {
      queue: unique("lane"),
      retry: { type: "fixed", maxAttempts: 3, baseDelayMs: 10 },
      async handler() {
        return null;
      },
    });
    const name = unique("retried-daily");
    await schedule({ name, workflow: retried, cron: "@daily" }).apply(env.aiki);
    const fired = await env.aiki.schedules.trigger(name);
    const [run] = await env.sql`select queue, retry from aiki.runs where id = ${fired.run_id}`;
    assert.equal(run!.queue, retried.options.queue);
    assert.deepEqual(run!.retry, { type: "fixed", maxAttempts: 3, baseDelayMs: 10, maxDelayMs: 3600000, factor: 2 });
  });

  it("bad schedules are refused: options by shape at once, values by the engine (AK003) with nothing written", async () => {
    assert.throws(() => schedule({ name: "x", workflow: report, cron: "@daily", timezone: "UTC", catchUp: 5 } as any),
      (e: unknown) => e instanceof DefinitionError && /unknown schedule option `catchUp`: did you mean `catchup`\?/.test(e.message));
    assert.throws(() => schedule({ name: "x", workflow: report, cron: "@daily", overlap: "queue" as any }),
      (e: unknown) => e instanceof DefinitionError && /overlap/.test(e.message));
    const cases: [ScheduleOptions<{ format: string }>, RegExp][] = [
      [{ name: unique("bad"), workflow: report, cron: "0 25 * * *" }, /invalid cron hour field '25'/],
      [{ name: unique("bad"), workflow: report, cron: "@daily", timezone: "Europe/Atlantis" }, /invalid time zone 'Europe\/Atlantis'/],
      [{ name: "bad name", workflow: report, cron: "@daily" }, /invalid schedule name 'bad name'/],
    ];
    const before = await env.aiki.schedules.list();
    for (const [options, message] of cases) {
      await assert.rejects(schedule(options).apply(env.aiki),
        (e: unknown) => e instanceof InvalidInputError && e.code === "AK003" && message.test(e.message));
    }
    assert.deepEqual(await env.aiki.schedules.list(), before);
    await assert.rejects(env.spawn({ workflows: [report], schedules: [schedule(cases[0]![0])] }), InvalidInputError);
  });

  it("a definition is checked against the workflow's input schema where it is declared", async () => {
    const typed = workflow({ name: unique("typed") }).v("1", {
      schema: { input: { safeParse: (v: unknown) => (typeof v === "number" ? { success: true, data: v } : { success: false, error: new Error("a number") }) } as any },
      async handler(_run, n: number) {
        return n;
      },
    });
    assert.throws(() => schedule({ name: "typed", workflow: typed, cron: "@daily", input: "seven" as any }), /input of schedule typed/);
  });
});

describe("schedules under the test kit, with a codec", () => {
  const key = Buffer.alloc(32, 7);
  let kit: TestEnv;
  before(async () => {
    kit = await testEnv({ url: process.env.AIKI_TEST_ADMIN_URL, codec: aesGcmCodec({ keys: { k1: key }, current: "k1" }) });
  });
  after(() => kit.close());

  it("advance() stops at every fire: three days of `0 9 * * *` in Europe/Berlin start three runs at 09:00 local", async () => {
    const digest = workflow({ name: "digest" }).v("1", {
      async handler(run, input: { list: string }) {
        return { list: input.list, at: (await run.now()).toISOString() };
      },
    });
    const daily = schedule({ name: "daily-digest", workflow: digest, cron: "0 9 * * *", timezone: "Europe/Berlin", input: { list: "secret-list" } });
    await kit.worker({ workflows: [digest], schedules: [daily] });
    const start = await kit.now();
    await kit.advance({ days: 3 });

    const runs = await kit.client.sql<{ id: string; status: string; input: unknown }[]>`
      select id, status::text, input from aiki.runs where workflow = 'digest' order by created_at`;
    assert.equal(runs.length, 3);
    for (const run of runs) {
      assert.equal(run.status, "completed");
      assert.ok(!JSON.stringify(run.input).includes("secret-list"), "the run's input is stored encrypted");
      const output = await kit.result(digest.handle(kit.client, run.id));
      assert.equal(output.list, "secret-list");
      const berlin = new Intl.DateTimeFormat("en-GB", { timeZone: "Europe/Berlin", hour: "2-digit", minute: "2-digit", hour12: false });
      assert.equal(berlin.format(new Date(output.at)), "09:00", `ran at 09:00 Berlin time: ${output.at}`);
      assert.ok(new Date(output.at) > start);
    }

    // Applying the same schedule again writes nothing, though its input encrypts differently.
    const before = await kit.client.schedules.get("daily-digest");
    assert.ok(!JSON.stringify(before.input).includes("secret-list"), "the schedule's input is stored encrypted");
    const again = await daily.apply(kit.client);
    assert.equal(again.updated_at, before.updated_at);
  });

  it("advance() wakes a worker of another queue for a due schedule: any claim fires it", async () => {
    const kit2 = await testEnv({ url: process.env.AIKI_TEST_ADMIN_URL, settleTimeout: { seconds: 5 } });
    try {
      const report = workflow({ name: "report" }).v("1", { async handler() { return "done"; } });
      const other = workflow({ name: "other" }).v("1", { async handler() { return "other"; } });
      // The only worker serves `default`; the schedule's runs go to `reports`, which nobody serves.
      await kit2.worker({ workflows: [other] });
      await schedule({ name: "hourly-report", workflow: report, cron: "0 * * * *", queue: "reports", overlap: "allow" }).apply(kit2.client);
      await kit2.advance({ hours: 3 });
      const runs = await kit2.client.sql<{ queue: string; status: string }[]>`
        select queue, status::text from aiki.runs where workflow = 'report'`;
      assert.deepEqual([...runs], Array.from({ length: 3 }, () => ({ queue: "reports", status: "pending" })));
    } finally {
      await kit2.close();
    }
  });
});
