// Engine regressions for the bugs the chaos suite (sdk/test/chaos) found, each reduced to a
// deterministic case on the fake clock.
import { after, before, beforeEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  at, claimOne, harness, reset, setNow, startAndClaim, startRun, tableCounts, type Harness,
} from "./support.js";

let h: Harness;
before(async () => {
  h = await harness();
});
after(() => h.close());
beforeEach(() => reset(h.sql));

describe("heartbeat", () => {
  it("renews every lease it can without waiting for a row another transaction holds; the held one comes back unrenewed", async () => {
    // Three leases of w; another transaction (a group commit, a cancel) holds B's row.
    const a = await startAndClaim(h.sql, { worker: "w" });
    const b = await startAndClaim(h.sql, { worker: "w" });
    const c = await startAndClaim(h.sql, { worker: "w" });
    await setNow(h.sql, at(10_000));
    const holder = await h.session();
    await holder`begin`;
    await holder`select 1 from aiki.runs where id = ${b.id}::uuid for update`;
    // The heartbeat must not wait: lock_timeout turns a wait into 55P03 instead of a hang.
    const rows = await h.sql.begin(async (tx) => {
      await tx`set local lock_timeout = '2s'`;
      return tx<{ run_id: string; lease_token: string; lease_expires_at: Date }[]>`
        select * from aiki.heartbeat('w', 30000, ${[a.lease_token, b.lease_token, c.lease_token]}::uuid[])`;
    });
    await holder`commit`;
    await holder.end();
    const byRun = new Map(rows.map((r) => [r.run_id, r]));
    assert.deepEqual([...byRun.keys()].sort(), [a.id, b.id, c.id].sort(), "a skipped lease that is still valid is not reported lost");
    assert.equal(byRun.get(a.id)!.lease_expires_at.toISOString(), at(40_000));
    assert.equal(byRun.get(c.id)!.lease_expires_at.toISOString(), at(40_000));
    assert.equal(byRun.get(b.id)!.lease_expires_at.toISOString(), at(30_000), "the skipped lease keeps its expiry");
    assert.equal(byRun.get(b.id)!.lease_token, b.lease_token);
    const [row] = await h.sql`select lease_expires_at from aiki.runs where id = ${b.id}::uuid`;
    assert.equal(row!.lease_expires_at.toISOString(), at(30_000));
  });

  it("renews only the leases it is given, when given tokens", async () => {
    const a = await startRun(h.sql);
    const b = await startRun(h.sql);
    const known = await claimOne(h.sql, { worker: "w", expect: a, leaseMs: 1000 });
    const lost = await claimOne(h.sql, { worker: "w", expect: b, leaseMs: 1000 });
    await setNow(h.sql, at(500));
    const renewed = await h.sql<{ run_id: string; lease_token: string }[]>`
      select * from aiki.heartbeat('w', 1000, ${`{${known.lease_token}}`}::uuid[])`;
    assert.deepEqual(renewed.map((r) => r.run_id), [a]);
    const leases = await h.sql<{ id: string; lease_expires_at: Date }[]>`
      select id, lease_expires_at from aiki.runs order by id`;
    assert.equal(leases.find((r) => r.id === a)!.lease_expires_at.toISOString(), at(1500));
    assert.equal(leases.find((r) => r.id === b)!.lease_expires_at.toISOString(), at(1000),
      `the lease of ${lost.id} the worker did not name expires on time`);
  });
});

describe("fail_step", () => {
  it("a repeated call for an attempt the journal counts (its answer was lost) changes nothing", async () => {
    const run = await startAndClaim(h.sql);
    const retry = { type: "fixed", maxAttempts: 2, baseDelayMs: 100 };
    const fail = () => h.sql<{ r: Record<string, unknown> }[]>`
      select aiki.fail_step(${run.id}::uuid, ${run.lease_token}::uuid, 'pay#1', 'pay', '{"message": "boom"}',
                            ${JSON.stringify(retry)}::text::jsonb, false, 1000, 1) as r`;
    const [first] = await fail();
    const before = await tableCounts(h.sql);
    const [again] = await fail();
    assert.deepEqual(await tableCounts(h.sql), before, "the repeat wrote nothing");
    assert.deepEqual(again!.r, first!.r, "and answered as the first call did");
    assert.equal(first!.r.status, "retrying", "one failed attempt of two spends no more than one");
  });
});
