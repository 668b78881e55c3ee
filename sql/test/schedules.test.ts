// Schedules (sql/72_schedules.sql): cron parsing, next fires in a time zone with the stated
// daylight-saving rules, the schedule verbs, and firing through claims — overlap policies,
// catch-up after downtime, buffer_one's wake when the previous run ends, and racing claims.
// Time moves only through the fake clock (aiki.fake_now).
import { after, before, beforeEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  backendPid, cancel, claim, completeRun, expectRejected, expectSqlState, harness, inFlight, jsonb, listen,
  reset, setNow, startChildren, startWorkflow, status, waitUntilBlocked, claimOne, type Harness, type Lease, type Sql,
} from "./support.js";

let h: Harness;
before(async () => {
  h = await harness();
});
after(() => h.close());
beforeEach(() => reset(h.sql));

/** The next `count` fires of a cron in a zone after an instant, as ISO strings (UTC). */
async function fires(cron: string, zone: string, after: string, count = 10): Promise<string[]> {
  const rows = await h.sql<{ f: Date }[]>`select f from aiki.cron_fires(${cron}, ${zone}, ${after}::timestamptz, ${count}) f`;
  return rows.map((r) => r.f.toISOString());
}

/** Local wall-clock parts of an instant in a zone, via the engine's zone data. */
async function local(iso: string, zone: string): Promise<string> {
  const [row] = await h.sql<{ t: string }[]>`select to_char(${iso}::timestamptz at time zone ${zone}, 'Dy YYYY-MM-DD HH24:MI:SS') as t`;
  return row!.t;
}

interface Schedule {
  name: string;
  next_fire_at: string | null;
  last_fire_at: string | null;
  last_run_id: string | null;
  buffered_at: string | null;
  paused: boolean;
  overlap: string;
  last_error: string | null;
  [key: string]: unknown;
}

async function create(o: {
  name?: string; cron: string; zone?: string; overlap?: string; catchupMs?: number; input?: unknown; queue?: string;
}): Promise<Schedule> {
  const [row] = await h.sql<{ s: Schedule }[]>`
    select aiki.create_schedule(${o.name ?? "tick"}, 'report', '1.0.0', ${o.cron}, ${jsonb(h.sql, o.input ?? null)},
                                ${o.zone ?? "UTC"}, ${o.overlap ?? "skip"}, ${o.catchupMs ?? 0}::bigint,
                                ${o.queue ?? "default"}) as s`;
  return row!.s;
}

async function schedule(name = "tick"): Promise<Schedule> {
  const [row] = await h.sql<{ s: Schedule }[]>`select aiki.get_schedule(${name}) as s`;
  return row!.s;
}

/** The idempotency keys of the runs schedules started, oldest fire first. */
async function firedKeys(): Promise<string[]> {
  const rows = await h.sql<{ k: string }[]>`
    select idempotency_key as k from aiki.runs where idempotency_key like 'schedule:%' order by idempotency_key`;
  return rows.map((r) => r.k);
}

const key = (name: string, iso: string) => `schedule:${name}:${iso}`;

async function continueAsNew(r: Lease): Promise<string> {
  const [row] = await h.sql<{ id: string }[]>`
    select aiki.continue_as_new(${r.id}::uuid, ${r.lease_token}::uuid, 'null'::jsonb) as id`;
  return row!.id;
}

describe("cron expressions (aiki.cron_fires)", () => {
  it("a year of `0 9 * * MON-FRI` in Europe/Berlin fires on exactly the 261 weekdays of 2027, each at 09:00 local", async () => {
    const all = await fires("0 9 * * MON-FRI", "Europe/Berlin", "2026-12-31T23:00:00Z", 300);
    const year = all.filter((f) => f < "2027-12-31T23:00:00Z");
    assert.equal(year.length, 261);
    const days = new Set<string>();
    for (const f of year) {
      const t = await local(f, "Europe/Berlin");
      assert.match(t, /^(Mon|Tue|Wed|Thu|Fri) 2027-\d\d-\d\d 09:00:00$/, f);
      days.add(t.slice(4, 14));
    }
    // Every weekday of the year, counted independently of the engine.
    const expected: string[] = [];
    for (let d = new Date("2027-01-01T12:00:00Z"); d.getUTCFullYear() === 2027; d.setUTCDate(d.getUTCDate() + 1)) {
      if (d.getUTCDay() !== 0 && d.getUTCDay() !== 6) expected.push(d.toISOString().slice(0, 10));
    }
    assert.deepEqual([...days].sort(), expected);
    // Winter 08:00 UTC, summer 07:00 UTC: the offset follows the zone's rules.
    assert.ok(year.includes("2027-03-26T08:00:00.000Z") && year.includes("2027-03-29T07:00:00.000Z"));
  });

  it("reads seconds, names, ranges, steps, lists and macros", async () => {
    const from = "2027-01-01T00:00:00Z"; // a Friday
    const cases: [string, string[]][] = [
      ["*/15 * * * * *", ["2027-01-01T00:00:15.000Z", "2027-01-01T00:00:30.000Z", "2027-01-01T00:00:45.000Z"]],
      ["5,10 0 * * *", ["2027-01-01T00:05:00.000Z", "2027-01-01T00:10:00.000Z", "2027-01-02T00:05:00.000Z"]],
      ["0 22-23/1 * * *", ["2027-01-01T22:00:00.000Z", "2027-01-01T23:00:00.000Z", "2027-01-02T22:00:00.000Z"]],
      ["0 0 1 jan,Jul *", ["2027-07-01T00:00:00.000Z", "2028-01-01T00:00:00.000Z", "2028-07-01T00:00:00.000Z"]],
      ["0 12 * * SAT,SUN", ["2027-01-02T12:00:00.000Z", "2027-01-03T12:00:00.000Z", "2027-01-09T12:00:00.000Z"]],
      ["0 12 * * 7", ["2027-01-03T12:00:00.000Z", "2027-01-10T12:00:00.000Z", "2027-01-17T12:00:00.000Z"]],
      ["30 */8 * * *", ["2027-01-01T00:30:00.000Z", "2027-01-01T08:30:00.000Z", "2027-01-01T16:30:00.000Z"]],
      ["0 0 29 2 *", ["2028-02-29T00:00:00.000Z", "2032-02-29T00:00:00.000Z", "2036-02-29T00:00:00.000Z"]],
      ["@hourly", ["2027-01-01T01:00:00.000Z", "2027-01-01T02:00:00.000Z", "2027-01-01T03:00:00.000Z"]],
      ["@daily", ["2027-01-02T00:00:00.000Z", "2027-01-03T00:00:00.000Z", "2027-01-04T00:00:00.000Z"]],
      ["@weekly", ["2027-01-03T00:00:00.000Z", "2027-01-10T00:00:00.000Z", "2027-01-17T00:00:00.000Z"]],
      ["@monthly", ["2027-02-01T00:00:00.000Z", "2027-03-01T00:00:00.000Z", "2027-04-01T00:00:00.000Z"]],
      ["@yearly", ["2028-01-01T00:00:00.000Z", "2029-01-01T00:00:00.000Z", "2030-01-01T00:00:00.000Z"]],
      ["@every 30s", ["2027-01-01T00:00:30.000Z", "2027-01-01T00:01:00.000Z", "2027-01-01T00:01:30.000Z"]],
      ["@every 1h30m", ["2027-01-01T01:30:00.000Z", "2027-01-01T03:00:00.000Z", "2027-01-01T04:30:00.000Z"]],
    ];
    for (const [cron, expected] of cases) {
      assert.deepEqual(await fires(cron, "UTC", from, 3), expected, cron);
    }
  });

  it("`@every` counts from the Unix epoch, whatever the zone", async () => {
    assert.deepEqual(await fires("@every 5m", "Asia/Kolkata", "2027-01-01T00:03:10Z", 2),
      ["2027-01-01T00:05:00.000Z", "2027-01-01T00:10:00.000Z"]);
  });

  it("when both day fields are restricted, a day matching either fires (13th or Friday)", async () => {
    assert.deepEqual(await fires("0 0 13 * FRI", "UTC", "2027-01-01T00:00:00Z", 5), [
      "2027-01-08T00:00:00.000Z", "2027-01-13T00:00:00.000Z", "2027-01-15T00:00:00.000Z",
      "2027-01-22T00:00:00.000Z", "2027-01-29T00:00:00.000Z"]);
    // One field `*`: the other alone decides.
    assert.deepEqual(await fires("0 0 13 * *", "UTC", "2027-01-01T00:00:00Z", 2),
      ["2027-01-13T00:00:00.000Z", "2027-02-13T00:00:00.000Z"]);
  });

  describe("daylight saving, 2027", () => {
    it("Europe/Berlin, 28 March (02:00 CET -> 03:00 CEST): a skipped 02:30 fires once, at 03:00 CEST", async () => {
      assert.deepEqual(await fires("30 2 * * *", "Europe/Berlin", "2027-03-27T00:00:00Z", 3), [
        "2027-03-27T01:30:00.000Z", // 02:30 CET
        "2027-03-28T01:00:00.000Z", // the gap's end: 03:00 CEST
        "2027-03-29T00:30:00.000Z", // 02:30 CEST
      ]);
    });

    it("Europe/Berlin, 28 March: every time the gap skips collapses onto one fire at its end", async () => {
      assert.deepEqual(await fires("*/30 * * * *", "Europe/Berlin", "2027-03-28T00:00:00Z", 4), [
        "2027-03-28T00:30:00.000Z", // 01:30 CET
        "2027-03-28T01:00:00.000Z", // 02:00 and 02:30 (skipped) and 03:00 CEST: one fire
        "2027-03-28T01:30:00.000Z", // 03:30 CEST
        "2027-03-28T02:00:00.000Z",
      ]);
    });

    it("Europe/Berlin, 31 October (03:00 CEST -> 02:00 CET): a repeated 02:30 fires once, at its first occurrence", async () => {
      assert.deepEqual(await fires("30 2 * * *", "Europe/Berlin", "2027-10-30T00:00:00Z", 3), [
        "2027-10-30T00:30:00.000Z", // 02:30 CEST
        "2027-10-31T00:30:00.000Z", // 02:30 CEST, not again at 02:30 CET (01:30 UTC)
        "2027-11-01T01:30:00.000Z", // 02:30 CET
      ]);
      assert.deepEqual(await fires("*/30 * * * *", "Europe/Berlin", "2027-10-30T23:45:00Z", 5), [
        "2027-10-31T00:00:00.000Z", // 02:00 CEST
        "2027-10-31T00:30:00.000Z", // 02:30 CEST
        "2027-10-31T02:00:00.000Z", // 03:00 CET: the repeated 02:00 and 02:30 CET do not fire
        "2027-10-31T02:30:00.000Z",
        "2027-10-31T03:00:00.000Z",
      ]);
    });

    it("Europe/Berlin, 31 October: asked from inside the repeated hour, the next fire is after it", async () => {
      // 01:10 UTC is 02:10 CET, the second 02:10 of the night.
      assert.deepEqual(await fires("*/20 * * * *", "Europe/Berlin", "2027-10-31T01:10:00Z", 2),
        ["2027-10-31T02:00:00.000Z", "2027-10-31T02:20:00.000Z"]);
    });

    it("America/New_York, 14 March (02:00 EST -> 03:00 EDT) and 7 November (02:00 EDT -> 01:00 EST)", async () => {
      assert.deepEqual(await fires("30 2 * * *", "America/New_York", "2027-03-13T12:00:00Z", 2),
        ["2027-03-14T07:00:00.000Z", "2027-03-15T06:30:00.000Z"]); // 03:00 EDT, then 02:30 EDT
      assert.deepEqual(await fires("*/15 * * * *", "America/New_York", "2027-03-14T06:40:00Z", 3),
        ["2027-03-14T06:45:00.000Z", "2027-03-14T07:00:00.000Z", "2027-03-14T07:15:00.000Z"]);
      assert.deepEqual(await fires("30 1 * * *", "America/New_York", "2027-11-06T12:00:00Z", 2),
        ["2027-11-07T05:30:00.000Z", "2027-11-08T06:30:00.000Z"]); // 01:30 EDT once, then 01:30 EST
      assert.deepEqual(await fires("0 9 * * *", "America/New_York", "2027-11-06T12:00:00Z", 2),
        ["2027-11-06T13:00:00.000Z", "2027-11-07T14:00:00.000Z"]); // 09:00 EDT, then 09:00 EST
    });
  });

  it("a malformed expression is AK003 naming the field and its value", async () => {
    const cases: [string, RegExp][] = [
      ["61 * * * *", /invalid cron minute field '61' in '61 \* \* \* \*'/],
      ["* 24 * * *", /invalid cron hour field '24'/],
      ["0 0 0 * *", /invalid cron day-of-month field '0'/],
      ["0 0 * JANX *", /invalid cron month field 'JANX'/],
      ["0 0 * * MON-FRY", /invalid cron day-of-week field 'MON-FRY'/],
      ["60 0 0 * * *", /invalid cron second field '60'/],
      ["*/0 * * * *", /invalid cron minute field '\*\/0'/],
      ["5-1 * * * *", /invalid cron minute field '5-1'/],
      ["0 0 * *", /invalid cron expression '0 0 \* \*': 4 fields/],
      ["@fortnightly", /invalid cron macro '@fortnightly'/],
      ["@every 0s", /invalid cron interval '0s'/],
      ["@every 5 minutes", /invalid cron interval '5 minutes'/],
      ["", /invalid cron expression ''/],
    ];
    for (const [cron, message] of cases) {
      await expectSqlState(h.sql`select aiki.cron_fires(${cron})`, "AK003", message);
    }
  });
});

describe("schedule verbs", () => {
  it("create_schedule returns the schedule with its first fire; the same definition again returns it unchanged", async () => {
    await setNow(h.sql, "2027-01-04T07:00:00Z");
    const s = await create({ cron: "0 9 * * MON-FRI", zone: "Europe/Berlin", input: { a: 1 } });
    assert.equal(s.name, "tick");
    assert.equal(new Date(s.next_fire_at!).toISOString(), "2027-01-04T08:00:00.000Z");
    assert.deepEqual(s.input, { a: 1 });
    await setNow(h.sql, "2027-01-04T07:30:00Z");
    assert.deepEqual(await create({ cron: "0 9 * * MON-FRI", zone: "Europe/Berlin", input: { a: 1 } }), s);
  });

  it("another definition under the name is AK004, nothing written", async () => {
    await create({ cron: "@daily" });
    await expectRejected(h.sql, () => create({ cron: "@hourly" }), "AK004", /schedule tick already exists with another definition/);
  });

  it("bad input is AK003 naming the field and value, nothing written", async () => {
    const bad: [() => PromiseLike<unknown>, RegExp][] = [
      [() => create({ cron: "0 9 * * MON-FRX" }), /invalid cron day-of-week field 'MON-FRX'/],
      [() => create({ cron: "0 0 30 2 *" }), /invalid cron expression '0 0 30 2 \*': it never fires/],
      [() => create({ cron: "@daily", zone: "Mars/Olympus" }), /invalid time zone 'Mars\/Olympus'/],
      [() => create({ cron: "@daily", zone: "CEST" }), /invalid time zone 'CEST'/],
      [() => create({ cron: "@daily", overlap: "queue" }), /invalid overlap policy 'queue'/],
      [() => create({ cron: "@daily", catchupMs: -1 }), /invalid catch-up window -1 ms/],
      [() => create({ name: "bad name", cron: "@daily" }), /invalid schedule name 'bad name'/],
      [() => create({ cron: "@daily", queue: "a@b" }), /invalid queue name 'a@b'/],
      [() => h.sql`select aiki.create_schedule('s', 'wf@1', '1.0.0', '@daily')`, /invalid workflow name 'wf@1'/],
      [() => h.sql`select aiki.create_schedule('s', 'wf', '', '@daily')`, /invalid version ''/],
    ];
    for (const [act, message] of bad) await expectRejected(h.sql, act, "AK003", message);
  });

  it("update_schedule changes the given fields; a new cron moves the next fire; bad input writes nothing", async () => {
    await setNow(h.sql, "2027-01-04T07:00:00Z");
    await create({ cron: "@daily" });
    const [row] = await h.sql<{ s: Schedule }[]>`select aiki.update_schedule('tick', p_cron => '*/5 * * * *', p_overlap => 'allow') as s`;
    assert.equal(row!.s.cron, "*/5 * * * *");
    assert.equal(row!.s.overlap, "allow");
    assert.equal(new Date(row!.s.next_fire_at!).toISOString(), "2027-01-04T07:05:00.000Z");
    assert.equal(row!.s.workflow, "report");
    await expectRejected(h.sql, () => h.sql`select aiki.update_schedule('tick', p_timezone => 'Nowhere/Land')`, "AK003", /invalid time zone 'Nowhere\/Land'/);
    await expectRejected(h.sql, () => h.sql`select aiki.update_schedule('nope', p_cron => '@daily')`, "AK002", /schedule nope not found/);
  });

  it("pause stops the claims firing it; resume fires from the next fire after now, without the missed ones", async () => {
    await setNow(h.sql, "2027-01-04T00:00:00Z");
    await create({ cron: "@hourly" });
    const [p] = await h.sql<{ s: Schedule }[]>`select aiki.pause_schedule('tick') as s`;
    assert.equal(p!.s.paused, true);
    assert.equal(p!.s.next_fire_at, null);
    await setNow(h.sql, "2027-01-04T05:30:00Z");
    const idle = await claim(h.sql);
    assert.equal(idle.next_due_at, null, "a paused schedule is no timer");
    assert.deepEqual(await firedKeys(), []);
    const [r] = await h.sql<{ s: Schedule }[]>`select aiki.resume_schedule('tick') as s`;
    assert.equal(new Date(r!.s.next_fire_at!).toISOString(), "2027-01-04T06:00:00.000Z");
    await claim(h.sql);
    assert.deepEqual(await firedKeys(), []);
  });

  it("delete_schedule removes it and keeps its runs; list_schedules lists by name", async () => {
    await setNow(h.sql, "2027-01-04T00:00:00Z");
    await create({ name: "b", cron: "@hourly" });
    await create({ name: "a", cron: "@daily" });
    const [l] = await h.sql<{ l: Schedule[] }[]>`select aiki.list_schedules() as l`;
    assert.deepEqual(l!.l.map((s) => s.name), ["a", "b"]);
    await h.sql`select aiki.trigger_schedule('b')`;
    const [d] = await h.sql`select aiki.delete_schedule('b') as first, aiki.delete_schedule('b') as second`;
    assert.deepEqual([d!.first, d!.second], [true, false]);
    assert.equal((await firedKeys()).length, 1);
    await expectSqlState(h.sql`select aiki.get_schedule('b')`, "AK002", /schedule 'b' not found/);
  });

  it("a fire starts its run with the schedule's input, queue, priority and run retry policy", async () => {
    await setNow(h.sql, "2027-01-04T00:00:00Z");
    await h.sql`select aiki.create_schedule('tick', 'report', '1.0.0', '@hourly', '{"n": 1}', p_queue => 'reports',
                                            p_priority => 7, p_retry => '{"type": "fixed", "maxAttempts": 3, "baseDelayMs": 500}')`;
    await h.sql`select aiki.trigger_schedule('tick')`;
    const [run] = await h.sql`select input, queue, priority, retry from aiki.runs`;
    assert.deepEqual({ ...run }, {
      input: { n: 1 }, queue: "reports", priority: 7,
      retry: { type: "fixed", maxAttempts: 3, baseDelayMs: 500, maxDelayMs: 3600000, factor: 2 },
    });
    await expectRejected(h.sql, () => h.sql`select aiki.update_schedule('tick', p_retry => '{"type": "sometimes"}')`,
      "AK003", /invalid retry policy type 'sometimes'/);
  });

  it("trigger_schedule starts a run now, keyed by the instant; twice at one instant starts one run", async () => {
    await setNow(h.sql, "2027-01-04T10:11:12.345Z");
    await create({ cron: "@daily", overlap: "allow", input: { n: 1 } });
    const [t1] = await h.sql<{ t: any }[]>`select aiki.trigger_schedule('tick') as t`;
    const [t2] = await h.sql<{ t: any }[]>`select aiki.trigger_schedule('tick') as t`;
    assert.equal(t1!.t.action, "started");
    assert.equal(t1!.t.run_id, t2!.t.run_id);
    assert.deepEqual(await firedKeys(), [key("tick", "2027-01-04T10:11:12.345Z")]);
    const [run] = await h.sql`select workflow, version, input, status::text from aiki.runs`;
    assert.deepEqual({ ...run }, { workflow: "report", version: "1.0.0", input: { n: 1 }, status: "pending" });
    assert.equal(new Date((await schedule()).next_fire_at!).toISOString(), "2027-01-05T00:00:00.000Z", "the cursor stays");
  });
});

describe("firing through claims", () => {
  /** Claims (taking and completing every run it leases) until the clock passes `until`, jumping to each next_due_at. */
  async function runUntil(until: string, o: { complete?: boolean } = {}): Promise<string[]> {
    const taken: string[] = [];
    for (let i = 0; i < 1000; i++) {
      const c = await claim(h.sql, { limit: 10 });
      for (const r of c.runs) {
        taken.push(r.idempotency_key!);
        if (o.complete !== false) await completeRun(h.sql, r);
      }
      if (c.runs.length > 0) continue;
      assert.ok(c.next_due_at, "a schedule is always a next timer");
      if (c.next_due_at > until) return taken;
      await setNow(h.sql, c.next_due_at);
    }
    throw new Error("runUntil did not reach its end");
  }

  it("two weeks of `0 9 * * MON-FRI` in Europe/Berlin, fired by claims sleeping until next_due_at, across the spring change", async () => {
    await setNow(h.sql, "2027-03-19T12:00:00Z");
    await create({ name: "daily", cron: "0 9 * * MON-FRI", zone: "Europe/Berlin" });
    const taken = await runUntil("2027-04-02T12:00:00Z");
    assert.deepEqual(taken, [
      "2027-03-22T08:00:00.000Z", "2027-03-23T08:00:00.000Z", "2027-03-24T08:00:00.000Z",
      "2027-03-25T08:00:00.000Z", "2027-03-26T08:00:00.000Z",
      "2027-03-29T07:00:00.000Z", "2027-03-30T07:00:00.000Z", "2027-03-31T07:00:00.000Z",
      "2027-04-01T07:00:00.000Z", "2027-04-02T07:00:00.000Z",
    ].map((t) => key("daily", t)));
  });

  it("the claim's next_due_at includes the next fire; the due claim starts the run and may lease it itself", async () => {
    await setNow(h.sql, "2027-01-04T07:00:00Z");
    await create({ cron: "0 9 * * *", zone: "Europe/Berlin" });
    const idle = await claim(h.sql);
    assert.equal(new Date(idle.next_due_at!).toISOString(), "2027-01-04T08:00:00.000Z");
    await setNow(h.sql, "2027-01-04T08:00:00.250Z");
    const due = await claim(h.sql);
    assert.deepEqual(due.runs.map((r) => r.idempotency_key), [key("tick", "2027-01-04T08:00:00.000Z")]);
    const s = await schedule();
    assert.equal(new Date(s.next_fire_at!).toISOString(), "2027-01-05T08:00:00.000Z");
    assert.equal(s.last_run_id, due.runs[0]!.id);
  });

  it("a claim of any queue fires a schedule, and the run it starts wakes its own queue's workers", async () => {
    await setNow(h.sql, "2027-01-04T00:00:00Z");
    await create({ cron: "@hourly", queue: "reports" });
    const l = await listen(h.db.sql, "aiki_wake");
    try {
      await l.drain();
      await setNow(h.sql, "2027-01-04T01:00:00Z");
      const c = await claim(h.sql, { queues: ["mail"] });
      assert.deepEqual(c.runs, []);
      assert.deepEqual(await l.drain(), ["reports"]);
      assert.equal(await status(h.sql, (await schedule()).last_run_id!), "pending");
    } finally {
      await l.close();
    }
  });

  describe("overlap policies, while the previous run is unfinished", () => {
    async function firstFire(overlap: string) {
      await setNow(h.sql, "2027-01-04T00:00:00Z");
      await create({ cron: "@hourly", overlap });
      await setNow(h.sql, "2027-01-04T01:00:00Z");
      const c = await claim(h.sql, { leaseMs: 86400_000 });
      assert.equal(c.runs.length, 1);
      await setNow(h.sql, "2027-01-04T02:00:00Z");
      return c.runs[0]!;
    }

    it("skip: the fire starts nothing", async () => {
      const first = await firstFire("skip");
      const c = await claim(h.sql);
      assert.deepEqual(c.runs, []);
      assert.deepEqual(await firedKeys(), [key("tick", "2027-01-04T01:00:00.000Z")]);
      const s = await schedule();
      assert.equal(new Date(s.last_fire_at!).toISOString(), "2027-01-04T02:00:00.000Z");
      assert.equal(s.last_run_id, first.id);
      assert.equal(new Date(s.next_fire_at!).toISOString(), "2027-01-04T03:00:00.000Z");
    });

    it("buffer_one: one fire waits, and starts when the previous run ends (later fires meanwhile are dropped)", async () => {
      const first = await firstFire("buffer_one");
      await claim(h.sql);
      await setNow(h.sql, "2027-01-04T03:00:00Z");
      await claim(h.sql);
      assert.equal(new Date((await schedule()).buffered_at!).toISOString(), "2027-01-04T02:00:00.000Z");
      assert.deepEqual(await firedKeys(), [key("tick", "2027-01-04T01:00:00.000Z")]);
      // The run ends: the schedule is due at once, its queue is woken, and the next claim starts the buffered fire.
      const l = await listen(h.db.sql, "aiki_wake");
      try {
        await l.drain();
        await setNow(h.sql, "2027-01-04T03:10:00Z");
        await completeRun(h.sql, first);
        assert.deepEqual(await l.drain(), ["default"]);
      } finally {
        await l.close();
      }
      const c = await claim(h.sql, { limit: 10 });
      assert.deepEqual(c.runs.map((r) => r.idempotency_key), [key("tick", "2027-01-04T02:00:00.000Z")]);
      const s = await schedule();
      assert.equal(s.buffered_at, null);
      assert.equal(new Date(s.next_fire_at!).toISOString(), "2027-01-04T04:00:00.000Z");
      assert.equal(new Date(c.next_due_at!).toISOString(), "2027-01-04T04:00:00.000Z");
    });

    it("buffer_one: a run that ends by cancellation or failure releases the buffered fire too", async () => {
      const first = await firstFire("buffer_one");
      await claim(h.sql);
      await cancel(h.sql, first.id);
      const c = await claim(h.sql);
      assert.deepEqual(c.runs.map((r) => r.idempotency_key), [key("tick", "2027-01-04T02:00:00.000Z")]);
    });

    it("allow: the fire starts a run beside the previous one", async () => {
      await firstFire("allow");
      const c = await claim(h.sql);
      assert.deepEqual(c.runs.map((r) => r.idempotency_key), [key("tick", "2027-01-04T02:00:00.000Z")]);
      assert.equal(await status(h.sql, (await h.sql`select id from aiki.runs where idempotency_key = ${key("tick", "2027-01-04T01:00:00.000Z")}`)[0]!.id), "running");
    });

    it("cancel_previous: the previous run is cancelled, then the fire starts", async () => {
      const first = await firstFire("cancel_previous");
      const c = await claim(h.sql);
      assert.deepEqual(c.runs.map((r) => r.idempotency_key), [key("tick", "2027-01-04T02:00:00.000Z")]);
      const [prev] = await h.sql`select status::text, error from aiki.runs where id = ${first.id}`;
      assert.equal(prev!.status, "cancelled");
      assert.match(prev!.error.message, /cancelled by schedule tick/);
    });

    describe("a previous run that continued as new: its chain is the previous run", () => {
      it("skip: skips while the chain runs (get_schedule shows its newest status), fires again once it ended", async () => {
        const first = await firstFire("skip");
        await setNow(h.sql, "2027-01-04T01:30:00Z");
        const next = await continueAsNew(first);
        const leased = await claimOne(h.sql, { expect: next, leaseMs: 86400_000 });
        await setNow(h.sql, "2027-01-04T02:00:00Z");
        assert.deepEqual((await claim(h.sql)).runs, []);
        assert.deepEqual(await firedKeys(), [key("tick", "2027-01-04T01:00:00.000Z")]);
        assert.deepEqual([(await schedule()).last_run_id, (await schedule()).last_run_status], [first.id, "running"]);
        await completeRun(h.sql, leased);
        await setNow(h.sql, "2027-01-04T03:00:00Z");
        const c = await claim(h.sql);
        assert.deepEqual(c.runs.map((r) => r.idempotency_key), [key("tick", "2027-01-04T03:00:00.000Z")]);
      });

      it("buffer_one: the fire buffered behind a chain starts when the chain's last run ends", async () => {
        const first = await firstFire("buffer_one");
        const next = await continueAsNew(first);
        const c = await claim(h.sql, { leaseMs: 86400_000 });
        assert.deepEqual(c.runs.map((r) => r.id), [next]);
        assert.equal(new Date((await schedule()).buffered_at!).toISOString(), "2027-01-04T02:00:00.000Z");
        await setNow(h.sql, "2027-01-04T02:10:00Z");
        await completeRun(h.sql, c.runs[0]!);
        const after = await claim(h.sql);
        assert.deepEqual(after.runs.map((r) => r.idempotency_key), [key("tick", "2027-01-04T02:00:00.000Z")]);
        assert.equal((await schedule()).buffered_at, null);
      });

      it("buffer_one: a chain that ended before the fire lets it start at once", async () => {
        const first = await firstFire("buffer_one");
        await setNow(h.sql, "2027-01-04T01:30:00Z");
        const next = await continueAsNew(first);
        await completeRun(h.sql, await claimOne(h.sql, { expect: next }));
        await setNow(h.sql, "2027-01-04T02:00:00Z");
        const c = await claim(h.sql);
        assert.deepEqual(c.runs.map((r) => r.idempotency_key), [key("tick", "2027-01-04T02:00:00.000Z")]);
      });

      it("cancel_previous: cancels the chain's newest run; a chain that ended is left alone", async () => {
        const first = await firstFire("cancel_previous");
        await setNow(h.sql, "2027-01-04T01:30:00Z");
        const ended = await continueAsNew(first);
        await completeRun(h.sql, await claimOne(h.sql, { expect: ended }));
        await setNow(h.sql, "2027-01-04T02:00:00Z");
        const second = (await claim(h.sql, { leaseMs: 86400_000 })).runs[0]!;
        assert.equal(second.idempotency_key, key("tick", "2027-01-04T02:00:00.000Z"));
        assert.equal((await schedule()).last_error, null);
        assert.equal(await status(h.sql, ended), "completed");

        await setNow(h.sql, "2027-01-04T02:30:00Z");
        const running = await continueAsNew(second);
        await claimOne(h.sql, { expect: running, leaseMs: 86400_000 });
        await setNow(h.sql, "2027-01-04T03:00:00Z");
        const c = await claim(h.sql);
        assert.deepEqual(c.runs.map((r) => r.idempotency_key), [key("tick", "2027-01-04T03:00:00.000Z")]);
        const [prev] = await h.sql`select status::text, error from aiki.runs where id = ${running}::uuid`;
        assert.equal(prev!.status, "cancelled");
        assert.match(prev!.error.message, /cancelled by schedule tick/);
      });
    });

    it("every policy starts the fire when the previous run has ended", async () => {
      for (const overlap of ["skip", "buffer_one", "allow", "cancel_previous"]) {
        await reset(h.sql);
        const first = await firstFire(overlap);
        await completeRun(h.sql, first);
        const c = await claim(h.sql);
        assert.deepEqual(c.runs.map((r) => r.idempotency_key), [key("tick", "2027-01-04T02:00:00.000Z")], overlap);
      }
    });
  });

  describe("catch-up after a week of downtime", () => {
    it("by default only the most recent missed fire starts", async () => {
      await setNow(h.sql, "2027-01-04T00:00:00Z");
      await create({ cron: "@hourly", overlap: "allow" });
      await setNow(h.sql, "2027-01-11T00:30:00Z");
      const c = await claim(h.sql, { limit: 100 });
      assert.deepEqual(c.runs.map((r) => r.idempotency_key), [key("tick", "2027-01-11T00:00:00.000Z")]);
      assert.equal(new Date(c.next_due_at!).toISOString(), "2027-01-11T01:00:00.000Z");
    });

    it("a catch-up window starts every fire missed by at most that long", async () => {
      await setNow(h.sql, "2027-01-04T00:00:00Z");
      await create({ cron: "@hourly", overlap: "allow", catchupMs: 6 * 3600_000 });
      await setNow(h.sql, "2027-01-11T00:30:00Z");
      const c = await claim(h.sql, { limit: 100 });
      assert.deepEqual(c.runs.map((r) => r.idempotency_key).sort(),
        ["19", "20", "21", "22", "23"].map((hh) => key("tick", `2027-01-10T${hh}:00:00.000Z`))
          .concat(key("tick", "2027-01-11T00:00:00.000Z")));
    });

    it("a window of many fires starts them at most 100 per claim, then goes on at the next claim", async () => {
      await setNow(h.sql, "2027-01-04T00:00:00Z");
      await create({ cron: "* * * * *", overlap: "allow", catchupMs: 7 * 86400_000 });
      await setNow(h.sql, "2027-01-04T02:30:30Z");
      const first = await claim(h.sql, { limit: 1000 });
      assert.equal(first.skipped, true, "fires are still due: look again");
      assert.equal((await firedKeys()).length, 100);
      await claim(h.sql);
      const keys = await firedKeys();
      assert.equal(keys.length, 150);
      assert.equal(keys[0], key("tick", "2027-01-04T00:01:00.000Z"));
      assert.equal(keys[149], key("tick", "2027-01-04T02:30:00.000Z"));
    });

    it("a week of per-second fires missed costs a few steps: only the latest starts", async () => {
      await setNow(h.sql, "2027-01-04T00:00:00Z");
      await create({ cron: "* * * * * *" });
      await setNow(h.sql, "2027-01-11T00:00:00.500Z");
      const c = await claim(h.sql);
      assert.deepEqual(c.runs.map((r) => r.idempotency_key), [key("tick", "2027-01-11T00:00:00.000Z")]);
    });
  });

  it("a fire that cannot start its run is recorded on the schedule and never stops the claim", async () => {
    await setNow(h.sql, "2027-01-04T00:00:00Z");
    await create({ cron: "@hourly", input: { n: 1 } });
    // Someone took the fire's key with another input: the insert raises AK004.
    await startWorkflow(h.sql, { workflow: "report", idempotencyKey: key("tick", "2027-01-04T01:00:00.000Z"), input: { n: 2 } });
    await setNow(h.sql, "2027-01-04T01:00:00Z");
    const c = await claim(h.sql);
    assert.equal(c.runs.length, 1, "the claim still leases");
    const s = await schedule();
    assert.match(s.last_error!, /^AK004: idempotency key/);
    assert.equal(new Date(s.next_fire_at!).toISOString(), "2027-01-04T02:00:00.000Z");
    await setNow(h.sql, "2027-01-04T02:00:00Z");
    await claim(h.sql);
    assert.equal((await schedule()).last_error, null);
  });

  describe("two workers claiming at once", () => {
    let a: Sql;
    let b: Sql;
    before(async () => {
      a = await h.session();
      b = await h.session();
    });

    it("a claim passes over a schedule another claim is firing (SKIP LOCKED), and says it skipped", async () => {
      for (const s of [h.sql, a, b]) await setNow(s, "2027-01-04T00:00:00Z");
      await create({ cron: "@hourly", overlap: "allow" });
      for (const s of [a, b]) await setNow(s, "2027-01-04T01:00:00Z");
      const pidB = await backendPid(b);
      await a.begin(async (tx) => {
        const [first] = await tx<{ c: any }[]>`select aiki.claim('worker-a', null, array['other'], 1) as c`;
        assert.equal(first!.c.skipped, false);
        const second = inFlight(b<{ c: any }[]>`select aiki.claim('worker-b', null, array['other'], 1) as c`);
        const settled = await second.promise;
        assert.ok(settled.value, `B must not wait or fail: ${settled.error?.message} (pid ${pidB})`);
        assert.equal(settled.value[0]!.c.skipped, true, "B saw the schedule due and locked");
      });
      await claim(b, { queues: ["other"] });
      assert.deepEqual(await firedKeys(), [key("tick", "2027-01-04T01:00:00.000Z")]);
    });

    it("buffer_one while the previous run is ending in another transaction: the claim leaves the fire due, never buffered and lost", async () => {
      for (const s of [h.sql, a, b]) await setNow(s, "2027-01-04T00:00:00Z");
      await create({ cron: "@hourly", overlap: "buffer_one" });
      for (const s of [h.sql, a, b]) await setNow(s, "2027-01-04T01:00:00Z");
      const first = (await claim(h.sql, { leaseMs: 86400_000 })).runs[0]!;
      for (const s of [h.sql, a, b]) await setNow(s, "2027-01-04T02:00:00Z");
      await a.begin(async (tx) => {
        // A worker's completion holds the run (its _finish hook will look for a buffered fire).
        await completeRun(tx as unknown as Sql, first);
        const c = await claim(b, { queues: ["other"] });
        assert.equal(c.skipped, true, "the fire is left due: the run it depends on is busy");
        assert.equal((await schedule()).buffered_at, null);
      });
      const c = await claim(b, { queues: ["other"] });
      assert.equal(c.skipped, false);
      assert.deepEqual(await firedKeys(), [key("tick", "2027-01-04T01:00:00.000Z"), key("tick", "2027-01-04T02:00:00.000Z")]);
    });

    it("buffer_one: a run ending while a claim buffers behind it wakes the schedule once the claim commits", async () => {
      for (const s of [h.sql, a, b]) await setNow(s, "2027-01-04T00:00:00Z");
      await create({ cron: "@hourly", overlap: "buffer_one" });
      for (const s of [h.sql, a, b]) await setNow(s, "2027-01-04T01:00:00Z");
      const first = (await claim(h.sql, { leaseMs: 86400_000 })).runs[0]!;
      for (const s of [h.sql, a, b]) await setNow(s, "2027-01-04T02:00:00Z");
      const pidB = await backendPid(b);
      let ending!: ReturnType<typeof inFlight<unknown>>;
      await a.begin(async (tx) => {
        await tx`select aiki.claim('worker-a', null, array['other'], 1)`;
        assert.equal((await tx<{ s: Schedule }[]>`select aiki.get_schedule('tick') as s`)[0]!.s.buffered_at !== null, true);
        // The run's completion waits for the run's lock, which the buffering claim holds.
        ending = inFlight(completeRun(b, first));
        await waitUntilBlocked(h.db.sql, pidB);
      });
      await ending.promise;
      assert.equal(ending.error, undefined);
      const [row] = await h.sql<{ due: boolean }[]>`select due_at <= '2027-01-04T02:00:00Z' as due from aiki.schedules`;
      assert.equal(row!.due, true, "the run's end made the schedule due at once");
      const c = await claim(b, { queues: ["other"] });
      assert.equal(c.skipped, false);
      assert.deepEqual(await firedKeys(), [key("tick", "2027-01-04T01:00:00.000Z"), key("tick", "2027-01-04T02:00:00.000Z")]);
    });

    it("cancel_previous while another session holds the previous run's child: the claim neither waits nor fails, and looks again a second later; released, that claim cancels and starts", async () => {
      for (const s of [h.sql, a, b]) await setNow(s, "2027-01-04T00:00:00Z");
      await create({ cron: "@hourly", overlap: "cancel_previous" });
      for (const s of [h.sql, a, b]) await setNow(s, "2027-01-04T01:00:00Z");
      const first = (await claim(h.sql, { leaseMs: 86400_000 })).runs[0]!;
      const [child] = await startChildren(h.sql, first, [{ key: "child#1", workflow: "wf", version: "1.0.0" }]);
      for (const s of [h.sql, a, b]) await setNow(s, "2027-01-04T02:00:00Z");
      await a.begin(async (tx) => {
        // A worker writing the child holds its lock.
        await tx`select 1 from aiki.runs where id = ${child!}::uuid for update`;
        // Bounded: a claim that waited would fail here rather than hang the test.
        const c = await b.begin(async (btx) => {
          await btx`set local lock_timeout = '5s'`;
          return claim(btx as unknown as Sql, { queues: ["other"] });
        });
        // Not `skipped` (which has every worker claim again at once): the fire is due again in a
        // second, and the claim's next_due_at says so.
        assert.equal(c.skipped, false);
        assert.equal(new Date(c.next_due_at!).toISOString(), "2027-01-04T02:00:01.000Z");
        const s = await schedule();
        assert.deepEqual([s.last_run_id, s.last_error, new Date(s.next_fire_at!).toISOString()],
                         [first.id, null, "2027-01-04T02:00:00.000Z"]);
      });
      assert.deepEqual(await firedKeys(), [key("tick", "2027-01-04T01:00:00.000Z")], "nothing fires before the second is up");
      for (const s of [h.sql, a, b]) await setNow(s, "2027-01-04T02:00:01Z");
      const c = await claim(b, { queues: ["other"] });
      assert.equal(c.skipped, false);
      assert.deepEqual(await firedKeys(), [key("tick", "2027-01-04T01:00:00.000Z"), key("tick", "2027-01-04T02:00:00.000Z")]);
      assert.deepEqual([await status(h.sql, first.id), await status(h.sql, child!)], ["cancelled", "cancelled"]);
    });

    it("cancel_previous while a worker holds the newest run of the previous run's chain: the claim leaves the schedule due; released, the next claim cancels that run", async () => {
      for (const s of [h.sql, a, b]) await setNow(s, "2027-01-04T00:00:00Z");
      await create({ cron: "@hourly", overlap: "cancel_previous" });
      for (const s of [h.sql, a, b]) await setNow(s, "2027-01-04T01:00:00Z");
      const first = (await claim(h.sql, { leaseMs: 86400_000 })).runs[0]!;
      const next = await continueAsNew(first);
      await claimOne(h.sql, { expect: next, leaseMs: 86400_000 });
      for (const s of [h.sql, a, b]) await setNow(s, "2027-01-04T02:00:00Z");
      await a.begin(async (tx) => {
        await tx`select 1 from aiki.runs where id = ${next}::uuid for update`;
        const c = await b.begin(async (btx) => {
          await btx`set local lock_timeout = '5s'`;
          return claim(btx as unknown as Sql, { queues: ["other"] });
        });
        assert.equal(c.skipped, true);
        assert.deepEqual([(await schedule()).last_error, await status(h.sql, next)], [null, "running"]);
      });
      assert.equal((await claim(b, { queues: ["other"] })).skipped, false);
      assert.deepEqual(await firedKeys(), [key("tick", "2027-01-04T01:00:00.000Z"), key("tick", "2027-01-04T02:00:00.000Z")]);
      assert.equal(await status(h.sql, next), "cancelled");
    });

    it("trigger_schedule (cancel_previous) waiting on a run that continues meanwhile cancels its successor", async () => {
      for (const s of [h.sql, a, b]) await setNow(s, "2027-01-04T00:00:00Z");
      await create({ cron: "@hourly", overlap: "cancel_previous" });
      for (const s of [h.sql, a, b]) await setNow(s, "2027-01-04T01:00:00Z");
      const first = (await claim(h.sql, { leaseMs: 86400_000 })).runs[0]!;
      for (const s of [h.sql, a, b]) await setNow(s, "2027-01-04T01:30:00Z");
      const pidB = await backendPid(b);
      let successor = "";
      let trigger!: ReturnType<typeof inFlight<{ t: any }[]>>;
      await a.begin(async (tx) => {
        const [row] = await tx<{ id: string }[]>`
          select aiki.continue_as_new(${first.id}::uuid, ${first.lease_token}::uuid, 'null'::jsonb) as id`;
        successor = row!.id;
        trigger = inFlight(b<{ t: any }[]>`select aiki.trigger_schedule('tick') as t`);
        await waitUntilBlocked(h.db.sql, pidB);
      });
      const settled = await trigger.promise;
      assert.equal(settled.error, undefined);
      assert.equal(settled.value![0]!.t.action, "started");
      assert.deepEqual([await status(h.sql, first.id), await status(h.sql, successor)], ["continued", "cancelled"]);
    });

    it("claims racing over 50 fire times start each fire exactly once", async () => {
      for (const s of [h.sql, a, b]) await setNow(s, "2027-01-04T00:00:00Z");
      for (let i = 0; i < 5; i++) await create({ name: `s${i}`, cron: "* * * * *", overlap: "allow" });
      for (let minute = 1; minute <= 10; minute++) {
        const now = `2027-01-04T00:${String(minute).padStart(2, "0")}:00Z`;
        for (const s of [a, b]) await setNow(s, now);
        await Promise.all([
          a`select aiki.claim('worker-a', null, array['other'], 1)`,
          b`select aiki.claim('worker-b', null, array['other'], 1)`,
        ]);
        // A claim that lost the race left nothing due behind it once both are done.
        await claim(a, { queues: ["other"] });
      }
      const keys = await firedKeys();
      assert.equal(keys.length, 50);
      assert.equal(new Set(keys).size, 50);
    });
  });
});
