// replay(workflowVersion, run): the workflow's current code against runs a real worker recorded,
// in every state a deploy meets them (sleeping, waiting for an event, completed), without side
// effects. Unchanged code passes; a reordered task, a removed wait and a renamed task are each
// reported at the step where the code leaves the journal, naming the recorded call and the new one.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { CodecError, InvalidInputError, NonDeterminismError, replay, task, workflow, type Divergence, type WorkflowVersion } from "../index.js";
import * as engine from "../engine.js";
import { charge, label, notify, pack, reserve, shipping, sideEffects, type Order } from "./fixtures/replay-shipping.js";
import { shippingReordered } from "./fixtures/replay-shipping-reordered.js";
import { codec, countdown, double } from "./fixtures/replay-countdown.js";
import { environment, gate, rejects, unique, until, type Env } from "./support.js";

let env: Env;
/** 100 runs of replay-shipping@1: a third sleeping, a third waiting for `shipped`, a third completed. */
const runs: { id: string; state: "sleeping" | "waiting" | "completed" }[] = [];
const DAY = 86_400_000;

before(async () => {
  env = await environment();
  const worker = await env.spawn({ workflows: [shipping], concurrency: 20 });
  for (let n = 0; n < 100; n++) {
    const state = (["sleeping", "waiting", "completed"] as const)[n % 3]!;
    const handle = await shipping.start(env.aiki, { n, coolOffMs: state === "sleeping" ? DAY : 1 });
    runs.push({ id: handle.id, state });
  }
  const statusOf = async () => new Map((await env.sql<{ id: string; status: string }[]>`
    select id::text, status::text from aiki.runs where workflow = 'replay-shipping'`).map((r) => [r.id, r.status]));
  await until("every run sleeping or waiting", async () => {
    const status = await statusOf();
    return runs.every((r) => status.get(r.id) === (r.state === "sleeping" ? "sleeping" : "waiting")) || undefined;
  }, 60_000);
  for (const run of runs.filter((r) => r.state === "completed")) {
    await shipping.handle(env.aiki, run.id).events.shipped.send({ tracking: `t-${run.id}` });
  }
  await until("the shipped runs completed", async () => {
    const status = await statusOf();
    return runs.filter((r) => r.state === "completed").every((r) => status.get(r.id) === "completed") || undefined;
  }, 60_000);
  await worker.stop();
});
after(() => env.close());

/** A run as `aiki runs show <id> --json` exports it, through JSON as a file would hold it. */
async function exported(id: string): Promise<unknown> {
  return JSON.parse(JSON.stringify(await engine.runTimeline(env.sql, id)));
}

async function divergence(version: WorkflowVersion<any, any, any>, run: unknown): Promise<Divergence> {
  const error = await rejects(replay(version, run), NonDeterminismError);
  assert.equal(error.code, "AK006");
  assert.ok(error.divergence, "the error carries where the code left the journal");
  return error.divergence;
}

/** replay-shipping@1 with another handler (same tasks and events), as a changed deploy would have it. */
function changed(handler: (run: Parameters<typeof shipping.options.handler>[0], order: Order) => Promise<unknown>): WorkflowVersion<any, any, any> {
  return workflow({ name: "replay-shipping" }).v("1", { handler, events: shipping.events });
}

describe("replay of unchanged code", () => {
  it("passes on 100 recorded runs, sleeping, waiting and completed, and runs no task", async () => {
    const tasksBefore = sideEffects.tasks;
    const stepsBefore = await env.sql`select * from aiki.steps order by run_id, step_key`;
    const ends = new Map<string, number>();
    for (const run of runs) {
      const result = await replay(shipping, await exported(run.id));
      assert.equal(result.runId, run.id);
      assert.equal(result.orderChecked, true);
      assert.equal(result.end, run.state === "completed" ? "returned" : "journal-end", `run ${run.id} (${run.state})`);
      ends.set(result.end, (ends.get(result.end) ?? 0) + 1);
    }
    assert.deepEqual(Object.fromEntries(ends), { "journal-end": 67, returned: 33 });
    assert.equal(sideEffects.tasks, tasksBefore, "no task handler ran");
    assert.deepEqual(await env.sql`select * from aiki.steps order by run_id, step_key`, stepsBefore, "nothing was written");
  });

  it("passes on the same runs read with client.getRun (a journal without completion times)", async () => {
    for (const run of runs) {
      const result = await replay(shipping, await env.aiki.getRun(run.id));
      assert.equal(result.orderChecked, false);
      assert.equal(result.end, run.state === "completed" ? "returned" : "journal-end");
    }
  });
});

describe("replay of changed code", () => {
  it("reports a reordered task at the step the code skipped: reserve now runs after pack and label", async () => {
    for (const run of runs) {
      assert.deepEqual(await divergence(shippingReordered, await exported(run.id)), {
        runId: run.id, step: "reserve#1", recorded: { kind: "task", name: "reserve" },
        call: { key: "pack#1", kind: "task", name: "pack" },
      }, `run ${run.id} (${run.state})`);
    }
  });

  it("reports a removed wait at the wait's step, naming the call the code makes instead", async () => {
    const noCoolOff = changed(async (run, order) => {
      await reserve.start(run, order);
      await Promise.all([pack.start(run, order), label.start(run, order)]);
      await run.now();
      await charge.start(run, order);
      const shipped = await run.events.shipped.wait({ timeout: { days: 14 } });
      await notify.start(run, { n: order.n, tracking: shipped.timeout ? null : shipped.data.tracking });
    });
    for (const run of runs) {
      assert.deepEqual(await divergence(noCoolOff, await exported(run.id)), {
        runId: run.id, step: "cool-off#1", recorded: { kind: "sleep", name: "cool-off" },
        call: { key: "charge#1", kind: "task", name: "charge" },
      }, `run ${run.id} (${run.state})`);
    }
  });

  it("reports a renamed task at its step in the runs that recorded it, and passes the runs that did not get there", async () => {
    const bill = task({ ...charge.options, name: "bill" });
    const renamed = changed(async (run, order) => {
      await reserve.start(run, order);
      await Promise.all([pack.start(run, order), label.start(run, order)]);
      await run.now();
      await run.sleep("cool-off", order.coolOffMs);
      await bill.start(run, order);
      await run.events.shipped.wait({ timeout: { days: 14 } });
    });
    for (const run of runs) {
      const recorded = await exported(run.id);
      if (run.state === "sleeping") {
        assert.equal((await replay(renamed, recorded)).end, "journal-end", "still sleeping: the change is ahead of it");
        continue;
      }
      for (const from of [recorded, await env.aiki.getRun(run.id)]) {
        assert.deepEqual(await divergence(renamed, from), {
          runId: run.id, step: "charge#1", recorded: { kind: "task", name: "charge" },
          call: { key: "bill#1", kind: "task", name: "bill" },
        });
      }
    }
  });

  it("names both calls in the error's message", async () => {
    const error = await rejects(replay(shippingReordered, await exported(runs[2]!.id)), NonDeterminismError);
    assert.match(error.message, /at step 'reserve#1' of run [0-9a-f-]+: the journal recorded task 'reserve' before task 'pack' \(step 'pack#1'\)/);
  });

  it("reports a call where the journal has another kind at that key", async () => {
    const sleepy = changed(async (run, order) => {
      await run.sleep("reserve", 1);
      await pack.start(run, order);
    });
    assert.deepEqual(await divergence(sleepy, await exported(runs[0]!.id)), {
      runId: runs[0]!.id, step: "reserve#1", recorded: { kind: "task", name: "reserve" },
      call: { key: "reserve#1", kind: "sleep", name: "reserve" },
    });
  });

  it("reports a step added after the end of a completed run, and passes runs in flight", async () => {
    const audit = task({ ...notify.options, name: "audit" });
    const longer = changed(async (run, order) => {
      await shipping.options.handler(run, order);
      await audit.start(run, { n: order.n, tracking: null });
    });
    const completed = runs.find((r) => r.state === "completed")!;
    assert.deepEqual(await divergence(longer, await exported(completed.id)), {
      runId: completed.id, step: null, recorded: null, call: { key: "audit#1", kind: "task", name: "audit" },
    });
    const waiting = runs.find((r) => r.state === "waiting")!;
    assert.equal((await replay(longer, await exported(waiting.id))).end, "journal-end");
  });
});

describe("replay of concurrent calls and children", () => {
  it("passes calls recorded in another order than the code made them: a task left running while others complete", async () => {
    const slowGate = gate();
    const slow = task({ name: "slow", handler: async () => (await slowGate.wait(), "slow") });
    const fast = task({ name: "fast", handler: () => "fast" });
    const then = task({ name: "then", handler: (x: string) => `${x}+then` });
    const wf = workflow({ name: unique("concurrent") }).v("1", {
      async handler(run) {
        const running = slow.start(run, null);
        const at = await run.now();
        const quick = await fast.start(run, null);
        const both = await Promise.all([running, then.start(run, quick)]);
        return { at: at.toISOString(), both };
      },
    });
    const worker = await env.spawn({ workflows: [wf] });
    const handle = await wf.start(env.aiki, null);
    await until("then#1 recorded while slow#1 runs", async () =>
      (await handle.get()).journal?.some((s) => s.key === "then#1") || undefined);
    slowGate.open();
    await handle.result({ timeout: 15_000 });
    await worker.stop();
    const run = await exported(handle.id) as { timeline: { key: string; completed_at: string }[] };
    const byTime = [...run.timeline].sort((a, b) => Date.parse(a.completed_at) - Date.parse(b.completed_at)).map((s) => s.key);
    assert.deepEqual(byTime, ["now#1", "fast#1", "then#1", "slow#1"], "recorded in another order than made (slow#1 first)");
    assert.deepEqual(await replay(wf, run), { runId: handle.id, status: "completed", end: "returned", steps: 4, orderChecked: true });
  });

  it("passes a parent that started a child and waited for it", async () => {
    const child = workflow({ name: unique("child") }).v("1", { handler: async (_run, n: number) => n * 2 });
    const parent = workflow({ name: unique("parent") }).v("1", {
      async handler(run, n: number) {
        const started = await child.startAsChild(run, n);
        const outcome = await started.waitForStatus("completed");
        return outcome.success ? outcome.state.output : null;
      },
    });
    const worker = await env.spawn({ workflows: [parent, child] });
    const handle = await parent.start(env.aiki, 21);
    assert.equal(await handle.result({ timeout: 15_000 }), 42);
    await worker.stop();
    assert.equal((await replay(parent, await exported(handle.id))).end, "returned");
    const orphan = workflow({ name: parent.name }).v("1", { handler: async () => 42 });
    assert.deepEqual(await divergence(orphan, await exported(handle.id)), {
      runId: handle.id, step: `${child.name}#1`, recorded: { kind: "child", name: child.name }, call: null,
    });
  });
});

describe("replay of encoded runs and continue-as-new chains", () => {
  /** The runs of one replay-countdown chain from n = 2, encrypted: two continued, the last completed. */
  let chain: string[];
  before(async () => {
    const encrypting = env.client({ codec });
    const worker = await env.spawn({ workflows: [countdown] }, encrypting);
    const handle = await countdown.start(encrypting, { n: 2, total: 0 });
    assert.deepEqual(await handle.result({ timeout: 15_000 }), { total: 6 });
    await worker.stop();
    const rows = await env.sql<{ id: string }[]>`
      select id::text from aiki.runs where chain_id = ${handle.id}::uuid order by created_at, id`;
    chain = rows.map((r) => r.id);
    assert.equal(chain.length, 3);
  });

  it("replays each run of an encrypted chain clean with the codec, its order checked", async () => {
    const ends = [];
    for (const id of chain) {
      const run = await exported(id) as { input: unknown };
      assert.ok(JSON.stringify(run.input).includes('"$aiki"'), "the export holds the envelope");
      const result = await replay(countdown, run, { codec });
      assert.equal(result.orderChecked, true);
      ends.push([result.status, result.end]);
    }
    assert.deepEqual(ends, [["continued", "continued"], ["continued", "continued"], ["completed", "returned"]]);
    assert.equal((await replay(countdown, await env.aiki.getRun(chain[0]!), { codec })).end, "continued");
  });

  it("refuses an encrypted run without the codec with CodecError codec_missing, not a divergence", async () => {
    for (const id of chain) {
      const error = await rejects(replay(countdown, await exported(id)), CodecError);
      assert.equal(error.code, "codec_missing");
      assert.equal(error.keyId, "test");
      assert.match(error.message, new RegExp(`^replay of run ${id} needs the codec its payloads were encoded with \\(replay\\(version, run, \\{ codec \\}\\); aiki replay --codec-module <file>\\): `));
      assert.match(error.message, /input of a run of workflow replay-countdown is encrypted \(key test\)/);
    }
  });

  it("reports code that completes a run that continued as new, and code that continues a run that completed", async () => {
    const stops = workflow({ name: "replay-countdown" }).v("1", {
      async handler(run, input: { n: number; total: number }) {
        await double.start(run, input.n);
        return { total: input.total };
      },
    });
    const error = await rejects(replay(stops, await exported(chain[0]!), { codec }), NonDeterminismError);
    assert.match(error.message, /^non-determinism in run [0-9a-f-]+: the run continued as new after its last recorded step, the code now returns a value/);
    assert.deepEqual(error.divergence, { runId: chain[0], step: null, recorded: null, call: null });
    const goesOn = workflow({ name: "replay-countdown" }).v("1", {
      async handler(run, input: { n: number; total: number }) {
        await double.start(run, input.n);
        return run.continueAsNew({ n: input.n, total: input.total });
      },
    });
    const late = await rejects(replay(goesOn, await exported(chain[2]!), { codec }), NonDeterminismError);
    assert.match(late.message, /^non-determinism in run [0-9a-f-]+: the run completed after its last recorded step, the code now continues as new/);
  });

  it("reports code that continues as another workflow: run.continueAsNew refuses it, as in a worker", async () => {
    const elsewhere = workflow({ name: "replay-countdown" }).v("1", {
      async handler(run, input: { n: number; total: number }) {
        await double.start(run, input.n);
        return run.continueAsNew({ n: 0, total: 0 }, { version: shipping as never });
      },
    });
    const error = await rejects(replay(elsewhere, await exported(chain[0]!), { codec }), NonDeterminismError);
    assert.match(error.message, /\(continued\): the code threw InvalidInputError: run [0-9a-f-]+ of workflow replay-countdown cannot continue as workflow replay-shipping after its last recorded step/);
  });

  it("reports a call past the journal of a run that continued as new", async () => {
    const longer = workflow({ name: "replay-countdown" }).v("1", {
      async handler(run, input: { n: number; total: number }) {
        await double.start(run, input.n);
        await double.start(run, input.n);
        return run.continueAsNew({ n: input.n - 1, total: input.total });
      },
    });
    const error = await rejects(replay(longer, await exported(chain[0]!), { codec }), NonDeterminismError);
    assert.deepEqual(error.divergence, { runId: chain[0], step: null, recorded: null, call: { key: "double#2", kind: "task", name: "double" } });
    assert.match(error.message, /the run continued as new after its last recorded step, the code now calls task 'double' \(step 'double#2'\)/);
  });
});

describe("replay input", () => {
  it("refuses a run of another workflow version", async () => {
    const other = workflow({ name: "replay-shipping" }).v("2", { handler: async () => null });
    const error = await rejects(replay(other, await exported(runs[0]!.id)), InvalidInputError);
    assert.match(error.message, /is of workflow replay-shipping@1, not replay-shipping@2/);
  });

  it("refuses a malformed export, naming the field and its value", async () => {
    await assert.rejects(replay(shipping, "run"), /recorded run: the run must be an object/);
    await assert.rejects(replay(shipping, { id: runs[0]!.id }), /recorded run: journal must be an array of steps/);
    const run = await exported(runs[0]!.id) as { timeline: Record<string, unknown>[] };
    run.timeline[0]!.kind = "teleport";
    const error = await rejects(replay(shipping, run), InvalidInputError);
    assert.equal(error.code, "AK003");
    assert.match(error.message, /recorded run: timeline\[0\]\.kind must be one of task, sleep, event, child, wait_child, value, not "teleport"/);
  });
});
