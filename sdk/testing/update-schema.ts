// `npm run schema:update`: installs the engine into a fresh database — on DATABASE_URL's server
// if set, otherwise on an embedded one — and rewrites sql/schema.snapshot.sql from it.
import postgres from "postgres";
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { startEmbeddedPostgres, type EmbeddedServer } from "../db/embedded.js";
import { migrate } from "../db/migrate.js";
import { quiet, withDatabase } from "./database.js";
import { schemaSnapshot } from "./schema.js";

export const snapshotPath = fileURLToPath(new URL("../../sql/schema.snapshot.sql", import.meta.url));

let embedded: EmbeddedServer | undefined;
let adminUrl = process.env.DATABASE_URL;
if (!adminUrl) {
  embedded = await startEmbeddedPostgres();
  adminUrl = embedded.url;
}
const name = `aiki_snapshot_${randomBytes(6).toString("hex")}`;
const admin = postgres(adminUrl, { max: 1, ...quiet });
try {
  await admin.unsafe(`create database ${name} template template0`);
  const sql = postgres(withDatabase(adminUrl, name), { max: 1, ...quiet });
  try {
    await migrate(sql);
    writeFileSync(snapshotPath, await schemaSnapshot(sql));
    console.log(`Wrote ${snapshotPath}`);
  } finally {
    await sql.end();
  }
} finally {
  await admin.unsafe(`drop database if exists ${name} with (force)`);
  await admin.end();
  await embedded?.stop();
}
