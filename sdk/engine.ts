// Typed calls of the engine's SQL functions: one wrapper per SQL verb, same name in camelCase.
// Nothing here decides a run's state; it only moves arguments in and maps errors out.
import type { JSONValue, Sql } from "postgres";
import { engineQuery } from "./db/pool.js";
import { packageSchemaVersion } from "./db/version.js";
import { InvalidInputError, fromDatabaseError, type SerializedError } from "./errors.js";

export type RunStatus =
  | "scheduled" | "pending" | "running" | "sleeping" | "waiting" | "retrying" | "paused"
  | "completed" | "failed" | "cancelled" | "continued";

/** `continued`: the run ended by continuing as new; its chain goes on in a successor run. */
export const terminalStatuses: ReadonlySet<RunStatus> = new Set(["completed", "failed", "cancelled", "continued"]);

/** A span's W3C trace context as a run carries it (runs.trace_context; aiki._check_trace_context). */
export interface TraceContext {
  traceparent: string;
  tracestate?: string;
}

export type StepKind = "task" | "sleep" | "event" | "child" | "wait_child" | "value";

export interface StepRecord {
  key: string;
  kind: StepKind;
  name: string;
  status: "waiting" | "started" | "retrying" | "completed" | "failed";
  attempts: number;
  output: unknown;
  error: unknown;
  child_id: string | null;
  wake_at: string | null;
}

export interface RunRecord {
  id: string;
  workflow: string;
  version: string;
  status: RunStatus;
  queue: string;
  priority: number;
  attempt: number;
  input: unknown;
  output: unknown;
  error: unknown;
  parent_id: string | null;
  parent_step_key: string | null;
  /** The W3C trace context of the span that started the run; null when it was started untraced. */
  trace_context: TraceContext | null;
  idempotency_key: string | null;
  concurrency_key: string | null;
  lease_expires_at: string | null;
  available_at: string | null;
  deadline_at: string | null;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  /** True while the run is pending and no live worker serves its workflow version and queue. */
  unserved?: boolean;
  /** Continue-as-new links (get_run, find_run): the run before and after this one, null if none. */
  continued_from?: string | null;
  continued_to?: string | null;
  /** The newest run of this run's continue-as-new chain: the run's own id outside a chain. */
  latest_id?: string;
  /** The first run of this run's continue-as-new chain; absent while the run has not continued or been continued. */
  chain_id?: string;
  journal?: StepRecord[];
}

/** A run as claim hands it to the worker that leased it: with its lease token and journal. */
export interface ClaimedRun extends RunRecord {
  lease_token: string;
  journal: StepRecord[];
}

export interface ClaimResult {
  now: string;
  runs: ClaimedRun[];
  /** The earliest future timer of any queue; null after a full claim. */
  next_due_at: string | null;
  /** A short claim passed over runs another transaction held locked: look again shortly. */
  skipped: boolean;
  /** A short claim left runs a concurrency limit keeps back (a freed slot notifies). */
  held: boolean;
}

export interface StartOptions {
  idempotencyKey?: string;
  queue?: string;
  priority?: number;
  startAt?: Date;
  delayMs?: number;
  concurrencyKey?: string;
  timeoutMs?: number;
  retry?: unknown;
  maxLeaseExpiries?: number;
  traceContext?: TraceContext;
}

export type Wait =
  | { key: string; kind: "sleep"; name: string; duration_ms: number }
  | { key: string; kind: "event"; name: string; timeout_ms?: number | null }
  | { key: string; kind: "wait_child"; name: string; child_id: string };

export type SuspendResult =
  | { suspended: false; resolved: StepRecord[] }
  | { suspended: true; available_at: string | null };

export type FailStepResult =
  | { status: "failed"; attempts: number }
  | { status: "retrying"; attempts: number; retry_at: string; delay_ms: number; suspended: boolean };

export interface ChildStart {
  key: string;
  workflow: string;
  version: string;
  input?: unknown;
  queue?: string;
  priority?: number;
  concurrency_key?: string;
  timeout_ms?: number;
  retry?: unknown;
  trace_context?: TraceContext;
}

// A jsonb parameter. postgres.js serializes it by the type the server reports, so the value goes
// in as is (never pre-stringified); undefined becomes JSON null. `what` names it in errors.
const jsonb = (sql: Sql, value: unknown, what = "payload") =>
  sql.json(checkJson(what, value === undefined ? null : value) as JSONValue);

/** Nesting deeper than this is refused: Postgres parses jsonb recursively, within its stack limit. */
export const MAX_JSON_DEPTH = 1_000;

const UNSTORABLE = /\u0000|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/**
 * Returns `value` if JSON can carry it and Postgres can store it, else raises InvalidInputError
 * (AK003) saying what and where: JSON.stringify would silently store NaN and Infinity as null and
 * drop functions (the run would see other data than it was given), and fails on BigInt and cycles
 * with a bare TypeError; jsonb refuses NUL characters and lone surrogates, in values and keys.
 * undefined object members are left out and `toJSON` is honoured, as JSON does. Iterative, so a
 * value nested deeper than the JS stack allows is reported, not a RangeError; nesting is bounded
 * by MAX_JSON_DEPTH.
 */
export function checkJson(what: string, value: unknown): unknown {
  const fail = (bad: string, path: string) => {
    throw new InvalidInputError("AK003", `${what} is not JSON: ${bad} at ${path.length > 200 ? `${path.slice(0, 200)}…` : path}`);
  };
  const badString = (s: string) => {
    const at = s.search(UNSTORABLE);
    return at < 0 ? null : s[at] === "\u0000" ? "a NUL character (\\u0000)" : `a lone surrogate (\\u${s.charCodeAt(at).toString(16)})`;
  };
  // Depth-first; an `exit` entry takes its object off the ancestors once its members are done.
  const ancestors = new Set<object>();
  const stack: Array<{ v: unknown; path: string; depth: number } | { exit: object }> = [{ v: value, path: "$", depth: 0 }];
  while (stack.length > 0) {
    const top = stack.pop()!;
    if ("exit" in top) {
      ancestors.delete(top.exit);
      continue;
    }
    let { v } = top;
    const { path, depth } = top;
    if (v !== null && typeof v === "object" && typeof (v as { toJSON?: unknown }).toJSON === "function") {
      v = (v as { toJSON(): unknown }).toJSON();
    }
    const bad = typeof v === "number" ? (Number.isFinite(v) ? null : String(v))
      : typeof v === "string" ? badString(v)
      : typeof v === "bigint" || typeof v === "function" || typeof v === "symbol" ? `a ${typeof v}`
      : v !== null && typeof v === "object" && ancestors.has(v) ? "a circular reference"
      : null;
    if (bad) fail(bad, path);
    if (v === null || typeof v !== "object") continue;
    if (depth >= MAX_JSON_DEPTH) fail(`nesting deeper than ${MAX_JSON_DEPTH} levels`, path);
    ancestors.add(v);
    stack.push({ exit: v });
    const members: Array<[string, unknown]> = Array.isArray(v)
      ? v.map((item, i) => [`${path}[${i}]`, item])
      : Object.entries(v).flatMap(([key, item]) => {
          const badKey = badString(key);
          if (badKey) fail(`${badKey} in a key`, path);
          return item === undefined ? [] : [[`${path}.${key}`, item] as [string, unknown]];
        });
    for (let i = members.length - 1; i >= 0; i--) stack.push({ v: members[i]![1], path: members[i]![0], depth: depth + 1 });
  }
  return value;
}

// A text[] or uuid[] parameter as an array literal: the client's pools do not fetch array types
// (sdk/db/pool.ts), so postgres.js cannot serialize JS arrays itself. null stays SQL NULL.
const textArray = (values: readonly string[] | null): string | null =>
  values === null ? null : `{${values.map((v) => `"${v.replace(/["\\]/g, "\\$&")}"`).join(",")}}`;

async function call<T>(query: Promise<T>): Promise<T> {
  try {
    return await engineQuery(query);
  } catch (error) {
    throw fromDatabaseError(error, packageSchemaVersion());
  }
}

export async function startWorkflow(
  sql: Sql, workflow: string, version: string, input: unknown, o: StartOptions = {},
): Promise<{ run_id: string; created: boolean }> {
  // Checked here, not left to Postgres: a fractional priority or an Invalid Date would fail as a
  // bare type error (22P02, 22003) or a RangeError from the driver.
  if (o.priority !== undefined && !(Number.isInteger(o.priority) && Math.abs(o.priority) <= 1_000_000)) {
    throw new InvalidInputError("AK003", `invalid priority ${o.priority}: use an integer between -1000000 and 1000000`);
  }
  if (o.startAt !== undefined && !(o.startAt instanceof Date && Number.isFinite(o.startAt.getTime()))) {
    throw new InvalidInputError("AK003", `invalid start time ${String(o.startAt)}`);
  }
  const rows = await call(sql<{ run_id: string; created: boolean }[]>`
    select run_id, created from aiki.start_workflow(
      ${workflow}, ${version}, ${jsonb(sql, input, "workflow input")}::jsonb, ${o.idempotencyKey ?? null}, ${o.queue ?? "default"},
      ${o.priority ?? 0}, ${o.startAt ?? null}, ${o.delayMs ?? null}, ${o.concurrencyKey ?? null},
      ${o.timeoutMs ?? null}, ${o.retry === undefined ? null : jsonb(sql, o.retry)}::jsonb,
      ${o.maxLeaseExpiries ?? 5}, ${o.traceContext === undefined ? null : jsonb(sql, o.traceContext)}::jsonb)`);
  return rows[0]!;
}

export async function getRun(sql: Sql, runId: string): Promise<RunRecord> {
  const rows = await call(sql<{ run: RunRecord }[]>`select aiki.get_run(${runId}::uuid) as run`);
  return rows[0]!.run;
}

export async function findRun(sql: Sql, workflow: string, idempotencyKey: string): Promise<RunRecord> {
  const rows = await call(sql<{ run: RunRecord }[]>`select aiki.find_run(${workflow}, ${idempotencyKey}) as run`);
  return rows[0]!.run;
}

export interface RunSummary {
  id: string; workflow: string; version: string; status: RunStatus; queue: string;
  parent_id: string | null; attempt: number; created_at: Date; finished_at: Date | null;
  /** True while the run is pending and no live worker serves its workflow version and queue. */
  unserved: boolean;
}

export async function listRuns(
  sql: Sql, filter: { workflow?: string; status?: RunStatus; limit?: number; beforeId?: string } = {},
): Promise<RunSummary[]> {
  return call(sql<RunSummary[]>`
    select * from aiki.list_runs(p_workflow => ${filter.workflow ?? null}, p_status => ${filter.status ?? null}::aiki.run_status,
                                 p_limit => ${filter.limit ?? 100}, p_before_id => ${filter.beforeId ?? null}::uuid)`);
}

export async function cancel(sql: Sql, runId: string, reason?: string): Promise<RunStatus> {
  const rows = await call(sql<{ status: RunStatus }[]>`select aiki.cancel(${runId}::uuid, ${reason ?? null}) as status`);
  return rows[0]!.status;
}

export async function pause(sql: Sql, runId: string): Promise<RunStatus> {
  const rows = await call(sql<{ status: RunStatus }[]>`select aiki.pause(${runId}::uuid) as status`);
  return rows[0]!.status;
}

export async function resume(sql: Sql, runId: string): Promise<RunStatus> {
  const rows = await call(sql<{ status: RunStatus }[]>`select aiki.resume(${runId}::uuid) as status`);
  return rows[0]!.status;
}

export async function sendEvent(
  sql: Sql, runId: string, event: string, data: unknown, idempotencyKey?: string,
): Promise<string> {
  const rows = await call(sql<{ id: string }[]>`
    select aiki.send_event(${runId}::uuid, ${event}, ${jsonb(sql, data, "event data")}::jsonb, ${idempotencyKey ?? null}) as id`);
  return rows[0]!.id;
}

/**
 * The claim commits without waiting for its WAL flush (synchronous_commit off for this one
 * transaction): a claim lost in a crash only leaves its runs to be claimed again, and every
 * later write of the run, which does wait, flushes the claim's WAL before it. Saves a disk flush
 * (1-3 ms here) on the path from start to first task.
 */
export async function claim(
  sql: Sql, worker: string, workflows: string[] | null, queues: string[], limit: number, leaseMs: number,
): Promise<ClaimResult> {
  const rows = await call(sql<{ result: ClaimResult }[]>`
    select set_config('synchronous_commit', 'off', true),
           aiki.claim(${worker}, ${textArray(workflows)}::text[], ${textArray(queues)}::text[], ${limit}, ${leaseMs}) as result`);
  return rows[0]!.result;
}

/**
 * Renews the leases of `worker` named by `leaseTokens` (null or empty: none; the worker is only
 * recorded as alive). Answers one row per lease still held: renewed, or, when another
 * transaction holds the run's row, skipped with its unchanged expiry. A run missing was lost.
 */
export async function heartbeat(
  sql: Sql, worker: string, leaseMs: number, leaseTokens: string[] | null,
): Promise<{ run_id: string; lease_token: string; lease_expires_at: string }[]> {
  return call(sql<{ run_id: string; lease_token: string; lease_expires_at: string }[]>`
    select run_id, lease_token, to_json(lease_expires_at) #>> '{}' as lease_expires_at from aiki.heartbeat(${worker}, ${leaseMs}, ${textArray(leaseTokens)}::uuid[])`);
}

/**
 * Records the worker as alive, serving `workflows` (name@version) on `queues`; see
 * aiki.register_worker. Every worker calls it on every heartbeat tick, so it commits without
 * waiting for its WAL flush, as the claim does: a registration lost in a crash is made again at
 * the next tick.
 */
export async function registerWorker(
  sql: Sql, worker: string, workflows: string[] | null, queues: string[] | null, staleAfterMs: number, info: unknown,
): Promise<void> {
  await call(sql`select set_config('synchronous_commit', 'off', true),
                        aiki.register_worker(${worker}, ${textArray(workflows)}::text[], ${textArray(queues)}::text[],
                                             ${staleAfterMs}, ${jsonb(sql, info, "worker info")}::jsonb)`);
}

export async function unregisterWorker(sql: Sql, worker: string): Promise<void> {
  await call(sql`select aiki.unregister_worker(${worker})`);
}

export async function release(sql: Sql, runId: string, leaseToken: string): Promise<void> {
  await call(sql`select aiki.release(${runId}::uuid, ${leaseToken}::uuid)`);
}

export async function completeStep(
  sql: Sql, runId: string, leaseToken: string, key: string, kind: "task" | "value", name: string, output: unknown,
): Promise<StepRecord> {
  const rows = await call(sql<{ step: StepRecord }[]>`
    select aiki.complete_step(${runId}::uuid, ${leaseToken}::uuid, ${key}, ${kind}, ${name}, ${jsonb(sql, output, "step output")}::jsonb) as step`);
  return rows[0]!.step;
}

/** Records the database's clock as value step `key` (run.now()): time never comes from workers. */
export async function completeStepWithNow(sql: Sql, runId: string, leaseToken: string, key: string): Promise<StepRecord> {
  const rows = await call(sql<{ step: StepRecord }[]>`
    select aiki.complete_step(${runId}::uuid, ${leaseToken}::uuid, ${key}, 'value', 'now', to_jsonb(aiki.now())) as step`);
  return rows[0]!.step;
}

export type StartAttemptResult =
  | { status: "started"; attempt: number; deadline_at: string; details: unknown }
  | (FailStepResult & { timed_out: true; error: SerializedError });

/**
 * Journals that the next attempt of a timed task runs until `deadlineMs` from now (its start, or
 * a heartbeat with its details). An earlier attempt found past its deadline is failed by timeout
 * instead.
 */
export async function startAttempt(
  sql: Sql, runId: string, leaseToken: string, key: string, name: string, deadlineMs: number,
  retry: unknown, inlineMaxMs: number, details?: unknown,
): Promise<StartAttemptResult> {
  const rows = await call(sql<{ result: StartAttemptResult }[]>`
    select aiki.start_attempt(${runId}::uuid, ${leaseToken}::uuid, ${key}, ${name}, ${deadlineMs},
                              ${retry === undefined ? null : jsonb(sql, retry)}::jsonb, ${inlineMaxMs},
                              ${details === undefined ? null : jsonb(sql, details, "heartbeat details")}::jsonb) as result`);
  return rows[0]!.result;
}

/** Records that `attempt` (1 for the first) failed; repeating the call for it changes nothing. */
export async function failStep(
  sql: Sql, runId: string, leaseToken: string, key: string, name: string, error: unknown,
  retry: unknown, nonRetryable: boolean, inlineMaxMs: number, attempt: number,
): Promise<FailStepResult> {
  const rows = await call(sql<{ result: FailStepResult }[]>`
    select aiki.fail_step(${runId}::uuid, ${leaseToken}::uuid, ${key}, ${name}, ${jsonb(sql, error, "step error")}::jsonb,
                          ${retry === undefined ? null : jsonb(sql, retry)}::jsonb, ${nonRetryable}, ${inlineMaxMs},
                          ${attempt}) as result`);
  return rows[0]!.result;
}

export async function suspend(sql: Sql, runId: string, leaseToken: string, waits: Wait[]): Promise<SuspendResult> {
  const rows = await call(sql<{ result: SuspendResult }[]>`
    select aiki.suspend(${runId}::uuid, ${leaseToken}::uuid, ${jsonb(sql, waits)}::jsonb) as result`);
  return rows[0]!.result;
}

export async function startChildren(
  sql: Sql, runId: string, leaseToken: string, children: ChildStart[],
): Promise<string[]> {
  const rows = await call(sql<{ ids: string[] }[]>`
    select to_json(aiki.start_children(${runId}::uuid, ${leaseToken}::uuid, ${jsonb(sql, children)}::jsonb)) as ids`);
  return rows[0]!.ids;
}

export async function completeRun(sql: Sql, runId: string, leaseToken: string, output: unknown): Promise<void> {
  await call(sql`select aiki.complete_run(${runId}::uuid, ${leaseToken}::uuid, ${jsonb(sql, output, "workflow output")}::jsonb)`);
}

/** Ends the run as `continued` and starts its successor with `input`; returns the successor's id. */
export async function continueAsNew(
  sql: Sql, runId: string, leaseToken: string, input: unknown, version?: string,
): Promise<string> {
  const rows = await call(sql<{ id: string }[]>`
    select aiki.continue_as_new(${runId}::uuid, ${leaseToken}::uuid, ${jsonb(sql, input, "workflow input")}::jsonb,
                                ${version ?? null}::text) as id`);
  return rows[0]!.id;
}

/** One run's share of a `record` batch: task / value steps, then optionally the run's end. */
export interface RecordWrite {
  run_id: string;
  lease_token: string;
  steps?: { key: string; kind: "task" | "value"; name: string; output: unknown }[];
  complete?: boolean;
  output?: unknown;
}

/**
 * One answer per write, in order. Recorded: per step, null when recorded as given, else the
 * journal's first record of it. Lease lost: what AK001 would say. Error: the SQLSTATE the write
 * raised (AK002, AK003, AK005, AK006, AK007, a Postgres data error) and nothing of it was written.
 */
export type RecordAnswer =
  | { status: "recorded"; steps: (StepRecord | null)[] }
  | { status: "lease_lost"; message: string }
  | { status: "error"; sqlstate: string; message: string };

/** The writes must be JSON already (checkJson per write: one bad value would refuse them all). */
export async function record(sql: Sql, writes: RecordWrite[]): Promise<RecordAnswer[]> {
  const rows = await call(sql<{ result: RecordAnswer[] }[]>`
    select aiki.record(${sql.json(writes as unknown as JSONValue)}::jsonb) as result`);
  return rows[0]!.result;
}

export async function failRun(
  sql: Sql, runId: string, leaseToken: string, error: unknown, nonRetryable: boolean,
): Promise<{ status: "failed" } | { status: "retrying"; retry_at: string }> {
  const rows = await call(sql<{ result: { status: "failed" } | { status: "retrying"; retry_at: string } }[]>`
    select aiki.fail_run(${runId}::uuid, ${leaseToken}::uuid, ${jsonb(sql, error)}::jsonb, ${nonRetryable}) as result`);
  return rows[0]!.result;
}

// --- operators (sql/75_operators.sql) ----------------------------------------------------------

export async function retryRun(sql: Sql, runId: string): Promise<RunStatus> {
  const rows = await call(sql<{ status: RunStatus }[]>`select aiki.retry_run(${runId}::uuid) as status`);
  return rows[0]!.status;
}

/** Filter keys of search_runs and count_runs (count_runs takes no status); all optional. */
export interface RunFilter {
  status?: RunStatus | RunStatus[];
  workflow?: string;
  version?: string;
  queue?: string;
  created_after?: string;
  created_before?: string;
  idempotency_key?: string;
  parent_id?: string;
  /** true: only pending runs no live worker serves. */
  unserved?: boolean;
  /** A run id or an idempotency key. */
  search?: string;
}

export interface RunListItem {
  id: string; workflow: string; version: string; status: RunStatus; queue: string; attempt: number;
  parent_id: string | null; idempotency_key: string | null; created_at: string; started_at: string | null;
  finished_at: string | null; available_at: string | null; unserved: boolean; error_name: string | null;
}

export interface RunPage {
  runs: RunListItem[];
  /** Pass back for the next page; null on the last one. */
  next_cursor: string | null;
}

export async function searchRuns(sql: Sql, filter: RunFilter = {}, limit = 50, cursor: string | null = null): Promise<RunPage> {
  const rows = await call(sql<{ page: RunPage }[]>`
    select aiki.search_runs(${jsonb(sql, filter, "run filter")}::jsonb, ${limit}, ${cursor}) as page`);
  return rows[0]!.page;
}

/** Runs per status, every status present; a count of 100,000 means at least that many. */
export async function countRuns(sql: Sql, filter: Omit<RunFilter, "status"> = {}): Promise<Record<RunStatus, number>> {
  const rows = await call(sql<{ counts: Record<RunStatus, number> }[]>`
    select aiki.count_runs(${jsonb(sql, filter, "run filter")}::jsonb) as counts`);
  return rows[0]!.counts;
}

export interface TimelineStep {
  key: string; kind: StepKind; name: string; status: StepRecord["status"]; attempts: number;
  output: unknown; error: unknown;
  /** Every failed attempt of a task, oldest first. */
  errors: { attempt: number; error: unknown; failed_at: string }[];
  created_at: string; completed_at: string | null; duration_ms: number | null; wake_at: string | null;
  child_id: string | null;
}

export interface RunTimeline extends Omit<RunRecord, "journal"> {
  timeline: TimelineStep[];
  attempts_before: { attempt: number; status: RunStatus; error: unknown; ended_at: string; failed_steps: unknown[] }[];
  events: { id: number; name: string; data: unknown; idempotency_key: string | null; created_at: string;
    consumed_by: string | null; consumed_at: string | null }[];
  children: { id: string; workflow: string; version: string; status: RunStatus; created_at: string; finished_at: string | null }[];
  parent: { id: string; workflow: string; version: string; status: RunStatus } | null;
  lease_owner: string | null;
}

export async function runTimeline(sql: Sql, runId: string): Promise<RunTimeline> {
  const rows = await call(sql<{ run: RunTimeline }[]>`select aiki.run_timeline(${runId}::uuid) as run`);
  return rows[0]!.run;
}

export interface WorkerInfo {
  id: string; workflows: string[] | null; queues: string[] | null; started_at: string; last_seen: string;
  alive: boolean; runs_held: number;
}

export async function listWorkers(sql: Sql): Promise<WorkerInfo[]> {
  const rows = await call(sql<{ workers: WorkerInfo[] }[]>`select aiki.list_workers() as workers`);
  return rows[0]!.workers;
}

export interface QueueInfo {
  name: string;
  counts: Record<"pending" | "running" | "scheduled" | "sleeping" | "waiting" | "retrying" | "paused", number>;
  oldest_pending_at: string | null; oldest_pending_age_ms: number | null;
  concurrency_limit: number | null; key_concurrency_limit: number; paused: boolean;
  rate_limit: number | null; rate_window_ms: number | null; rate_per_key: boolean;
}

export interface QueueSettings {
  concurrencyLimit?: number | null;
  keyConcurrencyLimit?: number;
  rateLimit?: number | null;
  rateWindowMs?: number | null;
  ratePerKey?: boolean;
}

/** aiki.set_queue: replaces the queue's limits (a limit not given is removed). */
export async function setQueue(sql: Sql, name: string, settings: QueueSettings): Promise<void> {
  for (const [field, value] of Object.entries(settings)) {
    if (typeof value === "number" && !Number.isSafeInteger(value)) {
      throw new InvalidInputError("AK003", `invalid queue setting ${field} ${value}: use a whole number`);
    }
  }
  await call(sql`
    select from aiki.set_queue(${name}, ${settings.concurrencyLimit ?? null}::integer,
      ${settings.keyConcurrencyLimit ?? 1}::integer, ${settings.rateLimit ?? null}::integer,
      ${settings.rateWindowMs ?? null}::bigint, ${settings.ratePerKey ?? false})`);
}

export async function listQueues(sql: Sql): Promise<QueueInfo[]> {
  const rows = await call(sql<{ queues: QueueInfo[] }[]>`select aiki.list_queues() as queues`);
  return rows[0]!.queues;
}

/** One batch of purge_runs: the rows it deleted (0: nothing left before the cutoff). */
export async function purgeRuns(sql: Sql, finishedBefore: Date, batchSize: number): Promise<number> {
  const rows = await call(sql<{ n: number }[]>`select aiki.purge_runs(${finishedBefore}, ${batchSize}) as n`);
  return rows[0]!.n;
}

export type OverlapPolicy = "skip" | "buffer_one" | "allow" | "cancel_previous";

/** A schedule as the engine returns it (aiki.get_schedule). */
export interface ScheduleInfo {
  name: string; workflow: string; version: string; cron: string; timezone: string; input: unknown;
  overlap: OverlapPolicy; catchup_ms: number; queue: string; priority: number; retry: unknown; paused: boolean;
  /** Null while paused. */
  next_fire_at: string | null;
  last_fire_at: string | null; last_run_id: string | null; last_run_status: RunStatus | null;
  /** buffer_one: the fire waiting for the previous run to end. */
  buffered_at: string | null;
  /** Why the latest fire could not start its run, or null. */
  last_error: string | null;
  created_at: string; updated_at: string;
}

export interface ScheduleDefinition {
  name: string; workflow: string; version: string; cron: string; timezone: string; input: unknown;
  overlap: OverlapPolicy; catchupMs: number; queue: string; priority: number;
  /** The run retry policy of the runs it starts. */
  retry: unknown;
}

export interface TriggerResult {
  fired_at: string;
  action: "started" | "skipped" | "buffered";
  /** The run the fire started; null when skipped or buffered. */
  run_id: string | null;
  schedule: ScheduleInfo;
}

/** create_schedule: idempotent on the same definition; another one under the name is AK004. */
export async function createSchedule(sql: Sql, d: ScheduleDefinition): Promise<ScheduleInfo> {
  const rows = await call(sql<{ s: ScheduleInfo }[]>`
    select aiki.create_schedule(${d.name}, ${d.workflow}, ${d.version}, ${d.cron}, ${jsonb(sql, d.input, "schedule input")}::jsonb,
                                ${d.timezone}, ${d.overlap}, ${d.catchupMs}, ${d.queue}, ${d.priority},
                                ${jsonb(sql, d.retry)}::jsonb) as s`);
  return rows[0]!.s;
}

/** update_schedule with every field: the schedule becomes `d` (its paused flag stays). */
export async function updateSchedule(sql: Sql, d: ScheduleDefinition): Promise<ScheduleInfo> {
  const rows = await call(sql<{ s: ScheduleInfo }[]>`
    select aiki.update_schedule(${d.name}, ${d.workflow}, ${d.version}, ${d.cron}, ${jsonb(sql, d.input, "schedule input")}::jsonb,
                                ${d.timezone}, ${d.overlap}, ${d.catchupMs}, ${d.queue}, ${d.priority},
                                ${jsonb(sql, d.retry)}::jsonb) as s`);
  return rows[0]!.s;
}

export async function getSchedule(sql: Sql, name: string): Promise<ScheduleInfo> {
  const rows = await call(sql<{ s: ScheduleInfo }[]>`select aiki.get_schedule(${name}) as s`);
  return rows[0]!.s;
}

export async function listSchedules(sql: Sql): Promise<ScheduleInfo[]> {
  const rows = await call(sql<{ s: ScheduleInfo[] }[]>`select aiki.list_schedules() as s`);
  return rows[0]!.s;
}

export async function pauseSchedule(sql: Sql, name: string): Promise<ScheduleInfo> {
  const rows = await call(sql<{ s: ScheduleInfo }[]>`select aiki.pause_schedule(${name}) as s`);
  return rows[0]!.s;
}

export async function resumeSchedule(sql: Sql, name: string): Promise<ScheduleInfo> {
  const rows = await call(sql<{ s: ScheduleInfo }[]>`select aiki.resume_schedule(${name}) as s`);
  return rows[0]!.s;
}

export async function triggerSchedule(sql: Sql, name: string): Promise<TriggerResult> {
  const rows = await call(sql<{ t: TriggerResult }[]>`select aiki.trigger_schedule(${name}) as t`);
  return rows[0]!.t;
}

/** Whether there was such a schedule. */
export async function deleteSchedule(sql: Sql, name: string): Promise<boolean> {
  const rows = await call(sql<{ deleted: boolean }[]>`select aiki.delete_schedule(${name}) as deleted`);
  return rows[0]!.deleted;
}
