// Workload 6, scale. Claim latency: one pending run is started and claimed (aiki.claim through
// the SDK's engine wrapper, limit 1) and completed, over and over, first in empty tables, then
// with a backlog of sleeping and finished runs. Fan-out: one parent starts N children and waits
// for all of them (fan-in), against N independent runs started at once.
import type { Section } from "../report.js";
import { AikiSystem } from "../systems/aiki.js";
import * as engine from "../../sdk/engine.js";
import { Countdown, now, percentiles, until, type Percentiles } from "../support.js";
import { withSystem, type Context } from "./context.js";

export interface ScaleResult {
  claimEmpty: Percentiles;
  claimBacklog: Percentiles;
  backlog: number;
  fanOutSeconds: number;
  independentSeconds: number;
  children: number;
}

/** Claim latency of one run: started, claimed with limit 1, completed, `samples` times after 20 warm-ups. */
export async function claimLatency(aiki: AikiSystem, samples: number): Promise<Percentiles> {
  const sql = aiki.client.sql;
  const times: number[] = [];
  for (let k = 0; k < samples + 20; k++) {
    await aiki.add("one", { i: k });
    const t0 = now();
    const claimed = await engine.claim(sql, "bench-claimer", null, ["default"], 1, 30_000);
    const ms = now() - t0;
    const run = claimed.runs[0];
    if (!run) throw new Error("claim found no run");
    await engine.completeRun(sql, run.id, run.lease_token, null);
    if (k >= 20) times.push(ms); // the first twenty warm up
  }
  return percentiles(times);
}

/** Half the backlog sleeps until tomorrow (a waiting sleep step each), half finished (a task step each). */
async function fillBacklog(aiki: AikiSystem, total: number): Promise<void> {
  const sql = aiki.client.sql;
  const half = Math.floor(total / 2);
  for (const [status, count] of [["sleeping", half], ["completed", total - half]] as const) {
    for (let from = 0; from < count; from += 50_000) {
      const n = Math.min(50_000, count - from);
      await sql.begin(async (tx) => {
        await tx`create temp table new_runs on commit drop as
                 select aiki._uuidv7() as id, now() - interval '1 hour' as created from generate_series(1, ${n}::int)`;
        await tx`
          insert into aiki.runs (id, available_at, created_at, updated_at, started_at, finished_at, status,
                                 workflow, version, queue, retry, input, output)
          select id, case when ${status} = 'sleeping' then now() + interval '1 day' end, created, created, created,
                 case when ${status} = 'completed' then created end, ${status}::aiki.run_status,
                 'one', '1', 'default', '{"type": "never", "maxAttempts": 1}', '{"i": 0}',
                 case when ${status} = 'completed' then 'null'::jsonb end
          from new_runs`;
        await tx`
          insert into aiki.steps (run_id, step_key, kind, status, name, attempts, output, wake_at, created_at, completed_at)
          select id, case when ${status} = 'sleeping' then 'until#1' else 'step-1#1' end,
                 case when ${status} = 'sleeping' then 'sleep' else 'task' end::aiki.step_kind,
                 case when ${status} = 'sleeping' then 'waiting' else 'completed' end::aiki.step_status,
                 case when ${status} = 'sleeping' then 'until' else 'step-1' end,
                 case when ${status} = 'sleeping' then 0 else 1 end, case when ${status} = 'completed' then '1'::jsonb end,
                 case when ${status} = 'sleeping' then now() + interval '1 day' end, created,
                 case when ${status} = 'completed' then created end
          from new_runs`;
      });
    }
  }
  await sql`vacuum analyze aiki.runs`;
  await sql`vacuum analyze aiki.steps`;
}

async function fanOut(ctx: Context, children: number): Promise<{ fanOutSeconds: number; independentSeconds: number }> {
  return withSystem(ctx, new AikiSystem(ctx.settings.concurrency, ctx.settings.pool), async (aiki) => {
    let independent = new Countdown(1);
    let parentDone = new Countdown(1);
    await aiki.start({ onTask: (_payload, step) => (step === 3 ? parentDone.tick() : independent.tick()) });
    await aiki.add("one", { i: -1 }); // warm-up
    await independent.reached;
    const drained = () => until("runs to finish", async () => (await aiki.remaining()) === 0, 120_000, 5);
    await drained();

    independent = new Countdown(children);
    let t0 = now();
    await aiki.enqueue("one", children);
    await independent.reached;
    await drained();
    const independentSeconds = (now() - t0) / 1000;

    independent = new Countdown(children);
    parentDone = new Countdown(1);
    t0 = now();
    await aiki.workflows.fan.start(aiki.client, { i: children });
    await parentDone.reached;
    await drained();
    const fanOutSeconds = (now() - t0) / 1000;
    return { fanOutSeconds, independentSeconds };
  });
}

export async function scale(ctx: Context): Promise<{ sections: Section[]; results: ScaleResult }> {
  const { settings } = ctx;
  const claims = await withSystem(ctx, new AikiSystem(settings.concurrency, settings.pool), async (aiki) => {
    const empty = await claimLatency(aiki, settings.claimSamples);
    const t0 = now();
    await fillBacklog(aiki, settings.backlog);
    ctx.log(`  backlog of ${settings.backlog.toLocaleString("en-US")} runs written in ${((now() - t0) / 1000).toFixed(1)} s`);
    const backlog = await claimLatency(aiki, settings.claimSamples);
    return { empty, backlog };
  });
  ctx.log(`  claim p50 ${claims.empty.p50.toFixed(2)} ms empty, ${claims.backlog.p50.toFixed(2)} ms with backlog`);
  const fan = await fanOut(ctx, settings.fanOut);
  ctx.log(`  ${settings.fanOut} children with fan-in ${fan.fanOutSeconds.toFixed(2)} s, independent ${fan.independentSeconds.toFixed(2)} s`);
  const results: ScaleResult = {
    claimEmpty: claims.empty, claimBacklog: claims.backlog, backlog: settings.backlog, children: settings.fanOut, ...fan,
  };
  const half = (settings.backlog / 2).toLocaleString("en-US");
  return {
    results,
    sections: [
      {
        id: "claim-latency",
        title: `6a. Claim latency, ms (aiki.claim of one run, round trip), empty vs ${half} sleeping + ${half} finished runs`,
        columns: ["samples", "p50", "p90", "p99", "max"],
        rows: [
          { system: "empty tables", values: [claims.empty.n, claims.empty.p50, claims.empty.p90, claims.empty.p99, claims.empty.max] },
          { system: "with backlog", values: [claims.backlog.n, claims.backlog.p50, claims.backlog.p90, claims.backlog.p99, claims.backlog.max] },
        ],
        notes: ["The backlog is vacuumed and analyzed before measuring, as autovacuum would have done."],
      },
      {
        id: "fan-out",
        title: `6b. Fan-out: ${settings.fanOut.toLocaleString("en-US")} children with fan-in vs as many independent runs`,
        columns: ["seconds", "runs/s"],
        rows: [
          { system: `1 parent, ${settings.fanOut} children, fan-in`, values: [fan.fanOutSeconds, settings.fanOut / fan.fanOutSeconds] },
          { system: `${settings.fanOut} independent runs`, values: [fan.independentSeconds, settings.fanOut / fan.independentSeconds] },
        ],
      },
    ],
  };
}
