// Queue rate limits — aiki.set_queue(…, p_rate_limit, p_rate_window_ms, p_rate_per_key) and how
// the claim honours them: at most N first leases per fixed, epoch-aligned window, per queue or per
// concurrency key; runs the window holds back go back to `scheduled` until the window ends.
import { after, before, beforeEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  T0, at, backendPid, claim, claimOne, expectSqlState, harness, inFlight, listen, reset, runRow, setNow, startRun,
  status, suspend, waitUntilBlocked, type Harness, type Sql,
} from "./support.js";

let h: Harness;
let a: Sql;
let b: Sql;
before(async () => {
  h = await harness();
  a = await h.session();
  b = await h.session();
});
after(() => h.close());
beforeEach(async () => {
  await reset(h.sql);
  offset = 0;
  await setNow(a, T0);
  await setNow(b, T0);
});

/** Starts a run at T0 + `offset` ms, so claim order (oldest first) is fixed. */
let offset = 0;
const start = async (o: { queue?: string; concurrencyKey?: string; input?: unknown } = {}) => {
  await setNow(h.sql, at(offset++));
  return startRun(h.sql, { queue: "api", ...o });
};

const leased = async (queue: string, limit = 100) =>
  (await claim(h.sql, { queues: [queue], limit, leaseMs: 3_600_000 })).runs.map((r) => r.id);

describe("set_queue rate limit", () => {
  it("stores the limit, the window and the per-key flag, and a later set_queue without them removes them", async () => {
    const [q] = await h.sql`select (aiki.set_queue('api', null, 1, 5, 60000, true)).*`;
    assert.deepEqual([q!.rate_limit, Number(q!.rate_window_ms), q!.rate_per_key], [5, 60000, true]);
    const [r] = await h.sql`select (aiki.set_queue('api')).*`;
    assert.deepEqual([r!.rate_limit, r!.rate_window_ms, r!.rate_per_key], [null, null, false]);
  });

  for (const [title, args, message] of [
    ["a limit of 0", [0, 1000, false], /invalid rate limit 0/],
    ["a limit without a window", [5, null, false], /invalid rate window null ms for rate limit 5/],
    ["a window without a limit", [null, 1000, false], /invalid rate window 1000 ms for rate limit null/],
    ["a window of 0 ms", [5, 0, false], /invalid rate window 0 ms/],
    ["a window over 366 days", [5, 31622400001, false], /invalid rate window 31622400001 ms/],
    ["per key without a limit", [null, null, true], /invalid rate per key true/],
    ["per key null", [5, 1000, null], /invalid rate per key null/],
  ] as const) {
    it(`refuses ${title} with AK003 and writes nothing`, async () => {
      await expectSqlState(
        h.sql`select aiki.set_queue('api', null, 1, ${args[0]}::integer, ${args[1]}::bigint, ${args[2]}::boolean)`,
        "AK003", message);
      assert.equal((await h.sql`select count(*)::int as n from aiki.queues`)[0]!.n, 0);
    });
  }
});

describe("claim under a rate limit", () => {
  it("starts exactly N runs per window, window after window, and holds the rest until each window ends", async () => {
    await h.sql`select aiki.set_queue('api', null, 1, 3, 10000)`;
    const ids: string[] = [];
    for (let i = 0; i < 10; i++) ids.push(await start({ input: i }));

    const first = await claim(h.sql, { queues: ["api"], limit: 10, leaseMs: 3_600_000 });
    assert.deepEqual(first.runs.map((r) => r.id), ids.slice(0, 3));
    // The rest wait as timers for the window's end, which the claim names as its next due time.
    assert.equal(first.next_due_at && new Date(first.next_due_at).toISOString(), at(10000));
    assert.equal(first.held, false);
    for (const id of ids.slice(3)) {
      const row = await runRow(h.sql, id);
      assert.deepEqual([row.status, row.available_at.toISOString()], ["scheduled", at(10000)]);
    }

    await setNow(h.sql, at(9999));
    assert.deepEqual(await leased("api"), [], "nothing before the window ends");
    // Held runs share the window's end as their due time, so which 3 go next is not fixed.
    const started = new Set(ids.slice(0, 3));
    for (const [t, n] of [[10000, 3], [20000, 3], [30000, 1], [40000, 0]] as const) {
      await setNow(h.sql, at(t));
      const got = await leased("api");
      assert.equal(got.length, n, `starts in the window from ${at(t)}`);
      for (const id of got) started.add(id);
    }
    assert.equal(started.size, 10, "every run started once");
  });

  it("counts starts of the whole window: runs arriving later in a full window wait for its end", async () => {
    await h.sql`select aiki.set_queue('api', null, 1, 2, 60000)`;
    await start();
    offset = 30000;
    assert.equal((await leased("api")).length, 1);
    const late = [await start(), await start()];
    assert.deepEqual(await leased("api"), [late[0]]);
    assert.deepEqual(await leased("api"), []);
    assert.equal((await runRow(h.sql, late[1]!)).available_at.toISOString(), at(60000));
    await setNow(h.sql, at(60000));
    assert.deepEqual(await leased("api"), [late[1]]);
  });

  it("counts first leases only: a run resuming after a sleep is no new start", async () => {
    await h.sql`select aiki.set_queue('api', null, 1, 1, 60000)`;
    const sleeper = await start();
    const lease = await claimOne(h.sql, { queues: ["api"], expect: sleeper });
    await suspend(h.sql, lease, [{ key: "nap#1", kind: "sleep", name: "nap", duration_ms: 1000 }]);
    const fresh = await start();
    await setNow(h.sql, at(1000));
    assert.deepEqual(await leased("api"), [sleeper]);
    assert.equal(await status(h.sql, fresh), "scheduled");
  });

  it("tells the queue's workers when the window frees, and a continue-as-new successor is a new start", async () => {
    await h.sql`select aiki.set_queue('api', null, 1, 1, 10000)`;
    const first = await start();
    const waiting = await start();
    const wake = await listen(h.db.sql, "aiki_wake");
    const [lease] = (await claim(h.sql, { queues: ["api"], limit: 10, leaseMs: 3_600_000 })).runs;
    assert.equal(lease!.id, first);
    assert.ok((await wake.drain()).includes(`api ${at(10000)}`), "a hint names the window's end");
    await wake.close();
    const [row] = await h.sql<{ id: string }[]>`
      select aiki.continue_as_new(${first}::uuid, ${lease!.lease_token}::uuid, '1') as id`;
    assert.deepEqual(await leased("api"), [], "the window is full for the successor too");
    assert.equal(await status(h.sql, row!.id), "scheduled");
    await setNow(h.sql, at(10000));
    assert.equal((await leased("api")).length, 1);
    assert.deepEqual([await status(h.sql, waiting), await status(h.sql, row!.id)].sort(), ["running", "scheduled"]);
  });

  it("per key: each concurrency key gets its own allowance; unkeyed runs share one", async () => {
    await h.sql`select aiki.set_queue('api', null, 100, 2, 10000, true)`;
    const runs: Record<string, string[]> = { a: [], b: [], none: [] };
    for (let i = 0; i < 3; i++) {
      runs.a!.push(await start({ concurrencyKey: "a" }));
      runs.b!.push(await start({ concurrencyKey: "b" }));
      runs.none!.push(await start());
    }
    const first = new Set(await leased("api"));
    assert.deepEqual(first, new Set([...runs.a!.slice(0, 2), ...runs.b!.slice(0, 2), ...runs.none!.slice(0, 2)]));
    assert.deepEqual(await leased("api"), []);
    await setNow(h.sql, at(10000));
    assert.deepEqual(new Set(await leased("api")), new Set([runs.a![2], runs.b![2], runs.none![2]]));
  });

  it("a concurrency-held run spends no allowance: another key's run starts instead", async () => {
    await h.sql`select aiki.set_queue('api', null, 1, 2, 10000)`;
    const a1 = await start({ concurrencyKey: "a" });
    const a2 = await start({ concurrencyKey: "a" });
    const b1 = await start({ concurrencyKey: "b" });
    assert.deepEqual(new Set(await leased("api")), new Set([a1, b1]));
    assert.equal(await status(h.sql, a2), "scheduled");
  });

  it("honours the claim limit: runs beyond it stay pending while the window has room", async () => {
    await h.sql`select aiki.set_queue('api', null, 1, 5, 10000)`;
    const ids = [await start(), await start()];
    assert.deepEqual(await leased("api", 1), [ids[0]]);
    assert.equal(await status(h.sql, ids[1]!), "pending");
    assert.deepEqual(await leased("api", 1), [ids[1]]);
  });

  it("two claimers racing never exceed the limit: the second waits for the first's count", async () => {
    await h.sql`select aiki.set_queue('api', null, 1, 3, 10000)`;
    for (let i = 0; i < 6; i++) await start();
    await setNow(a, at(100));
    await setNow(b, at(100));
    const pidB = await backendPid(b);
    let contender!: ReturnType<typeof inFlight<{ claim: { runs: unknown[] } }[]>>;
    await a.begin(async (tx) => {
      const [mine] = await tx`select aiki.claim('w-a', null, array['api'], 3, 30000)`;
      assert.equal((mine!.claim as { runs: unknown[] }).runs.length, 3);
      contender = inFlight(b<{ claim: { runs: unknown[] } }[]>`select aiki.claim('w-b', null, array['api'], 3, 30000)`);
      await waitUntilBlocked(h.db.sql, pidB);
    });
    await contender.promise;
    assert.equal(contender.error, undefined);
    assert.deepEqual(contender.value![0]!.claim.runs, []);
    const [n] = await h.sql`select count(*)::int as n from aiki.runs where status = 'running'`;
    assert.equal(n!.n, 3);
  });

  it("an unlimited queue keeps the fast path and writes no counter", async () => {
    for (let i = 0; i < 3; i++) await startRun(h.sql);
    assert.equal((await leased("default")).length, 3);
    assert.equal((await h.sql`select count(*)::int as n from aiki.queue_rates`)[0]!.n, 0);
  });
});
