// The test clock's two SQL verbs (sql/85_test_clock.sql), as the test kit calls them. Times stay
// the engine's own strings (microseconds), never JavaScript Dates (milliseconds): a clock moved
// to a due time rounded down to the millisecond would stop just short of it.
import type { Sql } from "postgres";
import { engineQuery } from "../db/pool.js";
import { fromDatabaseError } from "../errors.js";
import { packageSchemaVersion } from "../db/version.js";
import type { RunStatus } from "../engine.js";

/** A run the engine still has to run, or a due schedule (id `schedule:<name>`, status `due`). */
export interface BusyRun {
  id: string;
  workflow: string;
  version: string;
  queue: string;
  status: RunStatus | "due";
}

export interface TestClockState {
  /** The test clock's time. */
  now: string;
  /** Runs running, or claimable now by a live worker: the engine is settled when there are none. */
  busy: BusyRun[];
  /** When the next run falls due, or null. */
  next_due_at: string | null;
}

export type AdvanceStep =
  | { moved: true; now: string; reached: boolean }
  | { moved: false; now: string; running: number };

async function call<T>(query: Promise<T>): Promise<T> {
  try {
    return await engineQuery(query);
  } catch (error) {
    throw fromDatabaseError(error, packageSchemaVersion());
  }
}

export async function testClockState(sql: Sql): Promise<TestClockState> {
  const rows = await call(sql<{ state: TestClockState }[]>`select aiki.test_clock_state() as state`);
  return rows[0]!.state;
}

export async function advanceClock(sql: Sql, to: string): Promise<AdvanceStep> {
  const rows = await call(sql<{ step: AdvanceStep }[]>`select aiki.advance_clock(${to}::timestamptz) as step`);
  return rows[0]!.step;
}

/** The test clock's time `ms` milliseconds from now, as the engine writes times. */
export async function clockIn(sql: Sql, ms: number): Promise<string> {
  const rows = await call(sql<{ at: string }[]>`
    select to_jsonb(aiki.now() + ${ms}::bigint * interval '1 millisecond') #>> '{}' as at`);
  return rows[0]!.at;
}
