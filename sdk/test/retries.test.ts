// Retries: a task's retry policy (computed by the engine) retries it with backoff; short delays
// are waited in-process, long ones suspend the run as `retrying`. NonRetryableError ends retries
// at once. A workflow's own retry policy restarts the whole run, keeping completed steps.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { NonRetryableError, TaskFailedError, task, workflow } from "../index.js";
import { Counts, environment, stepOf, unique, until, type Env } from "./support.js";

let env: Env;
before(async () => {
  env = await environment();
});
after(() => env.close());

describe("task retry", () => {
  it("retries with exponential backoff in-process, then succeeds; ctx.attempt counts 1, 2, 3", async () => {
    const attempts: { attempt: number; at: number }[] = [];
    const flaky = task({
      name: "flaky",
      retry: { type: "exponential", maxAttempts: 5, baseDelayMs: 20, factor: 2 },
      handler(_: null, ctx) {
        attempts.push({ attempt: ctx.attempt, at: performance.now() });
        if (ctx.attempt < 3) throw new Error(`attempt ${ctx.attempt} failed`);
        return "charged";
      },
    });
    const counts = new Counts();
    const wf = workflow({ name: unique("backoff") }).v("1", {
      async handler(run) {
        counts.bump("handler");
        return flaky.start(run, null);
      },
    });
    const w = await env.spawn({ workflows: [wf] });
    const handle = await wf.start(env.aiki, null);
    assert.equal(await handle.result({ timeout: 10_000 }), "charged");

    assert.deepEqual(attempts.map((a) => a.attempt), [1, 2, 3]);
    const gaps = [attempts[1]!.at - attempts[0]!.at, attempts[2]!.at - attempts[1]!.at];
    assert.ok(gaps[0]! >= 19, `first retry waited ${gaps[0]} ms, the policy says 20`);
    assert.ok(gaps[1]! >= 39, `second retry waited ${gaps[1]} ms, the policy says 40`);
    const step = stepOf(await handle.get(), "flaky#1");
    assert.deepEqual([step.status, step.attempts, step.output], ["completed", 3, "charged"]);
    assert.equal(counts.get("handler"), 1, "short delays never suspend the run");
    assert.equal(w.stats.ended.retrying, 0);
  });

  it("suspends the run as `retrying` for a delay over inlineRetryMaxMs, and resumes it when due", async () => {
    const attempts: number[] = [];
    const slow = task({
      name: "slow-retry",
      retry: { type: "fixed", maxAttempts: 3, baseDelayMs: 800 },
      handler(_: null, ctx) {
        attempts.push(ctx.attempt);
        if (ctx.attempt === 1) throw new Error("card declined");
        return ctx.attempt;
      },
    });
    const counts = new Counts();
    const wf = workflow({ name: unique("long-delay") }).v("1", {
      async handler(run) {
        counts.bump("handler");
        return slow.start(run, null);
      },
    });
    const first = await env.spawn({ workflows: [wf], inlineRetryMaxMs: 50 });
    const started = Date.now();
    const handle = await wf.start(env.aiki, null);
    // Stop the first worker as soon as it let go of the run (well before the retry is due), so
    // the suspended state can be inspected at leisure.
    await until("the run to suspend for its retry", () => (first.stats.ended.retrying === 1 ? true : undefined));
    await first.stop();

    const suspended = await handle.get();
    assert.equal(suspended.status, "retrying");
    assert.equal("lease_token" in suspended, false, "readers never see a lease token");
    const failed = stepOf(suspended, "slow-retry#1");
    assert.deepEqual([failed.status, failed.attempts], ["retrying", 1]);
    assert.deepEqual((failed.error as { message: string }).message, "card declined");
    assert.ok(failed.wake_at, "the step knows when its next attempt is due");
    assert.equal(Date.parse(suspended.available_at!), Date.parse(failed.wake_at), "and the run wakes then");

    await env.spawn({ workflows: [wf], inlineRetryMaxMs: 50 });
    assert.equal(await handle.result({ timeout: 10_000 }), 2);
    assert.ok(Date.now() - started >= 800, "not before the retry was due");
    assert.deepEqual(attempts, [1, 2]);
    assert.equal(counts.get("handler"), 2, "the run was claimed again for the second attempt");
    const step = stepOf(await handle.get(), "slow-retry#1");
    assert.deepEqual([step.status, step.attempts], ["completed", 2]);
  });

  it("fails the task with TaskFailedError once maxAttempts are used up", async () => {
    const attempts: number[] = [];
    const doomed = task({
      name: "doomed",
      retry: { type: "fixed", maxAttempts: 3, baseDelayMs: 5 },
      handler(_: null, ctx): string {
        attempts.push(ctx.attempt);
        throw new Error(`no luck ${ctx.attempt}`);
      },
    });
    const wf = workflow({ name: unique("exhausted") }).v("1", {
      async handler(run) {
        try {
          return await doomed.start(run, null);
        } catch (error) {
          assert.ok(error instanceof TaskFailedError);
          return { caught: error.name, last: error.details.message };
        }
      },
    });
    await env.spawn({ workflows: [wf] });
    const handle = await wf.start(env.aiki, null);
    assert.deepEqual(await handle.result({ timeout: 10_000 }), { caught: "TaskFailedError", last: "no luck 3" });
    assert.deepEqual(attempts, [1, 2, 3]);
    const step = stepOf(await handle.get(), "doomed#1");
    assert.deepEqual([step.status, step.attempts], ["failed", 3]);
  });
});

describe("NonRetryableError", () => {
  it("fails the task at once, whatever its retry policy; the workflow sees TaskFailedError", async () => {
    const attempts: number[] = [];
    const strict = task({
      name: "strict",
      retry: { type: "exponential", maxAttempts: 5, baseDelayMs: 5 },
      handler(_: null, ctx): string {
        attempts.push(ctx.attempt);
        throw new NonRetryableError("card reported stolen");
      },
    });
    const wf = workflow({ name: unique("non-retryable") }).v("1", {
      async handler(run) {
        try {
          await strict.start(run, null);
          return "unreachable";
        } catch (error) {
          return { isTaskFailed: error instanceof TaskFailedError, message: (error as Error).message, cause: (error as TaskFailedError).details.name };
        }
      },
    });
    await env.spawn({ workflows: [wf] });
    const handle = await wf.start(env.aiki, null);
    assert.deepEqual(await handle.result({ timeout: 10_000 }), {
      isTaskFailed: true, message: "task strict failed: card reported stolen", cause: "NonRetryableError",
    });
    assert.deepEqual(attempts, [1]);
    assert.equal(stepOf(await handle.get(), "strict#1").status, "failed");
  });

  it("fails the run when the workflow does not catch the task's failure", async () => {
    const strict = task({
      name: "strict",
      retry: { type: "fixed", maxAttempts: 5, baseDelayMs: 5 },
      handler(): string {
        throw new NonRetryableError("card reported stolen");
      },
    });
    const wf = workflow({ name: unique("uncaught") }).v("1", {
      async handler(run) {
        return strict.start(run, null);
      },
    });
    await env.spawn({ workflows: [wf] });
    const handle = await wf.start(env.aiki, null);
    const outcome = await handle.waitForStatus("completed", { timeout: 10_000 });
    assert.ok(!outcome.success && outcome.cause === "run_terminated");
    assert.equal(outcome.state.status, "failed");
    const error = outcome.state.error as { name: string; message: string };
    assert.equal(error.name, "TaskFailedError");
    assert.equal(error.message, "task strict failed: card reported stolen");
  });

  it("thrown by the workflow itself fails the run at once despite the run's retry policy", async () => {
    const counts = new Counts();
    const wf = workflow({ name: unique("run-non-retryable") }).v("1", {
      retry: { type: "fixed", maxAttempts: 3, baseDelayMs: 5 },
      async handler() {
        counts.bump("handler");
        throw new NonRetryableError("invalid order");
      },
    });
    await env.spawn({ workflows: [wf] });
    const handle = await wf.start(env.aiki, null);
    const outcome = await handle.waitForStatus("completed", { timeout: 10_000 });
    assert.ok(!outcome.success && outcome.cause === "run_terminated");
    assert.equal(outcome.state.status, "failed");
    assert.equal(counts.get("handler"), 1);
    assert.equal((await handle.get()).attempt, 1);
  });
});

describe("workflow retry", () => {
  it("restarts a failed run: completed tasks are kept, the failed one runs again", async () => {
    const counts = new Counts();
    const stable = task({ name: "stable", handler: () => counts.bump("stable") });
    const fragile = task({
      name: "fragile",
      handler(_: null, ctx) {
        if (counts.bump("fragile") === 1) throw new Error("transient");
        return ctx.attempt;
      },
    });
    const attempts: number[] = [];
    const wf = workflow({ name: unique("run-retry") }).v("1", {
      retry: { type: "fixed", maxAttempts: 2, baseDelayMs: 20 },
      async handler(run) {
        attempts.push(run.attempt);
        await stable.start(run, null);
        return fragile.start(run, null);
      },
    });
    await env.spawn({ workflows: [wf] });
    const handle = await wf.start(env.aiki, null);
    assert.equal(await handle.result({ timeout: 10_000 }), 1, "the task's attempt count restarts with the run");
    assert.deepEqual(attempts, [1, 2]);
    assert.equal(counts.get("stable"), 1);
    assert.equal(counts.get("fragile"), 2);
    const run = await handle.get();
    assert.equal(run.attempt, 2);
    assert.equal(run.error, null, "a completed run carries no error");
  });
});
