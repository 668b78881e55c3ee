// A recorded run as the replayer reads it, from either shape the engine hands out:
//   - client.getRun(id) (aiki.get_run): the run with `journal`, its steps by creation time;
//   - `aiki runs show <id> --json` (aiki.run_timeline): the run with `timeline`, the same steps
//     plus when each was created and completed — the complete export, and the only one that
//     lets the replayer check the order of calls (see dry-run.ts, "Order").
// Either may come from JSON a person saved, so every field the replay reads is checked here, and
// a wrong one is an InvalidInputError (AK003) naming the field and what it holds.
import type { RunStatus, StepKind, StepRecord } from "../engine.js";
import { InvalidInputError } from "../errors.js";
import { isObject } from "../options.js";

/** A journal entry, with its completion time when the export carries it. */
export interface RecordedStep extends StepRecord {
  completed_at?: string | null;
}

export interface RecordedRun {
  id: string;
  /** The first run of its continue-as-new chain, when it is in one (event data is bound to it). */
  chain_id?: string;
  workflow: string;
  version: string;
  status: RunStatus;
  attempt: number;
  input: unknown;
  journal: RecordedStep[];
}

const RUN_STATUSES: readonly RunStatus[] = ["scheduled", "pending", "running", "sleeping", "waiting", "retrying", "paused",
  "completed", "failed", "cancelled", "continued"];
const STEP_KINDS: readonly StepKind[] = ["task", "sleep", "event", "child", "wait_child", "value"];
const STEP_STATUSES: readonly StepRecord["status"][] = ["waiting", "started", "retrying", "completed", "failed"];

function bad(field: string, expected: string, value: unknown): InvalidInputError {
  let shown: string;
  try {
    shown = JSON.stringify(value) ?? String(value);
  } catch {
    shown = String(value);
  }
  if (shown.length > 80) shown = `${shown.slice(0, 80)}…`;
  return new InvalidInputError("AK003", `recorded run: ${field} must be ${expected}, not ${shown}`);
}

function text(record: Record<string, unknown>, field: string, path: string): string {
  const value = record[field];
  if (typeof value !== "string" || value === "") throw bad(`${path}${field}`, "a non-empty string", value);
  return value;
}

function oneOf<T extends string>(record: Record<string, unknown>, field: string, path: string, allowed: readonly T[]): T {
  const value = record[field];
  if (!allowed.includes(value as T)) throw bad(`${path}${field}`, `one of ${allowed.join(", ")}`, value);
  return value as T;
}

function orNull(record: Record<string, unknown>, field: string, path: string): string | null {
  const value = record[field] ?? null;
  if (value !== null && typeof value !== "string") throw bad(`${path}${field}`, "a string or null", value);
  return value;
}

/**
 * The run `value` describes, checked: a RunRecord with its `journal` (client.getRun) or a run
 * timeline with its `timeline` (`aiki runs show <id> --json`), parsed from JSON or not.
 */
export function recordedRun(value: unknown): RecordedRun {
  if (!isObject(value)) throw bad("the run", "an object (client.getRun(id), or the JSON of `aiki runs show <id> --json`)", value);
  const steps = value.journal ?? value.timeline;
  if (!Array.isArray(steps)) {
    throw bad("journal", "an array of steps (client.getRun(id) includes it; `aiki runs show <id> --json` has it as `timeline`)", steps);
  }
  const field = value.journal === undefined ? "timeline" : "journal";
  const keys = new Set<string>();
  const journal = steps.map((step: unknown, i): RecordedStep => {
    const path = `${field}[${i}].`;
    if (!isObject(step)) throw bad(`${field}[${i}]`, "an object", step);
    const key = text(step, "key", path);
    if (keys.has(key)) throw bad(`${path}key`, "unique in the journal", key);
    keys.add(key);
    const kind = oneOf(step, "kind", path, STEP_KINDS);
    const status = oneOf(step, "status", path, STEP_STATUSES);
    const completedAt = orNull(step, "completed_at", path);
    if (completedAt !== null && Number.isNaN(Date.parse(completedAt))) throw bad(`${path}completed_at`, "a timestamp or null", completedAt);
    const childId = orNull(step, "child_id", path);
    if ((kind === "child" || kind === "wait_child") && childId === null) throw bad(`${path}child_id`, `the child's run id for a ${kind} step`, childId);
    const attempts = step.attempts ?? 0;
    if (typeof attempts !== "number") throw bad(`${path}attempts`, "a number", attempts);
    return {
      key, kind, status, attempts, name: text(step, "name", path),
      output: step.output ?? null, error: step.error ?? null, child_id: childId, wake_at: orNull(step, "wake_at", path),
      ...(completedAt === null && step.completed_at === undefined ? {} : { completed_at: completedAt }),
    };
  });
  const attempt = value.attempt ?? 1;
  if (typeof attempt !== "number") throw bad("attempt", "a number", attempt);
  return {
    id: text(value, "id", ""),
    chain_id: orNull(value, "chain_id", "") ?? undefined,
    workflow: text(value, "workflow", ""),
    version: text(value, "version", ""),
    status: oneOf(value, "status", "", RUN_STATUSES),
    attempt,
    input: value.input ?? null,
    journal,
  };
}

/**
 * A timestamp as jsonb writes it (`2026-11-29T22:50:01.123456+00:00`), in microseconds since the
 * epoch: Date keeps milliseconds only, and steps written in quick succession differ by less.
 */
export function microseconds(timestamp: string): number {
  const match = /^(.*T\d{2}:\d{2}:\d{2})(?:\.(\d+))?(.*)$/.exec(timestamp);
  if (!match) return Date.parse(timestamp) * 1000;
  const seconds = Date.parse(`${match[1]}${match[3]}`);
  return seconds * 1000 + Number((match[2] ?? "").padEnd(6, "0").slice(0, 6));
}
