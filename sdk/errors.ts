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
/** AK002: no run with that id or idempotency key (or no schedule with that name). */
export class RunNotFoundError extends AikiError {}
/** AK003: a name, version, duration, option or payload is malformed. */
export class InvalidInputError extends AikiError {}
/** AK004: the idempotency key already started a run with another version or input. */
export class IdempotencyConflictError extends AikiError {}
/** AK005: the run's status does not allow this act (e.g. an event to a finished run). */
export class InvalidTransitionError extends AikiError {}
/** AK006: the workflow code asks for a different step than its journal recorded. */
export class NonDeterminismError extends AikiError {
  /** Where the code left the journal, when the replayer found it (sdk/replayer/). */
  readonly divergence: Divergence | undefined;
  constructor(code: string, message: string, options?: { cause?: unknown; divergence?: Divergence }) {
    super(code, message, options);
    this.divergence = options?.divergence;
  }
}

/** A replay's first departure from a run's journal (NonDeterminismError.divergence). */
export interface Divergence {
  runId: string;
  /** The key of the journal entry the code departed from; null past the end of a finished run. */
  step: string | null;
  /** What the journal recorded at `step`. */
  recorded: { kind: string; name: string } | null;
  /** What the code does there instead: a durable call, or null when it returned or threw. */
  call: { key: string; kind: string; name: string } | null;
}
/** AK007: a JSON payload is over the engine's size limit. */
export class PayloadTooLargeError extends AikiError {}
/** AK008: a journal write would take the run past its step or byte limit; the worker fails the run. */
export class JournalTooLargeError extends AikiError {}
/** AK009: the run's inbox already holds the most events no wait has taken. */
export class InboxFullError extends AikiError {}

/**
 * Postgres refused a value it cannot store or compare (SQLSTATE classes 22 data exception,
 * 23 integrity constraint, 54 program limit exceeded): `code` is the SQLSTATE. Sending the same
 * write again fails the same way, so it is never retried as a connection error.
 */
export class DataError extends AikiError {}
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
/**
 * A task attempt ran past its `timeout`, or past its `heartbeatTimeout` without a heartbeat. The
 * attempt fails with it (its retry policy decides what follows); its signal is aborted with it.
 */
export class TaskTimeoutError extends AikiError {
  constructor(message: string) {
    super("task_timeout", message);
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
/**
 * A payload could not be encoded or decoded by the client's codec (sdk/codec): `code` says why.
 * `codec_key_missing`: it was encrypted with a key this codec lacks (`keyId` names it);
 * `codec_auth_failed`: it fails authentication (another key under the same id, or a payload that
 * was altered or moved from another run, step or field); `codec_missing`: it is encoded and the
 * client has no codec; `codec_failed`: the codec threw, or the envelope's format is unknown. A
 * worker fails the run with it, for good (README, "Encrypted payloads").
 */
export class CodecError extends AikiError {
  readonly keyId: string | undefined;
  constructor(code: "codec_key_missing" | "codec_auth_failed" | "codec_missing" | "codec_failed", message: string,
              options?: { cause?: unknown; keyId?: string }) {
    super(code, message, options);
    this.keyId = options?.keyId;
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
  AK008: JournalTooLargeError,
  AK009: InboxFullError,
};

/** The error class of an engine answer's SQLSTATE (aiki.record answers per write), or undefined. */
export function engineError(code: string, message: string, cause?: unknown): AikiError | undefined {
  const Class = bySqlState[code] ?? (/^(22|23|54)/.test(code) ? DataError : undefined);
  return Class ? new Class(code, message, cause === undefined ? undefined : { cause }) : undefined;
}

/**
 * Maps a database error with one of the engine's SQLSTATEs to its class, and a data error
 * (classes 22, 23, 54) to DataError. A missing `aiki` schema (3F000) or engine function (42883)
 * means the engine is not installed, or older than this package: the fix is a migration, not a
 * raw SQLSTATE. Others (connection trouble) pass through.
 */
export function fromDatabaseError(error: unknown, packageVersion = 0): unknown {
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code !== "string") return error;
  const message = String((error as { message?: unknown } | null)?.message);
  if (code === "3F000" && /"aiki"/.test(message)) {
    return new SchemaVersionError("schema_missing",
      "the aiki engine is not installed in this database (schema \"aiki\" does not exist): run `npx aiki migrate`",
      { database: null, package: packageVersion }, { cause: error });
  }
  if (code === "42883" && /aiki\./.test(message)) {
    return new SchemaVersionError("schema_outdated",
      `the aiki engine in this database is older than this package (${message}): run \`npx aiki migrate\``,
      { database: null, package: packageVersion }, { cause: error });
  }
  return engineError(code, message, error) ?? error;
}

export interface SerializedError {
  name: string;
  message: string;
  stack?: string;
  code?: string;
  [key: string]: unknown;
}

/** Text Postgres can store: NUL and lone surrogates (jsonb refuses both) become U+FFFD. */
export function storableText(text: string): string {
  return text.replace(/\u0000|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, "\ufffd");
}

/** What anything thrown said, as text Postgres can store, whatever it was (a BigInt, a cycle, …). */
function describe(value: unknown): string {
  if (typeof value === "string") return value;
  try {
    const json = JSON.stringify(value);
    if (json !== undefined) return json.length > 10_000 ? `${json.slice(0, 10_000)}…` : json;
  } catch {
    // a BigInt or a cycle: String() still says something
  }
  try {
    return String(value);
  } catch {
    return Object.prototype.toString.call(value);
  }
}

export function serializeError(error: unknown): SerializedError {
  if (error instanceof Error) {
    const out: SerializedError = { name: storableText(String(error.name)), message: storableText(describe(error.message)) };
    if (typeof error.stack === "string") out.stack = storableText(error.stack.split("\n").slice(0, 12).join("\n"));
    const code = (error as { code?: unknown }).code;
    if (typeof code === "string") out.code = storableText(code);
    return out;
  }
  return { name: "Error", message: storableText(describe(error)) };
}
