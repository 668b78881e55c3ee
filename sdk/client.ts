// The client: a postgres.js pool plus, lazily, one LISTEN connection for status waits and
// worker wake-ups. Options are resolved here and nowhere else. The pool replaces itself after a
// connection failure, because postgres.js can strand queries on a closed connection
// (sdk/db/pool.ts).
import type { Sql } from "postgres";
import { healingPool } from "./db/pool.js";
import { InvalidInputError } from "./errors.js";
import { Notifications } from "./listener.js";
import * as engine from "./engine.js";

export interface ClientOptions {
  /** Postgres URL. Default: the DATABASE_URL environment variable. */
  url?: string;
  /** Pool size for queries. Default: 10. */
  max?: number;
  /** Called with the worker's and client's diagnostic lines. Default: silent. */
  log?: (line: string) => void;
  /**
   * An engine call in flight this long, and not waiting on a lock, is presumed stranded on a dead
   * connection: the pool is replaced and the call retried. Your own queries on `client.sql` are
   * never cut short. Default: 30 s.
   */
  stallMs?: number;
}

export interface Client {
  readonly sql: Sql;
  readonly url: string;
  readonly log: (line: string) => void;
  notifications(): Notifications;
  /** Reads one run (with its journal). */
  getRun(runId: string): Promise<engine.RunRecord>;
  listRuns(filter?: Parameters<typeof engine.listRuns>[1]): Promise<engine.RunSummary[]>;
  close(): Promise<void>;
}

export function client(options: ClientOptions = {}): Client {
  const url = options.url ?? process.env.DATABASE_URL;
  if (!url) throw new InvalidInputError("AK003", "no database: pass client({ url }) or set DATABASE_URL");
  const sql = healingPool(url, {
    max: options.max ?? 10,
    onnotice: () => {},
    connection: { application_name: "aiki" },
  }, { stallMs: options.stallMs });
  let notifications: Notifications | undefined;
  return {
    sql,
    url,
    log: options.log ?? (() => {}),
    notifications: () => (notifications ??= new Notifications(url)),
    getRun: (runId) => engine.getRun(sql, runId),
    listRuns: (filter) => engine.listRuns(sql, filter),
    async close() {
      await notifications?.close();
      await sql.end({ timeout: 5 });
    },
  };
}
