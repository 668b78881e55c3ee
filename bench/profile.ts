// `npx tsx bench/profile.ts [one|three] [runs]`: burns down pre-started aiki runs on an embedded
// Postgres with pg_stat_statements tracking nested statements, and prints where the time goes:
// statements per run (top-level calls and the statements inside the PL/pgSQL functions), their
// time per run, and the CPU of Node and of Postgres per run.
import { readFileSync } from "node:fs";
import postgres from "postgres";
import { startEmbeddedPostgres } from "../sdk/db/embedded.js";
import { AikiSystem } from "./systems/aiki.js";
import type { Kind } from "./systems/types.js";
import { Countdown, delta, freshDatabase, quiet, readCounters, statsSettle, until, type Server } from "./support.js";

const kind = (process.argv[2] ?? "one") as Kind;
const runs = Number(process.argv[3] ?? 5000);
const concurrency = Number(process.env.CONCURRENCY ?? 10);

const embedded = await startEmbeddedPostgres({
  settings: { shared_preload_libraries: "pg_stat_statements", "pg_stat_statements.track": "all" },
});
try {
  const server: Server = {
    adminUrl: embedded.url,
    postmasterPid: Number(readFileSync(`${embedded.dataDir}/postmaster.pid`, "utf8").split("\n")[0]),
    hasStatStatements: true,
  };
  const url = await freshDatabase(server, "profile");
  const aiki = new AikiSystem(concurrency, 10);
  await aiki.install(url);
  await aiki.enqueue(kind, runs);
  const sql = postgres(url, { max: 1, ...quiet });
  await sql`create extension if not exists pg_stat_statements`;
  await sql`select pg_stat_statements_reset()`;
  await statsSettle();
  const steps = runs * (kind === "one" ? 1 : 3);
  const tasks = new Countdown(steps);
  const before = await readCounters(server, url);
  await aiki.start({ onTask: () => tasks.tick() });
  await tasks.reached;
  await until("drain", async () => (await aiki.remaining()) === 0, 600_000, 10);
  const seconds = (performance.now() - before.at) / 1000;
  await aiki.stop();
  await statsSettle();
  const d = delta(before, await readCounters(server, url), seconds);
  console.log(`${runs} ${kind}-task runs in ${seconds.toFixed(2)} s: ${(runs / seconds).toFixed(0)} runs/s, ` +
    `${(steps / seconds).toFixed(0)} steps/s, ${(d.commits / runs).toFixed(2)} commits/run, ${(d.walBytes / runs).toFixed(0)} WAL bytes/run`);
  console.log(`CPU per run: Node ${(d.nodeCpuMs / runs * 1000).toFixed(0)} µs, Postgres ${((d.pgCpuMs ?? 0) / runs * 1000).toFixed(0)} µs`);
  const rows = await sql<{ toplevel: boolean; calls: number; total: number; query: string }[]>`
    select toplevel, calls::int, total_exec_time::float8 as total,
           left(regexp_replace(query, '\\s+', ' ', 'g'), 140) as query
    from pg_stat_statements s join pg_database d on d.oid = s.dbid
    where d.datname = current_database() and calls > ${runs / 20}
    order by toplevel desc, total_exec_time desc limit 40`;
  console.log("\nlevel   calls/run  µs/run  µs/call  statement");
  for (const r of rows) {
    console.log(`${r.toplevel ? "top   " : "nested"} ${(r.calls / runs).toFixed(2).padStart(9)} ${(r.total / runs * 1000).toFixed(0).padStart(7)} ` +
      `${(r.total / r.calls * 1000).toFixed(0).padStart(8)}  ${r.query}`);
  }
  await sql.end();
} finally {
  await embedded.stop();
}
