// `npm run bench [-- --full] [--only=burn-down,latency] [--set=burnDown=5000]`
//
// Runs the benchmark suite against DATABASE_URL or, without it, an embedded Postgres started here
// (with pg_stat_statements loaded). Every system gets a fresh database on the same server, the
// same Node process, connection budget and concurrency. Prints the tables and the targets, and
// writes bench/results/<timestamp>-<mode>.{md,json,svg}; updates the matching table in
// bench/RESULTS.md (only when every workload ran). Quick mode takes about three minutes on two
// cores; --full about a quarter of an hour. The first two workloads' sizes follow the issue:
// 20,000 / 200,000 one-task runs; the rest are scaled to keep the quick run short. The idle and
// fleet workloads (issue 9) measure NOTIFY and, when a redis-server is at hand, the relay; the
// schedules workload (issue 12) the claim's cost with 10,000 schedules.
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import postgres from "postgres";
import { startEmbeddedPostgres, type EmbeddedServer } from "../sdk/db/embedded.js";
import { chartSvg } from "./chart.js";
import { printTargets, reportMarkdown, sectionMarkdown, type Report, type Section } from "./report.js";
import { AikiSystem } from "./systems/aiki.js";
import { GraphileSystem } from "./systems/graphile.js";
import { PgBossSystem } from "./systems/pgboss.js";
import { quiet, type Server, type Settings } from "./support.js";
import { evaluate, type Measured } from "./targets.js";
import type { Context } from "./workloads/context.js";
import { events } from "./workloads/events.js";
import { fleet } from "./workloads/fleet.js";
import { idle } from "./workloads/idle.js";
import { latency } from "./workloads/latency.js";
import { physical } from "./workloads/physical.js";
import { scale } from "./workloads/scale.js";
import { schedules } from "./workloads/schedules.js";
import { throughput } from "./workloads/throughput.js";

const quick: Settings = {
  mode: "quick", concurrency: 10, pool: 10,
  burnDown: 20_000, threeTask: 3_000,
  latencySerial: 200, latencyRate: 200, latencyLoadSeconds: 3,
  events: 200, timers: 2_000, timerSpreadSeconds: 6,
  backlog: 200_000, claimSamples: 300, fanOut: 1_000,
  physicalSeconds: 2,
  idleSleeps: 200, idleLanes: 4, fleetSamples: 40,
};
const full: Settings = {
  ...quick, mode: "full",
  burnDown: 200_000, threeTask: 40_000,
  latencySerial: 1_000, latencyRate: 300, latencyLoadSeconds: 20,
  events: 1_000, timers: 10_000, timerSpreadSeconds: 60,
  claimSamples: 2_000, physicalSeconds: 10,
  idleSleeps: 500, idleLanes: 2, fleetSamples: 300,
};

const workloadIds = ["physical", "burn-down", "three-task", "latency", "events", "scale", "idle", "fleet", "schedules"] as const;
type WorkloadId = (typeof workloadIds)[number];

function parseArgs(argv: string[]) {
  const settings: Settings = { ...(argv.includes("--full") ? full : quick) };
  let only: WorkloadId[] = [...workloadIds];
  for (const arg of argv) {
    if (arg.startsWith("--only=")) {
      only = arg.slice(7).split(",") as WorkloadId[];
      for (const id of only) if (!workloadIds.includes(id)) throw new Error(`unknown workload ${id}; use ${workloadIds.join(", ")}`);
    } else if (arg.startsWith("--set=")) {
      const [key, value] = arg.slice(6).split("=");
      if (!(key! in settings) || key === "mode") throw new Error(`unknown setting ${key}`);
      (settings as unknown as Record<string, number>)[key!] = Number(value);
    } else if (arg !== "--full") {
      throw new Error(`unknown argument ${arg}`);
    }
  }
  return { settings, only };
}

async function startServer(): Promise<{ server: Server; embedded?: EmbeddedServer }> {
  if (process.env.DATABASE_URL) {
    const sql = postgres(process.env.DATABASE_URL, { max: 1, ...quiet });
    const [row] = await sql`select current_setting('shared_preload_libraries') like '%pg_stat_statements%' as has`;
    await sql.end();
    return { server: { adminUrl: process.env.DATABASE_URL, hasStatStatements: Boolean(row!.has) } };
  }
  const embedded = await startEmbeddedPostgres({
    settings: { shared_preload_libraries: "pg_stat_statements", "pg_stat_statements.track": "top" },
  });
  const postmasterPid = Number(readFileSync(`${embedded.dataDir}/postmaster.pid`, "utf8").split("\n")[0]);
  return { server: { adminUrl: embedded.url, postmasterPid, hasStatStatements: true }, embedded };
}

async function postgresInfo(url: string) {
  const sql = postgres(url, { max: 1, ...quiet });
  try {
    const [{ version }] = await sql`select version()` as unknown as [{ version: string }];
    const rows = await sql<{ name: string; setting: string; unit: string | null }[]>`
      select name, setting, unit from pg_settings
      where name in ('shared_buffers', 'max_connections', 'fsync', 'synchronous_commit', 'wal_level', 'commit_delay',
                     'work_mem', 'max_wal_size', 'checkpoint_timeout', 'autovacuum', 'shared_preload_libraries')
      order by name`;
    return {
      version: version.split(" on ")[0]!,
      settings: Object.fromEntries(rows.map((r) => [r.name, r.unit && /^\d+$/.test(r.setting) ? `${r.setting}×${r.unit}` : r.setting])),
    };
  } finally {
    await sql.end();
  }
}

function engineCommit(): string {
  try {
    const head = execFileSync("git", ["rev-parse", "HEAD"], { encoding: "utf8" }).trim();
    const dirty = execFileSync("git", ["status", "--porcelain", "--", "sql", "sdk", "migrations"], { encoding: "utf8" }).trim();
    return dirty ? `${head}+uncommitted` : head;
  } catch {
    return "unknown";
  }
}

/** Replaces the block between `<!-- <mode>:start -->` and `<!-- <mode>:end -->` in RESULTS.md. */
function updateResultsFile(mode: string, markdown: string): void {
  const file = new URL("./RESULTS.md", import.meta.url);
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    return;
  }
  const start = `<!-- ${mode}:start -->`;
  const end = `<!-- ${mode}:end -->`;
  const from = text.indexOf(start);
  const to = text.indexOf(end);
  if (from < 0 || to < from) return;
  writeFileSync(file, `${text.slice(0, from + start.length)}\n${markdown}\n${text.slice(to)}`);
}

const { settings, only } = parseArgs(process.argv.slice(2));
const commit = engineCommit();
process.env.AIKI_BENCH_COMMIT = commit.slice(0, 12);
const started = Date.now();
const startedAt = new Date().toISOString();
const { server, embedded } = await startServer();
const log = (line: string) => console.log(line);
const ctx: Context = { server, settings, log };
const sections: Section[] = [];
const measured: Measured = {};

try {
  log(`# aiki bench, ${settings.mode} mode, ${cpus().length} CPUs, concurrency ${settings.concurrency}, pool ${settings.pool}`);
  const run = async (id: WorkloadId, body: () => Promise<void>) => {
    if (!only.includes(id)) return;
    log(`\n## ${id}`);
    await body();
  };
  await run("physical", async () => {
    const r = await physical(ctx);
    sections.push(r.section);
    measured.physical = r.physical;
  });
  await run("burn-down", async () => {
    const r = await throughput(ctx, "one");
    sections.push(r.section);
    measured.burnDown = r.results;
  });
  await run("three-task", async () => {
    const r = await throughput(ctx, "three");
    sections.push(r.section);
    measured.threeTask = r.results;
  });
  await run("latency", async () => {
    const r = await latency(ctx);
    sections.push(...r.sections);
    measured.latency = r.results;
  });
  await run("events", async () => {
    const r = await events(ctx);
    sections.push(...r.sections);
    measured.events = r.results;
  });
  await run("scale", async () => {
    const r = await scale(ctx);
    sections.push(...r.sections);
    measured.scale = r.results;
  });
  await run("idle", async () => {
    const r = await idle(ctx);
    sections.push(...r.sections);
    measured.idle = r.results;
  });
  await run("fleet", async () => {
    const r = await fleet(ctx);
    sections.push(...r.sections);
    measured.fleet = r.results;
  });
  await run("schedules", async () => {
    const r = await schedules(ctx);
    sections.push(...r.sections);
  });

  const info = await postgresInfo(server.adminUrl);
  const report: Report = {
    mode: settings.mode,
    startedAt,
    durationSeconds: (Date.now() - started) / 1000,
    commit,
    node: process.version,
    postgres: { ...info, cpus: cpus().length },
    systems: [
      new AikiSystem(settings.concurrency, settings.pool),
      new GraphileSystem(false, settings.concurrency, settings.pool),
      new GraphileSystem(true, settings.concurrency, settings.pool),
      new PgBossSystem(settings.concurrency, settings.pool),
    ].map((s) => ({ name: s.name, version: s.version, settings: s.settings })),
    sections,
    targets: evaluate(measured),
  };

  const stamp = startedAt.replace(/[:.]/g, "-").slice(0, 19);
  const dir = new URL("./results/", import.meta.url);
  mkdirSync(dir, { recursive: true });
  const base = `${stamp}-${settings.mode}`;
  writeFileSync(new URL(`${base}.svg`, dir), chartSvg(report));
  const markdown = reportMarkdown(report, `${base}.svg`);
  writeFileSync(new URL(`${base}.md`, dir), markdown);
  writeFileSync(new URL(`${base}.json`, dir), JSON.stringify(report, null, 2));
  if (only.length === workloadIds.length) updateResultsFile(settings.mode, reportMarkdown(report, `results/${base}.svg`));

  log("\n" + sections.map(sectionMarkdown).join("\n\n"));
  log("\n### Targets\n" + printTargets(report.targets));
  log(`\nwrote bench/results/${base}.{md,json,svg} in ${Math.round(report.durationSeconds)} s`);
} finally {
  await embedded?.stop();
}
