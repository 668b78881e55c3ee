// Races, made deterministic. Session A runs the first act inside a transaction and keeps it open;
// session B starts the competing act, and the test polls pg_stat_activity until B waits on a
// lock (never a sleep); then A commits and B's outcome is checked. Each race is run in both
// orders. A deadlock would surface as SQLSTATE 40P01 in either session, which every race rejects.
import { after, before, beforeEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as delay } from "node:timers/promises";
import {
  T0, at, backendPid, claim, claimOne, ms, expectSqlState, harness, inFlight, jsonb, listen, reset, runRow,
  setNow, startAndClaim, startChildren, startRun, status, step, suspend, waitUntilBlocked,
  type ClaimResult, type Harness, type Lease, type Settled, type Sql,
} from "./support.js";

let h: Harness;
let a: Sql;
let b: Sql;
let pidB: number;
before(async () => {
  h = await harness();
  a = await h.session();
  b = await h.session();
  pidB = await backendPid(b);
});
after(() => h.close());
beforeEach(async () => {
  await reset(h.sql);
  await setNow(a, T0);
  await setNow(b, T0);
});

/**
 * Runs `first` in an open transaction of session A, then starts `second` on session B, waits
 * until B is blocked on a lock, commits A, and returns how B ended.
 */
async function race<T>(first: (tx: Sql) => Promise<unknown>, second: (b: Sql) => PromiseLike<T>): Promise<Settled<T>> {
  let contender!: ReturnType<typeof inFlight<T>>;
  await a.begin(async (tx) => {
    await first(tx as unknown as Sql);
    contender = inFlight(second(b));
    await waitUntilBlocked(h.db.sql, pidB);
    assert.equal(contender.done, false, "B must wait for A's locks");
  });
  await contender.promise;
  assert.notEqual(contender.error?.code, "40P01", "deadlock");
  return contender;
}

/** Runs `first` in an open transaction of A and asserts that `second` on B finishes meanwhile. */
async function notBlocked<T>(first: (tx: Sql) => Promise<unknown>, second: (b: Sql) => PromiseLike<T>): Promise<T> {
  let value!: T;
  await a.begin(async (tx) => {
    await first(tx as unknown as Sql);
    const contender = inFlight(second(b));
    const timeout = delay(15_000, "timeout" as const, { ref: false });
    assert.notEqual(await Promise.race([contender.promise, timeout]), "timeout", "B waited for A");
    if (contender.error) throw contender.error;
    value = contender.value as T;
  });
  return value;
}

const claimIn = async (s: Sql, worker: string, limit: number, queues = ["default"]) => {
  const [row] = await s`select aiki.claim(${worker}, null, ${queues}::text[], ${limit}, 30000) as c`;
  return row!.c.runs as (Lease & { concurrency_key: string | null })[];
};

describe("claim vs claim", () => {
  it("two claimers get disjoint runs; the second skips the first's locked rows without waiting", async () => {
    const ids = [];
    for (let i = 0; i < 4; i++) ids.push(await startRun(h.sql));
    let first: Lease[] = [];
    const second = await notBlocked(async (tx) => {
      first = await claimIn(tx, "w-a", 2);
    }, (s) => claimIn(s, "w-b", 10));
    assert.equal(first.length, 2);
    assert.equal(second.length, 2);
    const all = [...first, ...second].map((r) => r.id);
    assert.equal(new Set(all).size, 4, "no run leased twice");
    assert.deepEqual(all.sort(), ids.sort());
    for (const r of first) assert.equal((await runRow(h.sql, r.id)).lease_owner, "w-a");
    for (const r of second) assert.equal((await runRow(h.sql, r.id)).lease_owner, "w-b");
  });

  it("a run row-locked by another act (e.g. an event being sent) is skipped, not waited for", async () => {
    const busy = await startRun(h.sql);
    const free = await startRun(h.sql);
    const got = await notBlocked(async (tx) => {
      await tx`select 1 from aiki.runs where id = ${busy}::uuid for update`;
    }, (s) => claimIn(s, "w-b", 10));
    assert.deepEqual(got.map((r) => r.id), [free]);
  });

  describe("a claim that passed over a locked run says so (skipped), so its worker looks again", () => {
    const claimed = async (s: Sql, queues = ["default"]) => {
      const [row] = await s`select aiki.claim('w-b', null, ${queues}::text[], 10, 30000) as c`;
      return row!.c as ClaimResult;
    };

    it("a pending run held by send_event: skipped, and the next claim after the commit takes it", async () => {
      const run = await startRun(h.sql);
      const first = await notBlocked((tx) => tx`select aiki.send_event(${run}::uuid, 'go')`, (s) => claimed(s));
      assert.deepEqual(first.runs, []);
      assert.equal(first.skipped, true, "the send_event commits without a notification: only `skipped` tells");
      const second = await claimed(b);
      assert.deepEqual(second.runs.map((r) => r.id), [run]);
      assert.equal(second.skipped, false);
    });

    it("a pending parent held by its child's end: skipped", async () => {
      const parent = await startAndClaim(h.sql);
      const [child] = await startChildren(h.sql, parent, [{ key: "k#1", workflow: "kid", version: "1", queue: "kids" }]);
      await h.sql`select aiki.release(${parent.id}::uuid, ${parent.lease_token}::uuid)`;
      const kid = await claimOne(h.sql, { queues: ["kids"], expect: child });
      const first = await notBlocked(
        (tx) => tx`select aiki.complete_run(${kid.id}::uuid, ${kid.lease_token}::uuid, 'null')`,
        (s) => claimed(s));
      assert.deepEqual([first.runs.length, first.skipped], [0, true]);
      assert.deepEqual((await claimed(b)).runs.map((r) => r.id), [parent.id]);
    });

    it("a due sleeper held by send_event (an event it does not wait for): skipped, not reported as a future timer", async () => {
      const run = await startAndClaim(h.sql);
      await suspend(h.sql, run, [{ key: "nap#1", kind: "sleep", name: "nap", duration_ms: 1000 }]);
      await startRun(h.sql, { delayMs: 60_000 });
      for (const s of [a, b, h.sql]) await setNow(s, at(1000));
      const first = await notBlocked((tx) => tx`select aiki.send_event(${run.id}::uuid, 'unrelated')`, (s) => claimed(s));
      assert.deepEqual(first.runs, []);
      assert.equal(first.skipped, true);
      assert.equal(ms(first.next_due_at), Date.parse(at(60_000)), "the next future timer, not the locked due one");
      assert.deepEqual((await claimed(b)).runs.map((r) => r.id), [run.id]);
    });

    it("a keyed run held by another transaction: skipped on the slow path too", async () => {
      const run = await startRun(h.sql, { concurrencyKey: "k" });
      const first = await notBlocked((tx) => tx`select aiki.send_event(${run}::uuid, 'go')`, (s) => claimed(s));
      assert.deepEqual([first.runs.length, first.skipped, first.held], [0, true, false]);
      assert.deepEqual((await claimed(b)).runs.map((r) => r.id), [run]);
    });

    it("nothing locked: not skipped; runs a concurrency limit keeps back are `held`, not skipped", async () => {
      assert.deepEqual(await claimed(b).then((r) => [r.skipped, r.held]), [false, false]);
      await startAndClaim(h.sql, { concurrencyKey: "k" });
      await startRun(h.sql, { concurrencyKey: "k" });
      assert.deepEqual(await claimed(b).then((r) => [r.runs.length, r.skipped, r.held]), [0, false, true]);
      await h.sql`select aiki.set_queue('lim', 1)`;
      await startAndClaim(h.sql, { queue: "lim" });
      await startRun(h.sql, { queue: "lim" });
      assert.deepEqual(await claimed(b, ["lim"]).then((r) => [r.runs.length, r.skipped, r.held]), [0, false, true]);
    });

    it("a full claim reports neither", async () => {
      await startRun(h.sql);
      const [row] = await b`select aiki.claim('w-b', null, array['default'], 1, 30000) as c`;
      assert.deepEqual([row!.c.runs.length, row!.c.skipped, row!.c.held, row!.c.next_due_at], [1, false, false, null]);
    });
  });

  it("concurrent keyed claims never exceed the key limit: the second waits for the queue's claim lock", async () => {
    for (let i = 0; i < 3; i++) await startRun(h.sql, { concurrencyKey: "k" });
    for (let i = 0; i < 2; i++) await startRun(h.sql, { concurrencyKey: "j" });
    let first: { concurrency_key: string | null }[] = [];
    const second = await race(async (tx) => {
      first = await claimIn(tx, "w-a", 10);
    }, (s) => claimIn(s, "w-b", 10));
    assert.deepEqual(first.map((r) => r.concurrency_key).sort(), ["j", "k"]);
    assert.equal(second.error, undefined);
    assert.deepEqual(second.value, [], "both keys are at their limit");
    const rows = await h.sql`select concurrency_key, count(*)::int as n from aiki.runs where status = 'running' group by 1`;
    for (const r of rows) assert.equal(r.n, 1, `key ${r.concurrency_key}`);
  });

  it("concurrent claims of a limited queue never exceed its concurrency limit", async () => {
    await h.sql`select aiki.set_queue('lim', 3)`;
    for (let i = 0; i < 6; i++) await startRun(h.sql, { queue: "lim" });
    let first: Lease[] = [];
    const second = await race(async (tx) => {
      first = await claimIn(tx, "w-a", 2, ["lim"]);
    }, (s) => claimIn(s, "w-b", 10, ["lim"]));
    assert.equal(first.length, 2);
    assert.equal(second.value!.length, 1);
    const [row] = await h.sql`select count(*)::int as n from aiki.runs where status = 'running'`;
    assert.equal(row!.n, 3);
  });
});

describe("start_workflow vs start_workflow", () => {
  const start = (s: Sql, input: number) =>
    s`select * from aiki.start_workflow('order', '1', ${jsonb(s, input)}, 'same-key')`;

  it("the same idempotency key from two sessions: the second waits, then returns the first's run", async () => {
    let first!: { run_id: string; created: boolean };
    const second = await race(async (tx) => {
      [first] = (await start(tx, 1)) as any;
    }, (s) => start(s, 1));
    assert.equal(first.created, true);
    assert.deepEqual((second.value as any)[0], { run_id: first.run_id, created: false });
    const [row] = await h.sql`select count(*)::int as n from aiki.runs`;
    assert.equal(row!.n, 1);
  });

  it("the same key with another input from two sessions: the second gets AK004", async () => {
    const second = await race((tx) => start(tx, 1), (s) => start(s, 2));
    await expectSqlState(Promise.reject(second.error), "AK004", /with another input/);
  });

  it("when the first start rolls back, the second creates the run", async () => {
    let contender!: ReturnType<typeof inFlight<unknown>>;
    await a.begin(async (tx) => {
      await start(tx as unknown as Sql, 1);
      contender = inFlight(start(b, 1));
      await waitUntilBlocked(h.db.sql, pidB);
      throw new Error("roll back");
    }).catch((e) => assert.equal(e.message, "roll back"));
    await contender.promise;
    assert.equal((contender.value as any)[0].created, true);
  });
});

describe("start_workflow vs start_workflow under REPEATABLE READ", () => {
  // The documented contract (docs/sql-api.md, start_workflow): a snapshot taken before the first
  // start committed cannot see its run, so Postgres refuses the second with 40001; retried in a
  // new transaction, the start returns the first's run.
  const start = (s: Sql) => s`select * from aiki.start_workflow('order', '1', '1', 'rr-key')`;
  const repeatableRead = (s: Sql) => s.begin("isolation level repeatable read", (tx) => start(tx as unknown as Sql));

  it("the same idempotency key: the second gets 40001 (serialization failure), and its retry returns the first's run", async () => {
    let first!: { run_id: string; created: boolean };
    const second = await race(async (tx) => {
      [first] = (await start(tx)) as any;
    }, repeatableRead);
    await expectSqlState(Promise.reject(second.error), "40001");
    const [retried] = (await repeatableRead(b)) as any;
    assert.deepEqual(retried, { run_id: first.run_id, created: false });
    const [row] = await h.sql`select count(*)::int as n from aiki.runs`;
    assert.equal(row!.n, 1);
  });
});

describe("send_event vs send_event", () => {
  it("the same idempotency key from two sessions stores one event; both get its id", async () => {
    const run = await startAndClaim(h.sql);
    let firstId!: string;
    const second = await race(async (tx) => {
      [{ id: firstId }] = (await tx`select aiki.send_event(${run.id}::uuid, 'paid', '1', 'k') as id`) as any;
    }, (s) => s`select aiki.send_event(${run.id}::uuid, 'paid', '1', 'k') as id`);
    assert.equal((second.value as any)[0].id, firstId);
    const [row] = await h.sql`select count(*)::int as n from aiki.events`;
    assert.equal(row!.n, 1);
  });
});

describe("send_event vs suspend", () => {
  it("suspend first, event second: the event sees the new wait and wakes the run", async () => {
    const run = await startAndClaim(h.sql);
    const sent = await race(
      (tx) => tx`select aiki.wait_event(${run.id}::uuid, ${run.lease_token}::uuid, 'go#1', 'go')`,
      (s) => s`select aiki.send_event(${run.id}::uuid, 'go', '"payload"')`);
    assert.equal(sent.error, undefined);
    assert.equal(await status(h.sql, run.id), "pending");
    const s = (await step(h.sql, run.id, "go#1"))!;
    assert.deepEqual([s.status, s.output], ["completed", { data: "payload" }]);
  });

  it("event first, suspend second: the wait finds the buffered event and does not suspend", async () => {
    const run = await startAndClaim(h.sql);
    const waited = await race(
      (tx) => tx`select aiki.send_event(${run.id}::uuid, 'go', '"payload"')`,
      (s) => s`select aiki.wait_event(${run.id}::uuid, ${run.lease_token}::uuid, 'go#1', 'go') as r`);
    assert.equal(waited.error, undefined);
    const r = (waited.value as any)[0].r;
    assert.equal(r.suspended, false);
    assert.deepEqual(r.resolved[0].output, { data: "payload" });
    assert.equal(await status(h.sql, run.id), "running");
    const [ev] = await h.sql`select consumed_by from aiki.events`;
    assert.equal(ev!.consumed_by, "go#1");
  });
});

describe("cancel vs complete_run", () => {
  it("cancel first: complete_run then gets AK001 and the run stays cancelled", async () => {
    const run = await startAndClaim(h.sql);
    const done = await race(
      (tx) => tx`select aiki.cancel(${run.id}::uuid)`,
      (s) => s`select aiki.complete_run(${run.id}::uuid, ${run.lease_token}::uuid, '"done"')`);
    await expectSqlState(Promise.reject(done.error), "AK001", /^lease lost: run .* is cancelled$/);
    const row = await runRow(h.sql, run.id);
    assert.deepEqual([row.status, row.output], ["cancelled", null]);
  });

  it("complete_run first: cancel then gets AK005 and the run stays completed", async () => {
    const run = await startAndClaim(h.sql);
    const cancelled = await race(
      (tx) => tx`select aiki.complete_run(${run.id}::uuid, ${run.lease_token}::uuid, '"done"')`,
      (s) => s`select aiki.cancel(${run.id}::uuid)`);
    await expectSqlState(Promise.reject(cancelled.error), "AK005", /^run .* is already completed and cannot be cancelled$/);
    const row = await runRow(h.sql, run.id);
    assert.deepEqual([row.status, row.output], ["completed", "done"]);
  });

  it("a child: cancel of the parent first, the child's complete_run then gets AK001", async () => {
    const parent = await startAndClaim(h.sql, { queue: "p" });
    const [childId] = await startChildren(h.sql, parent, [{ key: "k#1", workflow: "kid", version: "1", queue: "kids" }]);
    const child = await claimOne(h.sql, { queues: ["kids"], expect: childId });
    const done = await race(
      (tx) => tx`select aiki.cancel(${parent.id}::uuid)`,
      (s) => s`select aiki.complete_run(${child.id}::uuid, ${child.lease_token}::uuid)`);
    await expectSqlState(Promise.reject(done.error), "AK001", /is cancelled/);
    assert.equal(await status(h.sql, childId!), "cancelled");
  });

  it("a child: its complete_run first, the parent's cancel then leaves the finished child alone", async () => {
    const parent = await startAndClaim(h.sql, { queue: "p" });
    const [childId] = await startChildren(h.sql, parent, [{ key: "k#1", workflow: "kid", version: "1", queue: "kids" }]);
    const child = await claimOne(h.sql, { queues: ["kids"], expect: childId });
    const cancelled = await race(
      (tx) => tx`select aiki.complete_run(${child.id}::uuid, ${child.lease_token}::uuid, '1')`,
      (s) => s`select aiki.cancel(${parent.id}::uuid)`);
    assert.equal(cancelled.error, undefined);
    assert.equal(await status(h.sql, childId!), "completed");
    assert.equal(await status(h.sql, parent.id), "cancelled");
  });
});

describe("child complete vs parent wait_child", () => {
  async function parentWithRunningChild() {
    const parent = await startAndClaim(h.sql, { queue: "parents" });
    const [childId] = await startChildren(h.sql, parent, [{ key: "k#1", workflow: "kid", version: "1", queue: "kids" }]);
    const child = await claimOne(h.sql, { queues: ["kids"], expect: childId });
    return { parent, child };
  }

  it("parent waits first: the child's completion, queued behind it, delivers and wakes the parent once", async () => {
    const { parent, child } = await parentWithRunningChild();
    const wake = await listen(h.db.sql, "aiki_wake");
    try {
      await wake.drain();
      const done = await race(
        (tx) => tx`select aiki.wait_child(${parent.id}::uuid, ${parent.lease_token}::uuid, 'w#1', ${child.id}::uuid)`,
        (s) => s`select aiki.complete_run(${child.id}::uuid, ${child.lease_token}::uuid, '"shipped"')`);
      assert.equal(done.error, undefined);
      assert.deepEqual(await wake.drain(), ["parents"], "woken exactly once");
    } finally {
      await wake.close();
    }
    assert.equal(await status(h.sql, parent.id), "pending");
    assert.deepEqual((await step(h.sql, parent.id, "w#1"))!.output, { status: "completed", output: "shipped", error: null });
  });

  it("child completes first: the parent's wait, queued behind it, resolves at once without suspending", async () => {
    const { parent, child } = await parentWithRunningChild();
    const wake = await listen(h.db.sql, "aiki_wake");
    let waited;
    try {
      await wake.drain();
      waited = await race(
        (tx) => tx`select aiki.complete_run(${child.id}::uuid, ${child.lease_token}::uuid, '"shipped"')`,
        (s) => s`select aiki.wait_child(${parent.id}::uuid, ${parent.lease_token}::uuid, 'w#1', ${child.id}::uuid) as r`);
      assert.deepEqual(await wake.drain(), [], "nothing to wake: the parent never suspended");
    } finally {
      await wake.close();
    }
    assert.equal(waited.error, undefined);
    const r = (waited.value as any)[0].r;
    assert.equal(r.suspended, false);
    assert.deepEqual(r.resolved[0].output, { status: "completed", output: "shipped", error: null });
    assert.equal(await status(h.sql, parent.id), "running");
  });

  it("parent waits first, the child is cancelled second: delivered as cancelled", async () => {
    const { parent, child } = await parentWithRunningChild();
    const done = await race(
      (tx) => tx`select aiki.wait_child(${parent.id}::uuid, ${parent.lease_token}::uuid, 'w#1', ${child.id}::uuid)`,
      (s) => s`select aiki.cancel(${child.id}::uuid)`);
    assert.equal(done.error, undefined);
    assert.equal(await status(h.sql, parent.id), "pending");
    assert.equal((await step(h.sql, parent.id, "w#1"))!.output.status, "cancelled");
  });
});

describe("no deadlocks", () => {
  it("cancelling parents while their children finish, from two sessions at once, never deadlocks", async () => {
    const pairs = [];
    for (let i = 0; i < 20; i++) {
      const parent = await startAndClaim(h.sql, { queue: "p" });
      const kids = await startChildren(h.sql, parent, [
        { key: "a#1", workflow: "kid", version: "1", queue: "kids" },
        { key: "b#1", workflow: "kid", version: "1", queue: "kids" },
      ]);
      await suspend(h.sql, parent, kids.map((id, j) => ({ key: `w#${j}`, kind: "wait_child", name: "kid", child_id: id })));
      pairs.push({ parent: parent.id, kids });
    }
    const children = (await claim(h.sql, { queues: ["kids"], limit: 100 })).runs;
    assert.equal(children.length, 40);
    const outcomes = await Promise.allSettled([
      (async () => {
        for (const p of pairs) await a`select aiki.cancel(${p.parent}::uuid)`;
      })(),
      (async () => {
        const errors = [];
        for (const c of children) {
          try {
            await b`select aiki.complete_run(${c.id}::uuid, ${c.lease_token}::uuid, ${jsonb(b, c.id)})`;
          } catch (e) {
            errors.push(e);
          }
        }
        return errors;
      })(),
    ]);
    assert.equal(outcomes[0].status, "fulfilled", String((outcomes[0] as PromiseRejectedResult).reason));
    const errors = (outcomes[1] as PromiseFulfilledResult<any[]>).value;
    for (const e of errors) assert.equal(e.code, "AK001", `only lost leases, got ${e.code}: ${e.message}`);
    const rows = await h.sql`select status::text, count(*)::int as n from aiki.runs where queue = 'kids' group by 1`;
    const total = rows.reduce((n, r) => n + r.n, 0);
    assert.equal(total, 40);
    for (const r of rows) assert.ok(["completed", "cancelled"].includes(r.status));
  });
});
