// Installs or upgrades the engine in one transaction: pending migrations in order, then every
// function file. Under an advisory lock, so running it twice, or from several processes at
// once, is safe: the second runner waits, then finds nothing pending.
//
// Never backwards: a database whose engine is newer than this package (a migration numbered
// past the package's newest, see version.ts) is left alone with SchemaVersionError, since
// re-applying this package's functions would silently replace the newer ones. `force` does it
// anyway (a deliberate downgrade of the functions; the newer tables stay).
import type { Sql } from "postgres";
import { bookkeeping, functions, migrationLockKey, migrations } from "./sources.js";
import { SchemaVersionError } from "../errors.js";
import { migrationNumber, packageSchemaVersion } from "./version.js";

export interface MigrateResult {
  applied: string[];
}

export interface MigrateOptions {
  /** Re-apply this package's functions even over a newer engine. Default: false. */
  force?: boolean;
}

export async function migrate(sql: Sql, options: MigrateOptions = {}): Promise<MigrateResult> {
  const applied: string[] = [];
  await sql.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(hashtextextended(${migrationLockKey}, 0))`;
    await tx.unsafe(bookkeeping);
    const done = new Set((await tx<{ name: string }[]>`select name from aiki.migrations`).map((r) => r.name));
    const installed = Math.max(0, ...[...done].map(migrationNumber));
    if (installed > packageSchemaVersion() && !options.force) {
      throw new SchemaVersionError("schema_newer",
        `the aiki engine in this database is version ${installed}, newer than this package's ${packageSchemaVersion()}: ` +
        "upgrade the `aiki` package; migrating would replace the newer engine's functions with older ones " +
        "(to do that anyway: `aiki migrate --force`)",
        { database: installed, package: packageSchemaVersion() });
    }
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
