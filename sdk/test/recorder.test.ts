// recorder: the worker's group commit. Step records and run ends of many runs go to the engine as
// one `record` call; a task's result may reach the code before it is durable, exactly as the
// journal will give it back; the engine answers each write on its own, so one bad write fails
// alone.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import type { Sql } from "postgres";
import * as engine from "../engine.js";
import { event, task, workflow, type Client } from "../index.js";
import { environment, gate, unique, until, untilStatus, type Env } from "./support.js";

let env: Env;
before(async () => {
  env = await environment();
});
after(() => env.close());

/**
 * A client whose pool counts the `aiki.record` calls made through it, those refused, and how
 * many times each run's writes were sent.
 */
function counting(aiki: Client): { client: Client; records: () => number; refused: () => number; sent: Map<string, number> } {
  let records = 0;
  let refused = 0;
  const sent = new Map<string, number>();
  const sql = new Proxy(aiki.sql, {
    apply(target, thisArg, args: unknown[]) {
      const query = Reflect.apply(target, thisArg, args) as Promise<unknown>;
      const strings = args[0] as readonly string[] | undefined;
      if (!Array.isArray(strings) || !strings.join("").includes("aiki.record(")) return query;
      records++;
      for (const w of (args[1] as { value: engine.RecordWrite[] }).value) sent.set(w.run_id, (sent.get(w.run_id) ?? 0) + 1);
      return query.catch((error) => {
        refused++;
        throw error;
      });
    },
  }) as Sql;
  return { client: { ...aiki, sql }, records: () => records, refused: () => refused, sent };
}

describe("recorder", () => {
  it("records the steps and ends of many runs in fewer calls than runs", async () => {
    const step = task({ name: "step", handler: (n: number) => n * 2 });
    const wf = workflow({ name: unique("batched") }).v("1", {
      async handler(run, n: number) {
        return { doubled: await step.start(run, n) };
      },
    });
    const runs = await Promise.all(Array.from({ length: 40 }, (_, n) => wf.start(env.aiki, n)));
    const { client, records } = counting(env.client());
    await env.spawn({ workflows: [wf], concurrency: 20 }, client);
    const outputs = await Promise.all(runs.map((r) => r.result({ timeout: 15_000 })));
    assert.deepEqual(outputs, runs.map((_, n) => ({ doubled: n * 2 })));
    for (const [n, r] of runs.entries()) {
      const journal = (await env.aiki.getRun(r.id)).journal ?? [];
      assert.deepEqual(journal.map((s) => [s.key, s.output]), [["step#1", n * 2]]);
    }
    assert.ok(records() < runs.length, `${records()} record calls for ${runs.length} runs`);
  });

  it("hands the code a task's result as the journal gives it back, on the first run and on replay", async () => {
    const seen: string[][] = [];
    const shape = task({ name: "shape", handler: () => ({ zeta: 1, b: 2, alpha: { y: 1, x: 2 }, 10: 3, 2: 4 }) });
    const wf = workflow({ name: unique("keys") }).v("1", {
      events: { go: event() },
      async handler(run) {
        const result = await shape.start(run, null);
        seen.push([...Object.keys(result), ...Object.keys(result.alpha)]);
        await run.events.go.wait();
        return null;
      },
    });
    await env.spawn({ workflows: [wf] });
    const handle = await wf.start(env.aiki, null);
    await untilStatus(env.aiki, handle.id, "waiting");
    await handle.events.go.send(undefined);
    await handle.result({ timeout: 10_000 });
    // jsonb orders keys by length, then bytes; JavaScript lists integer keys first.
    assert.deepEqual(seen, [["2", "10", "b", "zeta", "alpha", "x", "y"], ["2", "10", "b", "zeta", "alpha", "x", "y"]]);
  });

  it("answers each write on its own: a cancelled run's end is lost, the others of its batch land", async () => {
    const release = gate();
    const wait = task({ name: "wait", handler: () => release.wait().then(() => "done") });
    const wf = workflow({ name: unique("refused") }).v("1", {
      async handler(run) {
        return { got: await wait.start(run, null) };
      },
    });
    const { client, refused, sent } = counting(env.client());
    const worker = await env.spawn({ workflows: [wf], concurrency: 10 }, client);
    const runs = await Promise.all(Array.from({ length: 4 }, () => wf.start(env.aiki, null)));
    await until("every run to be running", async () => {
      const all = await Promise.all(runs.map((r) => env.aiki.getRun(r.id)));
      return all.every((r) => r.status === "running") ? true : undefined;
    });
    await engine.cancel(env.aiki.sql, runs[0]!.id, "test");
    release.open(); // all four results reach their handlers in one turn: one batch
    for (const r of runs.slice(1)) assert.deepEqual(await r.result({ timeout: 10_000 }), { got: "done" });
    assert.equal((await env.aiki.getRun(runs[0]!.id)).status, "cancelled");
    assert.equal(refused(), 0, "no record call was refused as a whole");
    assert.deepEqual(runs.map((r) => sent.get(r.id)), [1, 1, 1, 1], "each run's write was sent once");
    await until("the cancelled run's execution to end as lost", () => (worker.stats.ended.lost >= 1 ? true : undefined));
  });

  it("300 healthy runs beside one poisoned run: each write is sent once, none is retried, the poisoned run fails at once", async () => {
    let poisonCalls = 0;
    const work = task({
      name: "work",
      handler: (poison: boolean) => {
        if (!poison) return "ok";
        poisonCalls++;
        return "x".repeat(1_100_000); // over the engine's payload limit: refused in SQL (AK007)
      },
    });
    const wf = workflow({ name: unique("poison") }).v("1", {
      async handler(run, poison: boolean) {
        return await work.start(run, poison);
      },
    });
    const poisoned = await wf.start(env.aiki, true);
    const healthy = await Promise.all(Array.from({ length: 300 }, () => wf.start(env.aiki, false)));
    const { client, refused, sent, records } = counting(env.client());
    await env.spawn({ workflows: [wf], concurrency: 100 }, client);
    await Promise.all(healthy.map((r) => r.result({ timeout: 30_000 })));
    const failed = await untilStatus(env.aiki, poisoned.id, "failed");
    assert.match((failed.error as { message: string }).message, /^step output is \d+ bytes, over the limit of 1048576 bytes$/);
    assert.equal(poisonCalls, 1, "the poisoned task ran once");
    assert.equal(refused(), 0, "no record call was refused as a whole");
    assert.deepEqual(new Set(healthy.map((r) => sent.get(r.id))), new Set([1]), "each healthy run's write was sent exactly once");
    assert.equal(sent.get(poisoned.id), 1, "the poisoned write was sent once, not retried");
    assert.ok(records() <= 301, `${records()} record calls`);
  });
});
