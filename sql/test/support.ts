// Shared helpers for the SQL test suite: a per-file database, a fake clock, a run factory and
// assertions for SQLSTATEs, "nothing was written" and lock waits.
//
// Every test file gets its own database cloned from the migrated template (sdk/testing). Tests
// talk to it through `h.sql`, a pool of ONE connection, so the fake clock — a session setting
// read by aiki.now() — applies to every call the test makes. Tests that race two sessions open
// more single-connection pools with `session()`.
import assert from "node:assert/strict";
import { setTimeout as delay } from "node:timers/promises";
import type { Sql, TransactionSql } from "postgres";
import { testDatabase, type TestDatabase } from "../../sdk/testing/database.js";

export type { Sql };

export interface Harness {
  db: TestDatabase;
  /** One connection: session settings (the fake clock) stick. */
  sql: Sql;
  /** Another single-connection session on the same database, its clock set to the harness's. */
  session(): Promise<Sql>;
  close(): Promise<void>;
}

/** The fake clock's origin. Far from the wall clock, so no test can pass by reading real time. */
export const T0 = "2030-01-01T00:00:00.000Z";

/** ISO time `ms` milliseconds after T0. */
export const at = (ms: number): string => new Date(Date.parse(T0) + ms).toISOString();

/** Epoch milliseconds of a timestamp as returned by the driver (Date) or inside JSON (string). */
export const ms = (value: string | Date | null | undefined): number => {
  assert.ok(value != null, "expected a timestamp, got null");
  return value instanceof Date ? value.getTime() : Date.parse(value);
};

let currentNow = T0;

export async function harness(): Promise<Harness> {
  const db = await testDatabase();
  const sql = db.connect({ max: 1 });
  return {
    db,
    sql,
    async session() {
      const s = db.connect({ max: 1 });
      await setNow(s, currentNow);
      return s;
    },
    close: () => db.close(),
  };
}

/** Sets the fake clock of this session (aiki.now()) to an ISO time. */
export async function setNow(sql: Sql, iso: string): Promise<void> {
  currentNow = iso;
  await sql`select set_config('aiki.fake_now', ${iso}, false)`;
}

/** Empties every engine table and puts the clock back at T0: each test starts from nothing. */
export async function reset(sql: Sql): Promise<void> {
  await sql`truncate aiki.runs, aiki.steps, aiki.events, aiki.queues, aiki.queue_rates, aiki.workers, aiki.run_attempts, aiki.schedules`;
  await setNow(sql, T0);
}

export interface StartOptions {
  workflow?: string;
  version?: string;
  input?: unknown;
  idempotencyKey?: string | null;
  queue?: string;
  priority?: number;
  startAt?: string | null;
  delayMs?: number | null;
  concurrencyKey?: string | null;
  timeoutMs?: number | null;
  retry?: unknown;
  maxLeaseExpiries?: number;
  traceContext?: unknown;
}

/** A JSON value as a jsonb parameter; `null` becomes JSON null, not SQL NULL. */
export const jsonb = (sql: Sql | TransactionSql, value: unknown) => sql`${JSON.stringify(value ?? null)}::text::jsonb`;

/** Starts a run through aiki.start_workflow; returns its id. */
export async function startRun(sql: Sql, o: StartOptions = {}): Promise<string> {
  const r = await startWorkflow(sql, o);
  return r.run_id;
}

export async function startWorkflow(sql: Sql, o: StartOptions = {}): Promise<{ run_id: string; created: boolean }> {
  const [row] = await sql<{ run_id: string; created: boolean }[]>`
    select * from aiki.start_workflow(
      p_workflow => ${o.workflow ?? "wf"},
      p_version => ${o.version ?? "1.0.0"},
      p_input => ${jsonb(sql, o.input ?? null)},
      p_idempotency_key => ${o.idempotencyKey ?? null}::text,
      p_queue => ${o.queue ?? "default"},
      p_priority => ${o.priority ?? 0}::integer,
      p_start_at => ${o.startAt ?? null}::text::timestamptz,
      p_delay_ms => ${o.delayMs ?? null}::bigint,
      p_concurrency_key => ${o.concurrencyKey ?? null}::text,
      p_timeout_ms => ${o.timeoutMs ?? null}::bigint,
      p_retry => ${o.retry === undefined ? null : JSON.stringify(o.retry)}::text::jsonb,
      p_max_lease_expiries => ${o.maxLeaseExpiries ?? 5}::integer,
      p_trace_context => ${o.traceContext === undefined ? null : JSON.stringify(o.traceContext)}::text::jsonb)`;
  assert.ok(row);
  return row;
}

export interface JournalEntry {
  key: string;
  kind: string;
  name: string;
  status: string;
  attempts: number;
  output: any;
  error: any;
  child_id: string | null;
  wake_at: string | null;
}

export interface RunJson {
  id: string;
  workflow: string;
  version: string;
  status: string;
  queue: string;
  priority: number;
  attempt: number;
  input: any;
  output: any;
  error: any;
  parent_id: string | null;
  parent_step_key: string | null;
  trace_context: { traceparent: string; tracestate?: string } | null;
  idempotency_key: string | null;
  concurrency_key: string | null;
  lease_token: string | null;
  lease_expires_at: string | null;
  available_at: string | null;
  deadline_at: string | null;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  journal: JournalEntry[];
}

export interface ClaimResult {
  runs: (RunJson & { lease_token: string })[];
  next_due_at: string | null;
  skipped: boolean;
  held: boolean;
}

export interface ClaimOptions {
  worker?: string;
  workflows?: string[] | null;
  queues?: string[];
  limit?: number;
  leaseMs?: number;
}

export async function claim(sql: Sql, o: ClaimOptions = {}): Promise<ClaimResult> {
  const [row] = await sql<{ claim: ClaimResult }[]>`
    select aiki.claim(
      ${o.worker ?? "worker-1"},
      ${o.workflows ?? null}::text[],
      ${o.queues ?? ["default"]}::text[],
      ${o.limit ?? 1}::integer,
      ${o.leaseMs ?? 30000}::integer)`;
  assert.ok(row);
  return row.claim;
}

/** Claims and asserts exactly one run came back (optionally: that one). */
export async function claimOne(sql: Sql, o: ClaimOptions & { expect?: string } = {}): Promise<RunJson & { lease_token: string }> {
  const { runs } = await claim(sql, { ...o, limit: 1 });
  assert.equal(runs.length, 1, "expected the claim to lease exactly one run");
  const run = runs[0]!;
  if (o.expect) assert.equal(run.id, o.expect, "the claim leased another run than expected");
  assert.ok(run.lease_token);
  return run as RunJson & { lease_token: string };
}

/** Starts a run and claims it: a run in `running` with its lease token. */
export async function startAndClaim(sql: Sql, o: StartOptions & { worker?: string; leaseMs?: number } = {}) {
  const id = await startRun(sql, o);
  return claimOne(sql, { worker: o.worker, leaseMs: o.leaseMs, queues: [o.queue ?? "default"], expect: id });
}

export async function getRun(sql: Sql, id: string): Promise<RunJson> {
  const [row] = await sql<{ get_run: RunJson }[]>`select aiki.get_run(${id}::uuid)`;
  assert.ok(row);
  return row.get_run;
}

export async function status(sql: Sql, id: string): Promise<string> {
  const [row] = await sql<{ status: string }[]>`select status::text from aiki.runs where id = ${id}::uuid`;
  assert.ok(row, `run ${id} does not exist`);
  return row.status;
}

export async function step(sql: Sql, runId: string, key: string): Promise<JournalEntry | undefined> {
  return (await getRun(sql, runId)).journal.find((s) => s.key === key);
}

export interface DbError extends Error {
  code: string;
  hint?: string;
}

/** Awaits a promise that must fail with SQLSTATE `code` and a message matching `message`. */
export async function expectSqlState(
  promise: PromiseLike<unknown>,
  code: string,
  message?: RegExp,
): Promise<DbError> {
  let error: DbError | undefined;
  try {
    await promise;
  } catch (e) {
    error = e as DbError;
  }
  assert.ok(error, `expected SQLSTATE ${code}, but the call succeeded`);
  assert.equal(error.code, code, `expected SQLSTATE ${code}, got ${error.code}: ${error.message}`);
  if (message) assert.match(error.message, message);
  return error;
}

export interface TableCounts {
  runs: number;
  steps: number;
  events: number;
  queues: number;
  workers: number;
  /** A digest of every row, so an UPDATE shows up as well as an INSERT or DELETE. */
  digest: string;
}

/** A snapshot of the engine tables, to assert that a rejected call wrote nothing. */
export async function tableCounts(sql: Sql): Promise<TableCounts> {
  const [row] = await sql<TableCounts[]>`
    select (select count(*) from aiki.runs)::int as runs,
           (select count(*) from aiki.steps)::int as steps,
           (select count(*) from aiki.events)::int as events,
           (select count(*) from aiki.queues)::int as queues,
           (select count(*) from aiki.workers)::int as workers,
           md5(concat_ws('|',
             (select string_agg(r::text, ',' order by r.id) from aiki.runs r),
             (select string_agg(s::text, ',' order by s.run_id, s.step_key) from aiki.steps s),
             (select string_agg(e::text, ',' order by e.id) from aiki.events e),
             (select string_agg(q::text, ',' order by q.name) from aiki.queues q),
             (select string_agg(w::text, ',' order by w.id) from aiki.workers w),
             (select string_agg(a::text, ',' order by a.run_id, a.attempt) from aiki.run_attempts a),
             (select string_agg(c::text, ',' order by c.name) from aiki.schedules c))) as digest`;
  assert.ok(row);
  return row;
}

/** Asserts that `act` fails with `code`/`message` and leaves every engine table as it was. */
export async function expectRejected(
  sql: Sql,
  act: () => PromiseLike<unknown>,
  code: string,
  message: RegExp,
): Promise<DbError> {
  const before = await tableCounts(sql);
  const error = await expectSqlState(act(), code, message);
  assert.deepEqual(await tableCounts(sql), before, "a rejected call must write nothing");
  return error;
}

// --- concurrency -------------------------------------------------------------------------------

export async function backendPid(sql: Sql): Promise<number> {
  const [row] = await sql<{ pid: number }[]>`select pg_backend_pid() as pid`;
  assert.ok(row);
  return row.pid;
}

/**
 * Polls pg_stat_activity until backend `pid` waits for a lock (row, transaction or advisory),
 * so a test can commit the lock holder knowing the other session is queued behind it.
 */
export async function waitUntilBlocked(observer: Sql, pid: number, timeoutMs = 15000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const [row] = await observer<{ wait_event_type: string | null; wait_event: string | null }[]>`
      select wait_event_type, wait_event from pg_stat_activity where pid = ${pid}`;
    if (row?.wait_event_type === "Lock") return row.wait_event ?? "";
    await delay(5);
  }
  throw new Error(`backend ${pid} did not block on a lock within ${timeoutMs} ms`);
}

export interface Settled<T> {
  done: boolean;
  value?: T;
  error?: DbError;
}

/**
 * Starts a query now (postgres.js queries are lazy) and records how it ended, without ever
 * rejecting, so a test can check it is still blocked and later inspect its outcome.
 */
export function inFlight<T>(query: PromiseLike<T>): Settled<T> & { promise: Promise<Settled<T>> } {
  const state: Settled<T> & { promise: Promise<Settled<T>> } = { done: false } as any;
  state.promise = Promise.resolve(query).then(
    (value) => Object.assign(state, { done: true, value }),
    (error) => Object.assign(state, { done: true, error }),
  );
  return state;
}

// --- notifications -----------------------------------------------------------------------------

export interface Listener {
  /** Payloads delivered since the last drain, in order; a marker round-trip flushes the channel. */
  drain(): Promise<string[]>;
  close(): Promise<void>;
}

/**
 * LISTENs on `channel` on a dedicated connection. drain() sends a marker notification from
 * another session and waits for it: notifications arrive in commit order, so everything
 * committed before the marker has arrived by then.
 */
export async function listen(sql: Sql, channel: string, timeoutMs = 10000): Promise<Listener> {
  const got: string[] = [];
  let wake: (() => void) | undefined;
  const sub = await sql.listen(channel, (payload) => {
    got.push(payload);
    wake?.();
  });
  let n = 0;
  return {
    async drain() {
      const marker = `__marker_${n++}`;
      await sql`select pg_notify(${channel}, ${marker})`;
      const deadline = Date.now() + timeoutMs;
      while (!got.includes(marker)) {
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`marker ${marker} not received on ${channel}`);
        await Promise.race([new Promise<void>((resolve) => (wake = resolve)), delay(Math.min(left, 100))]);
      }
      const i = got.indexOf(marker);
      const before = got.slice(0, i);
      got.splice(0, i + 1);
      return before;
    },
    close: () => sub.unlisten(),
  };
}

// --- worker calls, for readability ---------------------------------------------------------------

/** A run as a worker holds it: its id and current lease token. */
export interface Lease {
  id: string;
  lease_token: string;
}

export async function completeStep(sql: Sql, r: Lease, key: string, name: string, output: unknown, kind = "task"): Promise<JournalEntry> {
  const [row] = await sql<{ s: JournalEntry }[]>`
    select aiki.complete_step(${r.id}::uuid, ${r.lease_token}::uuid, ${key}, ${kind}, ${name}, ${jsonb(sql, output)}) as s`;
  return row!.s;
}

export async function failStep(
  sql: Sql, r: Lease, key: string, name: string, error: unknown,
  o: { retry?: unknown; nonRetryable?: boolean; inlineMaxMs?: number } = {},
): Promise<any> {
  const [row] = await sql<{ s: any }[]>`
    select aiki.fail_step(${r.id}::uuid, ${r.lease_token}::uuid, ${key}, ${name}, ${jsonb(sql, error)},
                          ${o.retry === undefined ? null : JSON.stringify(o.retry)}::text::jsonb,
                          ${o.nonRetryable ?? false}, ${o.inlineMaxMs ?? 0}::bigint) as s`;
  return row!.s;
}

export async function suspend(sql: Sql, r: Lease, waits: unknown[]): Promise<any> {
  const [row] = await sql<{ s: any }[]>`select aiki.suspend(${r.id}::uuid, ${r.lease_token}::uuid, ${jsonb(sql, waits)}) as s`;
  return row!.s;
}

export async function completeRun(sql: Sql, r: Lease, output: unknown = null): Promise<void> {
  await sql`select aiki.complete_run(${r.id}::uuid, ${r.lease_token}::uuid, ${jsonb(sql, output)})`;
}

export async function failRun(sql: Sql, r: Lease, error: unknown, nonRetryable = false): Promise<any> {
  const [row] = await sql<{ s: any }[]>`
    select aiki.fail_run(${r.id}::uuid, ${r.lease_token}::uuid, ${jsonb(sql, error)}, ${nonRetryable}) as s`;
  return row!.s;
}

export async function sendEvent(sql: Sql, runId: string, name: string, data: unknown = null, key: string | null = null): Promise<string> {
  const [row] = await sql<{ id: string }[]>`
    select aiki.send_event(${runId}::uuid, ${name}, ${jsonb(sql, data)}, ${key}::text) as id`;
  return row!.id;
}

export async function startChildren(sql: Sql, r: Lease, children: unknown[]): Promise<string[]> {
  const [row] = await sql<{ ids: string[] }[]>`
    select aiki.start_children(${r.id}::uuid, ${r.lease_token}::uuid, ${jsonb(sql, children)}) as ids`;
  return row!.ids;
}

export async function cancel(sql: Sql, runId: string, reason: string | null = null): Promise<string> {
  const [row] = await sql<{ s: string }[]>`select aiki.cancel(${runId}::uuid, ${reason}::text)::text as s`;
  return row!.s;
}

/** The raw row of a run, for columns get_run does not show (lease_owner, lease_expiries, retry). */
export async function runRow(sql: Sql, runId: string): Promise<Record<string, any>> {
  const [row] = await sql`select * from aiki.runs where id = ${runId}::uuid`;
  assert.ok(row, `run ${runId} does not exist`);
  return row;
}
