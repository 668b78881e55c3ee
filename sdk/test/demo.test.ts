// `npm start`: the README's first command runs both Aiki examples to their final states and
// exits 0. Run here as a real process against a test kit's database (DATABASE_URL), as a user
// with their own Postgres would run it, with the demo's shortened durations (--fast). Then the
// same workflows in their real durations (days, minutes) through the test kit, in-process.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { testEnv, type TestEnv } from "../testing/index.js";
import { deliveryV1, orderV1 } from "../demo/restaurant.js";
import { subscriptionV1 } from "../demo/subscription.js";

let db: TestEnv;
before(async () => {
  db = await testEnv({ url: process.env.AIKI_TEST_ADMIN_URL });
});
after(() => db.close());

function runDemo(url: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["--import", "tsx", "sdk/demo/main.ts", "--fast"], {
      env: { ...process.env, DATABASE_URL: url },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (chunk) => (output += chunk));
    child.stderr.on("data", (chunk) => (output += chunk));
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

describe("npm start (sdk/demo)", () => {
  it("completes the subscription-trial and restaurant-order examples and exits 0", async () => {
    const { code, output } = await runDemo(db.url);
    assert.equal(code, 0, output);
    assert.match(output, /alice \(trial\)\s+completed\s+\{"plan":"pro"\}/);
    assert.match(output, /bob \(trial\)\s+completed\s+\{"plan":"free"\}/);
    assert.match(output, /o-1 \(order\)\s+completed\s+\{"status":"completed","deliveredBy":"courier-7"\}/);
    assert.match(output, /o-2 \(order\)\s+completed\s+\{"status":"cancelled"\}/);
    assert.match(output, /o-1: card charged \(attempt 2/, "the flaky charge is retried");
    assert.match(output, /bob did not pay within 14 days/);
    const [row] = await db.client.sql<{ n: number }[]>`select count(*)::int as n from aiki.runs where status = 'completed'`;
    assert.equal(row?.n, 5, "four runs and o-1's courier child");
  });

  it("runs again on the same database: the engine is already installed and new runs complete", async () => {
    const { code, output } = await runDemo(db.url);
    assert.equal(code, 0, output);
    assert.match(output, /Engine installed \(up to date\)/);
  });
});

describe("the demo's workflows in real time, through the test kit", () => {
  let env: TestEnv;
  before(async () => {
    env = await testEnv({ url: process.env.AIKI_TEST_ADMIN_URL });
    await env.worker({ workflows: [subscriptionV1, orderV1, deliveryV1] });
  });
  after(() => env.close());

  it("subscription trials: alice pays on day 2, bob never pays; each gets a follow-up a day later", async () => {
    const alice = await subscriptionV1.start(env.client, { userId: "alice" });
    const bob = await subscriptionV1.start(env.client, { userId: "bob" });
    await env.advance({ days: 2 });
    await env.send(alice, "paid", { plan: "pro" });
    await env.advance({ days: 13 });
    assert.deepEqual(await env.result(alice), { plan: "pro" });
    assert.deepEqual(await env.result(bob), { plan: "free" });
    const email = async (run: typeof alice) => (await env.journal(run)).find((s) => s.key === "send-email#1")?.output;
    assert.deepEqual([await email(alice), await email(bob)], [{ sent: "welcome" }, { sent: "win-back" }]);
  });

  it("restaurant orders: o-1 is accepted and delivered, then asked for feedback a day later; o-2 is refunded after 5 minutes", async () => {
    const o1 = await orderV1.start(env.client, { orderId: "o-1" });
    const o2 = await orderV1.start(env.client, { orderId: "o-2" });
    await env.send(o1, "accepted", { eta: 25 });
    await env.advance({ minutes: 5 });
    assert.deepEqual(await env.result(o2), { status: "cancelled" });
    assert.equal(await o1.status(), "sleeping", "o-1 waits a day before asking for feedback");
    await env.advance({ days: 1 });
    assert.deepEqual(await env.result(o1), { status: "completed", deliveredBy: "courier-7" });
    const steps = (await env.journal(o1)).map((s) => `${s.key} ${s.status}`);
    assert.deepEqual(steps.filter((s) => !s.startsWith("delivery")), [
      "charge-card#1 completed", "accepted#1 completed", "feedback-delay#1 completed", "send-feedback-email#1 completed",
    ]);
  });
});
