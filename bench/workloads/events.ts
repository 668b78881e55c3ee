// Workload 5: event-to-resume latency and sleep wake-up lateness.
//
// Event to resume: runs wait for an event; one at a time, an event is sent and the clock stops
// when the code after the wait runs (the task it starts). Sleep lateness: runs sleep until an
// absolute time spread over a window; lateness is the task's start minus that time. For
// reference, graphile-worker runs jobs with the same run_at times.
import type { Section } from "../report.js";
import { AikiSystem } from "../systems/aiki.js";
import { epochMs, type Payload } from "../systems/types.js";
import * as engine from "../../sdk/engine.js";
import { percentiles, sleep, until, type Percentiles } from "../support.js";
import { makeSystem, withSystem, type Context } from "./context.js";

export interface EventsResult {
  eventToResume: Percentiles;
  sleepLateness: { system: string; lateness: Percentiles }[];
}

async function eventToResume(ctx: Context): Promise<Percentiles> {
  const count = ctx.settings.events;
  return withSystem(ctx, new AikiSystem(ctx.settings.concurrency, ctx.settings.pool), async (aiki) => {
    const resumed = new Map<number, (ms: number) => void>();
    await aiki.start({ onTask: (payload) => resumed.get(payload.i)?.(epochMs() - payload.t0!) });
    const rows = await aiki.client.sql<{ id: string }[]>`
      select (aiki.start_workflow('waiter', '1', jsonb_build_object('i', g))).run_id as id
      from generate_series(1, ${count + 10}::int) g`;
    await until("every waiter to wait", async () => {
      const [row] = await aiki.client.sql<{ n: number }[]>`select count(*)::int as n from aiki.runs where status = 'waiting'`;
      return row!.n === rows.length;
    }, 60_000, 50);
    const samples: number[] = [];
    for (const [k, { id }] of rows.entries()) {
      const ran = new Promise<number>((resolve) => resumed.set(k, resolve));
      await engine.sendEvent(aiki.client.sql, id, "go", { i: k, t0: epochMs() } satisfies Payload);
      const ms = await ran;
      if (k >= 10) samples.push(ms); // the first ten warm up
      await sleep(2);
    }
    return percentiles(samples);
  });
}

async function sleepLateness(ctx: Context, id: "aiki" | "graphile"): Promise<Percentiles> {
  const { timers, timerSpreadSeconds } = ctx.settings;
  return withSystem(ctx, makeSystem(id, ctx.settings), async (system) => {
    const lateness: number[] = [];
    await system.start({ onTask: (payload) => lateness.push(epochMs() - payload.at!) });
    // Every timer is registered well before the first one is due.
    const base = epochMs() + 2_000 + timers;
    const at = (k: number) => base + (k * timerSpreadSeconds * 1000) / timers;
    if (system instanceof AikiSystem) {
      await system.client.sql`
        select aiki.start_workflow('sleeper', '1', jsonb_build_object('i', g, 'at', ${base}::float8 + g * ${(timerSpreadSeconds * 1000) / timers}::float8))
        from generate_series(0, ${timers - 1}::int) g`;
    } else {
      for (let k = 0; k < timers; k += 100) {
        await Promise.all(Array.from({ length: Math.min(100, timers - k) }, (_, j) =>
          system.add("one", { i: k + j, at: at(k + j) }, new Date(at(k + j)))));
      }
    }
    if (epochMs() > base) ctx.log(`  ${system.name}: timers were registered ${(epochMs() - base).toFixed(0)} ms late`);
    await until(`${system.name} timers`, () => lateness.length >= timers, (timerSpreadSeconds + 60) * 1000, 100);
    return percentiles(lateness);
  });
}

export async function events(ctx: Context): Promise<{ sections: Section[]; results: EventsResult }> {
  const { settings } = ctx;
  const eventLatency = await eventToResume(ctx);
  ctx.log(`  event to resume: p50 ${eventLatency.p50.toFixed(2)} p99 ${eventLatency.p99.toFixed(2)} ms`);
  const sleeps: EventsResult["sleepLateness"] = [];
  for (const id of ["aiki", "graphile"] as const) {
    const lateness = await sleepLateness(ctx, id);
    const name = id === "aiki" ? "aiki (durable sleep)" : "graphile-worker (run_at)";
    ctx.log(`  ${name}: lateness p50 ${lateness.p50.toFixed(1)} p99 ${lateness.p99.toFixed(1)} ms`);
    sleeps.push({ system: name, lateness });
  }
  const row = (system: string, p: Percentiles) => ({ system, values: [p.n, p.p50, p.p90, p.p99, p.max] });
  return {
    results: { eventToResume: eventLatency, sleepLateness: sleeps },
    sections: [
      {
        id: "event-latency",
        title: "5a. Event-to-resume latency, ms (send_event to the code after the wait)",
        columns: ["samples", "p50", "p90", "p99", "max"],
        rows: [row("aiki", eventLatency)],
      },
      {
        id: "sleep-lateness",
        title: `5b. Sleep wake-up lateness, ms (${settings.timers.toLocaleString("en-US")} timers spread over ${settings.timerSpreadSeconds} s)`,
        columns: ["timers", "p50", "p90", "p99", "max"],
        rows: sleeps.map((s) => row(s.system, s.lateness)),
        notes: ["graphile-worker finds future jobs by polling (pollInterval 2 s by default)."],
      },
    ],
  };
}
