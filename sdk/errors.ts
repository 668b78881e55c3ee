// Every error the SDK throws is an AikiError with a stable `code`. Engine errors carry the
// SQLSTATE the SQL raised (catalogue in sql/00_core.sql); `fromDatabaseError` is the one place
// that maps them.

export class AikiError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** AK001: the worker's lease on the run is gone (expired and reclaimed, cancelled, paused). */
export class LeaseLostError extends AikiError {}
/** AK002: no run with that id or idempotency key. */
export class RunNotFoundError extends AikiError {}
/** AK003: a name, version, duration, option or payload is malformed. */
export class InvalidInputError extends AikiError {}
/** AK004: the idempotency key already started a run with another version or input. */
export class IdempotencyConflictError extends AikiError {}
/** AK005: the run's status does not allow this act (e.g. an event to a finished run). */
export class InvalidTransitionError extends AikiError {}
/** AK006: the workflow code asks for a different step than its journal recorded. */
export class NonDeterminismError extends AikiError {}
/** AK007: a JSON payload is over the engine's size limit. */
export class PayloadTooLargeError extends AikiError {}

/** Data does not match the zod schema declared for it. */
export class SchemaValidationError extends AikiError {}
/** A task failed for good (retries exhausted or non-retryable); `details` is its last error. */
export class TaskFailedError extends AikiError {
  readonly details: SerializedError;
  constructor(message: string, details: SerializedError) {
    super("task_failed", message);
    this.details = details;
  }
}
/** Throw this from a task or workflow to fail it at once, skipping remaining retries. */
export class NonRetryableError extends AikiError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("non_retryable", message, options);
  }
}
/**
 * A definition or options object is malformed: an unknown key (the message names the keys it
 * knows), a missing handler, a value of the wrong type, or a worker with two handlers for one
 * version. Thrown where the object is given, before anything runs.
 */
export class DefinitionError extends AikiError {}
/**
 * The engine installed in the database does not match this package (sdk/db/version.ts):
 * `schema_missing` (not installed: run `npx aiki migrate`), `schema_outdated` (older than the
 * package: run `npx aiki migrate`), `schema_newer` (newer than the package: upgrade `aiki`).
 */
export class SchemaVersionError extends AikiError {
  readonly databaseVersion: number | null;
  readonly packageVersion: number;
  constructor(code: "schema_missing" | "schema_outdated" | "schema_newer", message: string,
              versions: { database: number | null; package: number }, options?: { cause?: unknown }) {
    super(code, message, options);
    this.databaseVersion = versions.database;
    this.packageVersion = versions.package;
  }
}
/** A run ended in a status other than the one awaited, when a result was demanded. */
export class RunFailedError extends AikiError {
  readonly status: string;
  readonly details: SerializedError | null;
  constructor(message: string, status: string, details: SerializedError | null) {
    super("run_failed", message);
    this.status = status;
    this.details = details;
  }
}

const bySqlState: Record<string, new (code: string, message: string, options?: { cause?: unknown }) => AikiError> = {
  AK001: LeaseLostError,
  AK002: RunNotFoundError,
  AK003: InvalidInputError,
  AK004: IdempotencyConflictError,
  AK005: InvalidTransitionError,
  AK006: NonDeterminismError,
  AK007: PayloadTooLargeError,
};

/**
 * Maps a database error with one of the engine's SQLSTATEs to its class; others pass through,
 * except a missing `aiki` schema (3F000) or engine function (42883): the engine is not installed,
 * or older than this package, and the fix is a migration, not a raw SQLSTATE.
 */
export function fromDatabaseError(error: unknown, packageVersion = 0): unknown {
  const code = (error as { code?: unknown } | null)?.code;
  const message = (error as { message?: unknown } | null)?.message;
  if (typeof code === "string" && code in bySqlState) {
    const Class = bySqlState[code]!;
    return new Class(code, String(message), { cause: error });
  }
  if (code === "3F000" && /"aiki"/.test(String(message))) {
    return new SchemaVersionError("schema_missing",
      "the aiki engine is not installed in this database (schema \"aiki\" does not exist): run `npx aiki migrate`",
      { database: null, package: packageVersion }, { cause: error });
  }
  if (code === "42883" && /aiki\./.test(String(message))) {
    return new SchemaVersionError("schema_outdated",
      `the aiki engine in this database is older than this package (${String(message)}): run \`npx aiki migrate\``,
      { database: null, package: packageVersion }, { cause: error });
  }
  return error;
}

export interface SerializedError {
  name: string;
  message: string;
  stack?: string;
  code?: string;
  [key: string]: unknown;
}

export function serializeError(error: unknown): SerializedError {
  if (error instanceof Error) {
    const out: SerializedError = { name: error.name, message: error.message };
    if (error.stack) out.stack = error.stack.split("\n").slice(0, 12).join("\n");
    const code = (error as { code?: unknown }).code;
    if (typeof code === "string") out.code = code;
    return out;
  }
  return { name: "Error", message: typeof error === "string" ? error : JSON.stringify(error) ?? String(error) };
}
