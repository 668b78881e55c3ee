// The engine's targets on this machine, each judged against a reference measured in the same run.
import type { Target } from "./report.js";
import type { EventsResult } from "./workloads/events.js";
import type { FleetRow } from "./workloads/fleet.js";
import type { IdleResult } from "./workloads/idle.js";
import type { LatencyResult } from "./workloads/latency.js";
import type { Physical } from "./workloads/physical.js";
import type { ScaleResult } from "./workloads/scale.js";
import type { Throughput } from "./workloads/throughput.js";

export interface Measured {
  physical?: Physical;
  burnDown?: Throughput[];
  threeTask?: Throughput[];
  latency?: LatencyResult[];
  events?: EventsResult;
  scale?: ScaleResult;
  idle?: IdleResult;
  fleet?: FleetRow[];
}

const ms = (v: number) => `${v.toFixed(2)} ms`;
const x = (v: number) => `${v.toFixed(2)}×`;

export function evaluate(m: Measured): Target[] {
  const targets: Target[] = [];
  const find = <T extends { system: string }>(list: T[] | undefined, name: string) => list?.find((r) => r.system === name);

  const aiki = find(m.burnDown, "aiki");
  const batched = find(m.burnDown, "graphile-worker (batched)");
  const plain = find(m.burnDown, "graphile-worker");
  if (aiki && batched) {
    const r = aiki.runsPerSecond / batched.runsPerSecond;
    targets.push({
      name: "one-task throughput vs graphile-worker batched", goal: "≥ 0.50×",
      measured: `${x(r)} (${aiki.runsPerSecond.toFixed(0)} vs ${batched.runsPerSecond.toFixed(0)} runs/s)`,
      pass: r >= 0.5, gap: `needs ${(0.5 * batched.runsPerSecond - aiki.runsPerSecond).toFixed(0)} more runs/s`,
    });
  }
  if (aiki && plain) {
    const r = aiki.runsPerSecond / plain.runsPerSecond;
    targets.push({
      name: "one-task throughput vs graphile-worker defaults", goal: "well above (≥ 1.5×)",
      measured: `${x(r)} (${aiki.runsPerSecond.toFixed(0)} vs ${plain.runsPerSecond.toFixed(0)} runs/s)`,
      pass: r >= 1.5, gap: `${x(r)} of 1.5×`,
    });
  }

  const three = find(m.threeTask, "aiki");
  if (three) {
    targets.push({
      name: "three-task workflows, steps/s", goal: "≥ 2,000 steps/s",
      measured: `${three.stepsPerSecond.toFixed(0)} steps/s`,
      pass: three.stepsPerSecond >= 2000, gap: `${(2000 - three.stepsPerSecond).toFixed(0)} steps/s short`,
    });
    const commits = three.delta.commits / three.steps;
    targets.push({
      name: "commits per step (three-task workflows)", goal: "≤ 1.00",
      measured: commits.toFixed(2), pass: commits <= 1, gap: `${(commits - 1).toFixed(2)} over`,
    });
  }

  const start = find(m.latency, "aiki");
  const graphile = find(m.latency, "graphile-worker");
  if (start && graphile) {
    for (const phase of ["serial", "load"] as const) {
      const a = start[phase];
      const g = graphile[phase];
      const label = phase === "serial" ? "serial" : "under load";
      targets.push({
        name: `start-to-first-task p50, ${label}`, goal: `≤ graphile-worker's p50 (${ms(g.p50)})`,
        measured: ms(a.p50), pass: a.p50 <= g.p50, gap: `${ms(a.p50 - g.p50)} slower`,
      });
      targets.push({
        name: `start-to-first-task p99, ${label}`, goal: "≤ 10 ms",
        measured: ms(a.p99), pass: a.p99 <= 10, gap: `${ms(a.p99 - 10)} over`,
      });
    }
  }

  if (m.events) {
    const e = m.events.eventToResume;
    targets.push({ name: "event-to-resume p50", goal: "≤ 5 ms", measured: ms(e.p50), pass: e.p50 <= 5, gap: `${ms(e.p50 - 5)} over` });
    const sleep = m.events.sleepLateness.find((s) => s.system.startsWith("aiki"));
    if (sleep) {
      targets.push({
        name: "sleep wake-up lateness p99", goal: "≤ 50 ms", measured: ms(sleep.lateness.p99),
        pass: sleep.lateness.p99 <= 50, gap: `${ms(sleep.lateness.p99 - 50)} over`,
      });
    }
  }

  if (m.scale) {
    const s = m.scale;
    const r = s.claimBacklog.p50 / s.claimEmpty.p50;
    targets.push({
      name: `claim latency p50 with ${s.backlog.toLocaleString("en-US")}-run backlog vs empty`, goal: "≤ 1.50×",
      measured: `${x(r)} (${ms(s.claimBacklog.p50)} vs ${ms(s.claimEmpty.p50)})`, pass: r <= 1.5, gap: `${x(r)} of 1.5×`,
    });
    const f = s.fanOutSeconds / s.independentSeconds;
    targets.push({
      name: `fan-out of ${s.children.toLocaleString("en-US")} children vs independent runs`, goal: "≤ 2.00×",
      measured: `${x(f)} (${s.fanOutSeconds.toFixed(2)} s vs ${s.independentSeconds.toFixed(2)} s)`, pass: f <= 2, gap: `${x(f)} of 2×`,
    });
  }
  for (const i of m.idle?.modes ?? []) {
    for (const [label, p] of [["lone sleep", i.sleep], ["start, then send at once", i.startSend], ["retry due", i.retry]] as const) {
      targets.push({
        name: `idle worker (${i.mode}): ${label} lateness p99`, goal: "≤ 10 ms",
        measured: `${ms(p.p99)} (max ${ms(p.max)})`, pass: p.p99 <= 10, gap: `${ms(p.p99 - 10)} over`,
      });
    }
    targets.push({
      name: `idle worker (${i.mode}): samples near the safety poll`, goal: "none",
      measured: `${i.nearPoll} (poll ${m.idle!.pollMs / 1000} s)`, pass: i.nearPoll === 0, gap: `${i.nearPoll} missed wake-ups`,
    });
  }
  const notify64 = m.fleet?.find((r) => r.mode === "NOTIFY" && r.workers === 64);
  const relay64 = m.fleet?.find((r) => r.mode === "relay" && r.workers === 64);
  if (notify64 && relay64) {
    targets.push({
      name: "fleet of 64 idle workers: relay p99 vs NOTIFY p99", goal: "relay ≤ NOTIFY",
      measured: `${ms(relay64.latency.p99)} vs ${ms(notify64.latency.p99)}`,
      pass: relay64.latency.p99 <= notify64.latency.p99, gap: `${ms(relay64.latency.p99 - notify64.latency.p99)} slower`,
    });
    targets.push({
      name: "fleet of 64 idle workers: Postgres connections, relay vs NOTIFY", goal: "one LISTEN per relay, not per worker",
      measured: `${relay64.connections} vs ${notify64.connections}`,
      pass: relay64.connections <= notify64.connections - 60, gap: `${relay64.connections - (notify64.connections - 60)} too many`,
    });
  }
  return targets;
}
