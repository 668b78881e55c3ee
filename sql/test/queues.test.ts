// aiki.set_queue, aiki.pause_queue, aiki.resume_queue — and how claim honours them: queue
// concurrency limits, per-key limits (1 per concurrency key by default), pausing, and ordering.
import { after, before, beforeEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  at, claim, claimOne, completeRun, harness, listen, reset, setNow, startRun, status, suspend, type Harness,
} from "./support.js";

let h: Harness;
before(async () => {
  h = await harness();
});
after(() => h.close());
beforeEach(() => reset(h.sql));

const running = async (queue: string) => {
  const [row] = await h.sql`select count(*)::int as n from aiki.runs where queue = ${queue} and status = 'running'`;
  return row!.n as number;
};

describe("set_queue", () => {
  it("creates or updates the queue's limits and returns the row", async () => {
    const [a] = await h.sql`select (aiki.set_queue('mail', 5, 2)).*`;
    assert.deepEqual([a!.name, a!.concurrency_limit, a!.key_concurrency_limit, a!.paused], ["mail", 5, 2, false]);
    const [b] = await h.sql`select (aiki.set_queue('mail')).*`;
    assert.deepEqual([b!.concurrency_limit, b!.key_concurrency_limit], [null, 1]);
  });

  it("keeps the paused flag", async () => {
    await h.sql`select aiki.pause_queue('mail')`;
    const [q] = await h.sql`select (aiki.set_queue('mail', 3)).*`;
    assert.equal(q!.paused, true);
  });

  it("a concurrency limit caps the runs running in the queue at once", async () => {
    await h.sql`select aiki.set_queue('limited', 2)`;
    for (let i = 0; i < 5; i++) await startRun(h.sql, { queue: "limited" });
    const first = await claim(h.sql, { queues: ["limited"], limit: 5 });
    assert.equal(first.runs.length, 2);
    assert.deepEqual((await claim(h.sql, { queues: ["limited"], limit: 5, worker: "w-2" })).runs, []);
    await completeRun(h.sql, first.runs[0]!);
    assert.equal((await claim(h.sql, { queues: ["limited"], limit: 5 })).runs.length, 1);
    assert.equal(await running("limited"), 2);
  });

  it("counts runs that were running before the limit was set", async () => {
    for (let i = 0; i < 3; i++) await startRun(h.sql, { queue: "late" });
    await claim(h.sql, { queues: ["late"], limit: 2 });
    await h.sql`select aiki.set_queue('late', 2)`;
    assert.deepEqual((await claim(h.sql, { queues: ["late"] })).runs, []);
  });

  it("a suspended run frees its slot", async () => {
    await h.sql`select aiki.set_queue('limited', 1)`;
    const a = await startRun(h.sql, { queue: "limited" });
    const b = await startRun(h.sql, { queue: "limited" });
    const ra = await claimOne(h.sql, { queues: ["limited"], expect: a });
    assert.deepEqual((await claim(h.sql, { queues: ["limited"] })).runs, []);
    await suspend(h.sql, ra, [{ key: "n#1", kind: "sleep", name: "n", duration_ms: 1000 }]);
    await claimOne(h.sql, { queues: ["limited"], expect: b });
  });

  it("runs sharing a concurrency key run one at a time by default; unkeyed runs are not held back", async () => {
    const k1 = await startRun(h.sql, { concurrencyKey: "customer-1" });
    const k2 = await startRun(h.sql, { concurrencyKey: "customer-1" });
    const other = await startRun(h.sql, { concurrencyKey: "customer-2" });
    const free = await startRun(h.sql);
    const first = await claim(h.sql, { limit: 10 });
    assert.deepEqual(first.runs.map((r) => r.id).sort(), [k1, other, free].sort());
    assert.deepEqual((await claim(h.sql, { limit: 10 })).runs, []);
    await completeRun(h.sql, first.runs.find((r) => r.id === k1)!);
    assert.deepEqual((await claim(h.sql, { limit: 10 })).runs.map((r) => r.id), [k2]);
  });

  it("a key limit of 2 lets two runs per key run at once", async () => {
    await h.sql`select aiki.set_queue('pairs', null, 2)`;
    for (let i = 0; i < 5; i++) await startRun(h.sql, { queue: "pairs", concurrencyKey: "k" });
    assert.equal((await claim(h.sql, { queues: ["pairs"], limit: 10 })).runs.length, 2);
    assert.deepEqual((await claim(h.sql, { queues: ["pairs"], limit: 10 })).runs, []);
  });

  it("queue limit and key limit together", async () => {
    await h.sql`select aiki.set_queue('both', 3)`;
    for (let i = 0; i < 3; i++) await startRun(h.sql, { queue: "both", concurrencyKey: "a" });
    for (let i = 0; i < 3; i++) await startRun(h.sql, { queue: "both", concurrencyKey: "b" });
    for (let i = 0; i < 3; i++) await startRun(h.sql, { queue: "both" });
    const { runs } = await claim(h.sql, { queues: ["both"], limit: 10 });
    assert.equal(runs.length, 3);
    const byKey = runs.map((r) => r.concurrency_key);
    assert.ok(byKey.filter((k) => k === "a").length <= 1 && byKey.filter((k) => k === "b").length <= 1, String(byKey));
  });

  it("on the limited path, claims by priority, then by due time", async () => {
    await h.sql`select aiki.set_queue('ordered', 1)`;
    await setNow(h.sql, at(0));
    const old = await startRun(h.sql, { queue: "ordered" });
    await setNow(h.sql, at(10));
    const newer = await startRun(h.sql, { queue: "ordered" });
    const urgent = await startRun(h.sql, { queue: "ordered", priority: 10 });
    const order = [];
    for (let i = 0; i < 3; i++) {
      const r = await claimOne(h.sql, { queues: ["ordered"] });
      order.push(r.id);
      await completeRun(h.sql, r);
    }
    assert.deepEqual(order, [urgent, old, newer]);
  });

  it("keyed runs are claimed by priority, then due time, within the key", async () => {
    await setNow(h.sql, at(0));
    const a = await startRun(h.sql, { concurrencyKey: "k" });
    await setNow(h.sql, at(10));
    const b = await startRun(h.sql, { concurrencyKey: "k", priority: 1 });
    const c = await startRun(h.sql, { concurrencyKey: "k" });
    const order = [];
    for (let i = 0; i < 3; i++) {
      const r = await claimOne(h.sql);
      order.push(r.id);
      await completeRun(h.sql, r);
    }
    assert.deepEqual(order, [b, a, c]);
  });
});

describe("pause_queue", () => {
  it("claim skips a paused queue; its runs wait; other queues are served", async () => {
    const [q] = await h.sql`select (aiki.pause_queue('held')).*`;
    assert.equal(q!.paused, true);
    const held = await startRun(h.sql, { queue: "held" });
    const free = await startRun(h.sql, { queue: "free" });
    const { runs } = await claim(h.sql, { queues: ["held", "free"], limit: 10 });
    assert.deepEqual(runs.map((r) => r.id), [free]);
    assert.equal(await status(h.sql, held), "pending");
  });

  it("keeps the queue's limits", async () => {
    await h.sql`select aiki.set_queue('held', 4, 2)`;
    const [q] = await h.sql`select (aiki.pause_queue('held')).*`;
    assert.deepEqual([q!.concurrency_limit, q!.key_concurrency_limit, q!.paused], [4, 2, true]);
  });

  it("timers of a paused queue still fall due; they wait as pending", async () => {
    await h.sql`select aiki.pause_queue('held')`;
    const id = await startRun(h.sql, { queue: "held", delayMs: 1000 });
    await setNow(h.sql, at(1000));
    assert.deepEqual((await claim(h.sql, { queues: ["held"] })).runs, []);
    assert.equal(await status(h.sql, id), "pending");
  });
});

describe("resume_queue", () => {
  it("serves the queue again and wakes its workers", async () => {
    await h.sql`select aiki.pause_queue('held')`;
    const id = await startRun(h.sql, { queue: "held" });
    const wake = await listen(h.db.sql, "aiki_wake");
    try {
      await wake.drain();
      const [q] = await h.sql`select (aiki.resume_queue('held')).*`;
      assert.equal(q!.paused, false);
      assert.deepEqual(await wake.drain(), ["held"]);
    } finally {
      await wake.close();
    }
    await claimOne(h.sql, { queues: ["held"], expect: id });
  });

  it("on a queue never paused, is harmless", async () => {
    const [q] = await h.sql`select (aiki.resume_queue('fresh')).*`;
    assert.deepEqual([q!.name, q!.paused, q!.key_concurrency_limit], ["fresh", false, 1]);
  });
});
