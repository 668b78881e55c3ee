// The version contract between the engine installed in a database and this package.
//
// The engine's version is the number of its newest migration (`aiki.schema_version()`); every
// release that changes the SQL interface adds a migration. The package's version is the newest
// migration it ships. The SDK checks the two on first use (client.ready): an older or missing
// engine asks for `npx aiki migrate`, a newer one for a newer package, instead of failing later
// with a raw 3F000 or 42883. `migrate` refuses to put an older package's functions over a newer
// engine unless forced.
import type { Sql } from "postgres";
import { SchemaVersionError, fromDatabaseError } from "../errors.js";
import { migrations } from "./sources.js";

/** The number a migration's file name starts with: 6 for `0006_workers_serve`. */
export function migrationNumber(name: string): number {
  return Number.parseInt(name, 10) || 0;
}

let shipped: number | undefined;

/** The engine version this package installs: the number of its newest migration. */
export function packageSchemaVersion(): number {
  return (shipped ??= Math.max(0, ...migrations().map((m) => migrationNumber(m.name))));
}

/** The error to raise when the installed engine has version `installed`, or undefined if it matches. */
export function versionMismatch(installed: number): SchemaVersionError | undefined {
  const ours = packageSchemaVersion();
  const versions = { database: installed, package: ours };
  if (installed < ours) {
    return new SchemaVersionError("schema_outdated",
      `the aiki engine in this database is version ${installed}, older than this package's ${ours}: run \`npx aiki migrate\``, versions);
  }
  if (installed > ours) {
    return new SchemaVersionError("schema_newer",
      `the aiki engine in this database is version ${installed}, newer than this package's ${ours}: upgrade the \`aiki\` package`, versions);
  }
  return undefined;
}

/** Throws SchemaVersionError unless the database holds the engine version this package ships. */
export async function checkSchemaVersion(sql: Sql): Promise<void> {
  let installed: number;
  try {
    const [row] = await sql<{ version: number }[]>`select aiki.schema_version() as version`;
    installed = row!.version;
  } catch (error) {
    throw fromDatabaseError(error, packageSchemaVersion());
  }
  const mismatch = versionMismatch(installed);
  if (mismatch) throw mismatch;
}
