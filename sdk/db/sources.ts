// The engine's SQL sources: numbered migrations (applied once, in order) and the function
// files of sql/ (re-applied on every migrate, in file-name order).
import { readFileSync, readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { join } from "node:path";

export interface SqlSource {
  name: string;
  text: string;
}

// The package root, two folders up both from sdk/db/sources.ts (tests, tsx) and from its build,
// dist/db/sources.js (the installed package): tsconfig.build.json keeps dist/ the shape of sdk/.
const root = fileURLToPath(new URL("../../", import.meta.url));

// Files of a source folder that are not sources: the reviewed schema dump lives beside the
// functions it describes.
const notSources: Record<string, string[]> = { sql: ["schema.snapshot.sql"] };

/**
 * The `NNNN_name.sql` files of `dir`, in name order. Any other `.sql` file is an error, not
 * skipped: a misnamed migration or function file would otherwise never be installed.
 */
export function readSqlFolder(dir: string, ignore: readonly string[] = []): SqlSource[] {
  const files = readdirSync(dir).filter((file) => file.endsWith(".sql") && !ignore.includes(file));
  const unknown = files.filter((file) => !/^\d+_[a-z0-9_]+\.sql$/.test(file));
  if (unknown.length > 0) {
    throw new Error(
      `${dir}: ${unknown.join(", ")} ${unknown.length === 1 ? "is" : "are"} not named like an engine source ` +
        `(digits, underscore, lowercase name, .sql, e.g. 0003_journal_limits.sql); rename or remove`,
    );
  }
  return files.sort().map((file) => ({ name: file.replace(/\.sql$/, ""), text: readFileSync(join(dir, file), "utf8") }));
}

const readFolder = (folder: string): SqlSource[] => readSqlFolder(join(root, folder), notSources[folder] ?? []);

export const migrations = (): SqlSource[] => readFolder("migrations");
export const functions = (): SqlSource[] => readFolder("sql");

// The advisory lock key every installer takes, so concurrent migrations run one at a time.
export const migrationLockKey = "aiki.migrate";

// Bookkeeping created before any migration runs, so the first migration can be recorded too.
export const bookkeeping = `create schema if not exists aiki;
create table if not exists aiki.migrations (
  name        text primary key,
  applied_at  timestamptz not null default now()
);`;
