// The subscription trial of sdk/demo (and README, "Testing workflows"), tested both ways with the
// test kit in real days: wait up to 14 days for `paid`, then sleep a day before the follow-up
// email. Each case reaches the run's end through env.advance, not by waiting; the wall time of
// each is reported as a diagnostic (speed is not asserted: it belongs in bench/).
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { testEnv, type TestEnv } from "../testing/index.js";
import { subscriptionV1 } from "../demo/subscription.js";

let env: TestEnv;
before(async () => {
  env = await testEnv({ url: process.env.AIKI_TEST_ADMIN_URL });
  await env.worker({ workflows: [subscriptionV1] });
});
after(() => env.close());

const keys = async (run: { id: string }) => (await env.journal(run.id)).map((s) => `${s.key} ${s.status}`);

describe("the subscription trial (14 days to pay, a follow-up a day later)", () => {
  it("paid on day 2: upgraded at once, welcomed a day later", async (t) => {
    const started = performance.now();
    const run = await subscriptionV1.start(env.client, { userId: "alice" });
    await env.advance({ days: 2 });
    await env.send(run, "paid", { plan: "pro" });
    assert.deepEqual(await keys(run), [
      "activate-trial#1 completed", "paid#1 completed", "upgrade-plan#1 completed", "follow-up-delay#1 waiting",
    ]);
    await env.advance({ days: 1 });
    assert.deepEqual(await env.result(run), { plan: "pro" });
    const journal = await env.journal(run);
    assert.deepEqual(journal.find((s) => s.key === "send-email#1")?.output, { sent: "welcome" });
    t.diagnostic(`wall time ${(performance.now() - started).toFixed(0)} ms`);
  });

  it("never paid: downgraded on day 14, offered a win-back on day 15, by one advance", async (t) => {
    const started = performance.now();
    const run = await subscriptionV1.start(env.client, { userId: "bob" });
    const start = await env.now();
    await env.settle();
    assert.deepEqual(await keys(run), ["activate-trial#1 completed", "paid#1 waiting"]);
    const end = await env.advance({ days: 15 });
    assert.ok(end.getTime() - start.getTime() >= 15 * 86_400_000);
    assert.deepEqual(await env.result(run), { plan: "free" });
    const journal = await env.journal(run);
    assert.deepEqual(journal.map((s) => s.key), [
      "activate-trial#1", "paid#1", "downgrade-plan#1", "follow-up-delay#1", "send-email#1",
    ]);
    assert.deepEqual(journal.find((s) => s.key === "paid#1")?.output, { timeout: true });
    assert.deepEqual(journal.find((s) => s.key === "send-email#1")?.output, { sent: "win-back" });
    // The timers fired in order, each at its own time: the sleep counted from the timeout on day
    // 14 exactly (the clock stood there while the run downgraded), so one advance of 15 days
    // reaches its end.
    const finished = Date.parse((await run.get()).finished_at!);
    assert.equal(Math.round((finished - start.getTime()) / 3_600_000), 15 * 24);
    t.diagnostic(`wall time ${(performance.now() - started).toFixed(0)} ms`);
  });
});
