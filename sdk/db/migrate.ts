// Installs or upgrades the engine in one transaction: pending migrations in order, then every
// function file. Under an advisory lock, so running it twice, or from several processes at
// once, is safe: the second runner waits, then finds nothing pending.
import type { Sql } from "postgres";
import { bookkeeping, functions, migrationLockKey, migrations } from "./sources.js";

export interface MigrateResult {
  applied: string[];
}

export async function migrate(sql: Sql): Promise<MigrateResult> {
  const applied: string[] = [];
  await sql.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(hashtextextended(${migrationLockKey}, 0))`;
    await tx.unsafe(bookkeeping);
    const done = new Set((await tx<{ name: string }[]>`select name from aiki.migrations`).map((r) => r.name));
    for (const migration of migrations()) {
      if (done.has(migration.name)) continue;
      await tx.unsafe(migration.text);
      await tx`insert into aiki.migrations (name) values (${migration.name})`;
      applied.push(migration.name);
    }
    for (const file of functions()) await tx.unsafe(file.text);
  });
  return { applied };
}
