// Workload 9, schedules. What schedule evaluation costs the claim (issue 12): claim latency, as in
// workload 6a (one run started, claimed with limit 1, completed, over and over), with no
// schedules, then with 10,000 schedules none of which is due. Every claim probes the earliest
// due schedule (one lookup of the partial index schedules_due), so the two should match.
// The schedules are written in one statement (create_schedule validates each zone against
// pg_timezone_names, which reads the zone directory: fine for a deploy, slow for 10,000).
import type { Section } from "../report.js";
import { AikiSystem } from "../systems/aiki.js";
import type { Percentiles } from "../support.js";
import { withSystem, type Context } from "./context.js";
import { claimLatency } from "./scale.js";

export interface SchedulesResult {
  schedules: number;
  claimNone: Percentiles;
  claimMany: Percentiles;
}

const SCHEDULES = 10_000;

/** 10,000 daily schedules spread over the day, each first firing tomorrow or later. */
async function fillSchedules(aiki: AikiSystem, count: number): Promise<void> {
  const sql = aiki.client.sql;
  await sql`
    insert into aiki.schedules (name, next_fire_at, due_at, created_at, updated_at, workflow, version, cron, timezone, overlap, queue, retry, input)
    select 'bench-' || i, f, f, now(), now(), 'one', '1', (i % 60) || ' ' || (i / 60 % 24) || ' * * *', 'Europe/Berlin', 'skip', 'default', '{"type": "never"}', '{"i": 0}'
    from generate_series(1, ${count}::int) i, lateral (select now() + interval '1 day' + i * interval '1 second' as f) t`;
  await sql`vacuum analyze aiki.schedules`;
}

export async function schedules(ctx: Context): Promise<{ sections: Section[]; results: SchedulesResult }> {
  const { settings } = ctx;
  const results = await withSystem(ctx, new AikiSystem(settings.concurrency, settings.pool), async (aiki) => {
    const claimNone = await claimLatency(aiki, settings.claimSamples);
    await fillSchedules(aiki, SCHEDULES);
    const claimMany = await claimLatency(aiki, settings.claimSamples);
    return { schedules: SCHEDULES, claimNone, claimMany };
  });
  ctx.log(`  claim p50 ${results.claimNone.p50.toFixed(2)} ms without schedules, ${results.claimMany.p50.toFixed(2)} ms with ${SCHEDULES.toLocaleString("en-US")}`);
  const row = (system: string, p: Percentiles) => ({ system, values: [p.n, p.p50, p.p90, p.p99, p.max] });
  return {
    results,
    sections: [{
      id: "schedule-claim",
      title: `9. Claim latency, ms (aiki.claim of one run, round trip), no schedules vs ${SCHEDULES.toLocaleString("en-US")} schedules none of which is due`,
      columns: ["samples", "p50", "p90", "p99", "max"],
      rows: [row("no schedules", results.claimNone), row(`${SCHEDULES.toLocaleString("en-US")} schedules`, results.claimMany)],
      notes: ["The claim's schedule probe is one lookup of the partial index schedules_due (the earliest due_at of unpaused schedules)."],
    }],
  };
}
