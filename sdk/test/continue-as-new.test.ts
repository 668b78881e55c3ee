// run.continueAsNew: a workflow loop that ends each run after a bounded number of steps and goes
// on in a successor with a fresh journal. The chain stands as one run to its idempotency key, to
// a handle's waitForStatus/result and to a parent that waits for it.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { task, workflow } from "../index.js";
import { environment, unique, type Env } from "./support.js";

let env: Env;
before(async () => {
  env = await environment();
});
after(() => env.close());

describe("run.continueAsNew", () => {
  it("runs a loop of 10,000 iterations as 100 runs of 100 steps each, linked in one chain", async () => {
    const add = task({ name: "add", async handler(input: { sum: number; i: number }) { return input.sum + input.i; } });
    const loop = workflow({ name: unique("loop") }).v("1", {
      async handler(run, input: { i: number; sum: number }) {
        let { i, sum } = input;
        for (const end = Math.min(i + 100, 10_000); i < end; i++) sum = await add.start(run, { sum, i });
        if (i < 10_000) return run.continueAsNew({ i, sum });
        return { i, sum };
      },
    });
    await env.spawn({ workflows: [loop] });
    const key = unique("key");
    const handle = await loop.start(env.aiki, { i: 0, sum: 0 }, { idempotencyKey: key });

    // The first run's handle follows the chain to its final outcome.
    assert.deepEqual(await handle.result({ timeout: 300_000 }), { i: 10_000, sum: 49_995_000 });
    assert.equal(await handle.status(), "continued");

    const chain = await env.sql`
      select r.id, r.status::text, r.continued_from, r.continued_to, r.input,
             (select count(*)::int from aiki.steps s where s.run_id = r.id) as steps
        from aiki.runs r where r.chain_id = ${handle.id}::uuid`;
    assert.equal(chain.length, 100);
    const byId = new Map(chain.map((r) => [r.id as string, r]));
    const order: Record<string, any>[] = [];
    for (let r = byId.get(handle.id); r; r = r.continued_to ? byId.get(r.continued_to) : undefined) order.push(r);
    assert.equal(order.length, 100, "continued_to links every run of the chain, first to last");
    order.forEach((r, n) => {
      assert.equal(r.steps, 100, `run ${n} of the chain holds only its own 100 steps`);
      assert.equal(r.continued_from, n === 0 ? null : order[n - 1]!.id);
      assert.deepEqual(r.input.i, n * 100);
      assert.equal(r.status, n === 99 ? "completed" : "continued");
    });
    // The idempotency key finds the chain's newest run; the first stays readable by id.
    const found = await loop.handleByIdempotencyKey(env.aiki, key);
    assert.equal(found.id, order[99]!.id);
    assert.equal((await env.aiki.getRun(handle.id)).latest_id, order[99]!.id);
  });

  it("a parent waiting on a child that continues as new gets the outcome of the chain's last run", async () => {
    const child = workflow({ name: unique("countdown") }).v("1", {
      async handler(run, n: number) {
        await run.now();
        return n > 0 ? run.continueAsNew(n - 1) : "lift-off";
      },
    });
    const parent = workflow({ name: unique("parent") }).v("1", {
      async handler(run) {
        const handle = await child.startAsChild(run, 3);
        return handle.waitForStatus("completed");
      },
    });
    await env.spawn({ workflows: [parent, child] });
    const handle = await parent.start(env.aiki, null);
    assert.deepEqual(await handle.result({ timeout: 30_000 }),
      { success: true, state: { status: "completed", output: "lift-off" } });
    const [runs] = await env.sql`
      select count(*)::int as n from aiki.runs where workflow = ${child.name} and parent_id = ${handle.id}::uuid`;
    assert.equal(runs!.n, 4);
  });

  it("continues at a newer version of the same workflow when one is named", async () => {
    const name = unique("migrating");
    const v2 = workflow({ name }).v("2", { async handler(_run, input: string) { return `v2 got ${input}`; } });
    const v1 = workflow({ name }).v("1", {
      async handler(run, input: string) { return run.continueAsNew(`${input} from v1`, { version: v2 }); },
    });
    await env.spawn({ workflows: [v1, v2] });
    const handle = await v1.start(env.aiki, "state");
    assert.equal(await handle.result({ timeout: 30_000 }), "v2 got state from v1");
  });
});
