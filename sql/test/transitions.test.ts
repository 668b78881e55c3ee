// The run state machine, exhaustively: every status × every act that can move a run, with the
// outcome each combination must have. Forbidden acts must raise their SQLSTATE and write nothing.
//
//   scheduled ─┐
//              ├─> pending ─> running ─┬─> completed | failed | cancelled
//   retrying ──┘      ^                ├─> sleeping ─┐
//                     │                ├─> waiting  ─┤  (timer, event, child, resume)
//                     └────────────────┴─> paused   ─┘
import { after, before, beforeEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  at, cancel, claim, claimOne, completeRun, completeStep, expectRejected, failRun, getRun, harness, ms,
  reset, runRow, sendEvent, setNow, startAndClaim, startRun, status, suspend, tableCounts,
  type Harness, type Lease,
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
const TERMINAL: State[] = ["completed", "failed", "cancelled"];

const noLease = "00000000-0000-4000-8000-000000000000";

/** Puts a fresh run into `state` through the public functions; returns it with the lease it had. */
async function runIn(state: State): Promise<Lease> {
  if (state === "scheduled") return { id: await startRun(h.sql, { delayMs: 60_000 }), lease_token: noLease };
  if (state === "pending") return { id: await startRun(h.sql), lease_token: noLease };
  const run = await startAndClaim(h.sql, { retry: { type: "fixed", maxAttempts: 3, baseDelayMs: 60_000 } });
  switch (state) {
    case "running": break;
    case "sleeping": await suspend(h.sql, run, [{ key: "nap#1", kind: "sleep", name: "nap", duration_ms: 60_000 }]); break;
    case "waiting": await suspend(h.sql, run, [{ key: "ok#1", kind: "event", name: "ok", timeout_ms: 60_000 }]); break;
    case "retrying": await failRun(h.sql, run, { message: "try again" }); break;
    case "paused": await h.sql`select aiki.pause(${run.id}::uuid)`; break;
    case "completed": await completeRun(h.sql, run, "done"); break;
    case "failed": await failRun(h.sql, run, { message: "fatal" }, true); break;
    case "cancelled": await cancel(h.sql, run.id); break;
  }
  assert.equal(await status(h.sql, run.id), state);
  return run;
}

describe("run states", () => {
  it("every status can be reached through the public functions", async () => {
    // pending last: every later startAndClaim would otherwise lease the pending run.
    for (const s of [...STATES.filter((s) => s !== "pending"), "pending" as const]) await runIn(s);
    const rows = await h.sql`select status::text, count(*)::int as n from aiki.runs group by 1`;
    assert.equal(rows.length, STATES.length);
  });
});

describe("cancel", () => {
  for (const state of STATES) {
    if (state === "cancelled") {
      it("cancelled → cancelled: idempotent, writes nothing", async () => {
        const run = await runIn(state);
        const before = await tableCounts(h.sql);
        assert.equal(await cancel(h.sql, run.id, "again"), "cancelled");
        assert.deepEqual(await tableCounts(h.sql), before);
      });
    } else if (TERMINAL.includes(state)) {
      it(`${state} → AK005, writes nothing`, async () => {
        const run = await runIn(state);
        await expectRejected(h.sql, () => cancel(h.sql, run.id), "AK005",
          new RegExp(`^run .* is already ${state} and cannot be cancelled$`));
      });
    } else {
      it(`${state} → cancelled, finished, timer and lease cleared`, async () => {
        const run = await runIn(state);
        await setNow(h.sql, at(5));
        assert.equal(await cancel(h.sql, run.id, "no longer needed"), "cancelled");
        const r = await runRow(h.sql, run.id);
        assert.equal(r.status, "cancelled");
        assert.deepEqual(r.error, { name: "Cancelled", message: "no longer needed" });
        assert.equal(ms(r.finished_at), Date.parse(at(5)));
        assert.equal(r.available_at, null);
        assert.equal(r.lease_token, null);
      });
    }
  }

  it("a cancel without a reason says cancelled", async () => {
    const id = await startRun(h.sql);
    await cancel(h.sql, id);
    assert.deepEqual((await getRun(h.sql, id)).error, { name: "Cancelled", message: "cancelled" });
  });
});

describe("pause", () => {
  for (const state of STATES) {
    if (TERMINAL.includes(state)) {
      it(`${state} → AK005, writes nothing`, async () => {
        const run = await runIn(state);
        await expectRejected(h.sql, () => h.sql`select aiki.pause(${run.id}::uuid)`, "AK005",
          new RegExp(`^run .* is already ${state} and cannot be paused$`));
      });
    } else if (state === "paused") {
      it("paused → paused: idempotent, writes nothing", async () => {
        const run = await runIn(state);
        const before = await tableCounts(h.sql);
        const [row] = await h.sql`select aiki.pause(${run.id}::uuid)::text as s`;
        assert.equal(row!.s, "paused");
        assert.deepEqual(await tableCounts(h.sql), before);
      });
    } else {
      it(`${state} → paused: not claimable, whatever the clock says`, async () => {
        const run = await runIn(state);
        const [row] = await h.sql`select aiki.pause(${run.id}::uuid)::text as s`;
        assert.equal(row!.s, "paused");
        const r = await runRow(h.sql, run.id);
        assert.equal(r.status, "paused");
        assert.equal(r.lease_token, null);
        await setNow(h.sql, at(24 * 3600 * 1000));
        assert.deepEqual((await claim(h.sql)).runs, []);
        assert.equal(await status(h.sql, run.id), "paused");
      });
    }
  }

  it("a worker holding the paused run learns it on its next write (AK001)", async () => {
    const run = await runIn("running");
    await h.sql`select aiki.pause(${run.id}::uuid)`;
    await expectRejected(h.sql, () => completeStep(h.sql, run, "x#1", "x", 1), "AK001", /^lease lost: run .* is paused$/);
    await expectRejected(h.sql, () => completeRun(h.sql, run), "AK001", /is paused/);
  });
});

describe("resume", () => {
  for (const state of STATES) {
    if (state !== "paused") {
      it(`${state} → AK005, writes nothing`, async () => {
        const run = await runIn(state);
        await expectRejected(h.sql, () => h.sql`select aiki.resume(${run.id}::uuid)`, "AK005",
          new RegExp(`^run .* is ${state}, not paused; only a paused run can be resumed$`));
      });
    }
  }

  for (const from of ["pending", "running", "sleeping", "waiting"] as const) {
    it(`paused (from ${from}) → pending, claimable now`, async () => {
      const run = await runIn(from);
      await h.sql`select aiki.pause(${run.id}::uuid)`;
      await setNow(h.sql, at(10));
      const [row] = await h.sql`select aiki.resume(${run.id}::uuid)::text as s`;
      assert.equal(row!.s, "pending");
      const again = await claimOne(h.sql, { expect: run.id });
      assert.notEqual(again.lease_token, run.lease_token);
    });
  }

  it("paused (from sleeping): the replay re-suspends on the sleep, which keeps its end", async () => {
    const run = await runIn("sleeping");
    await h.sql`select aiki.pause(${run.id}::uuid)`;
    await h.sql`select aiki.resume(${run.id}::uuid)`;
    const again = await claimOne(h.sql, { expect: run.id });
    const r = await suspend(h.sql, again, [{ key: "nap#1", kind: "sleep", name: "nap", duration_ms: 60_000 }]);
    assert.equal(ms(r.available_at), Date.parse(at(60_000)));
    assert.equal(await status(h.sql, run.id), "sleeping");
  });

  it("paused (from scheduled) before its start time → scheduled again: resume does not start it early", async () => {
    const run = await runIn("scheduled");
    await h.sql`select aiki.pause(${run.id}::uuid)`;
    await setNow(h.sql, at(10_000));
    const [row] = await h.sql`select aiki.resume(${run.id}::uuid)::text as s`;
    assert.equal(row!.s, "scheduled");
    assert.deepEqual((await claim(h.sql)).runs, []);
    assert.equal(ms((await runRow(h.sql, run.id)).available_at), Date.parse(at(60_000)));
    await setNow(h.sql, at(60_000));
    await claimOne(h.sql, { expect: run.id });
  });

  it("paused (from scheduled) after its start time passed → pending", async () => {
    const run = await runIn("scheduled");
    await h.sql`select aiki.pause(${run.id}::uuid)`;
    await setNow(h.sql, at(90_000));
    const [row] = await h.sql`select aiki.resume(${run.id}::uuid)::text as s`;
    assert.equal(row!.s, "pending");
    await claimOne(h.sql, { expect: run.id });
  });

  it("paused (from retrying) → retrying until its retry time, not at once", async () => {
    const run = await runIn("retrying");
    await h.sql`select aiki.pause(${run.id}::uuid)`;
    const [row] = await h.sql`select aiki.resume(${run.id}::uuid)::text as s`;
    assert.equal(row!.s, "retrying");
    assert.deepEqual((await claim(h.sql)).runs, []);
    await setNow(h.sql, at(60_000));
    assert.equal((await claimOne(h.sql, { expect: run.id })).attempt, 2);
  });
});

describe("send_event", () => {
  for (const state of STATES) {
    if (TERMINAL.includes(state)) {
      it(`${state} → AK005, writes nothing`, async () => {
        const run = await runIn(state);
        await expectRejected(h.sql, () => sendEvent(h.sql, run.id, "ok"), "AK005",
          new RegExp(`^run .* is ${state} and takes no more events$`));
      });
    } else {
      it(`${state} → accepted`, async () => {
        const run = await runIn(state);
        await sendEvent(h.sql, run.id, "ok", 1);
        const [row] = await h.sql`select count(*)::int as n from aiki.events where run_id = ${run.id}::uuid`;
        assert.equal(row!.n, 1);
        assert.equal(await status(h.sql, run.id), state === "waiting" ? "pending" : state,
          "only a waiting run with an open wait for it wakes");
      });
    }
  }
});

describe("worker writes with the lease the run had", () => {
  for (const state of STATES) {
    if (state === "running") {
      it("running → allowed", async () => {
        const run = await runIn(state);
        await completeStep(h.sql, run, "x#1", "x", 1);
        await completeRun(h.sql, run);
      });
    } else {
      it(`${state} → complete_run and complete_step are AK001 and write nothing`, async () => {
        const run = await runIn(state);
        const message = run.lease_token === noLease ? /^lease lost: run .* is / : new RegExp(`^lease lost: run .* is ${state}$`);
        await expectRejected(h.sql, () => completeRun(h.sql, run), "AK001", message);
        await expectRejected(h.sql, () => completeStep(h.sql, run, "x#1", "x", 1), "AK001", message);
        await expectRejected(h.sql, () => failRun(h.sql, run, {}), "AK001", message);
      });
    }
  }
});

describe("claim", () => {
  const claimable = new Set<State>(["pending"]);
  const dueLater = new Set<State>(["scheduled", "sleeping", "waiting", "retrying", "running"]);
  for (const state of STATES) {
    it(`${state} → ${claimable.has(state) ? "claimed now" : dueLater.has(state) ? "claimed once its timer is due" : "never claimed"}`, async () => {
      const run = await runIn(state);
      const now = await claim(h.sql);
      assert.deepEqual(now.runs.map((r) => r.id), claimable.has(state) ? [run.id] : []);
      if (claimable.has(state)) return;
      await setNow(h.sql, at(3_600_000));
      const later = await claim(h.sql);
      assert.deepEqual(later.runs.map((r) => r.id), dueLater.has(state) ? [run.id] : []);
      if (!dueLater.has(state)) assert.equal(await status(h.sql, run.id), state);
    });
  }
});
