// Which payloads a codec applies to, and how, in one place. Encoded: workflow inputs (starts and
// child starts), outputs and errors, task results, errors and heartbeat details, event data.
// Stay plain: names, versions, step keys, statuses, times, idempotency and concurrency keys,
// retry policies, the values of run.now() / random() / uuid() (no user data; now() is written by
// the engine itself), and the errors the engine writes (Cancelled with its reason,
// DeadlineExceeded, CrashLoop, JournalTooLarge, TaskTimeoutError).
//
// Errors. A serialized error keeps `name` and `code` in the clear (the dashboard's error column,
// operators' triage); its message, stack and any other members go into `data`, an envelope, and
// `message` says what it is ("encrypted (key k1)"). Messages quote data too often (a declined
// card, a zod issue) to be left out. Errors the SDK makes about the engine's own state
// (CodecError, NonDeterminismError, TaskTimeoutError, PayloadTooLargeError, JournalTooLargeError)
// carry no user data and stay plain, so an operator without the key sees why a run failed.
//
// Decoding a claimed run happens once, before its handler starts (decodeRun): replay relies on
// recorded results arriving in microtasks, which an asynchronous codec call per step would break.
// A worker with no codec only checks, synchronously, that nothing it hands to the code is an
// envelope (assertPlainRun), so its hot path keeps its cost.
import { checkJson, type RunRecord, type StepRecord } from "../engine.js";
import {
  CodecError, JournalTooLargeError, NonDeterminismError, PayloadTooLargeError, TaskTimeoutError, type SerializedError,
} from "../errors.js";
import { describeEnvelope, isEnvelope, type Codec, type PayloadContext } from "./codec.js";

/** What a payload is, in messages: "output of run …", "data of event … of run …". */
function where(context: PayloadContext): string {
  switch (context.kind) {
    case "workflow.input": return `input of a run of workflow ${context.workflow}`;
    case "workflow.output": return `output of run ${context.runId}`;
    case "workflow.error": return `error of run ${context.runId}`;
    case "task.output": return `result of step ${context.stepKey} of run ${context.runId}`;
    case "task.error": return `error of step ${context.stepKey} of run ${context.runId}`;
    case "task.heartbeat": return `heartbeat details of step ${context.stepKey} of run ${context.runId}`;
    case "event.data": return `data of event ${context.event} of run ${context.runId}`;
  }
}

/** Any codec failure as a CodecError saying which payload it concerns. */
function codecError(error: unknown, context: PayloadContext, verb: "encode" | "decode"): CodecError {
  const message = `cannot ${verb} the ${where(context)}: `;
  if (error instanceof CodecError) {
    const code = error.code as ConstructorParameters<typeof CodecError>[0];
    return new CodecError(code, message + error.message, { cause: error, keyId: error.keyId });
  }
  return new CodecError("codec_failed", message + String((error as { message?: unknown } | null)?.message ?? error), { cause: error });
}

/** Encodes a payload, after checking it is JSON (the codec would otherwise drop NaN or a function unseen). */
export async function encodePayload(codec: Codec, value: unknown, context: PayloadContext, what: string): Promise<unknown> {
  checkJson(what, value ?? null);
  let encoded: unknown;
  try {
    encoded = await codec.encode(value ?? null, context);
  } catch (error) {
    throw codecError(error, context, "encode");
  }
  return checkJson(`${what} (encoded)`, encoded);
}

/** Decodes a stored payload. SQL null (no output yet, no error) is no payload: the codec is not asked. */
export async function decodePayload(codec: Codec | undefined, value: unknown, context: PayloadContext): Promise<unknown> {
  if (!codec || value === null || value === undefined) return plain(value, context);
  try {
    return await codec.decode(value, context);
  } catch (error) {
    throw codecError(error, context, "decode");
  }
}

/** `value`, or CodecError codec_missing if it is an envelope: without a codec, never hand one on. */
export function plain<T>(value: T, context: PayloadContext): T {
  if (!isEnvelope(value)) return value;
  const key = typeof value.key === "string" ? value.key : undefined;
  throw new CodecError("codec_missing",
    `the ${where(context)} is ${describeEnvelope(value)} and this client has no codec: ` +
    `pass client({ codec }) with ${key ? `key ${key}` : "the codec that encoded it"}`, { keyId: key });
}

const plainErrors = [CodecError, NonDeterminismError, TaskTimeoutError, PayloadTooLargeError, JournalTooLargeError];

/** A serialized error as stored: name and code plain, the rest encoded (see "Errors"). */
export async function encodeError(
  codec: Codec, error: SerializedError, thrown: unknown, context: PayloadContext & { kind: "workflow.error" | "task.error" },
): Promise<SerializedError> {
  if (plainErrors.some((Class) => thrown instanceof Class)) return error;
  const { name, code, ...rest } = error;
  const data = await encodePayload(codec, rest, context, `${context.kind.replace(".", " ")}`);
  const stored: SerializedError = { name, message: isEnvelope(data) ? describeEnvelope(data) : "encoded", data };
  if (code !== undefined) stored.code = code;
  return stored;
}

export async function decodeError(codec: Codec | undefined, error: unknown, context: PayloadContext): Promise<unknown> {
  const data = (error as { data?: unknown } | null)?.data;
  if (!isEnvelope(data)) return error;
  const { name, code } = error as SerializedError;
  const rest = await decodePayload(codec, data, context) as Record<string, unknown>;
  return code === undefined ? { name, ...rest } : { name, code, ...rest };
}

/**
 * The run a journal belongs to, as the codec binds its payloads: event data to the chain's first
 * run (`chain_id`; an event sent to a continued run, or unconsumed when its run continued, moves
 * to the chain's newest run), everything else to the run itself.
 */
export type JournalOwner = Pick<RunRecord, "id" | "chain_id">;

/** The outcome a child wait received; run_id names the run that ended when the child continued as new. */
type ChildOutcome = { status: string; output: unknown; error: unknown; run_id?: string };

/** Decodes a step's payloads in place: a task's result and error, event data, a child's end. */
export async function decodeStep(codec: Codec | undefined, run: JournalOwner, step: StepRecord): Promise<void> {
  if (step.kind === "task") {
    const context = { runId: run.id, stepKey: step.key };
    // Until the task completes, its output holds the last heartbeat's details.
    const kind = step.status === "completed" ? "task.output" : "task.heartbeat";
    if (step.output != null) step.output = await decodePayload(codec, step.output, { kind, ...context });
    if (step.error != null) step.error = await decodeError(codec, step.error, { kind: "task.error", ...context });
  } else if (step.kind === "event") {
    const output = step.output as { data?: unknown } | null;
    if (output && "data" in output) {
      const context = { kind: "event.data", runId: run.chain_id ?? run.id, event: step.name } as const;
      step.output = { ...output, data: await decodePayload(codec, output.data, context) };
    }
  } else if (step.kind === "wait_child" && step.child_id !== null) {
    const output = step.output as ChildOutcome | null;
    if (output) {
      const runId = output.run_id ?? step.child_id;
      step.output = {
        ...output,
        output: await decodePayload(codec, output.output, { kind: "workflow.output", runId }),
        error: await decodeError(codec, output.error, { kind: "workflow.error", runId }),
      };
    }
  }
}

/** Decodes a run's input, output, error and journal in place (without a codec: CodecError if any is encoded). */
export async function decodeRun<R extends RunRecord>(codec: Codec | undefined, run: R): Promise<R> {
  run.input = await decodePayload(codec, run.input, { kind: "workflow.input", workflow: run.workflow });
  run.output = await decodePayload(codec, run.output, { kind: "workflow.output", runId: run.id });
  run.error = await decodeError(codec, run.error, { kind: "workflow.error", runId: run.id });
  for (const step of run.journal ?? []) await decodeStep(codec, run, step);
  return run;
}

/**
 * Without a codec, synchronously: CodecError codec_missing if anything a claimed run hands to its
 * code is encoded (its input, a task's result or error, event data, a child's output or error).
 * Each payload is looked at first; the context for the message is made only for an envelope.
 */
export function assertPlainRun(run: RunRecord): void {
  if (isEnvelope(run.input)) plain(run.input, { kind: "workflow.input", workflow: run.workflow });
  for (const step of run.journal ?? []) assertPlainStep(run, step);
}

export function assertPlainStep(run: JournalOwner, step: StepRecord): void {
  const output = step.output as { data?: unknown; output?: unknown; error?: { data?: unknown } | null; run_id?: string } | null;
  if (step.kind === "task") {
    const error = (step.error as { data?: unknown } | null)?.data;
    if (isEnvelope(output)) plain(output, { kind: step.status === "completed" ? "task.output" : "task.heartbeat", runId: run.id, stepKey: step.key });
    if (isEnvelope(error)) plain(error, { kind: "task.error", runId: run.id, stepKey: step.key });
  } else if (step.kind === "event") {
    if (isEnvelope(output?.data)) plain(output.data, { kind: "event.data", runId: run.chain_id ?? run.id, event: step.name });
  } else if (step.kind === "wait_child" && output) {
    const runId = () => output.run_id ?? step.child_id ?? "";
    if (isEnvelope(output.output)) plain(output.output, { kind: "workflow.output", runId: runId() });
    if (isEnvelope(output.error?.data)) plain(output.error.data, { kind: "workflow.error", runId: runId() });
  }
}

/**
 * Whether two JSON values are equal as jsonb compares them: objects by members whatever their
 * order, numbers by value. (A repeated idempotent start compares its input with the stored one.)
 */
export function sameJson(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) {
    const other = b as unknown[];
    return a.length === other.length && a.every((item, i) => sameJson(item, other[i]));
  }
  const ak = Object.keys(a);
  const bk = Object.keys(b);
  return ak.length === bk.length &&
    ak.every((k) => Object.prototype.hasOwnProperty.call(b, k) && sameJson((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}
