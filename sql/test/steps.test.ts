// aiki.complete_step, aiki.fail_step, aiki.complete_run, aiki.fail_run: the journal writes a
// worker makes under its lease, the retry arithmetic done in SQL, and how a run ends.
import { after, before, beforeEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  at, claim, claimOne, completeRun, completeStep, expectRejected, expectSqlState, failRun, failStep, getRun, harness,
  jsonb, ms, reset, runRow, setNow, startAndClaim, startChildren, status, step, suspend, tableCounts, type Harness,
} from "./support.js";

let h: Harness;
before(async () => {
  h = await harness();
});
after(() => h.close());
beforeEach(() => reset(h.sql));

describe("complete_step", () => {
  it("records a task result once, with one attempt and the time", async () => {
    const run = await startAndClaim(h.sql);
    await setNow(h.sql, at(250));
    const s = await completeStep(h.sql, run, "charge#1", "charge", { receipt: "r-1" });
    assert.deepEqual(s, {
      key: "charge#1", kind: "task", name: "charge", status: "completed", attempts: 1,
      output: { receipt: "r-1" }, error: null, child_id: null, wake_at: null,
    });
    const [row] = await h.sql`select created_at, completed_at from aiki.steps`;
    assert.equal(ms(row!.completed_at), Date.parse(at(250)));
  });

  it("records deterministic values as kind value", async () => {
    const run = await startAndClaim(h.sql);
    const s = await completeStep(h.sql, run, "random#1", "random", 0.42, "value");
    assert.equal(s.kind, "value");
    assert.equal(s.output, 0.42);
  });

  it("is idempotent: recording a completed step again returns the first record and writes nothing", async () => {
    const run = await startAndClaim(h.sql);
    await completeStep(h.sql, run, "charge#1", "charge", "first");
    const before = await tableCounts(h.sql);
    await setNow(h.sql, at(1000));
    const again = await completeStep(h.sql, run, "charge#1", "charge", "second");
    assert.equal(again.output, "first");
    assert.deepEqual(await tableCounts(h.sql), before);
  });

  it("a later lease holder sees the step the earlier one recorded, and cannot overwrite it", async () => {
    const first = await startAndClaim(h.sql, { worker: "w-a" });
    await completeStep(h.sql, first, "charge#1", "charge", "by-a");
    await setNow(h.sql, at(30_000));
    const second = await claimOne(h.sql, { worker: "w-b", expect: first.id });
    assert.equal(second.journal[0]!.output, "by-a");
    assert.equal((await completeStep(h.sql, second, "charge#1", "charge", "by-b")).output, "by-a");
  });

  it("completes a retrying step, counting the successful attempt", async () => {
    const run = await startAndClaim(h.sql);
    await failStep(h.sql, run, "charge#1", "charge", { message: "503" }, { retry: { type: "fixed", baseDelayMs: 10 }, inlineMaxMs: 1000 });
    const s = await completeStep(h.sql, run, "charge#1", "charge", "ok");
    assert.equal(s.status, "completed");
    assert.equal(s.attempts, 2);
    assert.equal(s.error, null);
    assert.equal(s.wake_at, null);
  });

  it("refuses to complete a step that failed for good (AK005)", async () => {
    const run = await startAndClaim(h.sql);
    await failStep(h.sql, run, "charge#1", "charge", { message: "card declined" });
    await expectSqlState(completeStep(h.sql, run, "charge#1", "charge", "ok"), "AK005",
      /^step 'charge#1' of run .* already failed for good and cannot be completed$/);
  });
});

describe("start_attempt", () => {
  const start = (run: { id: string; lease_token: string }, deadlineMs: number, retry: unknown = null, details: unknown = null) =>
    h.sql`select aiki.start_attempt(${run.id}::uuid, ${run.lease_token}::uuid, 'slow#1', 'slow', ${deadlineMs},
                                    ${retry === null ? null : JSON.stringify(retry)}::text::jsonb, 1000,
                                    ${details === null ? null : JSON.stringify(details)}::text::jsonb) as r`.then(([row]) => row!.r);

  it("journals a started attempt with its deadline; a heartbeat pushes the deadline on and leaves its details", async () => {
    const run = await startAndClaim(h.sql);
    assert.deepEqual(await start(run, 5_000), { status: "started", attempt: 1, deadline_at: "2030-01-01T00:00:05+00:00", details: null });
    await setNow(h.sql, at(4_000));
    assert.deepEqual(await start(run, 5_000, null, { page: 7 }),
      { status: "started", attempt: 1, deadline_at: "2030-01-01T00:00:09+00:00", details: { page: 7 } });
    assert.deepEqual((await start(run, 5_000)).details, { page: 7 }, "a heartbeat without details keeps the last ones");
    const s = (await step(h.sql, run.id, "slow#1"))!;
    assert.deepEqual([s.status, s.attempts, s.wake_at], ["started", 0, "2030-01-01T00:00:09+00:00"]);
  });

  it("the next attempt starts with the last heartbeat's details", async () => {
    const run = await startAndClaim(h.sql, { leaseMs: 60_000 });
    const retry = { type: "fixed", maxAttempts: 2, baseDelayMs: 0 };
    await start(run, 1_000, retry);
    await start(run, 1_000, retry, { page: 3 });
    await failStep(h.sql, run, "slow#1", "slow", { message: "crashed" }, { retry, inlineMaxMs: 1000 });
    assert.deepEqual(await start(run, 1_000, retry), { status: "started", attempt: 2, deadline_at: "2030-01-01T00:00:01+00:00", details: { page: 3 } });
  });

  it("an attempt found past its deadline failed by timeout: counted as fail_step counts it, the policy decides", async () => {
    const run = await startAndClaim(h.sql, { leaseMs: 60_000 });
    await start(run, 1_000, { type: "fixed", maxAttempts: 2, baseDelayMs: 100 });
    await setNow(h.sql, at(1_000));
    const timedOut = await start(run, 1_000, { type: "fixed", maxAttempts: 2, baseDelayMs: 100 });
    assert.equal(timedOut.status, "retrying");
    assert.equal(timedOut.attempts, 1);
    assert.equal(timedOut.timed_out, true);
    assert.match(timedOut.error.message, /^task slow \(step slow#1\) timed out: attempt 1 passed its deadline 2030-01-01 00:00:01\+00$/);
    // The retry starts; when it too runs out, the policy has no attempt left.
    assert.equal((await start(run, 1_000, { type: "fixed", maxAttempts: 2, baseDelayMs: 100 })).attempt, 2);
    await setNow(h.sql, at(5_000));
    const last = await start(run, 1_000, { type: "fixed", maxAttempts: 2, baseDelayMs: 100 });
    assert.deepEqual([last.status, last.attempts, last.error.name], ["failed", 2, "TaskTimeoutError"]);
    assert.equal((await step(h.sql, run.id, "slow#1"))!.status, "failed");
  });

  it("a started attempt completes as a retried one does, counting it", async () => {
    const run = await startAndClaim(h.sql);
    await start(run, 5_000);
    const s = await completeStep(h.sql, run, "slow#1", "slow", "done");
    assert.deepEqual([s.status, s.attempts, s.output, s.wake_at], ["completed", 1, "done", null]);
  });
});

describe("fail_step", () => {
  it("without a retry policy, fails the step at once; the run keeps running for the code to see it", async () => {
    const run = await startAndClaim(h.sql);
    const r = await failStep(h.sql, run, "charge#1", "charge", { name: "Error", message: "declined" });
    assert.deepEqual(r, { status: "failed", attempts: 1 });
    const s = (await step(h.sql, run.id, "charge#1"))!;
    assert.equal(s.status, "failed");
    assert.deepEqual(s.error, { name: "Error", message: "declined" });
    assert.equal(await status(h.sql, run.id), "running");
  });

  it("a short delay is retried inline: the worker keeps its lease", async () => {
    const run = await startAndClaim(h.sql);
    const r = await failStep(h.sql, run, "charge#1", "charge", { message: "503" },
      { retry: { type: "fixed", maxAttempts: 3, baseDelayMs: 100 }, inlineMaxMs: 1000 });
    assert.deepEqual({ ...r, retry_at: ms(r.retry_at) },
      { status: "retrying", attempts: 1, retry_at: Date.parse(at(100)), delay_ms: 100, suspended: false });
    assert.equal(await status(h.sql, run.id), "running");
    const s = (await step(h.sql, run.id, "charge#1"))!;
    assert.equal(s.status, "retrying");
    assert.equal(ms(s.wake_at), Date.parse(at(100)));
    await completeStep(h.sql, run, "charge#1", "charge", "ok");
  });

  it("a long delay suspends the run as retrying until retry_at, and fences the lease", async () => {
    const run = await startAndClaim(h.sql);
    const r = await failStep(h.sql, run, "charge#1", "charge", { message: "503" },
      { retry: { type: "fixed", maxAttempts: 3, baseDelayMs: 60_000 }, inlineMaxMs: 1000 });
    assert.equal(r.suspended, true);
    assert.equal(r.delay_ms, 60_000);
    const row = await runRow(h.sql, run.id);
    assert.equal(row.status, "retrying");
    assert.equal(ms(row.available_at), Date.parse(at(60_000)));
    assert.equal(row.lease_token, null);
    await expectSqlState(completeStep(h.sql, run, "charge#1", "charge", "late"), "AK001", /is retrying/);
  });

  it("computes exponential delays in SQL: base × factor^(attempt-1), capped by maxDelayMs", async () => {
    const run = await startAndClaim(h.sql);
    const retry = { type: "exponential", maxAttempts: 6, baseDelayMs: 1000, factor: 3, maxDelayMs: 20_000 };
    const delays = [];
    for (let i = 0; i < 5; i++) {
      const r = await failStep(h.sql, run, "charge#1", "charge", { message: `try ${i + 1}` }, { retry, inlineMaxMs: 3_600_000 });
      assert.equal(r.attempts, i + 1);
      delays.push(r.delay_ms);
    }
    assert.deepEqual(delays, [1000, 3000, 9000, 20_000, 20_000]);
    const last = await failStep(h.sql, run, "charge#1", "charge", { message: "try 6" }, { retry, inlineMaxMs: 3_600_000 });
    assert.deepEqual(last, { status: "failed", attempts: 6 });
    const s = (await step(h.sql, run.id, "charge#1"))!;
    assert.equal(s.status, "failed");
    assert.deepEqual(s.error, { message: "try 6" }, "the last error is kept");
  });

  it("defaults to exponential from 1 s, doubling, 3 attempts", async () => {
    const run = await startAndClaim(h.sql);
    const a = await failStep(h.sql, run, "x#1", "x", {}, { retry: {}, inlineMaxMs: 3_600_000 });
    const b = await failStep(h.sql, run, "x#1", "x", {}, { retry: {}, inlineMaxMs: 3_600_000 });
    const c = await failStep(h.sql, run, "x#1", "x", {}, { retry: {}, inlineMaxMs: 3_600_000 });
    assert.deepEqual([a.delay_ms, b.delay_ms, c.status], [1000, 2000, "failed"]);
  });

  it("jittered delays stay between 0 and the exponential delay", async () => {
    const run = await startAndClaim(h.sql);
    const retry = { type: "jittered", maxAttempts: 30, baseDelayMs: 1000, factor: 2 };
    for (let i = 0; i < 20; i++) {
      const r = await failStep(h.sql, run, "x#1", "x", {}, { retry, inlineMaxMs: 3_600_000 * 24 });
      const ceiling = Math.min(1000 * 2 ** i, 3_600_000);
      assert.ok(r.delay_ms >= 0 && r.delay_ms <= ceiling, `attempt ${i + 1}: ${r.delay_ms} not in 0..${ceiling}`);
    }
  });

  it("a non-retryable error fails the step at once, whatever the policy", async () => {
    const run = await startAndClaim(h.sql);
    const r = await failStep(h.sql, run, "x#1", "x", { message: "bad request" },
      { retry: { type: "fixed", maxAttempts: 10 }, nonRetryable: true });
    assert.deepEqual(r, { status: "failed", attempts: 1 });
  });

  it("failing a failed step again changes nothing", async () => {
    const run = await startAndClaim(h.sql);
    await failStep(h.sql, run, "x#1", "x", { message: "first" });
    const before = await tableCounts(h.sql);
    const r = await failStep(h.sql, run, "x#1", "x", { message: "second" });
    assert.equal(r.status, "failed");
    assert.equal(r.attempts, 1);
    assert.deepEqual(await tableCounts(h.sql), before);
  });

  it("a suspended retry never waits past the run's deadline", async () => {
    const run = await startAndClaim(h.sql, { timeoutMs: 5000 });
    await failStep(h.sql, run, "x#1", "x", {}, { retry: { type: "fixed", baseDelayMs: 60_000 } });
    assert.equal(ms((await runRow(h.sql, run.id)).available_at), Date.parse(at(5000)));
  });
});

describe("complete_run", () => {
  it("completes the run with its output and drops the lease", async () => {
    const run = await startAndClaim(h.sql);
    await setNow(h.sql, at(700));
    await completeRun(h.sql, run, { total: 3 });
    const done = await getRun(h.sql, run.id);
    assert.equal(done.status, "completed");
    assert.deepEqual(done.output, { total: 3 });
    assert.equal(done.error, null);
    assert.equal(ms(done.finished_at), Date.parse(at(700)));
    assert.equal(done.available_at, null);
    const row = await runRow(h.sql, run.id);
    assert.equal(row.lease_owner, null);
    assert.equal(row.lease_token, null);
  });

  it("a second complete_run with the same token is AK001: the run left running", async () => {
    const run = await startAndClaim(h.sql);
    await completeRun(h.sql, run, 1);
    await expectSqlState(completeRun(h.sql, run, 2), "AK001", /^lease lost: run .* is completed$/);
    assert.equal((await getRun(h.sql, run.id)).output, 1);
  });

  it("clears the error a retried attempt left", async () => {
    const run = await startAndClaim(h.sql, { retry: { type: "fixed", baseDelayMs: 0 } });
    await failRun(h.sql, run, { message: "first attempt" });
    const again = await claimOne(h.sql, { expect: run.id });
    await completeRun(h.sql, again, "ok");
    const done = await getRun(h.sql, run.id);
    assert.equal(done.error, null);
    assert.equal(done.attempt, 2);
  });
});

describe("fail_run", () => {
  it("without a retry policy, fails the run with the error", async () => {
    const run = await startAndClaim(h.sql);
    const r = await failRun(h.sql, run, { name: "TypeError", message: "x is undefined" });
    assert.deepEqual(r, { status: "failed", attempt: 1 });
    const failed = await getRun(h.sql, run.id);
    assert.equal(failed.status, "failed");
    assert.deepEqual(failed.error, { name: "TypeError", message: "x is undefined" });
    assert.ok(failed.finished_at);
  });

  it("with a policy, retries the run: retrying, attempt + 1, failed steps forgotten, completed kept", async () => {
    const run = await startAndClaim(h.sql, { retry: { type: "exponential", maxAttempts: 3, baseDelayMs: 1000 } });
    await completeStep(h.sql, run, "kept#1", "kept", "v");
    await failStep(h.sql, run, "broken#1", "broken", { message: "no" });
    const r = await failRun(h.sql, run, { message: "attempt 1" });
    assert.deepEqual({ ...r, retry_at: ms(r.retry_at) }, { status: "retrying", attempt: 2, retry_at: Date.parse(at(1000)) });
    const row = await runRow(h.sql, run.id);
    assert.equal(row.status, "retrying");
    assert.equal(row.attempt, 2);
    assert.equal(ms(row.available_at), Date.parse(at(1000)));
    assert.deepEqual(row.error, { message: "attempt 1" });
    assert.equal(row.lease_token, null);
    assert.equal(row.finished_at, null);

    await setNow(h.sql, at(999));
    assert.deepEqual((await claim(h.sql)).runs, []);
    await setNow(h.sql, at(1000));
    const second = await claimOne(h.sql, { expect: run.id });
    assert.equal(second.attempt, 2);
    assert.deepEqual(second.journal.map((s) => s.key), ["kept#1"]);

    const r2 = await failRun(h.sql, second, { message: "attempt 2" });
    assert.equal(r2.attempt, 3);
    assert.equal(ms(r2.retry_at), Date.parse(at(3000)), "exponential: 2 s after the second failure");
    await setNow(h.sql, at(3000));
    const third = await claimOne(h.sql, { expect: run.id });
    assert.deepEqual(await failRun(h.sql, third, { message: "attempt 3" }), { status: "failed", attempt: 3 });
    const failed = await getRun(h.sql, run.id);
    assert.equal(failed.status, "failed");
    assert.deepEqual(failed.error, { message: "attempt 3" });
  });

  it("a zero delay makes the run pending again at once", async () => {
    const run = await startAndClaim(h.sql, { retry: { type: "fixed", maxAttempts: 2, baseDelayMs: 0 } });
    await failRun(h.sql, run, {});
    assert.equal(await status(h.sql, run.id), "pending");
    assert.equal((await claimOne(h.sql, { expect: run.id })).attempt, 2);
  });

  it("a non-retryable error fails the run at once", async () => {
    const run = await startAndClaim(h.sql, { retry: { type: "fixed", maxAttempts: 5 } });
    assert.deepEqual(await failRun(h.sql, run, { message: "fatal" }, true), { status: "failed", attempt: 1 });
    assert.equal(await status(h.sql, run.id), "failed");
  });

  it("a stale token cannot fail a run a newer lease holder owns", async () => {
    const first = await startAndClaim(h.sql, { worker: "w-a" });
    await setNow(h.sql, at(30_000));
    await claimOne(h.sql, { worker: "w-b", expect: first.id });
    await expectSqlState(failRun(h.sql, first, { message: "late" }), "AK001", /claimed again by w-b/);
    assert.equal(await status(h.sql, first.id), "running");
  });
});

describe("journal limits", () => {
  const journal = async (id: string) => {
    const row = await runRow(h.sql, id);
    return [row.journal_steps, Number(row.journal_bytes)];
  };
  // JSONB sizes as the engine counts them. Values under 127 bytes may be counted with a 1-byte
  // or a 4-byte header depending on where the engine read them, so record's are larger.
  const size = async (value: unknown) =>
    Number((await h.sql`select pg_column_size(${jsonb(h.sql, value)}) as n`)[0]!.n);
  const [x, y] = ["x".repeat(200), "y".repeat(200)];

  it("every journal write counts its steps and the bytes of its outputs and errors", async () => {
    const run = await startAndClaim(h.sql, { retry: { type: "fixed", maxAttempts: 2, baseDelayMs: 0 } });
    await completeStep(h.sql, run, "a#1", "a", { n: 1 });
    await completeStep(h.sql, run, "a#1", "a", { n: 1 });
    await failStep(h.sql, run, "b#1", "b", { message: "boom" });
    await startChildren(h.sql, run, [{ key: "c#1", workflow: "kid", version: "1", queue: "kids" }, { key: "c#2", workflow: "kid", version: "1", queue: "kids" }]);
    await h.sql`select aiki.record(${jsonb(h.sql, [{ run_id: run.id, lease_token: run.lease_token,
      steps: [{ key: "v#1", kind: "value", name: "v", output: x }, { key: "v#2", kind: "value", name: "v", output: y }] }])})`;
    const bytes = (await size({ n: 1 })) + (await size({ message: "boom" })) + (await size(x)) + (await size(y));
    assert.deepEqual(await journal(run.id), [6, bytes], "a repeated complete_step counts once");
    await suspend(h.sql, run, [{ key: "nap#1", kind: "sleep", name: "nap", duration_ms: 10 }]);
    assert.deepEqual(await journal(run.id), [7, bytes]);
    await setNow(h.sql, at(10));
    const again = await claimOne(h.sql, { expect: run.id });
    await failRun(h.sql, { id: run.id, lease_token: again.lease_token }, { message: "again" });
    assert.deepEqual(await journal(run.id), [6, bytes], "fail_run forgets the failed step");
  });

  it("record counts the journal of a run it completes in the run's one row update", async () => {
    const run = await startAndClaim(h.sql);
    await completeStep(h.sql, run, "a#1", "a", { n: 1 });
    const updates = await h.sql.begin(async (tx) => {
      // Pending statistics outlive transactions until flushed: count the ones record adds.
      const runUpdates = async () => (await tx`
        select n_tup_upd::int as n from pg_stat_xact_user_tables where relid = 'aiki.runs'::regclass`)[0]!.n as number;
      const before = await runUpdates();
      // Two writes of one run, the second completing it: both count, in _finish's update.
      await tx`select aiki.record(${jsonb(tx, [
        { run_id: run.id, lease_token: run.lease_token, steps: [{ key: "a#1", kind: "task", name: "a", output: { n: 1 } },
          { key: "v#1", kind: "value", name: "v", output: x }] },
        { run_id: run.id, lease_token: run.lease_token, steps: [{ key: "v#2", kind: "value", name: "v", output: y }],
          complete: true, output: "done" }])})`;
      return (await runUpdates()) - before;
    });
    assert.equal(await status(h.sql, run.id), "completed");
    assert.deepEqual(await journal(run.id), [3, (await size({ n: 1 })) + (await size(x)) + (await size(y))],
      "the step recorded before counts once");
    assert.equal(updates, 1, "one update of the run's row: the counters go with the completion");
  });

  it("a write past 50,000 steps is AK008 and writes nothing", async () => {
    const run = await startAndClaim(h.sql);
    // 50,000 value steps through one record call of 5,000 writes of 10 steps: the journal at its
    // step limit. (Fewer, larger writes make record's answer sort every write once per step.)
    await h.sql`select aiki.record((
      select jsonb_agg(jsonb_build_object(
               'run_id', ${run.id}::uuid, 'lease_token', ${run.lease_token}::uuid,
               'steps', (select jsonb_agg(jsonb_build_object('key', 'v#' || w || '.' || i, 'kind', 'value', 'name', 'v', 'output', i))
                           from generate_series(1, 10) i)))
        from generate_series(1, 5000) w))`;
    assert.equal((await journal(run.id))[0], 50000);
    const full = /^journal of run .* is full: 1 more step\(s\) and \d+ bytes would make it 50001 steps and \d+ bytes, over the limit of 50000 steps and 67108864 bytes$/;
    await expectRejected(h.sql, () => completeStep(h.sql, run, "one-more#1", "x", 1), "AK008", full);
    await expectRejected(h.sql, () => suspend(h.sql, run, [{ key: "nap#1", kind: "sleep", name: "nap", duration_ms: 1 }]), "AK008", full);
    await expectRejected(h.sql, () => startChildren(h.sql, run, [{ key: "c#1", workflow: "kid", version: "1" }]), "AK008", full);
    // record answers per write: that write is refused with AK008, nothing of it written.
    const before = await tableCounts(h.sql);
    const [answer] = await h.sql`select aiki.record(${jsonb(h.sql, [{ run_id: run.id, lease_token: run.lease_token,
      steps: [{ key: "r#1", kind: "value", name: "r", output: 1 }] }])}) -> 0 as a`;
    assert.equal(answer!.a.sqlstate, "AK008");
    assert.match(answer!.a.message, full);
    assert.deepEqual(await tableCounts(h.sql), before);
    // Also when the write completes the run (its counters wait for the completion's update).
    const [ending] = await h.sql`select aiki.record(${jsonb(h.sql, [{ run_id: run.id, lease_token: run.lease_token,
      steps: [{ key: "r#1", kind: "value", name: "r", output: 1 }], complete: true }])}) -> 0 as a`;
    assert.equal(ending!.a.sqlstate, "AK008");
    assert.match(ending!.a.message, full);
    assert.deepEqual(await tableCounts(h.sql), before);
    await expectRejected(h.sql, () => failStep(h.sql, run, "f#1", "f", { message: "x" }), "AK008", full);
    await completeRun(h.sql, run);
  });

  it("a write past 64 MiB of outputs and errors is AK008 and writes nothing", async () => {
    const run = await startAndClaim(h.sql);
    const mb = "x".repeat(1_000_000);
    for (let i = 1; i <= 67; i++) await completeStep(h.sql, run, `big#${i}`, "big", mb);
    assert.ok((await journal(run.id))[1]! > 67_000_000);
    await expectRejected(h.sql, () => completeStep(h.sql, run, "big#68", "big", mb), "AK008",
      /^journal of run .* is full: 1 more step\(s\) and \d+ bytes would make it 68 steps and \d+ bytes, over the limit/);
    await completeStep(h.sql, run, "small#1", "small", "fits");
  });
});
