// The version contract (sdk/db/version.ts): an SDK on a database whose engine is missing, older
// or newer than the package gets SchemaVersionError saying what to do — "run `npx aiki migrate`"
// or "upgrade the `aiki` package" — at its first start or spawn, never a raw 3F000 or 42883;
// and migrate() does not go backwards over a newer engine unless forced.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import postgres from "postgres";
import { SchemaVersionError, client, migrate, worker, workflow, type Client } from "../index.js";
import { packageSchemaVersion } from "../db/version.js";
import { quiet, testDatabase, withDatabase, type TestDatabase } from "../testing/database.js";
import { rejects } from "./support.js";

const wf = workflow({ name: "versioned" }).v("1", { handler: async () => null });
const clients: Client[] = [];
const databases: string[] = [];
let adminUrl: string;
let template: TestDatabase;

before(async () => {
  template = await testDatabase();
  adminUrl = process.env.AIKI_TEST_ADMIN_URL!;
});

after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  const admin = postgres(adminUrl, { max: 1, ...quiet });
  for (const name of databases) await admin.unsafe(`drop database if exists ${name} with (force)`);
  await admin.end();
  await template.close();
});

/** A new database: empty, or a clone of the migrated template. */
async function database(migrated: boolean): Promise<string> {
  const name = `aiki_version_${randomBytes(5).toString("hex")}`;
  databases.push(name);
  const admin = postgres(adminUrl, { max: 1, ...quiet });
  await admin.unsafe(`create database ${name} template ${migrated ? process.env.AIKI_TEST_TEMPLATE : "template0"}`).finally(() => admin.end());
  return withDatabase(adminUrl, name);
}

function connect(url: string): Client {
  const c = client({ url, logger: false });
  clients.push(c);
  return c;
}

async function alter(url: string, statement: string): Promise<void> {
  const sql = postgres(url, { max: 1, ...quiet });
  await sql.unsafe(statement).finally(() => sql.end());
}

describe("the SDK on a database whose engine does not match", () => {
  it("matching: ready() passes and a start works", async () => {
    const aiki = connect(await database(true));
    await aiki.ready();
    await wf.start(aiki, null);
  });

  it("not installed (no schema aiki): start and spawn say run `npx aiki migrate`", async () => {
    const aiki = connect(await database(false));
    const message = 'the aiki engine is not installed in this database (schema "aiki" does not exist): run `npx aiki migrate`';
    const started = await rejects(wf.start(aiki, null), SchemaVersionError);
    assert.equal(started.code, "schema_missing");
    assert.equal(started.message, message);
    const spawned = await rejects(worker({ workflows: [wf] }).spawn(aiki), SchemaVersionError);
    assert.equal(spawned.message, message);
  });

  it("older (a migration missing): start says run `npx aiki migrate`", async () => {
    const url = await database(true);
    await alter(url, `delete from aiki.migrations where name like '${String(packageSchemaVersion()).padStart(4, "0")}%'`);
    const error = await rejects(wf.start(connect(url), null), SchemaVersionError);
    assert.equal(error.code, "schema_outdated");
    assert.match(error.message, /^the aiki engine in this database is version \d+, older than this package's \d+: run `npx aiki migrate`$/);
    assert.ok(error.databaseVersion! < error.packageVersion);
  });

  it("older, from before schema_version() existed (42883): start says run `npx aiki migrate`", async () => {
    const url = await database(true);
    await alter(url, "drop function aiki.schema_version()");
    const error = await rejects(wf.start(connect(url), null), SchemaVersionError);
    assert.equal(error.code, "schema_outdated");
    assert.match(error.message, /older than this package \(function aiki\.schema_version\(\) does not exist\): run `npx aiki migrate`$/);
  });

  it("newer: start and spawn say upgrade the `aiki` package", async () => {
    const url = await database(true);
    await alter(url, "insert into aiki.migrations (name) values ('9999_from_the_future')");
    const aiki = connect(url);
    const message = `the aiki engine in this database is version 9999, newer than this package's ${packageSchemaVersion()}: upgrade the \`aiki\` package`;
    const started = await rejects(wf.start(aiki, null), SchemaVersionError);
    assert.equal(started.code, "schema_newer");
    assert.equal(started.message, message);
    assert.equal(started.databaseVersion, 9999);
    assert.equal((await rejects(worker({ workflows: [wf] }).spawn(aiki), SchemaVersionError)).message, message);
  });

  it("a check that failed is made again: after `migrate`, the same client works", async () => {
    const aiki = connect(await database(false));
    await rejects(aiki.ready(), SchemaVersionError);
    await migrate(aiki.sql);
    await aiki.ready();
    await wf.start(aiki, null);
  });
});

describe("migrate() over a newer engine", () => {
  it("refuses, changing nothing, unless forced", async () => {
    const url = await database(true);
    await alter(url, "insert into aiki.migrations (name) values ('9999_from_the_future')");
    await alter(url, "create or replace function aiki.schema_version() returns integer language sql as $$ select 9999 $$");
    const sql = postgres(url, { max: 1, ...quiet });
    try {
      const error = await rejects(migrate(sql), SchemaVersionError);
      assert.equal(error.code, "schema_newer");
      assert.match(error.message, /version 9999, newer than this package's \d+: upgrade the `aiki` package; migrating would replace .* `aiki migrate --force`/);
      const [kept] = await sql`select aiki.schema_version() as v, prosrc from pg_proc where proname = 'schema_version'`;
      assert.match(kept!.prosrc, /select 9999/, "the newer engine's function is untouched");

      assert.deepEqual(await migrate(sql, { force: true }), { applied: [] });
      const [replaced] = await sql`select prosrc from pg_proc where proname = 'schema_version'`;
      assert.doesNotMatch(replaced!.prosrc, /select 9999/, "forced: this package's functions are applied");
    } finally {
      await sql.end();
    }
  });
});
