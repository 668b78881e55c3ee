// The client: a postgres.js pool plus, lazily, one LISTEN connection for status waits and
// worker wake-ups. Options are resolved here and nowhere else (their shapes are checked in
// options.ts). The pool replaces itself after a connection failure, because postgres.js can
// strand queries on a closed connection (sdk/db/pool.ts).
import type { Sql } from "postgres";
import type { Codec } from "./codec/codec.js";
import { decodeRun } from "./codec/payloads.js";
import { healingPool } from "./db/pool.js";
import { checkSchemaVersion } from "./db/version.js";
import { InvalidInputError } from "./errors.js";
import { Notifications } from "./listener.js";
import { resolveLogger, type Logger } from "./logger.js";
import { check, clientRules, queueRules } from "./options.js";
import { toMilliseconds, type Duration } from "./duration.js";
import { loadTracing } from "./tracing/otel.js";
import * as engine from "./engine.js";

export interface ClientOptions {
  /** Postgres URL (postgres:// or postgresql://). Default: the DATABASE_URL environment variable. */
  url?: string | undefined;
  /** Pool size for queries. Default: 10. */
  max?: number;
  /**
   * Where the client and its workers report what happens: worker start and stop, lost
   * connections and recovery, failed claims, task and run failures, `run.logger` lines.
   * Any `{ info, warn, error }` object. Default: console. `false`: silent.
   */
  logger?: Logger | false;
  /**
   * An engine call in flight this long, and not waiting on a lock, is presumed stranded on a dead
   * connection: the pool is replaced and the call retried. Your own queries on `client.sql` are
   * never cut short. Default: 30 s.
   */
  stallMs?: number;
  /**
   * Encodes every user payload before it reaches Postgres and decodes it after: workflow inputs,
   * outputs and errors, task results, event data (README, "Encrypted payloads"). Workers spawned
   * with this client use it too. E.g. `aesGcmCodec({ keys: { k1: key }, current: "k1" })`.
   * Default: none (payloads are stored as given).
   */
  codec?: Codec;
}

export interface QueueOptions {
  /** Runs of the queue running at once. Default: no limit. */
  concurrencyLimit?: number;
  /** Runs per concurrency key running at once. Default: 1. */
  keyConcurrencyLimit?: number;
  /** Runs started per window. Default: no limit. */
  rateLimit?: { limit: number; per: Duration; perKey?: boolean };
}

export interface Client {
  readonly sql: Sql;
  readonly url: string;
  readonly logger: Logger;
  /** The codec of `client({ codec })`, or undefined. */
  readonly codec: Codec | undefined;
  notifications(): Notifications;
  /**
   * Checks, once, that the database holds the engine version this package ships; rejects with
   * SchemaVersionError ("run `npx aiki migrate`" or "upgrade the `aiki` package") if not.
   * Workers and starts call it before their first query. Also loads OpenTelemetry, if the
   * application has it (tracing/otel.ts).
   */
  ready(): Promise<void>;
  /**
   * Sets a queue's limits (`aiki.set_queue`, admin role), replacing all it had: a limit left out
   * is removed. `rateLimit`: at most `limit` runs start (their first lease) per window `per`,
   * windows aligned to the Unix epoch; with `perKey`, per concurrency key. AK003 on bad limits.
   */
  setQueue(name: string, settings?: QueueOptions): Promise<engine.QueueInfo>;
  /**
   * Reads one run (with its journal). With a codec, its payloads decoded (CodecError if one
   * cannot be); without, as stored (encoded payloads show as envelopes).
   */
  getRun(runId: string): Promise<engine.RunRecord>;
  listRuns(filter?: Parameters<typeof engine.listRuns>[1]): Promise<engine.RunSummary[]>;
  /** The schedules in the database (declare them with schedule(…), sdk/definitions/schedule.ts). */
  readonly schedules: ScheduleCalls;
  /** Ends the pool and the LISTEN connection. Stop this client's workers first. */
  close(): Promise<void>;
}

export interface ScheduleCalls {
  /** Every schedule, by name. */
  list(): Promise<engine.ScheduleInfo[]>;
  /** One schedule; RunNotFoundError (AK002) when there is none of that name. */
  get(name: string): Promise<engine.ScheduleInfo>;
  /** Stops firing it (trigger still fires it). */
  pause(name: string): Promise<engine.ScheduleInfo>;
  /** Fires again from its next fire time after now; fires missed while paused never start. */
  resume(name: string): Promise<engine.ScheduleInfo>;
  /** Fires it now, under its overlap policy. */
  trigger(name: string): Promise<engine.TriggerResult>;
  /** Removes it (its runs stay); whether there was one. */
  delete(name: string): Promise<boolean>;
}

export function client(options: ClientOptions = {}): Client {
  check("client option", options, clientRules);
  const url = options.url ?? process.env.DATABASE_URL;
  if (!url) throw new InvalidInputError("AK003", "no database: pass client({ url }) or set DATABASE_URL");
  checkPostgresUrl(url);
  const sql = healingPool(url, {
    max: options.max ?? 10,
    onnotice: () => {},
    connection: { application_name: "aiki" },
  }, { stallMs: options.stallMs });
  const logger = resolveLogger(options.logger);
  let notifications: Notifications | undefined;
  let checked: Promise<void> | undefined;
  return {
    sql,
    url,
    logger,
    codec: options.codec,
    notifications: () => (notifications ??= new Notifications(url, logger)),
    ready() {
      // Remembered once it passed; a failure (the server down, the engine not migrated yet) is
      // looked at again on the next call.
      checked ??= Promise.all([checkSchemaVersion(sql), loadTracing()]).then(() => undefined, (error: unknown) => {
        checked = undefined;
        throw error;
      });
      return checked;
    },
    async setQueue(name, settings = {}) {
      check("queue option", settings, queueRules);
      await engine.setQueue(sql, name, {
        concurrencyLimit: settings.concurrencyLimit,
        keyConcurrencyLimit: settings.keyConcurrencyLimit,
        rateLimit: settings.rateLimit?.limit,
        rateWindowMs: settings.rateLimit === undefined ? undefined : toMilliseconds(settings.rateLimit.per),
        ratePerKey: settings.rateLimit?.perKey,
      });
      const queues = await engine.listQueues(sql);
      return queues.find((q) => q.name === name)!;
    },
    getRun: async (runId) => {
      const run = await engine.getRun(sql, runId);
      return options.codec ? decodeRun(options.codec, run) : run;
    },
    listRuns: (filter) => engine.listRuns(sql, filter),
    schedules: {
      list: () => engine.listSchedules(sql),
      get: (name) => engine.getSchedule(sql, name),
      pause: (name) => engine.pauseSchedule(sql, name),
      resume: (name) => engine.resumeSchedule(sql, name),
      trigger: (name) => engine.triggerSchedule(sql, name),
      delete: (name) => engine.deleteSchedule(sql, name),
    },
    async close() {
      await notifications?.close();
      await sql.end({ timeout: 5 });
    },
  };
}

/** AK003 unless `url` is a postgres:// or postgresql:// URL the driver can read. */
function checkPostgresUrl(url: string): void {
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(url)?.[1]?.toLowerCase();
  if (scheme !== "postgres" && scheme !== "postgresql") {
    throw new InvalidInputError("AK003",
      `the database URL must start with postgres:// or postgresql://, not ${scheme ? `${scheme}://` : JSON.stringify(url.slice(0, 20))}`);
  }
  try {
    const parsed = new URL(url);
    decodeURIComponent(parsed.username);
    decodeURIComponent(parsed.password);
  } catch {
    // The message never repeats the URL: it may hold a password.
    throw new InvalidInputError("AK003",
      "the database URL is malformed (percent-encode special characters in the user name and password, e.g. %40 for @)");
  }
}
