// Workload 8: a fleet of idle workers, NOTIFY against the relay. 1, 16 and 64 worker processes'
// worth of clients (each its own pool of one connection, as separate processes would have), all
// idle; runs are started one at a time and the clock stops when the first task starts. With
// NOTIFY every start wakes every worker (one wins the claim) and each worker holds a LISTEN
// connection; with the relay one hint wakes one worker, and one LISTEN connection serves all.
// "connections" counts the database's backends while the fleet is up (the starter's included).
import postgres from "postgres";
import { client, migrate, relay, task, workflow, worker, type Client, type WorkerHandle } from "../../sdk/index.js";
import { testRedis } from "../../sdk/testing/redis.js";
import type { Section } from "../report.js";
import { percentiles, quiet, sleep, until, type Percentiles } from "../support.js";
import { withDatabase, type Context } from "./context.js";

export interface FleetRow {
  mode: string;
  workers: number;
  latency: Percentiles;
  connections: number;
  /** Claim statements of the whole fleet per run. */
  claimsPerRun: number;
}

const SIZES = [1, 16, 64];

async function measure(ctx: Context, mode: string, size: number, redisUrl: string | undefined): Promise<FleetRow> {
  return withDatabase(ctx, async (url) => {
    const admin = postgres(url, { max: 1, ...quiet });
    await migrate(admin).finally(() => admin.end());
    let reading = 0;
    const log = (line: string) => {
      if (line.includes("reading wake-ups from the relay")) reading++;
      else if (/failed|error|unavailable/i.test(line)) console.error(line);
    };
    let started: (at: number) => void = () => {};
    const first = task({ name: "first", handler: () => started(performance.now()) });
    const wf = workflow({ name: "fleet" }).v("1", {
      async handler(run) {
        await first.start(run, null);
        return null;
      },
    });
    const starter = client({ url, max: 1, logger: { info: log, warn: log, error: log } });
    const clients: Client[] = [];
    const handles: WorkerHandle[] = [];
    const relayClient = redisUrl ? client({ url, max: 1, logger: { info: log, warn: log, error: log } }) : undefined;
    const relayHandle = redisUrl ? await relay({ client: relayClient!, redis: redisUrl }) : undefined;
    try {
      for (let i = 0; i < size; i++) {
        const c = client({ url, max: 1, logger: { info: log, warn: log, error: log } });
        clients.push(c);
        handles.push(await worker({ workflows: [wf], concurrency: 4, ...(redisUrl ? { relay: { url: redisUrl } } : {}) }).spawn(c));
      }
      // Every worker has made its first claim (and, with the relay, its first read of it).
      await sleep(500);
      if (redisUrl) await until("every worker to read from the relay", () => reading >= size, 60_000, 50);
      const [row] = await starter.sql<{ n: number }[]>`select count(*)::int as n from pg_stat_activity where datname = current_database()`;
      const claimsBefore = handles.reduce((n, h) => n + h.stats.claims, 0);
      const samples: number[] = [];
      const count = ctx.settings.fleetSamples;
      for (let k = 0; k < count + 5; k++) {
        const begun = new Promise<number>((resolve) => (started = resolve));
        const t0 = performance.now();
        const handle = await wf.start(starter, null);
        const ms = (await begun) - t0;
        await handle.result({ timeout: 30_000 });
        if (k >= 5) samples.push(ms);
        await sleep(5);
      }
      const claims = handles.reduce((n, h) => n + h.stats.claims, 0) - claimsBefore;
      const result: FleetRow = { mode, workers: size, latency: percentiles(samples), connections: row!.n, claimsPerRun: claims / (count + 5) };
      ctx.log(`  ${mode}, ${size} workers: start to first task p50 ${result.latency.p50.toFixed(2)} p99 ${result.latency.p99.toFixed(2)} ms, ` +
        `${result.connections} connections, ${result.claimsPerRun.toFixed(1)} claims per run`);
      return result;
    } finally {
      await Promise.all(handles.map((h) => h.stop({ timeoutMs: 2_000 })));
      await relayHandle?.stop();
      await Promise.all([...clients, starter, ...(relayClient ? [relayClient] : [])].map((c) => c.close()));
    }
  });
}

export async function fleet(ctx: Context): Promise<{ sections: Section[]; results: FleetRow[] }> {
  const rows: FleetRow[] = [];
  for (const size of SIZES) rows.push(await measure(ctx, "NOTIFY", size, undefined));
  const redis = await testRedis();
  if (redis) {
    try {
      for (const size of SIZES) rows.push(await measure(ctx, "relay", size, redis.url));
    } finally {
      await redis.stop();
    }
  } else {
    ctx.log("  relay: skipped (no redis-server on PATH and no REDIS_URL)");
  }
  return {
    results: rows,
    sections: [{
      id: "fleet",
      title: `8. Fleet of idle workers: start to first task, ms, and Postgres connections (${ctx.settings.fleetSamples} serial runs)`,
      columns: ["workers", "p50", "p99", "connections", "claims/run"],
      rows: rows.map((r) => ({ system: r.mode, values: [r.workers, r.latency.p50, r.latency.p99, r.connections, r.claimsPerRun] })),
      notes: ["Each worker has its own client with a pool of one connection, as a process of its own would; " +
        "the relay and the starter run in the same process. Connections include the starter's and the relay's."],
    }],
  };
}
