// `npm test`: runs every test file with node:test against one real Postgres — DATABASE_URL if
// set, otherwise an embedded server started here — after installing the engine once into a
// template database that each test file clones.
import { spawn } from "node:child_process";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { startEmbeddedPostgres, type EmbeddedServer } from "../db/embedded.js";
import { prepareTemplate } from "./database.js";

// Node 20's `--test` takes file paths only (globs arrived in Node 21), so `*` and `**` are
// expanded here, relative to the working directory; a path without them passes through.
function expand(pattern: string): string[] {
  if (!/[*?]/.test(pattern)) return [pattern];
  const base = pattern.slice(0, pattern.search(/[*?]/)).replace(/[^/]*$/, "") || ".";
  const source = pattern
    .replace(/[.+^${}()|[\]\\]/g, "\\$&")
    .replace(/\*\*\//g, "\u0000")
    .replace(/\*/g, "[^/]*")
    .replace(/\?/g, "[^/]")
    .replaceAll("\u0000", "(?:.*/)?");
  const matcher = new RegExp(`^${source}$`);
  const walk = (dir: string): string[] =>
    readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
      const path = dir === "." ? entry.name : join(dir, entry.name);
      if (entry.isDirectory()) return entry.name === "node_modules" ? [] : walk(path);
      return matcher.test(path) ? [path] : [];
    });
  try {
    return walk(base.replace(/\/$/, "") || ".").sort();
  } catch {
    return [];
  }
}

const patterns = process.argv.slice(2);
const files = (patterns.length > 0 ? patterns : ["sql/test/**/*.test.ts", "sdk/test/**/*.test.ts"]).flatMap(expand);
if (files.length === 0) {
  console.error(`no test files match ${patterns.join(" ")}`);
  process.exit(1);
}

let embedded: EmbeddedServer | undefined;
let adminUrl = process.env.DATABASE_URL;
if (!adminUrl) {
  embedded = await startEmbeddedPostgres();
  adminUrl = embedded.url;
  console.log(`# embedded Postgres on port ${embedded.port}`);
} else {
  console.log("# Postgres from DATABASE_URL");
}
const template = `aiki_template_${process.pid}`;
await prepareTemplate(adminUrl, template);

const code = await new Promise<number>((resolve) => {
  const child = spawn(
    process.execPath,
    ["--import", "tsx", "--test", "--test-concurrency=1", "--test-reporter=spec", ...files],
    { stdio: "inherit", env: { ...process.env, AIKI_TEST_ADMIN_URL: adminUrl, AIKI_TEST_TEMPLATE: template } },
  );
  child.on("exit", (status, signal) => resolve(status ?? (signal ? 1 : 0)));
});

await embedded?.stop();
process.exit(code);
