// Workloads 2 and 3, throughput burn-down: N runs (or jobs) are started in bulk before any worker
// runs; the clock runs from the workers' start until the database holds no unfinished one.
// Commits come from pg_stat_database.xact_commit of the system's own database, WAL bytes from
// pg_current_wal_lsn(), CPU from /proc (Postgres) and process.cpuUsage() (Node).
import type { Section } from "../report.js";
import type { Kind, System } from "../systems/types.js";
import {
  Countdown, delta, readCounters, resetStatements, statsSettle, topStatements, until, type Delta,
} from "../support.js";
import { makeSystem, withSystem, type Context, type SystemId } from "./context.js";

export interface Throughput {
  system: string;
  runs: number;
  steps: number;
  runsPerSecond: number;
  stepsPerSecond: number;
  delta: Delta;
}

const lineup: SystemId[] = ["aiki", "graphile", "graphile-batched", "pg-boss"];

async function burnDown(ctx: Context, system: System, url: string, kind: Kind, runs: number): Promise<Throughput> {
  const stepsPerRun = kind === "one" ? 1 : 3;
  await system.enqueue(kind, runs);
  await resetStatements(ctx.server, url);
  await statsSettle();
  const tasks = new Countdown(runs * stepsPerRun);
  const before = await readCounters(ctx.server, url);
  await system.start({ onTask: () => tasks.tick() });
  await tasks.reached;
  await until(`${system.name} to finish its ${kind}-task runs`, async () => (await system.remaining()) === 0, 600_000, 10);
  const seconds = (performance.now() - before.at) / 1000;
  await system.stop();
  await statsSettle();
  const after = await readCounters(ctx.server, url);
  const d = delta(before, after, seconds);
  return {
    system: system.name, runs, steps: runs * stepsPerRun,
    runsPerSecond: runs / seconds, stepsPerSecond: (runs * stepsPerRun) / seconds, delta: d,
  };
}

export async function throughput(ctx: Context, kind: Kind): Promise<{ section: Section; results: Throughput[] }> {
  const runs = kind === "one" ? ctx.settings.burnDown : ctx.settings.threeTask;
  const results: Throughput[] = [];
  const statements: NonNullable<Section["statements"]> = [];
  for (const id of lineup) {
    const result = await withSystem(ctx, makeSystem(id, ctx.settings), async (system, url) => {
      const r = await burnDown(ctx, system, url, kind, runs);
      if (id === "aiki") statements.push({ system: system.name, rows: await topStatements(ctx.server, url) });
      return r;
    });
    const d = result.delta;
    ctx.log(`  ${result.system}: ${result.runsPerSecond.toFixed(0)} runs/s, ${result.stepsPerSecond.toFixed(0)} steps/s, ` +
      `${(d.commits / result.steps).toFixed(2)} commits/step, Node ${(d.nodeCpuMs / result.steps * 1000).toFixed(0)} µs/step, ` +
      `Postgres ${d.pgCpuMs === null ? "?" : (d.pgCpuMs / result.steps * 1000).toFixed(0)} µs/step`);
    results.push(result);
  }
  const perStep = (r: Throughput, v: number | null) => (v === null ? null : v / r.steps);
  const section: Section = kind === "one"
    ? {
        id: "burn-down",
        title: `2. Throughput burn-down: ${runs.toLocaleString("en-US")} pre-started one-task workflows / jobs`,
        columns: ["runs/s", "commits/run", "WAL bytes/run", "Node CPU µs/run", "Postgres CPU µs/run"],
        rows: results.map((r) => ({
          system: r.system,
          values: [r.runsPerSecond, perStep(r, r.delta.commits), perStep(r, r.delta.walBytes),
                   perStep(r, r.delta.nodeCpuMs * 1000), perStep(r, r.delta.pgCpuMs === null ? null : r.delta.pgCpuMs * 1000)],
        })),
        ratioColumn: 0,
        statements,
      }
    : {
        id: "three-task",
        title: `3. Three-task workflows: ${runs.toLocaleString("en-US")} runs (graphile-worker, pg-boss: chains of three jobs)`,
        columns: ["runs/s", "steps/s", "commits/step", "WAL bytes/step", "Node CPU µs/step", "Postgres CPU µs/step"],
        rows: results.map((r) => ({
          system: r.system,
          values: [r.runsPerSecond, r.stepsPerSecond, perStep(r, r.delta.commits), perStep(r, r.delta.walBytes),
                   perStep(r, r.delta.nodeCpuMs * 1000), perStep(r, r.delta.pgCpuMs === null ? null : r.delta.pgCpuMs * 1000)],
        })),
        ratioColumn: 1,
        statements,
      };
  return { section, results };
}
