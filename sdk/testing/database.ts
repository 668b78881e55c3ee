// Per-test-file databases, cloned from a migrated template (as graphile-worker does), so every
// file starts from a fresh, fully installed engine in well under a second.
//
// The test runner (run-tests.ts) prepares the server and template once and passes them down in
// AIKI_TEST_ADMIN_URL / AIKI_TEST_TEMPLATE. A test file started on its own prepares them itself.
import postgres, { type Sql } from "postgres";
import { randomBytes } from "node:crypto";
import { migrate } from "../db/migrate.js";
import { startEmbeddedPostgres, type EmbeddedServer } from "../db/embedded.js";

export interface TestDatabase {
  name: string;
  url: string;
  sql: Sql;
  /** A new connection pool to the same database (for racing sessions). */
  connect(options?: postgres.Options<{}>): Sql;
  close(): Promise<void>;
}

export const quiet = { onnotice: () => {} } as const;

export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

/** Creates the template database `name` on the server at adminUrl and installs the engine. */
export async function prepareTemplate(adminUrl: string, name: string): Promise<void> {
  const admin = postgres(adminUrl, { max: 1, ...quiet });
  try {
    await admin.unsafe(`drop database if exists ${name} with (force)`);
    await admin.unsafe(`create database ${name}`);
  } finally {
    await admin.end();
  }
  const sql = postgres(withDatabase(adminUrl, name), { max: 1, ...quiet });
  try {
    await migrate(sql);
  } finally {
    await sql.end();
  }
}

let ownServer: EmbeddedServer | undefined;

async function server(): Promise<{ adminUrl: string; template: string }> {
  if (process.env.AIKI_TEST_ADMIN_URL && process.env.AIKI_TEST_TEMPLATE) {
    return { adminUrl: process.env.AIKI_TEST_ADMIN_URL, template: process.env.AIKI_TEST_TEMPLATE };
  }
  let adminUrl = process.env.DATABASE_URL;
  if (!adminUrl) {
    ownServer = await startEmbeddedPostgres();
    adminUrl = ownServer.url;
  }
  const template = `aiki_template_${process.pid}`;
  await prepareTemplate(adminUrl, template);
  process.env.AIKI_TEST_ADMIN_URL = adminUrl;
  process.env.AIKI_TEST_TEMPLATE = template;
  return { adminUrl, template };
}

export async function testDatabase(): Promise<TestDatabase> {
  const { adminUrl, template } = await server();
  const name = `aiki_test_${randomBytes(6).toString("hex")}`;
  const admin = postgres(adminUrl, { max: 1, ...quiet });
  try {
    await admin.unsafe(`create database ${name} template ${template}`);
  } finally {
    await admin.end();
  }
  const url = withDatabase(adminUrl, name);
  const pools: Sql[] = [];
  const connect = (options: postgres.Options<{}> = {}) => {
    const pool = postgres(url, { max: 10, ...quiet, ...options });
    pools.push(pool);
    return pool;
  };
  const sql = connect();
  return {
    name,
    url,
    sql,
    connect,
    async close() {
      await Promise.all(pools.map((p) => p.end({ timeout: 1 })));
      const admin = postgres(adminUrl, { max: 1, ...quiet });
      try {
        await admin.unsafe(`drop database if exists ${name} with (force)`);
      } finally {
        await admin.end();
      }
      if (ownServer) await ownServer.stop();
    },
  };
}
