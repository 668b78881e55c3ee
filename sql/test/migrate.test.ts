// migrate — the installer, tested for the cases that break in production: run twice, run from
// several connections and processes at once, installed into a non-default database by a role
// that is not a superuser, into a cluster where the aiki_* roles do not exist yet, and through
// the psql-only bundle. The installed schema is compared with the reviewed snapshot
// sql/schema.snapshot.sql.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import postgres, { type Sql } from "postgres";
import { bundle } from "../../sdk/db/bundle.js";
import { migrate } from "../../sdk/db/migrate.js";
import { migrations, readSqlFolder } from "../../sdk/db/sources.js";
import { startEmbeddedPostgres } from "../../sdk/db/embedded.js";
import { quiet, testDatabase, withDatabase, type TestDatabase } from "../../sdk/testing/database.js";
import { schemaSnapshot } from "../../sdk/testing/schema.js";

const root = fileURLToPath(new URL("../../", import.meta.url));
const committedSnapshot = () => readFileSync(`${root}sql/schema.snapshot.sql`, "utf8");
const migrationNames = migrations().map((m) => m.name);
const run = promisify(execFile);
const hasPsql = spawnSync("psql", ["--version"]).status === 0;

const unique = (prefix: string) => `${prefix}_${randomBytes(5).toString("hex")}`;

/** The first column of a one-row, one-column result. */
async function value<T>(rows: Promise<Record<string, unknown>[]>): Promise<T> {
  const [row] = await rows;
  assert.ok(row, "expected a row");
  return Object.values(row)[0] as T;
}

/** Function signatures and tables of schema aiki: what two installs must agree on. */
async function inventory(sql: Sql) {
  const functions = await sql<{ signature: string }[]>`
    select p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' as signature
    from pg_proc p where p.pronamespace = 'aiki'::regnamespace order by 1`;
  const tables = await sql<{ name: string }[]>`
    select c.relname as name from pg_class c
    where c.relnamespace = 'aiki'::regnamespace and c.relkind in ('r', 'p') order by 1`;
  return { functions: functions.map((r) => r.signature), tables: tables.map((r) => r.name) };
}

describe("migrate", () => {
  let db: TestDatabase;
  let adminUrl: string;
  let admin: Sql;
  const clients: Sql[] = [];
  const databases: string[] = [];
  const roles: string[] = [];

  const connect = (url: string) => {
    const sql = postgres(url, { max: 1, ...quiet });
    clients.push(sql);
    return sql;
  };

  /** An empty database (not cloned from the migrated template), dropped after the tests. */
  async function emptyDatabase(owner?: string): Promise<string> {
    const name = unique("aiki_migrate");
    databases.push(name);
    await admin.unsafe(`create database ${name} template template0${owner ? ` owner ${owner}` : ""}`);
    return withDatabase(adminUrl, name);
  }

  before(async () => {
    db = await testDatabase();
    adminUrl = process.env.AIKI_TEST_ADMIN_URL!;
    admin = postgres(adminUrl, { max: 1, ...quiet });
  });

  after(async () => {
    await Promise.all(clients.map((c) => c.end({ timeout: 1 })));
    for (const name of databases) await admin.unsafe(`drop database if exists ${name} with (force)`);
    for (const role of roles) await admin.unsafe(`drop role if exists ${role}`);
    await admin.end();
    await db.close();
  });

  it("applies every migration in order and records each one", async () => {
    const sql = connect(await emptyDatabase());
    const { applied } = await migrate(sql);
    assert.deepEqual(applied, migrationNames);
    const recorded = await sql<{ name: string }[]>`select name from aiki.migrations order by name`;
    assert.deepEqual(recorded.map((r) => r.name), migrationNames);
    // The engine works: a run can be started and read back.
    const [started] = await sql`select * from aiki.start_workflow('order', '1.0.0', '{"orderId": "o-1"}')`;
    assert.equal(await value(sql`select aiki.get_run(${started!.run_id}) ->> 'status'`), "pending");
  });

  it("applies nothing when run a second time, and keeps the data", async () => {
    const sql = connect(await emptyDatabase());
    await migrate(sql);
    await sql`select aiki.start_workflow('order', '1.0.0')`;
    const before = await sql`select name, applied_at from aiki.migrations order by name`;
    const { applied } = await migrate(sql);
    assert.deepEqual(applied, []);
    assert.deepEqual(await sql`select name, applied_at from aiki.migrations order by name`, before);
    assert.equal(await value(sql`select count(*)::int from aiki.runs`), 1);
  });

  it("applies each migration exactly once when 4 connections race", async () => {
    const url = await emptyDatabase();
    const racers = Array.from({ length: 4 }, () => connect(url));
    const results = await Promise.all(racers.map((sql) => migrate(sql)));
    assert.deepEqual(results.flatMap((r) => r.applied).sort(), migrationNames);
    assert.equal(results.filter((r) => r.applied.length > 0).length, 1, "one racer applies, the others find nothing");
    assert.equal(await value(racers[0]!`select count(*)::int from aiki.migrations`), migrationNames.length);
    assert.equal(await schemaSnapshot(racers[0]!), committedSnapshot());
  });

  it("applies each migration exactly once when 4 `aiki migrate` processes race", async () => {
    const url = await emptyDatabase();
    const env = { ...process.env, DATABASE_URL: "" };
    const outputs = await Promise.all(
      Array.from({ length: 4 }, () => run(process.execPath, ["--import", "tsx", `${root}sdk/cli.ts`, "migrate", "--url", url], { env })),
    );
    const lines = outputs.flatMap((o) => o.stdout.split("\n")).filter((l) => l.trim().startsWith("applied "));
    assert.deepEqual(lines.map((l) => l.trim()).sort(), migrationNames.map((n) => `applied ${n}`));
    const sql = connect(url);
    assert.equal(await value(sql`select count(*)::int from aiki.migrations`), migrationNames.length);
  });

  it("installs into a non-default database owned by a role that is neither superuser nor CREATEROLE", async () => {
    // The aiki_* roles exist already (the template install created them): the common case of a
    // second database on a server, or a managed Postgres where a DBA created the roles.
    const owner = unique("aiki_owner");
    roles.push(owner);
    await admin.unsafe(`create role ${owner} login password 'owner-pw' nosuperuser nocreaterole nocreatedb`);
    const url = new URL(await emptyDatabase(owner));
    url.username = owner;
    url.password = "owner-pw";
    const sql = connect(url.toString());

    assert.deepEqual((await migrate(sql)).applied, migrationNames);
    assert.deepEqual((await migrate(sql)).applied, []);
    assert.equal(await value(sql`select nspowner::regrole::text from pg_namespace where nspname = 'aiki'`), owner);
    assert.equal(await schemaSnapshot(sql), committedSnapshot());

    // Functions run as their owner (security definer), so the tables need no grant to callers.
    const [started] = await sql`select * from aiki.start_workflow('order', '1.0.0')`;
    assert.equal(started!.created, true);
  });

  it("creates the aiki_* roles in a fresh cluster, as an owner with CREATEROLE, from two databases at once", async () => {
    const server = await startEmbeddedPostgres();
    const fresh = postgres(server.url, { max: 1, ...quiet });
    try {
      assert.equal(await value(fresh`select count(*)::int from pg_roles where rolname like 'aiki\\_%'`), 0);
      await fresh.unsafe(`create role installer login password 'installer-pw' createrole nosuperuser`);
      await fresh.unsafe(`create database app_a owner installer`);
      await fresh.unsafe(`create database app_b owner installer`);
      const as = (database: string) => {
        const url = new URL(withDatabase(server.url, database));
        url.username = "installer";
        url.password = "installer-pw";
        return postgres(url.toString(), { max: 1, ...quiet });
      };
      const [a, b] = [as("app_a"), as("app_b")];
      try {
        // Different databases do not share the migration lock, so both race to create the roles.
        const results = await Promise.all([migrate(a), migrate(b)]);
        assert.deepEqual(results.map((r) => r.applied), [migrationNames, migrationNames]);
        const created = await fresh<{ rolname: string }[]>`
          select rolname from pg_roles where rolname like 'aiki\\_%' order by rolname`;
        assert.deepEqual(created.map((r) => r.rolname), ["aiki_admin", "aiki_client", "aiki_worker"]);
        assert.equal(await schemaSnapshot(a), committedSnapshot());
      } finally {
        await Promise.all([a.end(), b.end()]);
      }
    } finally {
      await fresh.end();
      await server.stop();
    }
  });

  it("the committed aiki.sql is what bundle() builds (run `npm run bundle`)", () => {
    const committed = readFileSync(`${root}aiki.sql`, "utf8").split("\n");
    const built = bundle().split("\n");
    // Report the first differing line, not a diff of two 80 kB strings.
    const line = committed.findIndex((text, i) => text !== built[i]);
    const differs = line >= 0 || committed.length !== built.length;
    const at = line >= 0 ? line : Math.min(committed.length, built.length);
    assert.ok(
      !differs,
      `aiki.sql is stale from line ${at + 1} (committed: ${JSON.stringify(committed[at])}, ` +
        `built: ${JSON.stringify(built[at])}): run \`npm run bundle\``,
    );
  });

  it("installing the bundle gives the same functions and tables as migrate(), and migrate() then applies nothing", async () => {
    const viaBundle = connect(await emptyDatabase());
    await viaBundle.unsafe(bundle());
    const viaMigrate = connect(await emptyDatabase());
    await migrate(viaMigrate);

    const expected = await inventory(viaMigrate);
    assert.ok(expected.functions.some((f) => f.startsWith("claim(")));
    assert.deepEqual(await inventory(viaBundle), expected);
    assert.equal(await schemaSnapshot(viaBundle), await schemaSnapshot(viaMigrate));

    const recorded = await viaBundle<{ name: string }[]>`select name from aiki.migrations order by name`;
    assert.deepEqual(recorded.map((r) => r.name), migrationNames);
    assert.deepEqual((await migrate(viaBundle)).applied, []);
    // And the other way round: the bundle over a migrated database is a no-op upgrade.
    await viaMigrate.unsafe(bundle());
    assert.equal(await value(viaMigrate`select count(*)::int from aiki.migrations`), migrationNames.length);
  });

  it("aiki.sql installs with psql -1 -f, twice", { skip: !hasPsql && "no psql binary" }, async () => {
    const url = await emptyDatabase();
    for (let i = 0; i < 2; i++) {
      await run("psql", ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-1", "-f", `${root}aiki.sql`, url], {
        env: { ...process.env, PGOPTIONS: "-c client_min_messages=warning" },
      });
    }
    const sql = connect(url);
    assert.equal(await value(sql`select count(*)::int from aiki.migrations`), migrationNames.length);
    assert.equal(await schemaSnapshot(sql), committedSnapshot());
  });

  it("aiki.sql refuses to run over a newer engine, changing nothing", { skip: !hasPsql && "no psql binary" }, async () => {
    const url = await emptyDatabase();
    const sql = connect(url);
    await migrate(sql);
    await sql`insert into aiki.migrations (name) values ('9999_from_the_future')`;
    const before = await inventory(sql);
    const failed = await run("psql", ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-1", "-f", `${root}aiki.sql`, url], {
      env: { ...process.env, PGOPTIONS: "-c client_min_messages=warning" },
    }).then(() => undefined, (error: { code: number; stderr: string }) => error);
    assert.ok(failed, "psql failed");
    assert.match(failed.stderr, /the aiki engine in this database is newer than this aiki\.sql \(engine version \d+\): use the aiki\.sql of a newer release/);
    assert.deepEqual(await inventory(sql), before);
  });

  it("the installed schema matches sql/schema.snapshot.sql (run `npm run schema:update`)", async () => {
    assert.equal(
      await schemaSnapshot(db.sql),
      committedSnapshot(),
      "the schema differs from sql/schema.snapshot.sql: review the change, then run `npm run schema:update`",
    );
  });
});

describe("sources", () => {
  const folder = (files: Record<string, string>) => {
    const dir = mkdtempSync(join(tmpdir(), "aiki-sources-"));
    for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
    return dir;
  };

  it("reads NNNN_name.sql files in name order and ignores files that are not .sql", () => {
    const dir = folder({ "10_b.sql": "b", "0002_a.sql": "a", "README.md": "x" });
    try {
      assert.deepEqual(readSqlFolder(dir), [{ name: "0002_a", text: "a" }, { name: "10_b", text: "b" }]);
    } finally {
      rmSync(dir, { recursive: true });
    }
  });

  it("fails loudly on a .sql file it does not know, instead of skipping it", () => {
    const dir = folder({ "0001_init.sql": "x", "0002-Oops.sql": "y", "extra.sql": "z" });
    try {
      assert.throws(() => readSqlFolder(dir), /0002-Oops\.sql, extra\.sql are not named like an engine source/);
      assert.equal(readSqlFolder(dir, ["0002-Oops.sql", "extra.sql"]).length, 1, "named exceptions are skipped");
    } finally {
      rmSync(dir, { recursive: true });
    }
  });
});
