// aiki/testing: testEnv() gives a database of its own on a test clock; advance() moves the
// engine's one clock for every session of it and lets what fell due run, in order, without ever
// moving under a running run; close() removes it all. Workflows here are production code with
// real durations (days); nothing waits for them.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import postgres from "postgres";
import { DefinitionError, event, RunFailedError, task, workflow } from "../index.js";
import { NotSettledError, RunNotFinishedError, testEnv, type TestEnv } from "../testing/index.js";
import { quiet, testDatabase } from "../testing/database.js";

const DAY = 86_400_000;
const adminUrl = () => process.env.AIKI_TEST_ADMIN_URL;

const remind = task({ name: "remind", handler: async (input: { who: string }) => `reminded ${input.who}` });

const reminderV1 = workflow({ name: "reminder" }).v("1", {
  events: { snooze: event<{ days: number }>() },
  async handler(run, input: { who: string }) {
    const snooze = await run.events.snooze.wait({ timeout: { days: 3 } });
    await run.sleep("delay", { days: snooze.timeout ? 1 : snooze.data.days });
    return remind.start(run, input);
  },
});

// A task that finishes only when the test opens its gate.
let gate: { open(): void; wait: Promise<void> };
const newGate = () => {
  let open = () => {};
  const wait = new Promise<void>((resolve) => (open = resolve));
  gate = { open, wait };
};
let executions = 0;
/** Bounded wait until the slow task runs (executions counts its calls). */
async function slowTaskStarted(): Promise<void> {
  for (let i = 0; executions === 0; i++) {
    assert.ok(i < 2000, "the slow task started within 10 s");
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
const slow = task({
  name: "slow",
  async handler() {
    executions++;
    await gate.wait;
    return "done";
  },
});
const slowV1 = workflow({ name: "slow" }).v("1", {
  async handler(run) {
    return slow.start(run, {});
  },
});
let flakyCalls = 0;
const flaky = task({
  name: "flaky",
  retry: { type: "fixed", maxAttempts: 3, baseDelayMs: 50 },
  async handler() {
    if (++flakyCalls === 1) throw new Error("first attempt fails");
    return flakyCalls;
  },
});
const flakyV1 = workflow({ name: "flaky" }).v("1", {
  async handler(run) {
    await run.sleep("wait", { days: 1 });
    return flaky.start(run, {});
  },
});
// Ticks once a day for input.left days, continuing as new after each tick.
const tickerV1 = workflow({ name: "ticker" }).v("1", {
  async handler(run, input: { left: number; ticks: number }) {
    await run.sleep("day", { days: 1 });
    const ticks = input.ticks + 1;
    return input.left > 1 ? run.continueAsNew({ left: input.left - 1, ticks }) : { ticks };
  },
});
const failingV1 = workflow({ name: "failing" }).v("1", {
  async handler() {
    throw new Error("broken on purpose");
  },
});

let env: TestEnv;
before(async () => {
  env = await testEnv({ url: adminUrl() });
  await env.worker({ workflows: [reminderV1, slowV1, flakyV1, failingV1, tickerV1] });
});
after(() => env.close());

const days = async (from: Date) => ((await env.now()).getTime() - from.getTime()) / DAY;

describe("testEnv", () => {
  it("installs the engine in a database of its own and gives a client of it", async () => {
    const [row] = await env.client.sql`select current_database() as db, aiki.schema_version() as v`;
    assert.match(row!.db, /^aiki_env_[0-9a-f]{12}$/);
    assert.ok(row!.v >= 10);
    assert.equal(new URL(env.url).pathname, `/${row!.db}`);
  });

  it("refuses an unknown option, naming the ones it knows", async () => {
    await assert.rejects(testEnv({ url: adminUrl(), settleTimeoutMs: 5 } as never), (error: unknown) =>
      error instanceof DefinitionError && /unknown test env option `settleTimeoutMs`: did you mean `settleTimeout`\?/.test(error.message));
  });
});

describe("advance", () => {
  it("now() reflects each advance, and advances add up", async () => {
    const start = await env.now();
    const moved = await env.advance({ days: 2 });
    assert.ok(moved.getTime() - start.getTime() >= 2 * DAY);
    assert.ok((await days(start)) >= 2 && (await days(start)) < 2 + 1 / 24);
    await env.advance({ hours: 12 });
    await env.advance(12 * 3_600_000);
    const total = await days(start);
    assert.ok(total >= 3 && total < 3 + 1 / 24, `${total} days`);
  });

  it("wakes an event wait's timeout, then a sleep: one advance per timer", async () => {
    const run = await reminderV1.start(env.client, { who: "ann" });
    await env.settle();
    assert.equal(await run.status(), "waiting");
    await env.advance({ days: 3 });
    assert.deepEqual((await env.journal(run)).map((s) => `${s.key} ${s.status}`), ["snooze#1 completed", "delay#1 waiting"]);
    await assert.rejects(env.result(run), (error: unknown) =>
      error instanceof RunNotFinishedError && error.status === "sleeping" && error.dueAt !== null &&
      /is sleeping until .* \(waiting on delay#1\) .*advance the clock/.test(error.message));
    await env.advance({ days: 1 });
    assert.equal(await env.result(run), "reminded ann");
  });

  it("fires the timers on its way in order: one advance past both reaches the end", async () => {
    const run = await reminderV1.start(env.client, { who: "bo" });
    const start = await env.now();
    await env.advance({ days: 30 });
    assert.equal(await env.result(run), "reminded bo");
    // The sleep started when the wait timed out (day 3), not at the end of the jump (day 30).
    const finished = Date.parse((await run.get()).finished_at!);
    assert.equal(Math.round((finished - start.getTime()) / DAY), 4);
  });

  it("an event sent before the wait is buffered, one sent during it wakes the run", async () => {
    const early = await reminderV1.start(env.client, { who: "cy" });
    await env.send(early, "snooze", { days: 2 });
    const late = await reminderV1.start(env.client, { who: "di" });
    await env.advance({ days: 1 });
    await env.send(late, "snooze", { days: 5 });
    for (const run of [early, late]) {
      assert.equal((await env.journal(run)).find((s) => s.key === "snooze#1")?.status, "completed");
    }
    await env.advance({ days: 2 });
    assert.equal(await env.result(early), "reminded cy", "2 days after its (buffered) snooze");
    await assert.rejects(env.result(late), RunNotFinishedError);
    await env.advance({ days: 3 });
    assert.equal(await env.result(late), "reminded di", "5 days after its snooze");
  });

  it("never moves the clock under a running run: it waits for the run, which executes once", async () => {
    newGate();
    executions = 0;
    const start = await env.now();
    const run = await slowV1.start(env.client, {});
    await slowTaskStarted();
    let moved = false;
    const advanced = env.advance({ days: 14 }).then((now) => ((moved = true), now));
    // While the task holds the run, the advance waits: the run keeps its lease, the clock stays.
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.equal(moved, false);
    assert.equal(await run.status(), "running");
    assert.ok((await days(start)) < 1);
    gate.open();
    assert.ok((await advanced).getTime() - start.getTime() >= 14 * DAY);
    assert.equal(await env.result(run), "done");
    assert.equal(executions, 1);
  });

  it("settle() fails with NotSettledError naming a run that stays running", async () => {
    newGate();
    executions = 0;
    const impatient = await testEnv({ url: adminUrl(), settleTimeout: 300 });
    try {
      await impatient.worker({ workflows: [slowV1] });
      const run = await slowV1.start(impatient.client, {});
      await slowTaskStarted();
      await assert.rejects(impatient.advance({ days: 1 }), (error: unknown) =>
        error instanceof NotSettledError && error.message.includes(`${run.id} (slow@1 on default, running)`));
    } finally {
      gate.open();
      await impatient.close();
    }
  });

  it("a task retried in-process while an advance holds the clock at its due time completes", async () => {
    flakyCalls = 0;
    const run = await flakyV1.start(env.client, {});
    await env.advance({ days: 2 }); // stops on day 1, where the sleep ends and the task fails once
    assert.equal(await env.result(run), 2);
    assert.equal((await env.journal(run)).find((s) => s.key === "flaky#1")?.attempts, 2);
  });

  it("result() follows a run that continued as new to the newest run of its chain", async () => {
    const run = await tickerV1.start(env.client, { left: 3, ticks: 0 });
    await env.advance({ days: 1 });
    assert.equal(await run.status(), "continued");
    const successor = (await run.get()).latest_id!;
    assert.notEqual(successor, run.id);
    await assert.rejects(env.result(run), (error: unknown) =>
      error instanceof RunNotFinishedError && error.status === "sleeping" &&
      error.message.startsWith(`run ${successor} (continued from run ${run.id}) is sleeping until `) &&
      /\(waiting on day#1\)/.test(error.message));
    await env.advance({ days: 2 });
    assert.deepEqual(await env.result(run), { ticks: 3 });
  });

  it("result() throws RunFailedError for a failed run", async () => {
    const run = await failingV1.start(env.client, {});
    await assert.rejects(env.result(run), (error: unknown) =>
      error instanceof RunFailedError && error.status === "failed" && /broken on purpose/.test(error.message));
  });
});

describe("isolation", () => {
  it("a second env in the same process has its own database and its own clock", async () => {
    const other = await testEnv({ url: adminUrl() });
    try {
      const [mine, theirs] = await Promise.all([env.now(), other.now()]);
      await other.advance({ days: 100 });
      assert.ok((await days(mine)) < 1, "this env's clock did not move");
      assert.ok((await other.now()).getTime() - theirs.getTime() >= 100 * DAY);
      assert.notEqual(other.url, env.url);
      const [row] = await other.client.sql`select count(*)::int as n from aiki.runs`;
      assert.equal(row!.n, 0, "no run of this env is in the other");
    } finally {
      await other.close();
    }
  });

  it("the clock does not move for other databases of the server", async () => {
    await env.advance({ days: 365 });
    const db = await testDatabase();
    try {
      const [row] = await db.sql`select abs(extract(epoch from aiki.now() - now())) < 1 as wall`;
      assert.equal(row!.wall, true);
    } finally {
      await db.close();
    }
  });

  it("close() stops the workers and drops the database; a second close() is a no-op", async () => {
    const doomed = await testEnv({ url: adminUrl() });
    const worker = await doomed.worker({ workflows: [reminderV1] });
    const name = new URL(doomed.url).pathname.slice(1);
    await doomed.close();
    await doomed.close();
    assert.deepEqual(worker.active(), []);
    const admin = postgres(adminUrl()!, { max: 1, ...quiet });
    try {
      const rows = await admin`select 1 from pg_database where datname = ${name}`;
      assert.equal(rows.length, 0, `database ${name} is gone`);
    } finally {
      await admin.end();
    }
  });

  it("without a URL or DATABASE_URL, starts an embedded Postgres of its own and stops it on close()", async () => {
    const saved = process.env.DATABASE_URL;
    delete process.env.DATABASE_URL;
    let own: TestEnv | undefined;
    try {
      own = await testEnv();
    } finally {
      if (saved !== undefined) process.env.DATABASE_URL = saved;
    }
    const port = new URL(own.url).port;
    assert.notEqual(port, new URL(adminUrl()!).port);
    await own.worker({ workflows: [reminderV1] });
    const run = await reminderV1.start(own.client, { who: "eve" });
    await own.advance({ days: 4 });
    assert.equal(await own.result(run), "reminded eve");
    await own.close();
    const probe = postgres(own.url, { max: 1, connect_timeout: 2, ...quiet });
    await assert.rejects(probe`select 1`);
    await probe.end();
  });
});
