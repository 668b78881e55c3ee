// Workload 4, start-to-first-task latency: from the call that starts a run (adds a job) to the
// moment its first task body runs, on the same clock. Serial: one at a time, each after the last
// one's task ran. Under load: an open-loop stream of starts at a fixed rate, each one measured.
import type { Section } from "../report.js";
import { aikiPollOnlyMs } from "../systems/aiki.js";
import { epochMs, type Payload, type System } from "../systems/types.js";
import { percentiles, sleep, until, type Percentiles } from "../support.js";
import { makeSystem, withSystem, type Context, type SystemId } from "./context.js";

export interface LatencyResult {
  system: string;
  serial: Percentiles;
  load: Percentiles;
}

const lineup: { id: SystemId; label?: string; listen?: boolean; polled?: boolean }[] = [
  { id: "aiki" },
  { id: "aiki", label: `aiki (polling only, ${aikiPollOnlyMs} ms)`, listen: false, polled: true },
  { id: "graphile" },
  { id: "graphile-batched" },
  { id: "pg-boss", polled: true },
];

class Probe {
  private waiting = new Map<number, (ms: number) => void>();
  readonly samples: number[] = [];
  onTask = (payload: Payload) => {
    const ms = epochMs() - payload.t0!;
    this.samples.push(ms);
    this.waiting.get(payload.i)?.(ms);
    this.waiting.delete(payload.i);
  };
  next(i: number): Promise<number> {
    return new Promise((resolve) => this.waiting.set(i, resolve));
  }
}

async function serial(system: System, probe: Probe, count: number, from: number): Promise<Percentiles> {
  const samples: number[] = [];
  for (let i = from; i < from + count; i++) {
    const ran = probe.next(i);
    await system.add("one", { i, t0: epochMs() });
    samples.push(await ran);
    await sleep(2);
  }
  return percentiles(samples);
}

async function underLoad(system: System, probe: Probe, rate: number, seconds: number, from: number): Promise<Percentiles> {
  const total = Math.round(rate * seconds);
  const first = probe.samples.length;
  const start = performance.now();
  const adds: Promise<void>[] = [];
  for (let k = 0; k < total; k++) {
    const due = start + (k * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 1) await sleep(wait);
    adds.push(system.add("one", { i: from + k, t0: epochMs() }));
  }
  await Promise.all(adds);
  await until("every start of the load to run", () => probe.samples.length - first >= total, 60_000);
  return percentiles(probe.samples.slice(first));
}

export async function latency(ctx: Context): Promise<{ sections: Section[]; results: LatencyResult[] }> {
  const { settings } = ctx;
  const results: LatencyResult[] = [];
  for (const entry of lineup) {
    const result = await withSystem(ctx, makeSystem(entry.id, settings), async (system) => {
      const probe = new Probe();
      await system.start({ onTask: (payload) => probe.onTask(payload) }, { listen: entry.listen });
      await serial(system, probe, 10, 1_000_000); // warm-up: connections, prepared statements
      // A polling system takes half its interval per serial sample: fewer samples keep the run short.
      const count = entry.polled ? Math.min(settings.latencySerial, 20) : settings.latencySerial;
      const s = await serial(system, probe, count, 0);
      const l = await underLoad(system, probe, settings.latencyRate, settings.latencyLoadSeconds, 2_000_000);
      return { system: entry.label ?? system.name, serial: s, load: l };
    });
    ctx.log(`  ${result.system}: serial p50 ${result.serial.p50.toFixed(2)} p99 ${result.serial.p99.toFixed(2)} ms; ` +
      `under load p50 ${result.load.p50.toFixed(2)} p99 ${result.load.p99.toFixed(2)} ms`);
    results.push(result);
  }
  const section: Section = {
    id: "start-latency",
    title: `4. Start-to-first-task latency, ms (serial; under load: ${settings.latencyRate} starts/s for ${settings.latencyLoadSeconds} s)`,
    columns: ["serial p50", "p90", "p99", "max", "load p50", "p90", "p99", "max"],
    rows: results.map((r) => ({
      system: r.system,
      values: [r.serial.p50, r.serial.p90, r.serial.p99, r.serial.max, r.load.p50, r.load.p90, r.load.p99, r.load.max],
    })),
    ratioColumn: 0,
    lowerIsBetter: true,
    notes: [
      `Serial: ${settings.latencySerial} samples (polling systems: ${Math.min(settings.latencySerial, 20)}). ` +
      "graphile-worker always LISTENs; pg-boss only polls.",
    ],
  };
  return { sections: [section], results };
}
