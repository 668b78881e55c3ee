// Engine regressions for the bugs the chaos suite (sdk/test/chaos) found, each reduced to a
// deterministic case on the fake clock.
import { after, before, beforeEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  at, backendPid, claimOne, expectSqlState, harness, inFlight, reset, setNow, startAndClaim, startRun, tableCounts,
  waitUntilBlocked,
  type Harness,
} from "./support.js";

let h: Harness;
before(async () => {
  h = await harness();
});
after(() => h.close());
beforeEach(() => reset(h.sql));

describe("heartbeat", () => {
  it("locks a worker's runs in id order, the order record locks them in (no deadlock with a group commit)", async () => {
    // A is older (smaller UUIDv7) but leased second: in scan order, the heartbeat reaches B first.
    const a = await startRun(h.sql);
    const b = await startRun(h.sql, { priority: 1 });
    await claimOne(h.sql, { worker: "w", expect: b });
    await setNow(h.sql, at(1000));
    await claimOne(h.sql, { worker: "w", expect: a });

    // A group commit of w holds B, as aiki.record does after locking A... (here: B only).
    const writer = await h.session();
    const heartbeat = await h.session();
    const heartbeatPid = await backendPid(heartbeat);
    await writer`begin`;
    await writer`select 1 from aiki.runs where id = ${b}::uuid for update`;
    const beat = inFlight(heartbeat`select * from aiki.heartbeat('w', 30000)`);
    await waitUntilBlocked(h.sql, heartbeatPid);
    // ...so the waiting heartbeat must already hold A: taking A in scan order after B is the
    // other half of the deadlock.
    await expectSqlState(h.sql`select 1 from aiki.runs where id = ${a}::uuid for update nowait`, "55P03");
    await writer`commit`;
    const { value, error } = await beat.promise;
    assert.equal(error, undefined);
    assert.deepEqual((value as unknown as { run_id: string }[]).map((r) => r.run_id).sort(), [a, b].sort());
    await writer.end();
    await heartbeat.end();
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
