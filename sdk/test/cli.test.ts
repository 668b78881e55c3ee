// cli — `aiki migrate | bundle | relay | help`, run as a user runs it (bin/aiki.mjs in a child process):
// exit codes, output, and one-line errors without stack traces for mistakes a user can fix.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import postgres from "postgres";
import { freePort } from "../db/embedded.js";
import { quiet, testDatabase, withDatabase, type TestDatabase } from "../testing/database.js";
import { hasRedisServer, testRedis } from "../testing/redis.js";
import { connectRedis, streamOf } from "../relay/redis.js";
import { until } from "./support.js";

const bin = fileURLToPath(new URL("../../bin/aiki.mjs", import.meta.url));

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

function aiki(args: string[], env: Record<string, string | undefined> = {}): Promise<Result> {
  return new Promise((resolve) => {
    const childEnv = { ...process.env, DATABASE_URL: undefined, ...env };
    execFile(process.execPath, [bin, ...args], { env: childEnv as NodeJS.ProcessEnv }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === "number" ? error.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** A user error: the exit code, one message line naming the problem, and no stack trace. */
function assertUserError(result: Result, code: number, message: RegExp) {
  assert.equal(result.code, code, `exit code; stderr:\n${result.stderr}`);
  assert.match(result.stderr, message);
  assert.doesNotMatch(result.stderr, /^\s+at /m, "no stack trace");
}

describe("cli", () => {
  let db: TestDatabase;
  let adminUrl: string;
  let tmp: string;
  const databases: string[] = [];

  before(async () => {
    db = await testDatabase();
    adminUrl = process.env.AIKI_TEST_ADMIN_URL!;
    tmp = mkdtempSync(join(tmpdir(), "aiki-cli-"));
  });

  after(async () => {
    const admin = postgres(adminUrl, { max: 1, ...quiet });
    for (const name of databases) await admin.unsafe(`drop database if exists ${name} with (force)`);
    await admin.end();
    rmSync(tmp, { recursive: true, force: true });
    await db.close();
  });

  it("help prints the usage and exits 0", async () => {
    const result = await aiki(["help"]);
    assert.equal(result.code, 0);
    assert.match(result.stdout, /Usage: aiki <command>/);
    assert.match(result.stdout, /migrate/);
    assert.match(result.stdout, /bundle/);
  });

  it("no command prints the usage to stderr and exits 2", async () => {
    const result = await aiki([]);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /Usage: aiki <command>/);
  });

  it("an unknown command or option exits 2 with one line", async () => {
    assertUserError(await aiki(["migrat"]), 2, /^aiki: unknown command "migrat"/);
    assertUserError(await aiki(["migrate", "--uri", "postgres://x/y"]), 2, /^aiki migrate: Unknown option '--uri'/);
  });

  it("migrate without DATABASE_URL or --url exits 2 and says how to give one", async () => {
    assertUserError(await aiki(["migrate"]), 2, /^aiki migrate: no database given: set DATABASE_URL or pass --url/);
    assertUserError(await aiki(["migrate", "--url", "localhost:5432"]), 2, /must start with postgres:\/\//);
  });

  it("migrate against a server that is not there exits 1, without a stack trace", async () => {
    const port = await freePort();
    const result = await aiki(["migrate"], { DATABASE_URL: `postgres://someone:secret@127.0.0.1:${port}/app` });
    assertUserError(result, 1, /^aiki migrate: failed: .*ECONNREFUSED/m);
    assert.doesNotMatch(result.stdout + result.stderr, /secret/, "the password is never printed");
  });

  it("migrate reports a database error with its SQLSTATE", async () => {
    const result = await aiki(["migrate", "--url", withDatabase(adminUrl, "aiki_no_such_database")]);
    assertUserError(result, 1, /^aiki migrate: failed: database "aiki_no_such_database" does not exist \(SQLSTATE 3D000\)/m);
  });

  it("migrate installs, prints what it applied, and applies nothing the second time", async () => {
    const name = `aiki_cli_${randomBytes(5).toString("hex")}`;
    databases.push(name);
    const admin = postgres(adminUrl, { max: 1, ...quiet });
    await admin.unsafe(`create database ${name} template template0`).finally(() => admin.end());
    const url = withDatabase(adminUrl, name);

    const first = await aiki(["migrate"], { DATABASE_URL: url });
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /^\s+applied 0001_init$/m);
    assert.doesNotMatch(first.stdout, /:postgres@/, "the password is masked");

    const second = await aiki(["migrate", "--url", url]);
    assert.equal(second.code, 0, second.stderr);
    assert.doesNotMatch(second.stdout, /applied 0/);
    assert.match(second.stdout, /Up to date/);
  });

  it("bundle --check passes on a fresh bundle and fails with exit 1 once it is stale", async () => {
    const out = join(tmp, "aiki.sql");
    const written = await aiki(["bundle", "--out", out]);
    assert.equal(written.code, 0, written.stderr);
    assert.match(readFileSync(out, "utf8"), /^-- aiki\.sql: generated/);
    assert.equal((await aiki(["bundle", "--check", "--out", out])).code, 0);

    writeFileSync(out, readFileSync(out, "utf8") + "-- edited by hand\n");
    assertUserError(await aiki(["bundle", "--check", "--out", out]), 1, /is stale.*npm run bundle/);
    rmSync(out);
    assertUserError(await aiki(["bundle", "--check", "--out", out]), 1, /is missing/);
  });

  it("relay without a Redis URL, or with one that is not redis://, exits 2 and says what to give", async () => {
    assertUserError(await aiki(["relay", "--url", db.url], { REDIS_URL: undefined }), 2, /no Redis given: set REDIS_URL or pass --redis/);
    assertUserError(await aiki(["relay", "--url", db.url, "--redis", "http://x"]), 2, /must start with redis:\/\//);
    assertUserError(await aiki(["relay", "--redis", "redis://x"]), 2, /no database given/);
  });

  it("relay turns a wake-up into an entry of its queue's stream, and stops on SIGTERM", { skip: process.env.REDIS_URL || hasRedisServer() ? false : "no redis-server on PATH and no REDIS_URL" }, async () => {
    const redis = (await testRedis())!;
    const child = spawn(process.execPath, [bin, "relay", "--url", db.url, "--redis", redis.url, "--queues", "cli-q"],
      { env: { ...process.env, DATABASE_URL: undefined } });
    let stdout = "";
    child.stdout.on("data", (chunk) => (stdout += String(chunk)));
    const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
    const link = await connectRedis(redis.url, "cli-test");
    try {
      await until("the relay to run", () => (stdout.includes("running") ? true : undefined), 30_000);
      await db.sql`select aiki.start_workflow('cli-wf', '1', p_queue => 'cli-q')`;
      await until("the entry", async () => ((await link.send(["XLEN", streamOf("cli-q")])) === 1 ? true : undefined));
      child.kill("SIGTERM");
      assert.equal(await exited, 0);
      assert.match(stdout, /stopped: 1 wake-ups/);
    } finally {
      child.kill("SIGKILL");
      await link.close();
      await redis.stop();
    }
  });
});
