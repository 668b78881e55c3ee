// cli — `aiki migrate | bundle | relay | help | --version`, run in a child process as a user runs
// it, from its sources (the installed bin, dist/cli.js, is run by package.test.ts): exit codes,
// output, and one-line errors without stack traces for mistakes a user can fix.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import postgres from "postgres";
import { bundle } from "../db/bundle.js";
import { freePort } from "../db/embedded.js";
import { packageSchemaVersion } from "../db/version.js";
import { quiet, testDatabase, withDatabase, type TestDatabase } from "../testing/database.js";
import { hasRedisServer, testRedis } from "../testing/redis.js";
import { connectRedis, streamOf } from "../relay/redis.js";
import { until } from "./support.js";

const cli = fileURLToPath(new URL("../cli.ts", import.meta.url));
const root = fileURLToPath(new URL("../../", import.meta.url));
/** tsx's loader by its full address, so the CLI also runs from a working directory outside the repository. */
const tsx = import.meta.resolve("tsx");

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

function aiki(args: string[], env: Record<string, string | undefined> = {}, cwd = root): Promise<Result> {
  return new Promise((resolve) => {
    const childEnv = { ...process.env, DATABASE_URL: undefined, ...env };
    execFile(process.execPath, ["--import", tsx, cli, ...args], { env: childEnv as NodeJS.ProcessEnv, cwd }, (error, stdout, stderr) => {
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

  it("--version prints the package's and the engine's versions", async () => {
    const result = await aiki(["--version"]);
    assert.equal(result.code, 0, result.stderr);
    const { version } = JSON.parse(readFileSync(`${root}package.json`, "utf8"));
    assert.equal(result.stdout, `aiki ${version} (engine version ${packageSchemaVersion()})\n`);
  });

  it("<command> --help and help <command> print the command's usage and exit 0", async () => {
    for (const args of [["migrate", "--help"], ["help", "migrate"]]) {
      const result = await aiki(args);
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout, /^Usage: aiki migrate \[--url URL\]/);
      assert.match(result.stdout, /--connect-timeout/);
      assert.doesNotMatch(result.stdout, /aiki bundle/);
    }
    const bundleHelp = await aiki(["bundle", "-h"]);
    assert.match(bundleHelp.stdout, /^Usage: aiki bundle \[--out FILE\]/);
    const relayHelp = await aiki(["relay", "--help"]);
    assert.match(relayHelp.stdout, /^Usage: aiki relay \[--url URL\]/);
    assertUserError(await aiki(["help", "deploy"]), 2, /^aiki: no help on "deploy"/);
  });

  it("migrate with a malformed password exits 2 with one line, no URIError and no password", async () => {
    const result = await aiki(["migrate", "--url", "postgres://me:sec%ret@127.0.0.1:5432/app"]);
    assertUserError(result, 2, /^aiki migrate: the database URL is malformed: percent-encode special characters/);
    assert.doesNotMatch(result.stderr, /URIError|sec%ret/);
  });

  it("migrate refuses a URL that names no database, unless --default-database", async () => {
    const result = await aiki(["migrate", "--url", "postgres://me:secret@127.0.0.1:5432"]);
    assertUserError(result, 2, /^aiki migrate: the database URL postgres:\/\/me:\*\*\*@127\.0\.0\.1:5432 names no database/);
    assert.doesNotMatch(result.stderr, /secret/);
    // Accepted with the flag: it goes on to connect (here to nothing listening).
    const port = await freePort();
    const accepted = await aiki(["migrate", "--default-database", "--url", `postgres://me:secret@127.0.0.1:${port}`]);
    assertUserError(accepted, 1, /^aiki migrate: failed: .*ECONNREFUSED/m);
  });

  describe("against a server that accepts connections and never answers", () => {
    let stalled: Server;
    const sockets = new Set<Socket>();
    let port: number;
    before(async () => {
      stalled = createServer((socket) => {
        sockets.add(socket);
        socket.on("error", () => undefined);
      });
      await new Promise<void>((resolve) => stalled.listen(0, "127.0.0.1", resolve));
      port = (stalled.address() as { port: number }).port;
    });
    after(async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => stalled.close(resolve));
    });

    it("migrate gives up after --connect-timeout with a clear line and exit 1", async () => {
      const result = await aiki(["migrate", "--connect-timeout", "1", "--url", `postgres://me:secret@127.0.0.1:${port}/app`]);
      assertUserError(result, 1, new RegExp(`^aiki migrate: failed: no answer from 127\\.0\\.0\\.1:${port} within 1 s \\(CONNECT_TIMEOUT\\)`, "m"));
      assert.ok(sockets.size > 0, "the CLI did connect to the stalled server");
    });

    it("a bad --connect-timeout is a usage error", async () => {
      assertUserError(await aiki(["migrate", "--connect-timeout", "soon", "--url", `postgres://me@127.0.0.1:${port}/app`]), 2,
        /^aiki migrate: --connect-timeout takes a number of seconds/);
    });
  });

  it("migrate refuses to go backwards over a newer engine (exit 1), and --force does it", async () => {
    const name = `aiki_cli_${randomBytes(5).toString("hex")}`;
    databases.push(name);
    const admin = postgres(adminUrl, { max: 1, ...quiet });
    await admin.unsafe(`create database ${name} template ${process.env.AIKI_TEST_TEMPLATE}`).finally(() => admin.end());
    const url = withDatabase(adminUrl, name);
    const sql = postgres(url, { max: 1, ...quiet });
    await sql`insert into aiki.migrations (name) values ('9999_from_the_future')`.finally(() => sql.end());

    const refused = await aiki(["migrate", "--url", url]);
    assertUserError(refused, 1, /^aiki migrate: refused: the aiki engine in this database is version 9999, newer than this package's \d+: upgrade the `aiki` package/m);
    const forced = await aiki(["migrate", "--force", "--url", url]);
    assert.equal(forced.code, 0, forced.stderr);
    assert.match(forced.stdout, /Up to date; functions re-applied\./);
  });

  it("bundle without --out prints the script and writes no file", async () => {
    const cwd = mkdtempSync(join(tmp, "bundle-"));
    const result = await aiki(["bundle"], {}, cwd);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, bundle());
    assert.deepEqual(readdirSync(cwd), []);
    assert.ok(existsSync(`${root}aiki.sql`));
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
    const child = spawn(process.execPath, ["--import", tsx, cli, "relay", "--url", db.url, "--redis", redis.url, "--queues", "cli-q"],
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
