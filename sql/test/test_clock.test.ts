// The test clock (sql/85_test_clock.sql): a database put on a test clock by its own setting reads
// aiki.now() as now() plus a shift that aiki.advance_clock moves, in every session at once. The
// jump stops at each due time on its way, refuses to move under a running run, keeps live
// workers alive and wakes the queues of the runs it made due. Other databases never see it.
import { after, before, beforeEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  claim, expectSqlState, harness, listen, ms, startAndClaim, startRun, type Harness, type Sql,
} from "./support.js";
import { testDatabase } from "../../sdk/testing/database.js";

let h: Harness;
/** Sessions opened after the database was put on a test clock (one connection each). */
let a: Sql;
let b: Sql;
const HOUR = 3_600_000;
const DAY = 24 * HOUR;

before(async () => {
  h = await harness();
});
after(() => h.close());

/** aiki.now() minus the wall clock of the same transaction, in ms. */
async function ahead(sql: Sql): Promise<number> {
  const [row] = await sql<{ d: number }[]>`select (extract(epoch from aiki.now() - now()) * 1000)::float8 as d`;
  return row!.d;
}

async function advance(sql: Sql, toMs: number): Promise<{ moved: boolean; now: string; reached?: boolean; running?: number }> {
  const [row] = await sql<{ step: any }[]>`
    select aiki.advance_clock(aiki.now() + ${toMs}::bigint * interval '1 millisecond') as step`;
  return row!.step;
}

describe("aiki.now()", () => {
  it("stays inlined into the queries that read it: plans show its CASE, never a call of aiki.now()", async () => {
    const rows = await h.sql.unsafe(`explain verbose select id from aiki.runs where available_at <= aiki.now()`);
    const plan = rows.map((r) => r["QUERY PLAN"]).join("\n");
    assert.match(plan, /available_at <= CASE WHEN/);
    assert.doesNotMatch(plan, /aiki\.now\(\)/);
  });
});

describe("outside a database on a test clock", () => {
  it("aiki.test_clock_now() is the transaction time, and aiki.advance_clock refuses with AK005", async () => {
    const [row] = await h.sql`select aiki.test_clock_now() = now() as wall`;
    assert.equal(row!.wall, true);
    await expectSqlState(h.sql`select aiki.advance_clock(now() + interval '1 day')`, "AK005", /does not run on a test clock/);
  });

  it("a session that turns aiki.test_clock on itself reads the wall clock: nothing moved it", async () => {
    const s = h.db.connect({ max: 1 });
    await s`set aiki.test_clock = on`;
    assert.equal(await ahead(s), 0);
    await s.end();
  });
});

describe("in a database on a test clock", () => {
  before(async () => {
    await h.sql.unsafe(`alter database ${h.db.name} set aiki.test_clock = on`);
    a = h.db.connect({ max: 1 });
    b = h.db.connect({ max: 3 });
  });
  beforeEach(async () => {
    await h.sql`truncate aiki.runs, aiki.steps, aiki.events, aiki.queues, aiki.workers, aiki.run_attempts`;
  });

  it("a jump moves aiki.now() for every session of the database, pooled or new", async () => {
    const before = await ahead(a);
    const step = await advance(a, 14 * DAY);
    assert.equal(step.moved, true);
    assert.equal(step.reached, true);
    // Three connections of a pool opened before the jump, in parallel, and a pool opened after.
    const late = h.db.connect({ max: 1 });
    const seen = await Promise.all([ahead(b), ahead(b), ahead(b), ahead(late)]);
    for (const d of seen) assert.ok(Math.abs(d - before - 14 * DAY) < 60_000, `${d - before} ms ahead after the jump`);
    await late.end();
  });

  it("jumps add up, and the clock never goes back", async () => {
    const before = await ahead(a);
    await advance(a, HOUR);
    await advance(a, 2 * HOUR);
    const back = await advance(a, -DAY);
    assert.deepEqual([back.moved, back.reached], [true, true]);
    const after = await ahead(a);
    assert.ok(Math.abs(after - before - 3 * HOUR) < 60_000, `${after - before} ms`);
  });

  it("stops at the first due time on the way, stands there, and wakes that run's queue; the next call reaches the target and flows on", async () => {
    const wake = await listen(h.db.sql, "aiki_wake");
    await wake.drain();
    const id = await startRun(a, { queue: "reminders", delayMs: HOUR });
    const [due] = await a<{ at: string }[]>`select to_jsonb(available_at) #>> '{}' as at from aiki.runs where id = ${id}::uuid`;
    const first = await advance(a, DAY);
    assert.equal(first.reached, false);
    assert.equal(ms(first.now), ms(due!.at), "stopped where the run falls due");
    assert.ok((await wake.drain()).includes("reminders"), "the run's queue was woken");
    // The clock stands at the due time, in every session, however long the run takes.
    const [x] = await a<{ t: string }[]>`select to_jsonb(aiki.now()) #>> '{}' as t`;
    const [y] = await b<{ t: string }[]>`select to_jsonb(aiki.now()) #>> '{}' as t`;
    assert.deepEqual([x!.t, y!.t].map(ms), [ms(due!.at), ms(due!.at)]);
    const { runs } = await claim(b, { queues: ["reminders"] });
    assert.deepEqual(runs.map((r) => r.id), [id], "the run is claimable at the new time");
    const [sleep] = await b<{ r: any }[]>`select aiki.sleep(${id}::uuid, ${runs[0]!.lease_token}::uuid, 'nap#1', 'nap', ${HOUR}::bigint) as r`;
    const [nap] = await a<{ at: string }[]>`select to_jsonb(available_at) #>> '{}' as at from aiki.runs where id = ${id}::uuid`;
    assert.equal(ms(nap!.at), ms(due!.at) + HOUR, `a sleep started at the stop counts from it exactly (${JSON.stringify(sleep!.r)})`);
    const second = await advance(a, DAY);
    assert.equal(ms(second.now), ms(nap!.at), "stopped at the nap's end");
    await b`select aiki.cancel(${id}::uuid)`;
    const third = await advance(a, DAY);
    assert.deepEqual([third.moved, third.reached], [true, true]);
    const [p] = await a<{ t: string }[]>`select to_jsonb(aiki.now()) #>> '{}' as t`;
    await new Promise((resolve) => setTimeout(resolve, 20));
    const [q] = await a<{ t: string }[]>`select to_jsonb(aiki.now()) #>> '{}' as t`;
    assert.ok(ms(q!.t) > ms(p!.t), "the clock flows again");
    await wake.close();
  });

  it("reaches a target the wall clock passed while the clock stood at a due time: it flows on from the target, behind the wall clock, never back", async () => {
    // From the wall clock (earlier jumps put the clock days ahead of it).
    await a`update aiki.test_clock set shift_us = 0, frozen_at = null`;
    const id = await startRun(a, { delayMs: 10 });
    const [t] = await a<{ to: string }[]>`select to_jsonb(aiki.now() + interval '50 milliseconds') #>> '{}' as to`;
    const target = t!.to;
    const stop = await a<{ step: any }[]>`select aiki.advance_clock(${target}::timestamptz) as step`;
    assert.equal(stop[0]!.step.reached, false, "stopped at the run's due time");
    const stood = ms(stop[0]!.step.now);
    await a`select aiki.cancel(${id}::uuid)`;
    // Bounded: poll until the wall clock has passed the target.
    for (let i = 0; ; i++) {
      const [w] = await a<{ past: boolean }[]>`select now() > ${target}::timestamptz + interval '100 milliseconds' as past`;
      if (w!.past) break;
      assert.ok(i < 500, "the wall clock passed the target");
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const [reach] = await a<{ step: any }[]>`select aiki.advance_clock(${target}::timestamptz) as step`;
    assert.deepEqual([reach!.step.moved, reach!.step.reached, ms(reach!.step.now)], [true, true, ms(target)]);
    const [now] = await a<{ t: string; behind: boolean }[]>`select to_jsonb(aiki.now()) #>> '{}' as t, aiki.now() < now() as behind`;
    assert.ok(ms(now!.t) >= ms(target) && ms(target) >= stood, "the clock never went back");
    assert.equal(now!.behind, true);
  });

  it("moves nothing while a run is running: its lease must not expire under its worker", async () => {
    const run = await startAndClaim(a, { leaseMs: 30_000 });
    const before = await ahead(a);
    const refused = await advance(a, 14 * DAY);
    assert.deepEqual([refused.moved, refused.running], [false, 1]);
    assert.ok(Math.abs((await ahead(a)) - before) < 1_000, "the clock stayed");
    const [lease] = await a`select lease_expires_at > aiki.now() as held from aiki.runs where id = ${run.id}::uuid`;
    assert.equal(lease!.held, true);
    await a`select aiki.release(${run.id}::uuid, ${run.lease_token}::uuid)`;
    assert.equal((await advance(a, 14 * DAY)).moved, true);
  });

  it("live workers stay alive across a jump: their runs are not `unserved`", async () => {
    await a`select aiki.register_worker('w-1', array['wf@1.0.0'], array['default'], 10000)`;
    const id = await startRun(a, { workflow: "wf", version: "1.0.0" });
    await advance(a, 14 * DAY);
    const [row] = await a<{ run: any }[]>`select aiki.get_run(${id}::uuid) as run`;
    assert.equal(row!.run.unserved, false);
  });

  it("test_clock_state lists running runs and runs a live worker may claim now, not unserved ones; and the next due time", async () => {
    await a`select aiki.register_worker('w-1', array['wf@1.0.0'], array['default'], 10000)`;
    const running = (await startAndClaim(a, { workflow: "wf", version: "1.0.0" })).id;
    const pending = await startRun(a, { workflow: "wf", version: "1.0.0" });
    await startRun(a, { workflow: "nobody-serves", version: "1" });
    const later = await startRun(a, { workflow: "wf", version: "1.0.0", delayMs: HOUR });
    const [row] = await a<{ s: any }[]>`select aiki.test_clock_state() as s`;
    assert.deepEqual(row!.s.busy.map((r: any) => r.id).sort(), [running, pending].sort());
    const [due] = await a<{ at: string }[]>`select available_at as at from aiki.runs where id = ${later}::uuid`;
    assert.equal(ms(row!.s.next_due_at), ms(due!.at));
  });

  it("AK003 on a null target", async () => {
    await expectSqlState(a`select aiki.advance_clock(null)`, "AK003", /invalid clock target null/);
  });

  it("another database of the same server keeps the wall clock", async () => {
    await advance(a, 30 * DAY);
    const other = await testDatabase();
    try {
      assert.equal(await ahead(other.sql), 0);
    } finally {
      await other.close();
    }
  });

  after(async () => {
    await Promise.all([a.end(), b.end()]);
  });
});
