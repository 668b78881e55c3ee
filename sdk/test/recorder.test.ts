// recorder: the worker's group commit. Step records and run ends of many runs go to the engine as
// one `record` call; a task's result may reach the code before it is durable, exactly as the
// journal will give it back; a batch the engine refuses is retried write by write.
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

/** A client whose pool counts the `aiki.record` calls made through it, and those refused. */
function counting(aiki: Client): { client: Client; records: () => number; refused: () => number } {
  let records = 0;
  let refused = 0;
  const sql = new Proxy(aiki.sql, {
    apply(target, thisArg, args: unknown[]) {
      const query = Reflect.apply(target, thisArg, args) as Promise<unknown>;
      const strings = args[0] as readonly string[] | undefined;
      if (!Array.isArray(strings) || !strings.join("").includes("aiki.record(")) return query;
      records++;
      return query.catch((error) => {
        refused++;
        throw error;
      });
    },
  }) as Sql;
  return { client: { ...aiki, sql }, records: () => records, refused: () => refused };
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

  it("retries a refused batch write by write: a cancelled run's end is dropped, the others land", async () => {
    const release = gate();
    const wait = task({ name: "wait", handler: () => release.wait().then(() => "done") });
    const wf = workflow({ name: unique("refused") }).v("1", {
      async handler(run) {
        return { got: await wait.start(run, null) };
      },
    });
    const { client, refused } = counting(env.client());
    const worker = await env.spawn({ workflows: [wf], concurrency: 10 }, client);
    const runs = await Promise.all(Array.from({ length: 4 }, () => wf.start(env.aiki, null)));
    await until("every run to be running", async () => {
      const all = await Promise.all(runs.map((r) => env.aiki.getRun(r.id)));
      return all.every((r) => r.status === "running") ? true : undefined;
    });
    await engine.cancel(env.aiki.sql, runs[0]!.id, "test");
    release.open(); // all four results reach their handlers in one turn: one batch, refused (AK001)
    for (const r of runs.slice(1)) assert.deepEqual(await r.result({ timeout: 10_000 }), { got: "done" });
    assert.equal((await env.aiki.getRun(runs[0]!.id)).status, "cancelled");
    assert.ok(refused() >= 1, "the batch holding the cancelled run's end was refused");
    await until("the cancelled run's execution to end as lost", () => (worker.stats.ended.lost >= 1 ? true : undefined));
  });
});
