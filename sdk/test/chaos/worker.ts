// A chaos worker process: `node --import tsx sdk/test/chaos/worker.ts`, configured by
//   CHAOS_DATABASE_URL  the database
//   CHAOS_WORKER_ID     lease owner id (unique per process incarnation)
//   CHAOS_LOG           JSON-lines file this process appends its evidence to
//   CHAOS_LEASE_MS      lease length
//   CHAOS_REDIS_URL     when set, the worker reads wake-ups from the relay's Redis
//
// Evidence. Every engine call the SDK makes goes through an instrumented postgres.js instance
// that appends one line per call of a lease-fenced function: what was called, for which run and
// lease token, when it was sent and answered, and how it ended (ok, or the SQLSTATE). Claims log
// the leases they got. Tasks log each execution's start and the moment its side effect is
// durable. Lines are written with appendFileSync before anything else happens, so they survive
// SIGKILL (the kernel holds them) and the controller can read them after the process is gone.
import { appendFileSync } from "node:fs";
import { randomUUID } from "node:crypto";
import type { Sql } from "postgres";
import { healingPool } from "../../db/pool.js";
import { client, worker, type Client } from "../../index.js";
import { defineWorkload } from "./workload.js";

const url = process.env.CHAOS_DATABASE_URL!;
const workerId = process.env.CHAOS_WORKER_ID!;
const logFile = process.env.CHAOS_LOG!;
const leaseMs = Number(process.env.CHAOS_LEASE_MS ?? 2000);

const record = (line: Record<string, unknown>) => appendFileSync(logFile, JSON.stringify(line) + "\n");

// The process's own pauses: a starved CPU or a stalled disk can stop this worker longer than its
// leases last with no fault injected, and another worker then rightly runs its tasks again. Each
// pause of the event loop over LAG_MS is logged (a `lag` line) so the analysis can tell such a
// re-execution from one nothing explains.
const LAG_MS = 500;
let lastTick = Date.now();
setInterval(() => {
  const now = Date.now();
  if (now - lastTick > LAG_MS) record({ ev: "lag", start: lastTick, end: now });
  lastTick = now;
}, 100).unref();

/** The lease-fenced writes, by SQL function name; claim and heartbeat are logged separately. */
const fenced = new Set([
  "complete_step", "start_attempt", "fail_step", "suspend", "start_children", "complete_run", "fail_run", "release",
]);

function sqlState(error: unknown): string {
  const e = error as { code?: unknown; errno?: unknown };
  return typeof e?.code === "string" ? e.code : String(e?.errno ?? "error");
}

// Calls in flight, so that one the driver never settles is reported (a `stall` line) instead of
// silently holding its run: a stalled write keeps the run leased while heartbeats renew it.
const STALL_MS = 15_000;
const inFlight = new Map<number, { what: string; sent: number; reported?: boolean }>();
let callId = 0;
setInterval(() => {
  const now = Date.now();
  for (const call of inFlight.values()) {
    if (!call.reported && now - call.sent > STALL_MS) {
      call.reported = true;
      record({ ev: "stall", what: call.what, sent: call.sent, t: now });
    }
  }
}, 1_000).unref();

function tracked<T>(what: string, promise: Promise<T>): Promise<T> {
  const id = callId++;
  inFlight.set(id, { what, sent: Date.now() });
  return promise.finally(() => inFlight.delete(id));
}

/**
 * The writes one engine call makes: one per run for fenced functions, one per batch entry for
 * `record`, with the index of the batch entry (record answers each entry on its own).
 */
function writesOf(fn: string, args: unknown[]): { fn: string; run: unknown; token: unknown; key?: unknown; entry?: number }[] {
  if (fn === "record") {
    const batch = (args[1] as { value?: { run_id: string; lease_token: string; steps?: { key: string }[]; complete?: boolean }[] }).value ?? [];
    return batch.flatMap((w, entry) => [
      ...(w.steps ?? []).map((step) => ({ fn: "complete_step", run: w.run_id, token: w.lease_token, key: step.key, entry })),
      ...(w.complete ? [{ fn: "complete_run", run: w.run_id, token: w.lease_token, entry }] : []),
    ]);
  }
  const key = fn === "complete_step" || fn === "fail_step" || fn === "start_attempt" ? args[3] : undefined;
  return [{ fn, run: args[1], token: args[2], key }];
}

/** A record answer as the outcome of its write: ok, or the SQLSTATE it would have raised. */
function answerOf(rows: unknown, entry: number | undefined): { ok: true } | { code: string } {
  if (entry === undefined) return { ok: true };
  const answer = (rows as { result: { status: string; sqlstate?: string }[] }[])[0]!.result[entry]!;
  return answer.status === "recorded" ? { ok: true } : { code: answer.status === "lease_lost" ? "AK001" : answer.sqlstate! };
}

/** postgres.js with a log line per engine call (see the header). */
function instrument(sql: Sql): Sql {
  return new Proxy(sql, {
    apply(target, thisArg, args: unknown[]) {
      const query = Reflect.apply(target, thisArg, args) as Promise<unknown>;
      const strings = args[0] as readonly string[] | undefined;
      if (!Array.isArray(strings)) return query;
      const fn = /aiki\.(\w+)\(/.exec(strings.join("$"))?.[1];
      if (!fn) return query;
      const sent = Date.now();
      const logged = fenced.has(fn) || fn === "record";
      return tracked(fn, query).then(
        (rows) => {
          const acked = Date.now();
          if (fn === "claim") {
            const runs = (rows as { result: { runs: { id: string; lease_token: string }[] } }[])[0]!.result.runs;
            if (runs.length > 0) record({ ev: "claim", sent, acked, runs: runs.map((r) => [r.id, r.lease_token]) });
          } else if (fn === "heartbeat") {
            record({ ev: "hb", sent, acked, n: (rows as unknown[]).length });
          } else if (logged) {
            for (const { entry, ...w } of writesOf(fn, args)) record({ ev: "w", ...w, via: fn, sent, acked, ...answerOf(rows, entry) });
          }
          return rows;
        },
        (error) => {
          if (logged) {
            for (const { entry: _, ...w } of writesOf(fn, args)) record({ ev: "w", ...w, via: fn, sent, acked: Date.now(), code: sqlState(error) });
          }
          throw error;
        });
    },
  }) as Sql;
}

const aiki = client({ url, max: 8 });
// Side effects go through the SDK's self-healing pool too: a raw postgres.js pool strands
// queries on connections the chaos kills (see sdk/db/pool.ts).
const effects = healingPool(url, { max: 4, onnotice: () => {}, connection: { application_name: "aiki" } });

const workload = defineWorkload({
  started(runId, stepKey, attempt) {
    const exec = randomUUID();
    record({ ev: "task", exec, run: runId, key: stepKey, attempt, t: Date.now() });
    return exec;
  },
  async effect(runId, stepKey, execId, signal) {
    // Retried until durable: the same execution counts once however often the statement is sent.
    for (let delay = 50; ; delay = Math.min(delay * 2, 1000)) {
      try {
        await tracked("effect", effects`
          insert into chaos_effects as e (run_id, step_key, count, execs)
          values (${runId}::uuid, ${stepKey}, 1, array[${execId}::uuid])
          on conflict (run_id, step_key) do update
             set count = e.count + 1, execs = e.execs || excluded.execs
           where not (excluded.execs[1] = any (e.execs))`);
        record({ ev: "fx", exec: execId, run: runId, key: stepKey, t: Date.now() });
        return;
      } catch (error) {
        if (signal.aborted) throw error;
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
  },
});

const instrumented: Client = { ...aiki, sql: instrument(aiki.sql) };
const handle = await worker({
  workflows: workload.workflows,
  id: workerId,
  concurrency: 16,
  leaseMs,
  pollMs: 1000,
  inlineRetryMaxMs: 100,
  ...(process.env.CHAOS_REDIS_URL ? { relay: { url: process.env.CHAOS_REDIS_URL, blockMs: 500, claimIdleMs: 2_000 } } : {}),
}).spawn(instrumented);
record({ ev: "ready", t: Date.now(), pid: process.pid });
process.send?.("ready");

process.on("SIGTERM", () => {
  void (async () => {
    await handle.stop({ timeoutMs: 3000 });
    record({ ev: "stopped", t: Date.now(), stats: handle.stats });
    await aiki.close();
    await effects.end({ timeout: 1 });
    process.exit(0);
  })();
});
