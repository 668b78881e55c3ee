// What a workload gets from the runner, and the system line-up it measures.
import { AikiSystem } from "../systems/aiki.js";
import { GraphileSystem } from "../systems/graphile.js";
import { PgBossSystem } from "../systems/pgboss.js";
import type { System } from "../systems/types.js";
import { dropDatabase, freshDatabase, type Server, type Settings } from "../support.js";

export interface Context {
  server: Server;
  settings: Settings;
  log(line: string): void;
}

export type SystemId = "aiki" | "graphile" | "graphile-batched" | "pg-boss";

export function makeSystem(id: SystemId, settings: Settings): System {
  switch (id) {
    case "aiki": return new AikiSystem(settings.concurrency, settings.pool);
    case "graphile": return new GraphileSystem(false, settings.concurrency, settings.pool);
    case "graphile-batched": return new GraphileSystem(true, settings.concurrency, settings.pool);
    case "pg-boss": return new PgBossSystem(settings.concurrency, settings.pool);
  }
}

let databases = 0;

/** Runs `body` with `system` installed in a database of its own, then stops it and drops the database. */
export async function withSystem<S extends System, T>(
  ctx: Context, system: S, body: (system: S, url: string) => Promise<T>,
): Promise<T> {
  const name = `bench_${process.pid}_${++databases}`;
  const url = await freshDatabase(ctx.server, name);
  try {
    await system.install(url);
    return await body(system, url);
  } finally {
    await system.stop().catch((error) => ctx.log(`  ${system.name}: stop failed: ${String(error)}`));
    await dropDatabase(ctx.server, name).catch(() => undefined);
  }
}

/** Runs `body` in a fresh database without a system (raw SQL workloads). */
export async function withDatabase<T>(ctx: Context, body: (url: string) => Promise<T>): Promise<T> {
  const name = `bench_${process.pid}_${++databases}`;
  const url = await freshDatabase(ctx.server, name);
  try {
    return await body(url);
  } finally {
    await dropDatabase(ctx.server, name).catch(() => undefined);
  }
}
