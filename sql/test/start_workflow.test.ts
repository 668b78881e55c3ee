// aiki.start_workflow and aiki.now: how a top-level run comes to exist, and the one clock.
import { after, before, beforeEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  T0, at, claimOne, expectRejected, getRun, harness, ms, reset, setNow, startRun, startWorkflow,
  status, tableCounts, type Harness,
} from "./support.js";

let h: Harness;
before(async () => {
  h = await harness();
});
after(() => h.close());
beforeEach(() => reset(h.sql));

describe("now", () => {
  it("reads the session's fake clock when one is set", async () => {
    await setNow(h.sql, at(1234));
    const [row] = await h.sql<{ now: Date }[]>`select aiki.now() as now`;
    assert.equal(ms(row!.now), Date.parse(at(1234)));
  });

  it("falls back to the transaction timestamp when the fake clock is cleared", async () => {
    await h.sql`select set_config('aiki.fake_now', '', false)`;
    const [row] = await h.sql<{ same: boolean }[]>`select aiki.now() = now() as same`;
    assert.equal(row!.same, true);
  });
});

describe("start_workflow", () => {
  it("creates a pending run, stamped with aiki.now(), with every option stored", async () => {
    await setNow(h.sql, at(500));
    const r = await startWorkflow(h.sql, {
      workflow: "order", version: "1.2.3", input: { orderId: "o-1" }, idempotencyKey: "o-1",
      queue: "payments", priority: 7, concurrencyKey: "customer-9", timeoutMs: 60_000,
      retry: { type: "fixed", maxAttempts: 4, baseDelayMs: 10 }, maxLeaseExpiries: 3,
    });
    assert.equal(r.created, true);
    const run = await getRun(h.sql, r.run_id);
    assert.equal(run.status, "pending");
    assert.equal(run.workflow, "order");
    assert.equal(run.version, "1.2.3");
    assert.deepEqual(run.input, { orderId: "o-1" });
    assert.equal(run.queue, "payments");
    assert.equal(run.priority, 7);
    assert.equal(run.concurrency_key, "customer-9");
    assert.equal(run.idempotency_key, "o-1");
    assert.equal(run.attempt, 1);
    assert.equal(ms(run.created_at), Date.parse(at(500)));
    assert.equal(ms(run.available_at), Date.parse(at(500)));
    assert.equal(ms(run.deadline_at), Date.parse(at(60_500)));
    assert.equal("lease_token" in run, false, "readers never see a lease token");
    assert.equal(run.started_at, null);
    assert.deepEqual(run.journal, []);
    const [row] = await h.sql`select retry, max_lease_expiries from aiki.runs where id = ${r.run_id}::uuid`;
    assert.deepEqual(row!.retry, { type: "fixed", maxAttempts: 4, baseDelayMs: 10, maxDelayMs: 3600000, factor: 2 });
    assert.equal(row!.max_lease_expiries, 3);
  });

  it("defaults: queue default, priority 0, JSON null input, no retry", async () => {
    const [row] = await h.sql<{ run_id: string }[]>`select run_id from aiki.start_workflow('wf', '1')`;
    const run = await getRun(h.sql, row!.run_id);
    assert.equal(run.queue, "default");
    assert.equal(run.priority, 0);
    assert.equal(run.input, null);
    const [raw] = await h.sql`select input is not null as json_null, retry from aiki.runs`;
    assert.equal(raw!.json_null, true, "input is the JSON value null, not SQL NULL");
    assert.deepEqual(raw!.retry, { type: "never", maxAttempts: 1 });
  });

  it("gives UUIDv7 ids whose first 48 bits are the wall-clock milliseconds of the insert", async () => {
    const before = Date.now();
    const id = await startRun(h.sql);
    const after = Date.now();
    assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    const stamp = parseInt(id.replace(/-/g, "").slice(0, 12), 16);
    assert.ok(stamp >= before - 1000 && stamp <= after + 1000, `id time ${stamp} outside ${before}..${after}`);
  });

  it("a delay makes the run scheduled until then", async () => {
    const id = await startRun(h.sql, { delayMs: 5000 });
    const run = await getRun(h.sql, id);
    assert.equal(run.status, "scheduled");
    assert.equal(ms(run.available_at), Date.parse(at(5000)));
  });

  it("a start time in the future makes the run scheduled; one in the past, pending", async () => {
    const later = await startRun(h.sql, { startAt: at(60_000) });
    const earlier = await startRun(h.sql, { startAt: at(-60_000) });
    assert.equal(await status(h.sql, later), "scheduled");
    assert.equal(ms((await getRun(h.sql, later)).available_at), Date.parse(at(60_000)));
    assert.equal(await status(h.sql, earlier), "pending");
    assert.equal(ms((await getRun(h.sql, earlier)).available_at), Date.parse(at(-60_000)));
  });

  it("a zero delay is a start now", async () => {
    const id = await startRun(h.sql, { delayMs: 0 });
    assert.equal(await status(h.sql, id), "pending");
  });

  describe("idempotency key", () => {
    it("the same start again returns created = false and the same run, writing nothing", async () => {
      const first = await startWorkflow(h.sql, { workflow: "order", idempotencyKey: "k", input: { a: 1 } });
      const before = await tableCounts(h.sql);
      const again = await startWorkflow(h.sql, { workflow: "order", idempotencyKey: "k", input: { a: 1 } });
      assert.deepEqual(again, { run_id: first.run_id, created: false });
      assert.deepEqual(await tableCounts(h.sql), before);
    });

    it("still returns the run after it finished", async () => {
      const first = await startWorkflow(h.sql, { idempotencyKey: "done", input: 1 });
      const run = await claimOne(h.sql, { expect: first.run_id });
      await h.sql`select aiki.complete_run(${run.id}::uuid, ${run.lease_token}::uuid, '"ok"')`;
      const again = await startWorkflow(h.sql, { idempotencyKey: "done", input: 1 });
      assert.deepEqual(again, { run_id: first.run_id, created: false });
      assert.equal(await status(h.sql, first.run_id), "completed");
    });

    it("the same key with another input is AK004 and writes nothing", async () => {
      const first = await startRun(h.sql, { workflow: "order", idempotencyKey: "k", input: { a: 1 } });
      const e = await expectRejected(h.sql, () => startWorkflow(h.sql, { workflow: "order", idempotencyKey: "k", input: { a: 2 } }),
        "AK004", /idempotency key 'k' of workflow order already started run .* with another input/);
      assert.ok(e.message.includes(first));
    });

    it("the same key with another version is AK004 and writes nothing", async () => {
      await startRun(h.sql, { workflow: "order", version: "1.0.0", idempotencyKey: "k" });
      await expectRejected(h.sql, () => startWorkflow(h.sql, { workflow: "order", version: "2.0.0", idempotencyKey: "k" }),
        "AK004", /already started run .* with another version/);
    });

    it("is scoped per workflow: another workflow may use the same key", async () => {
      const a = await startWorkflow(h.sql, { workflow: "a", idempotencyKey: "k" });
      const b = await startWorkflow(h.sql, { workflow: "b", idempotencyKey: "k" });
      assert.equal(b.created, true);
      assert.notEqual(a.run_id, b.run_id);
    });
  });

  it("stores payloads up to the 1 MiB limit", async () => {
    const id = await startRun(h.sql, { input: { blob: "x".repeat(1_000_000) } });
    const [row] = await h.sql`select length(input->>'blob') as n from aiki.runs where id = ${id}::uuid`;
    assert.equal(row!.n, 1_000_000);
  });

  describe("trace context", () => {
    const traceContext = { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", tracestate: "vendor=opaque" };

    it("is stored as given and handed out with the run, by get_run and by the claim", async () => {
      const id = await startRun(h.sql, { traceContext });
      assert.deepEqual((await getRun(h.sql, id)).trace_context, traceContext);
      assert.deepEqual((await claimOne(h.sql, { expect: id })).trace_context, traceContext);
    });

    it("is null when the start names none, or names JSON null", async () => {
      const none = await startRun(h.sql);
      const jsonNull = await startRun(h.sql, { traceContext: null });
      assert.equal((await getRun(h.sql, none)).trace_context, null);
      assert.equal((await getRun(h.sql, jsonNull)).trace_context, null);
    });

    it("the same start under an idempotency key in another trace returns the run, which keeps its first context", async () => {
      const first = await startWorkflow(h.sql, { idempotencyKey: "traced", traceContext });
      const other = { traceparent: "00-11111111111111111111111111111111-2222222222222222-00" };
      const again = await startWorkflow(h.sql, { idempotencyKey: "traced", traceContext: other });
      assert.deepEqual(again, { run_id: first.run_id, created: false });
      assert.deepEqual((await getRun(h.sql, first.run_id)).trace_context, traceContext);
    });

    it("the original twelve-argument call still works (the context defaults to none)", async () => {
      const [row] = await h.sql<{ run_id: string }[]>`
        select run_id from aiki.start_workflow('order', '1.0.0', '{}', null, 'default', 0, null, null, null, null, null, 5)`;
      assert.equal((await getRun(h.sql, row!.run_id)).trace_context, null);
    });
  });

  it("keeps the start time given as the clock moves on", async () => {
    await setNow(h.sql, T0);
    const id = await startRun(h.sql, { delayMs: 1000 });
    await setNow(h.sql, at(999));
    assert.equal(await status(h.sql, id), "scheduled");
  });
});
