// Enqueue-to-start latency: the time from calling workflow.start() to the first task's handler
// starting, with one idle worker on default settings (so its 5 s safety poll cannot be what wakes
// it: the queue's notification does). Measured, printed as a test diagnostic, not asserted —
// the figure depends on the machine.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { task, workflow } from "../index.js";
import { environment, latch, unique, type Env, type Latch } from "./support.js";

let env: Env;
before(async () => {
  env = await environment();
});
after(() => env.close());

const percentile = (sorted: number[], p: number) => sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)]!;

describe("worker latency", () => {
  it("measures start() to first task start over 50 serial runs (idle worker, woken by NOTIFY)", async (t) => {
    let started: Latch<number> = latch("the first task to start");
    const first = task({ name: "first", handler: () => void started.raise(performance.now()) });
    const wf = workflow({ name: unique("latency") }).v("1", {
      async handler(run) {
        await first.start(run, null);
      },
    });
    const w = await env.spawn({ workflows: [wf], pollMs: 5_000 });

    const samples: number[] = [];
    for (let i = 0; i < 55; i++) {
      started = latch(`run ${i}'s first task to start`);
      const enqueued = performance.now(); // start() included: its commit is what the worker hears
      const handle = await wf.start(env.aiki, null);
      const begun = await started.wait(10_000);
      await handle.result({ timeout: 10_000 });
      if (i >= 5) samples.push(begun - enqueued); // the first five warm up connections and JIT
    }
    assert.equal(samples.length, 50);
    assert.equal(w.stats.claimed, 55);

    const sorted = [...samples].sort((a, b) => a - b);
    const line = `enqueue-to-start over ${samples.length} serial runs: ` +
      `p50 ${percentile(sorted, 50).toFixed(1)} ms, p90 ${percentile(sorted, 90).toFixed(1)} ms, ` +
      `p99 ${percentile(sorted, 99).toFixed(1)} ms, max ${sorted.at(-1)!.toFixed(1)} ms, min ${sorted[0]!.toFixed(1)} ms`;
    t.diagnostic(line);
    console.log(`# ${line}`);
  });
});
