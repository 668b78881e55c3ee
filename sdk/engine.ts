// Typed calls of the engine's SQL functions: one wrapper per SQL verb, same name in camelCase.
// Nothing here decides a run's state; it only moves arguments in and maps errors out.
import type { JSONValue, Sql } from "postgres";
import { InvalidInputError, fromDatabaseError } from "./errors.js";

export type RunStatus =
  | "scheduled" | "pending" | "running" | "sleeping" | "waiting" | "retrying" | "paused"
  | "completed" | "failed" | "cancelled";

export const terminalStatuses: ReadonlySet<RunStatus> = new Set(["completed", "failed", "cancelled"]);

export type StepKind = "task" | "sleep" | "event" | "child" | "wait_child" | "value";

export interface StepRecord {
  key: string;
  kind: StepKind;
  name: string;
  status: "waiting" | "retrying" | "completed" | "failed";
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
  idempotency_key: string | null;
  concurrency_key: string | null;
  lease_token: string | null;
  lease_expires_at: string | null;
  available_at: string | null;
  deadline_at: string | null;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  journal?: StepRecord[];
}

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
}

// A jsonb parameter. postgres.js serializes it by the type the server reports, so the value goes
// in as is (never pre-stringified); undefined becomes JSON null. `what` names it in errors.
const jsonb = (sql: Sql, value: unknown, what = "payload") =>
  sql.json(checkJson(what, value === undefined ? null : value) as JSONValue);

/**
 * Returns `value` if JSON can carry it, else raises InvalidInputError (AK003) saying what and
 * where: JSON.stringify would silently store NaN and Infinity as null and drop functions (the
 * run would see other data than it was given), and fails on BigInt and cycles with a bare
 * TypeError. undefined object members are left out and `toJSON` is honoured, as JSON does.
 */
export function checkJson(what: string, value: unknown): unknown {
  const ancestors = new Set<object>();
  const visit = (v: unknown, path: string): void => {
    if (v !== null && typeof v === "object" && typeof (v as { toJSON?: unknown }).toJSON === "function") {
      v = (v as { toJSON(): unknown }).toJSON();
    }
    const bad = typeof v === "number" ? (Number.isFinite(v) ? null : String(v))
      : typeof v === "bigint" || typeof v === "function" || typeof v === "symbol" ? `a ${typeof v}`
      : v !== null && typeof v === "object" && ancestors.has(v) ? "a circular reference"
      : null;
    if (bad) throw new InvalidInputError("AK003", `${what} is not JSON: ${bad} at ${path}`);
    if (v === null || typeof v !== "object") return;
    ancestors.add(v);
    if (Array.isArray(v)) v.forEach((item, i) => visit(item, `${path}[${i}]`));
    else for (const [key, item] of Object.entries(v)) if (item !== undefined) visit(item, `${path}.${key}`);
    ancestors.delete(v);
  };
  visit(value, "$");
  return value;
}

// A text[] or uuid[] parameter as an array literal: the client's pools do not fetch array types
// (sdk/db/pool.ts), so postgres.js cannot serialize JS arrays itself. null stays SQL NULL.
const textArray = (values: readonly string[] | null): string | null =>
  values === null ? null : `{${values.map((v) => `"${v.replace(/["\\]/g, "\\$&")}"`).join(",")}}`;

async function call<T>(query: Promise<T>): Promise<T> {
  try {
    return await query;
  } catch (error) {
    throw fromDatabaseError(error);
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
      ${o.maxLeaseExpiries ?? 5})`);
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

/** Renews the leases named by `leaseTokens` (null: every lease of `worker`). */
export async function heartbeat(
  sql: Sql, worker: string, leaseMs: number, leaseTokens: string[] | null,
): Promise<{ run_id: string; lease_token: string; lease_expires_at: string }[]> {
  return call(sql<{ run_id: string; lease_token: string; lease_expires_at: string }[]>`
    select run_id, lease_token, to_json(lease_expires_at) #>> '{}' as lease_expires_at from aiki.heartbeat(${worker}, ${leaseMs}, ${textArray(leaseTokens)}::uuid[])`);
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

/** One run's share of a `record` batch: task / value steps, then optionally the run's end. */
export interface RecordWrite {
  run_id: string;
  lease_token: string;
  steps?: { key: string; kind: "task" | "value"; name: string; output: unknown }[];
  complete?: boolean;
  output?: unknown;
}

/** Per step, in order: null when recorded as given, else the journal's first record of it. */
export async function record(sql: Sql, writes: RecordWrite[]): Promise<(StepRecord | null)[]> {
  const rows = await call(sql<{ result: (StepRecord | null)[] }[]>`
    select aiki.record(${jsonb(sql, writes, "journal writes")}::jsonb) as result`);
  return rows[0]!.result;
}

export async function failRun(
  sql: Sql, runId: string, leaseToken: string, error: unknown, nonRetryable: boolean,
): Promise<{ status: "failed" } | { status: "retrying"; retry_at: string }> {
  const rows = await call(sql<{ result: { status: "failed" } | { status: "retrying"; retry_at: string } }[]>`
    select aiki.fail_run(${runId}::uuid, ${leaseToken}::uuid, ${jsonb(sql, error)}::jsonb, ${nonRetryable}) as result`);
  return rows[0]!.result;
}
