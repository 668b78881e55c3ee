// Workload 1, the physical limit: what this server does with bare SQL on the same connections.
import type { Section } from "../report.js";
import { Raw } from "../systems/raw.js";
import { withDatabase, type Context } from "./context.js";

export interface Physical {
  insertsPerSecond: number;
  notifyInsertsPerSecond: number;
  notifyCostUs: number;
  claimDeletePerSecond: number;
  claimDeleteBatchPerSecond: number;
}

export async function physical(ctx: Context): Promise<{ section: Section; physical: Physical }> {
  const { settings } = ctx;
  const result = await withDatabase(ctx, async (url) => {
    const raw = new Raw(settings.pool);
    try {
      await raw.install(url);
      const insertsPerSecond = await raw.insertCommitsPerSecond(settings.physicalSeconds, false);
      const notifyInsertsPerSecond = await raw.insertCommitsPerSecond(settings.physicalSeconds, true);
      const jobs = Math.round(insertsPerSecond * settings.physicalSeconds);
      const claimDeletePerSecond = await raw.claimDelete(jobs, 1);
      const claimDeleteBatchPerSecond = await raw.claimDelete(jobs * 4, settings.concurrency);
      return {
        insertsPerSecond, notifyInsertsPerSecond, claimDeletePerSecond, claimDeleteBatchPerSecond,
        notifyCostUs: (1e6 / notifyInsertsPerSecond - 1e6 / insertsPerSecond) * settings.pool,
      };
    } finally {
      await raw.stop();
    }
  });
  ctx.log(`  inserts ${result.insertsPerSecond.toFixed(0)}/s, with NOTIFY ${result.notifyInsertsPerSecond.toFixed(0)}/s, ` +
    `claim+delete ${result.claimDeletePerSecond.toFixed(0)}/s, batched ${result.claimDeleteBatchPerSecond.toFixed(0)}/s`);
  return {
    physical: result,
    section: {
      id: "physical",
      title: "1. Physical limit (bare SQL, same server and connections)",
      columns: ["per second", "commits per item"],
      rows: [
        { system: "single-row insert, autocommit", values: [result.insertsPerSecond, 1] },
        { system: "insert + pg_notify, autocommit", values: [result.notifyInsertsPerSecond, 1] },
        { system: "SKIP LOCKED claim+delete, 1 per statement", values: [result.claimDeletePerSecond, 1] },
        { system: `SKIP LOCKED claim+delete, ${settings.concurrency} per statement`, values: [result.claimDeleteBatchPerSecond, 1 / settings.concurrency] },
      ],
      notes: [
        `${settings.pool} connections in parallel. NOTIFY costs ${result.notifyCostUs.toFixed(0)} µs of commit time per ` +
        `transaction here (${((1 - result.notifyInsertsPerSecond / result.insertsPerSecond) * 100).toFixed(0)}% of the insert rate): ` +
        `NOTIFY serialises commits on a cluster-wide lock.`,
      ],
    },
  };
}
