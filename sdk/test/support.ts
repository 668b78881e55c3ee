// Shared helpers for the SDK test suite: one database per test file (cloned from the migrated
// template), clients and workers that are stopped when the file ends, and the small primitives
// the tests synchronise on — gates a task blocks on, latches a task opens, bounded polls of the
// database. Nothing here sleeps and hopes: every wait has a real signal and a deadline.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import type { Sql } from "postgres";
import { client, worker, type Client, type ClientOptions, type Logger, type WorkerHandle, type WorkerOptions } from "../index.js";
import type { RunRecord, RunStatus } from "../engine.js";
import { testDatabase, type TestDatabase } from "../testing/database.js";

export interface Env {
  db: TestDatabase;
  url: string;
  /** A pool on the test database, for reading engine tables and side-effect tables. */
  sql: Sql;
  /** The client most tests share; its logger's lines are collected in `logs` (see `collect`). */
  aiki: Client;
  logs: string[];
  /** Another client (own pool and LISTEN connection), closed with the environment. */
  client(options?: Omit<ClientOptions, "url">): Client;
  /** Spawns a worker (small poll, short lease) on `on` (default: the shared client). */
  spawn(options: WorkerOptions, on?: Client): Promise<WorkerHandle>;
  close(): Promise<void>;
}

/** Worker options that keep tests fast: a short safety poll and lease. */
export const fast = { pollMs: 200, leaseMs: 3_000 } as const;

export async function environment(): Promise<Env> {
  const db = await testDatabase();
  const clients: Client[] = [];
  const workers: WorkerHandle[] = [];
  const logs: string[] = [];
  const makeClient = (options: Omit<ClientOptions, "url"> = {}) => {
    const c = client({ url: db.url, max: 5, logger: false, ...options });
    clients.push(c);
    return c;
  };
  const aiki = makeClient({ logger: collect(logs) });
  return {
    db,
    url: db.url,
    sql: db.sql,
    aiki,
    logs,
    client: makeClient,
    async spawn(options, on = aiki) {
      const handle = await worker({ ...fast, ...options }).spawn(on);
      workers.push(handle);
      return handle;
    },
    async close() {
      await Promise.all(workers.map((w) => w.stop({ timeoutMs: 100 })));
      await Promise.all(clients.map((c) => c.close()));
      await db.close();
    },
  };
}

/** A logger that appends `level: message {fields}` to `lines`, and calls `onLine` with each. */
export function collect(lines: string[], onLine: (line: string) => void = () => {}): Logger {
  const write = (level: string) => (message: string, fields?: Record<string, unknown>) => {
    const line = `${level}: ${message}${fields === undefined ? "" : ` ${JSON.stringify(fields)}`}`;
    lines.push(line);
    onLine(line);
  };
  return { info: write("info"), warn: write("warn"), error: write("error") };
}

/** A workflow (or task) name no other test of the file uses. */
export function unique(prefix: string): string {
  return `${prefix}-${randomBytes(4).toString("hex")}`;
}

/** A promise opened from outside: tasks block on `wait()`, the test calls `open()`. */
export interface Gate {
  wait(): Promise<void>;
  open(): void;
  readonly isOpen: boolean;
}

export function gate(): Gate {
  let open!: () => void;
  let isOpen = false;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return {
    wait: () => promise,
    open() {
      isOpen = true;
      open();
    },
    get isOpen() {
      return isOpen;
    },
  };
}

/** A signal a task raises and a test awaits, with a deadline. */
export interface Latch<T = void> {
  raise(value: T): void;
  wait(timeoutMs?: number): Promise<T>;
  readonly raised: boolean;
}

export function latch<T = void>(what: string): Latch<T> {
  let raise!: (value: T) => void;
  let raised = false;
  const promise = new Promise<T>((resolve) => (raise = resolve));
  return {
    raise(value: T) {
      raised = true;
      raise(value);
    },
    wait: (timeoutMs = 15_000) => within(promise, timeoutMs, what),
    get raised() {
      return raised;
    },
  };
}

/** `promise`, or an error naming `what` after `timeoutMs`. */
export async function within<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `probe` every few ms until it returns a value other than undefined, or fails after timeoutMs. */
export async function until<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Polls the run until its status is one of `statuses` (the engine notifies terminal ones only). */
export function untilStatus(aiki: Client, runId: string, statuses: RunStatus | RunStatus[], timeoutMs = 15_000): Promise<RunRecord> {
  const wanted = new Set(Array.isArray(statuses) ? statuses : [statuses]);
  return until(`run ${runId} to be ${[...wanted].join(" or ")}`, async () => {
    const run = await aiki.getRun(runId);
    return wanted.has(run.status) ? run : undefined;
  }, timeoutMs);
}

/** Counts calls by key: `counts.bump("charge")`, `counts.get("charge")`. */
export class Counts {
  private readonly map = new Map<string, number>();
  bump(key: string): number {
    const n = (this.map.get(key) ?? 0) + 1;
    this.map.set(key, n);
    return n;
  }
  get(key: string): number {
    return this.map.get(key) ?? 0;
  }
}

/** The run's journal entry `key`, asserting it exists. */
export function stepOf(run: RunRecord, key: string) {
  const step = run.journal?.find((s) => s.key === key);
  assert.ok(step, `run ${run.id} has no journal entry ${key}; it has ${run.journal?.map((s) => s.key).join(", ")}`);
  return step;
}

/** Awaits `promise`, which must reject with an instance of `Class`; returns the error. */
export async function rejects<E extends Error>(promise: Promise<unknown>, Class: new (...args: any[]) => E): Promise<E> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof Class, `expected ${Class.name}, got ${String((error as Error)?.stack ?? error)}`);
    return error;
  }
  assert.fail(`expected ${Class.name}, but the call succeeded`);
}
