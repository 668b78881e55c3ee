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

function readFolder(folder: string): SqlSource[] {
  const dir = join(root, folder);
  return readdirSync(dir)
    .filter((file) => /^\d+_[a-z0-9_]+\.sql$/.test(file))
    .sort()
    .map((file) => ({ name: file.replace(/\.sql$/, ""), text: readFileSync(join(dir, file), "utf8") }));
}

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
