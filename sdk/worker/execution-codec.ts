// The codec plumbing of one execution (execution.ts), made only when the client has a codec
// (sdk/codec): without one the execution allocates and awaits nothing for it.
//
// The claimed run's payloads are decoded once before the handler starts, and steps the engine
// resolves later as they arrive; payloads are encoded just before their write. A payload the
// worker cannot decode fails the run for good with a CodecError (codec/payloads.ts). Without a
// codec a synchronous check refuses encoded payloads the same way (assertPlainRun, plainSteps).
import type * as engine from "../engine.js";
import { serializeError, type SerializedError } from "../errors.js";
import type { Codec, PayloadContext } from "../codec/codec.js";
import { assertPlainStep, decodePayload, decodeRun, decodeStep, encodeError, encodePayload } from "../codec/payloads.js";
import type { StepWrite } from "./recorder.js";
import { never } from "./results.js";

export class ExecutionCodec {
  constructor(
    private readonly codec: Codec,
    private readonly record: engine.ClaimedRun,
    /** Fails the run (for good, with a CodecError): called when a payload cannot be decoded. */
    private readonly fail: (error: unknown) => void,
  ) {}

  private get id(): string {
    return this.record.id;
  }

  /** Decodes the claimed run's payloads in place, before its handler starts. */
  decodeRun(): Promise<engine.ClaimedRun> {
    return decodeRun(this.codec, this.record);
  }

  /** Decodes steps the engine resolved; false if the run failed on one. */
  decodeSteps(steps: engine.StepRecord[]): Promise<boolean> {
    return Promise.all(steps.map((step) => decodeStep(this.codec, this.record, step))).then(() => true, (error) => {
      this.fail(error);
      return false;
    });
  }

  /** Task results as the journal stores them: encoded with the codec. */
  storedSteps(steps: StepWrite[]): Promise<StepWrite[]> {
    return Promise.all(steps.map(async (s) => ({
      ...s,
      output: await encodePayload(this.codec, s.output, { kind: "task.output", runId: this.id, stepKey: s.key }, `output of task ${s.name} (step ${s.key})`),
    })));
  }

  /**
   * Records a task result encoded (with `write`), and returns what the code gets: the result as
   * JSON, as a replay decodes it, or the journal's first record of the step (decoded) if it differs.
   */
  async completeEncoded(key: string, name: string, output: unknown, write: (stored: unknown) => Promise<engine.StepRecord>): Promise<unknown> {
    const context: PayloadContext = { kind: "task.output", runId: this.id, stepKey: key };
    const stored = await encodePayload(this.codec, output, context, `output of task ${name} (step ${key})`);
    const recorded = await write(stored);
    const envelope = recorded.output as { iv?: unknown } | null;
    if (envelope?.iv !== undefined && envelope.iv === (stored as { iv?: unknown }).iv) return JSON.parse(JSON.stringify(output ?? null));
    return this.decoded(() => decodePayload(this.codec, recorded.output, context));
  }

  /**
   * An error as the journal stores it (codec/payloads.ts, "Errors"). A codec that fails to
   * encode it leaves the CodecError to be stored instead: it names no user data.
   */
  async storedError(error: unknown, context: PayloadContext & { kind: "workflow.error" | "task.error" }): Promise<SerializedError> {
    try {
      return await encodeError(this.codec, serializeError(error), error, context);
    } catch (failure) {
      return serializeError(failure);
    }
  }

  /** The heartbeat details an attempt of step `key` starts with, decoded. */
  heartbeatDetails(key: string, details: unknown): Promise<unknown> {
    return this.decoded(() => decodePayload(this.codec, details, { kind: "task.heartbeat", runId: this.id, stepKey: key }));
  }

  /** Heartbeat details of step `key` as the journal stores them. */
  storedDetails(key: string, details: unknown): Promise<unknown> {
    return encodePayload(this.codec, details, { kind: "task.heartbeat", runId: this.id, stepKey: key }, "heartbeat details");
  }

  /** The run's output as the journal stores it. */
  storedOutput(output: unknown, workflowKey: string): Promise<unknown> {
    return encodePayload(this.codec, output, { kind: "workflow.output", runId: this.id }, `output of workflow ${workflowKey}`);
  }

  /** A workflow input (a child's, or the successor's of continue-as-new) as the engine stores it. */
  storedInput(workflow: string, input: unknown, what: string): Promise<unknown> {
    return encodePayload(this.codec, input, { kind: "workflow.input", workflow }, what);
  }

  /** A decode whose CodecError fails the run (for good) instead of reaching the handler. */
  private async decoded<T>(decode: () => Promise<T>): Promise<T> {
    try {
      return await decode();
    } catch (error) {
      this.fail(error);
      return never();
    }
  }
}

/** Without a codec: checks synchronously that resolved steps hold no encoded payload; false if the run failed on one. */
export function plainSteps(record: engine.ClaimedRun, steps: engine.StepRecord[], fail: (error: unknown) => void): boolean {
  try {
    for (const step of steps) assertPlainStep(record, step);
    return true;
  } catch (error) {
    fail(error);
    return false;
  }
}
