// Shared plumbing of the benchmarks: the server, fresh databases, clocks, percentiles, and the
// counters read around a measurement (commits, WAL bytes, CPU of Node and of Postgres).
import postgres, { type Sql } from "postgres";
import { readFileSync, readdirSync } from "node:fs";

export const quiet = { onnotice: () => {} } as const;

export interface Server {
  /** URL of the maintenance database, used to create and drop the per-system databases. */
  adminUrl: string;
  /** Postmaster pid when the server runs on this machine (embedded), for its CPU time. */
  postmasterPid?: number;
  hasStatStatements: boolean;
}

export interface Settings {
  mode: "quick" | "full";
  /** Concurrent jobs / runs per system. */
  concurrency: number;
  /** Connections a system's pool may open (plus one LISTEN connection where it uses one). */
  pool: number;
  /** Workload sizes. */
  burnDown: number;
  threeTask: number;
  latencySerial: number;
  latencyRate: number;
  latencyLoadSeconds: number;
  events: number;
  timers: number;
  timerSpreadSeconds: number;
  backlog: number;
  claimSamples: number;
  fanOut: number;
  physicalSeconds: number;
  /** Idle-path samples (lone sleeps; start+send and retries: up to 200), and lanes run side by side. */
  idleSleeps: number;
  idleLanes: number;
  /** Serial runs per fleet configuration. */
  fleetSamples: number;
}

export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

/** Drops and creates database `name`; returns its URL. Every system gets a new one per workload. */
export async function freshDatabase(server: Server, name: string): Promise<string> {
  const admin = postgres(server.adminUrl, { max: 1, ...quiet });
  try {
    await admin.unsafe(`drop database if exists ${name} with (force)`);
    await admin.unsafe(`create database ${name}`);
  } finally {
    await admin.end();
  }
  return withDatabase(server.adminUrl, name);
}

export async function dropDatabase(server: Server, name: string): Promise<void> {
  const admin = postgres(server.adminUrl, { max: 1, ...quiet });
  try {
    await admin.unsafe(`drop database if exists ${name} with (force)`);
  } finally {
    await admin.end();
  }
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Milliseconds on a monotonic clock, with sub-millisecond precision. */
export const now = () => performance.now();

export interface Percentiles {
  n: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

export function percentiles(samples: number[]): Percentiles {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] ?? NaN;
  return { n: sorted.length, p50: at(0.5), p90: at(0.9), p99: at(0.99), max: sorted[sorted.length - 1] ?? NaN };
}

/** Polls `check` every `everyMs` until it is true; throws after `timeoutMs`. */
export async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs: number, everyMs = 20) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

/** A counter that resolves `reached` when it hits a target. */
export class Countdown {
  count = 0;
  lastAt = 0;
  private resolve: () => void = () => {};
  readonly reached: Promise<void>;
  constructor(readonly target: number) {
    this.reached = new Promise((resolve) => (this.resolve = resolve));
    if (target <= 0) this.resolve();
  }
  tick(): void {
    this.count++;
    this.lastAt = now();
    if (this.count === this.target) this.resolve();
  }
}

// ---- counters around a measurement ----------------------------------------------------------

export interface Counters {
  at: number;
  commits: number;
  walBytes: number;
  nodeCpuMs: number;
  pgCpuMs: number | null;
}

export interface Delta {
  seconds: number;
  commits: number;
  walBytes: number;
  nodeCpuMs: number;
  pgCpuMs: number | null;
}

const ticksPerSecond = 100; // USER_HZ on Linux

function procCpuMs(pid: number, withChildren: boolean): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // Fields after the command: state(0) ppid(1) … utime(11) stime(12) cutime(13) cstime(14).
    const ticks = Number(fields[11]) + Number(fields[12]) + (withChildren ? Number(fields[13]) + Number(fields[14]) : 0);
    return (ticks * 1000) / ticksPerSecond;
  } catch {
    return 0;
  }
}

/** CPU of the postmaster, its live children, and the children it has reaped. */
export function postgresCpuMs(postmasterPid: number): number {
  let total = procCpuMs(postmasterPid, true);
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === postmasterPid) total += procCpuMs(Number(entry), false);
    } catch {
      // the process ended meanwhile
    }
  }
  return total;
}

/** Commits of one database and the server's WAL position, Node's and Postgres's CPU time. */
export async function readCounters(server: Server, url: string): Promise<Counters> {
  const sql = postgres(url, { max: 1, ...quiet });
  try {
    const [row] = await sql<{ commits: string; lsn: string }[]>`
      select (select xact_commit from pg_stat_database where datname = current_database()) as commits,
             pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::text as lsn`;
    const cpu = process.cpuUsage();
    return {
      at: now(),
      commits: Number(row!.commits),
      walBytes: Number(row!.lsn),
      nodeCpuMs: (cpu.user + cpu.system) / 1000,
      pgCpuMs: server.postmasterPid ? postgresCpuMs(server.postmasterPid) : null,
    };
  } finally {
    await sql.end();
  }
}

export function delta(before: Counters, after: Counters, seconds?: number): Delta {
  return {
    seconds: seconds ?? (after.at - before.at) / 1000,
    // Our own counter read is one commit.
    commits: after.commits - before.commits - 1,
    walBytes: after.walBytes - before.walBytes,
    nodeCpuMs: after.nodeCpuMs - before.nodeCpuMs,
    pgCpuMs: after.pgCpuMs !== null && before.pgCpuMs !== null ? after.pgCpuMs - before.pgCpuMs : null,
  };
}

/** Backends report their statistics at most once a second; wait until they have. */
export const statsSettle = () => sleep(1_100);

/** pg_stat_statements of one database, top statements by total time (when the extension is loaded). */
export async function topStatements(server: Server, url: string, limit = 8) {
  if (!server.hasStatStatements) return [];
  const sql = postgres(url, { max: 1, ...quiet });
  try {
    return await sql<{ query: string; calls: number; total_ms: number; mean_ms: number }[]>`
      select left(regexp_replace(query, '\\s+', ' ', 'g'), 110) as query, calls::int,
             round(total_exec_time::numeric, 1)::float8 as total_ms, round(mean_exec_time::numeric, 3)::float8 as mean_ms
      from pg_stat_statements s join pg_database d on d.oid = s.dbid
      where d.datname = current_database() and toplevel
      order by total_exec_time desc limit ${limit}`;
  } finally {
    await sql.end();
  }
}

export async function resetStatements(server: Server, url: string): Promise<void> {
  if (!server.hasStatStatements) return;
  const sql = postgres(url, { max: 1, ...quiet });
  try {
    await sql`create extension if not exists pg_stat_statements`;
    await sql`select pg_stat_statements_reset()`;
  } finally {
    await sql.end();
  }
}

export type { Sql };
