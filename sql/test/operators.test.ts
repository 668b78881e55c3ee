// The operator functions (sql/75_operators.sql): retry_run in every status, the failure history it
// and fail_step / fail_run keep, and the reads the CLI and the dashboard show (search_runs,
// count_runs, run_timeline, list_workers, list_queues).
import { after, before, beforeEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  at, cancel, claim, claimOne, completeRun, completeStep, expectRejected, expectSqlState, failRun, failStep,
  harness, inFlight, listen, reset, runRow, sendEvent, setNow, startAndClaim, startChildren, startRun, status,
  suspend, waitUntilBlocked, backendPid, type Harness, type Lease,
} from "./support.js";

let h: Harness;
before(async () => {
  h = await harness();
});
after(() => h.close());
beforeEach(() => reset(h.sql));

const STATES = ["scheduled", "pending", "running", "sleeping", "waiting", "retrying", "paused",
  "completed", "failed", "cancelled"] as const;
type State = (typeof STATES)[number];
const noLease = "00000000-0000-4000-8000-000000000000";
const fixed = { type: "fixed", maxAttempts: 3, baseDelayMs: 60_000 };

async function runIn(state: State): Promise<Lease> {
  if (state === "scheduled") return { id: await startRun(h.sql, { delayMs: 60_000 }), lease_token: noLease };
  if (state === "pending") return { id: await startRun(h.sql), lease_token: noLease };
  const run = await startAndClaim(h.sql, { retry: fixed });
  switch (state) {
    case "running": break;
    case "sleeping": await suspend(h.sql, run, [{ key: "nap#1", kind: "sleep", name: "nap", duration_ms: 60_000 }]); break;
    case "waiting": await suspend(h.sql, run, [{ key: "ok#1", kind: "event", name: "ok", timeout_ms: 60_000 }]); break;
    case "retrying": await failRun(h.sql, run, { message: "try again" }); break;
    case "paused": await h.sql`select aiki.pause(${run.id}::uuid)`; break;
    case "completed": await completeRun(h.sql, run, "done"); break;
    case "failed": await failRun(h.sql, run, { name: "Boom", message: "fatal" }, true); break;
    case "cancelled": await cancel(h.sql, run.id); break;
  }
  assert.equal(await status(h.sql, run.id), state);
  return run;
}

const retry = async (id: string): Promise<string> =>
  (await h.sql<{ s: string }[]>`select aiki.retry_run(${id}::uuid)::text as s`)[0]!.s;
const timeline = async (id: string): Promise<any> =>
  (await h.sql<{ t: any }[]>`select aiki.run_timeline(${id}::uuid) as t`)[0]!.t;
const search = async (filter: unknown, limit = 50, cursor: string | null = null): Promise<any> =>
  (await h.sql<{ s: any }[]>`select aiki.search_runs(${JSON.stringify(filter)}::text::jsonb, ${limit}::integer, ${cursor}::text) as s`)[0]!.s;
const counts = async (filter: unknown = {}): Promise<Record<string, number>> =>
  (await h.sql<{ c: any }[]>`select aiki.count_runs(${JSON.stringify(filter)}::text::jsonb) as c`)[0]!.c;

describe("retry_run", () => {
  for (const state of STATES) {
    const allowed = state === "failed" || state === "cancelled" || state === "retrying";
    it(`${allowed ? "retries" : "refuses (AK005)"} a ${state} run`, async () => {
      const run = await runIn(state);
      const before = await runRow(h.sql, run.id);
      if (!allowed) {
        await expectRejected(h.sql, () => retry(run.id), "AK005", new RegExp(`is ${state}; only a failed, cancelled or retrying run`));
        return;
      }
      assert.equal(await retry(run.id), "pending");
      const row = await runRow(h.sql, run.id);
      assert.equal(row.status, "pending");
      assert.equal(row.finished_at, null);
      assert.equal(row.available_at.toISOString(), at(0), "due now");
      assert.equal(row.attempt, state === "retrying" ? before.attempt : before.attempt + 1);
      const again = await claimOne(h.sql, { expect: run.id });
      assert.equal(again.attempt, row.attempt);
    });
  }

  it("AK002 for a missing run, AK003 for a null id", async () => {
    await expectSqlState(retry("00000000-0000-4000-8000-0000000000aa"), "AK002", /not found/);
    await expectSqlState(h.sql`select aiki.retry_run(null)`, "AK003", /run id is required/);
  });

  it("keeps completed steps, moves the failed attempt to the history, and resumes where it failed", async () => {
    const run = await startAndClaim(h.sql, { retry: { type: "fixed", maxAttempts: 2, baseDelayMs: 0 } });
    await completeStep(h.sql, run, "charge#1", "charge", { paid: true });
    // Two failed attempts of a task, the second for good: both errors are kept on the step.
    const r1 = await failStep(h.sql, run, "ship#1", "ship", { name: "E", message: "first" }, { retry: fixed, inlineMaxMs: 3_600_000 });
    assert.equal(r1.status, "retrying");
    const r2 = await failStep(h.sql, run, "ship#1", "ship", { name: "E", message: "second" }, { nonRetryable: true });
    assert.equal(r2.status, "failed");
    // The run's policy retries it once (attempt 2), then it fails for good.
    assert.equal((await failRun(h.sql, run, { name: "RunError", message: "attempt 1" })).status, "retrying");
    const second = await claimOne(h.sql, { expect: run.id });
    assert.deepEqual(second.journal.map((s) => s.key), ["charge#1"], "the failed step runs again");
    await failStep(h.sql, second, "ship#1", "ship", { name: "E", message: "third" }, { nonRetryable: true });
    assert.equal((await failRun(h.sql, second, { name: "RunError", message: "attempt 2" })).status, "failed");

    assert.equal(await retry(run.id), "pending");
    const t = await timeline(run.id);
    assert.equal(t.status, "pending");
    assert.equal(t.attempt, 3);
    assert.equal(t.error.message, "attempt 2", "the last error stays readable");
    assert.deepEqual(t.timeline.map((s: any) => [s.key, s.status]), [["charge#1", "completed"]]);
    assert.deepEqual(t.attempts_before.map((a: any) => [a.attempt, a.status, a.error.message]),
      [[1, "retrying", "attempt 1"], [2, "failed", "attempt 2"]]);
    assert.deepEqual(t.attempts_before[0].failed_steps[0].errors.map((e: any) => [e.attempt, e.error.message]),
      [[1, "first"], [2, "second"]]);
    assert.deepEqual(t.attempts_before[1].failed_steps[0].errors.map((e: any) => e.error.message), ["third"]);
    const third = await claimOne(h.sql, { expect: run.id });
    assert.deepEqual(third.journal.map((s) => s.key), ["charge#1"]);
    assert.equal((await runRow(h.sql, run.id)).journal_steps, 1, "the journal counter follows the steps moved out");
  });

  it("a task that failed before succeeding keeps its errors; a step that never failed has none", async () => {
    const run = await startAndClaim(h.sql);
    await completeStep(h.sql, run, "a#1", "a", 1);
    await failStep(h.sql, run, "b#1", "b", { message: "flaky" }, { retry: fixed, inlineMaxMs: 3_600_000 });
    await completeStep(h.sql, run, "b#1", "b", 2);
    const t = await timeline(run.id);
    const [a, b] = t.timeline;
    assert.deepEqual(a.errors, []);
    assert.equal(b.status, "completed");
    assert.equal(b.error, null);
    assert.deepEqual(b.errors.map((e: any) => [e.attempt, e.error.message]), [[1, "flaky"]]);
    assert.equal(b.attempts, 2);
  });

  it("makes a task step waiting on its retry due now, so the replay does not wait out the delay", async () => {
    const run = await startAndClaim(h.sql);
    const r = await failStep(h.sql, run, "ship#1", "ship", { message: "later" }, { retry: fixed });
    assert.equal(r.suspended, true);
    assert.equal(await status(h.sql, run.id), "retrying");
    assert.equal(await retry(run.id), "pending");
    const again = await claimOne(h.sql, { expect: run.id });
    const ship = again.journal.find((s) => s.key === "ship#1")!;
    assert.equal(ship.status, "retrying");
    assert.equal(ship.wake_at && Date.parse(ship.wake_at), Date.parse(at(0)));
  });

  it("wakes the queue and tells status listeners", async () => {
    const run = await runIn("failed");
    const wake = await listen(h.sql, "aiki_wake");
    const statuses = await listen(h.sql, "aiki_status");
    try {
      await retry(run.id);
      assert.ok((await wake.drain()).includes("default"));
      assert.ok((await statuses.drain()).includes(`${run.id} pending`));
    } finally {
      await wake.close();
      await statuses.close();
    }
  });

  it("a retried child: its parent's wait_child keeps the failure it received; the parent's lock is taken first", async () => {
    const parent = await startAndClaim(h.sql, { queue: "parents" });
    const [child] = await startChildren(h.sql, parent, [{ key: "kid#1", workflow: "kid", version: "1", queue: "kids" }]);
    await suspend(h.sql, parent, [{ key: "kid-wait#1", kind: "wait_child", name: "kid", child_id: child }]);
    const kid = await claimOne(h.sql, { queues: ["kids"], expect: child });
    await failRun(h.sql, kid, { name: "KidError", message: "no" }, true);
    assert.equal(await status(h.sql, parent.id), "pending", "the parent woke with the failure");

    // Another session holds the parent's row: retry_run waits for it before touching the child.
    const holder = await h.session();
    const observer = await h.session();
    const retrier = await h.session();
    try {
      const pid = await backendPid(retrier);
      await holder.begin(async (tx) => {
        await tx`select 1 from aiki.runs where id = ${parent.id}::uuid for update`;
        const pending = inFlight(retrier`select aiki.retry_run(${child!}::uuid)::text as s`);
        await waitUntilBlocked(observer, pid);
        const [free] = await observer`select id from aiki.runs where id = ${child!}::uuid for update nowait`;
        assert.ok(free, "the child is not locked while retry_run waits for the parent");
        assert.equal(pending.done, false);
        return pending;
      }).then((p) => p.promise);
    } finally {
      await Promise.all([holder.end(), observer.end(), retrier.end()]);
    }
    assert.equal(await status(h.sql, child!), "pending");
    const wait = (await timeline(parent.id)).timeline.find((s: any) => s.key === "kid-wait#1");
    assert.equal(wait.status, "completed");
    assert.equal(wait.output.status, "failed", "not reopened");
    const again = await claimOne(h.sql, { queues: ["kids"], expect: child });
    await completeRun(h.sql, again, "ok");
    const after = (await timeline(parent.id)).timeline.find((s: any) => s.key === "kid-wait#1");
    assert.equal(after.output.status, "failed", "the child's new end is delivered to no one");
  });
});

describe("history and purge_runs", () => {
  it("purge_runs deletes a run's earlier attempts with it", async () => {
    const run = await startAndClaim(h.sql, { retry: { type: "fixed", maxAttempts: 2, baseDelayMs: 0 } });
    await failStep(h.sql, run, "x#1", "x", { message: "bad" }, { nonRetryable: true });
    await failRun(h.sql, run, { message: "one" });
    const second = await claimOne(h.sql, { expect: run.id });
    await failRun(h.sql, second, { message: "two" }, true);
    const [before] = await h.sql<{ n: number }[]>`select count(*)::int as n from aiki.run_attempts where run_id = ${run.id}::uuid`;
    assert.equal(before!.n, 1);
    await setNow(h.sql, at(60_000));
    const [purged] = await h.sql<{ n: number }[]>`select aiki.purge_runs(aiki.now(), 1) as n`;
    assert.equal(purged!.n, 2, "its one earlier attempt, then its row");
    const [left] = await h.sql<{ runs: number; attempts: number }[]>`
      select (select count(*)::int from aiki.runs) as runs, (select count(*)::int from aiki.run_attempts) as attempts`;
    assert.deepEqual({ ...left }, { runs: 0, attempts: 0 });
  });
});

describe("search_runs", () => {
  it("lists newest first with every column, and pages by cursor without gaps or repeats", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      await setNow(h.sql, at(i * 1000));
      ids.push(await startRun(h.sql, { workflow: i % 2 ? "odd" : "even", idempotencyKey: `k${i}` }));
    }
    const first = await search({}, 2);
    assert.deepEqual(first.runs.map((r: any) => r.id), [ids[4], ids[3]]);
    assert.deepEqual(Object.keys(first.runs[0]).sort(), ["attempt", "available_at", "created_at", "error_name", "finished_at",
      "id", "idempotency_key", "parent_id", "queue", "started_at", "status", "unserved", "version", "workflow"]);
    assert.equal(first.runs[0].unserved, true);
    const second = await search({}, 2, first.next_cursor);
    assert.deepEqual(second.runs.map((r: any) => r.id), [ids[2], ids[1]]);
    const last = await search({}, 2, second.next_cursor);
    assert.deepEqual(last.runs.map((r: any) => r.id), [ids[0]]);
    assert.equal(last.next_cursor, null);
    assert.deepEqual((await search({}, 5)).next_cursor, null, "no cursor when the page holds the rest");
  });

  it("filters by every key", async () => {
    await setNow(h.sql, at(0));
    const a = await startRun(h.sql, { workflow: "a", version: "1", queue: "q1", idempotencyKey: "ka" });
    await setNow(h.sql, at(1000));
    const b = await startAndClaim(h.sql, { workflow: "b", version: "2", queue: "q2" });
    await failRun(h.sql, b, { name: "Boom", message: "x" }, true);
    const [kid] = await startChildren(h.sql, await startAndClaim(h.sql, { workflow: "p", queue: "q3" }),
      [{ key: "k#1", workflow: "kid", version: "1", queue: "q3" }]);
    await h.sql`select aiki.register_worker('w1', array['a@1'], array['q1'])`;
    const ids = async (f: unknown) => (await search(f)).runs.map((r: any) => r.id).sort();
    assert.deepEqual(await ids({ status: "failed" }), [b.id]);
    assert.deepEqual((await search({ status: "failed" })).runs[0].error_name, "Boom");
    assert.deepEqual(await ids({ status: ["failed", "pending"] }), [a, b.id, kid].sort());
    assert.deepEqual(await ids({ workflow: "a" }), [a]);
    assert.deepEqual(await ids({ version: "2" }), [b.id]);
    assert.deepEqual(await ids({ queue: "q2" }), [b.id]);
    assert.deepEqual(await ids({ created_before: at(500) }), [a]);
    assert.deepEqual(await ids({ created_after: at(500), workflow: "b" }), [b.id]);
    assert.deepEqual(await ids({ idempotency_key: "ka" }), [a]);
    assert.deepEqual(await ids({ search: "ka" }), [a]);
    assert.deepEqual(await ids({ search: b.id }), [b.id]);
    assert.deepEqual(await ids({ parent_id: (await runRow(h.sql, kid!)).parent_id }), [kid]);
    assert.deepEqual(await ids({ unserved: true }), [kid], "a@1 on q1 is served by w1");
    assert.equal((await ids({ unserved: false })).length, 4);
  });

  it("AK003 names the bad key, value, limit or cursor", async () => {
    await expectSqlState(search({ colour: "red" }), "AK003", /invalid run filter 'colour': unknown key/);
    await expectSqlState(search({ status: "done" }), "AK003", /invalid run filter 'status': bad value "done"/);
    await expectSqlState(search({ status: [] }), "AK003", /'status'/);
    await expectSqlState(search({ workflow: "bad name" }), "AK003", /invalid run filter 'workflow': bad value/);
    await expectSqlState(search({ workflow: 3 }), "AK003", /'workflow'/);
    await expectSqlState(search({ created_after: "yesterday-ish" }), "AK003", /'created_after'/);
    await expectSqlState(search({ parent_id: "nope" }), "AK003", /'parent_id'/);
    await expectSqlState(search({ unserved: "yes" }), "AK003", /'unserved'/);
    await expectSqlState(search([1]), "AK003", /expected a JSON object/);
    await expectSqlState(search({}, 0), "AK003", /invalid limit 0/);
    await expectSqlState(search({}, 10, "not a cursor!"), "AK003", /invalid cursor/);
    await expectSqlState(search({}, 10, Buffer.from("x/y").toString("base64")), "AK003", /invalid cursor/);
  });
});

describe("count_runs", () => {
  it("counts every status, 0 when none, under the same filters", async () => {
    await runIn("failed");
    await runIn("completed");
    await startRun(h.sql, { workflow: "other" });
    await startRun(h.sql, { workflow: "other" });
    const all = await counts();
    assert.deepEqual(all, { scheduled: 0, pending: 2, running: 0, sleeping: 0, waiting: 0, retrying: 0, paused: 0,
      completed: 1, failed: 1, cancelled: 0, continued: 0 });
    assert.equal((await counts({ workflow: "other" })).pending, 2);
    assert.equal((await counts({ workflow: "other" })).failed, 0);
    await expectSqlState(counts({ status: "failed" }), "AK003", /'status': count_runs counts every status/);
  });
});

describe("run_timeline", () => {
  it("one run with its steps, events, children, parent and lease owner", async () => {
    await setNow(h.sql, at(0));
    const run = await startAndClaim(h.sql, { worker: "w-9" });
    await setNow(h.sql, at(250));
    await completeStep(h.sql, run, "a#1", "a", { n: 1 });
    const [kid] = await startChildren(h.sql, run, [{ key: "k#1", workflow: "kid", version: "1" }]);
    await sendEvent(h.sql, run.id, "go", { x: 1 }, "e1");
    let t = await timeline(run.id);
    assert.equal(t.lease_owner, "w-9");
    assert.equal(t.lease_token, undefined);
    assert.equal(t.journal, undefined);
    assert.equal(t.parent, null);
    const a = t.timeline[0];
    assert.deepEqual([a.key, a.kind, a.name, a.status, a.attempts, a.output, a.error, a.errors],
      ["a#1", "task", "a", "completed", 1, { n: 1 }, null, []]);
    assert.equal(a.duration_ms, 0);
    assert.deepEqual(Object.keys(a).sort(), ["attempts", "child_id", "completed_at", "created_at", "duration_ms", "error",
      "errors", "key", "kind", "name", "output", "status", "wake_at"]);
    assert.equal(t.timeline[1].child_id, kid);
    assert.deepEqual(t.events.map((e: any) => [e.name, e.data, e.idempotency_key, e.consumed_by]), [["go", { x: 1 }, "e1", null]]);
    assert.deepEqual(t.children.map((c: any) => [c.id, c.workflow, c.status]), [[kid, "kid", "pending"]]);
    await suspend(h.sql, run, [{ key: "go#1", kind: "event", name: "go" }]);
    await completeRun(h.sql, run, "done");
    t = await timeline(run.id);
    assert.equal(t.lease_owner, null);
    assert.equal(t.events[0].consumed_by, "go#1");
    const k = await timeline(kid!);
    assert.deepEqual(k.parent, { id: run.id, workflow: "wf", version: "1.0.0", status: "completed" });
  });

  it("AK002 when missing", async () => {
    await expectSqlState(timeline("00000000-0000-4000-8000-0000000000aa"), "AK002", /not found/);
  });
});

describe("list_workers and list_queues", () => {
  it("workers with liveness and the runs each holds", async () => {
    await h.sql`select aiki.register_worker('w-a', array['wf@1.0.0'], array['default'], 5000)`;
    await setNow(h.sql, at(1000));
    await h.sql`select aiki.register_worker('w-b', null, null, 60000)`;
    await startAndClaim(h.sql, { worker: "w-b" });
    await setNow(h.sql, at(10_000));
    const [row] = await h.sql<{ w: any[] }[]>`select aiki.list_workers() as w`;
    assert.deepEqual(row!.w.map((w) => [w.id, w.workflows, w.queues, w.alive, w.runs_held]),
      [["w-b", null, null, true, 1], ["w-a", ["wf@1.0.0"], ["default"], false, 0]]);
  });

  it("queues with runs or settings: depth by status, oldest pending, limits, paused", async () => {
    await h.sql`select aiki.set_queue('limited', 4, 2)`;
    await h.sql`select aiki.pause_queue('limited')`;
    await setNow(h.sql, at(0));
    await startRun(h.sql, { queue: "work" });
    await setNow(h.sql, at(5000));
    await startRun(h.sql, { queue: "work" });
    await startRun(h.sql, { queue: "work", delayMs: 60_000 });
    await runIn("completed");
    const [row] = await h.sql<{ q: any[] }[]>`select aiki.list_queues() as q`;
    assert.deepEqual(row!.q.map((q) => q.name), ["limited", "work"], "default holds only a finished run");
    const [limited, work] = row!.q;
    assert.deepEqual([limited.concurrency_limit, limited.key_concurrency_limit, limited.paused, limited.counts.pending],
      [4, 2, true, 0]);
    assert.deepEqual(work.counts, { pending: 2, running: 0, scheduled: 1, sleeping: 0, waiting: 0, retrying: 0, paused: 0 });
    assert.equal(Date.parse(work.oldest_pending_at), Date.parse(at(0)));
    assert.equal(work.oldest_pending_age_ms, 5000);
    assert.deepEqual([work.concurrency_limit, work.key_concurrency_limit, work.paused], [null, 1, false]);
  });
});
