// replay(workflowVersion, run): checks a workflow version's current code against a recorded run
// without side effects (dry-run.ts), so a change that would break runs in flight is caught before
// it is deployed. The run is what client.getRun(id) returns or what `aiki runs show <id> --json`
// printed (recorded-run.ts); only the latter carries the completion times that order is judged by.
//
// Codec. A run written by a client with a codec holds envelopes where its payloads were: replay
// decodes the run's input and journal with `options.codec` first, as a worker decodes a claimed
// run (codec/payloads.ts, the same contexts: the input bound to its workflow, the steps to the
// run's id). Without a codec, a run holding an envelope is refused with CodecError codec_missing:
// handed to the code as data, it would send the code another way and pass for a divergence.
import type { Codec } from "../codec/codec.js";
import { assertPlainStep, decodePayload, decodeStep, plain } from "../codec/payloads.js";
import { WorkflowVersion } from "../definitions/workflow.js";
import type { RunStatus } from "../engine.js";
import { CodecError, InvalidInputError } from "../errors.js";
import { DryRun, type ReplayEnd } from "./dry-run.js";
import { recordedRun, type RecordedRun } from "./recorded-run.js";

export type { ReplayEnd } from "./dry-run.js";

export interface ReplayResult {
  runId: string;
  /** The run's recorded status. */
  status: RunStatus;
  /**
   * returned (a value), continued (run.continueAsNew), threw (as the failed or retrying run did),
   * or journal-end (a run in flight: the code would go on from there).
   */
  end: ReplayEnd;
  /** Journal entries replayed. */
  steps: number;
  /** Whether order was judged: the run came with each step's completion time (`aiki runs show --json`). */
  orderChecked: boolean;
}

export interface ReplayOptions {
  /** The codec the run's payloads were encoded with (the client's `codec`). Default: none. */
  codec?: Codec;
}

/**
 * Runs `workflowVersion`'s handler against the recorded `run`: no task runs, nothing is written,
 * `now()`, `random()` and `uuid()` return what the journal holds. Resolves when the code follows
 * the journal to its end; rejects with NonDeterminismError (its `divergence` names the step, the
 * recorded call and the code's call) at the first departure, or with InvalidInputError when the
 * run is malformed or of another workflow version, or with CodecError when its payloads are
 * encoded and `options.codec` is missing or cannot decode them.
 */
export async function replay(
  workflowVersion: WorkflowVersion<any, any, any>, run: unknown, options: ReplayOptions = {},
): Promise<ReplayResult> {
  if (!(workflowVersion instanceof WorkflowVersion)) {
    throw new InvalidInputError("AK003", "replay: the first argument must be a workflow version (workflow({ name }).v(version, { … }))");
  }
  const recorded = recordedRun(run);
  if (recorded.workflow !== workflowVersion.name || recorded.version !== workflowVersion.version) {
    throw new InvalidInputError("AK003",
      `replay: run ${recorded.id} is of workflow ${recorded.workflow}@${recorded.version}, not ${workflowVersion.key}`);
  }
  await decode(recorded, options.codec);
  const end = await new DryRun(recorded, workflowVersion).start();
  return {
    runId: recorded.id,
    status: recorded.status,
    end,
    steps: recorded.journal.length,
    orderChecked: recorded.journal.some((step) => step.completed_at),
  };
}

/** Decodes the payloads the code receives, in place (recordedRun made them copies); see "Codec". */
async function decode(recorded: RecordedRun, codec: Codec | undefined): Promise<void> {
  if (codec) {
    recorded.input = await decodePayload(codec, recorded.input, { kind: "workflow.input", workflow: recorded.workflow });
    for (const step of recorded.journal) await decodeStep(codec, recorded, step);
    return;
  }
  try {
    plain(recorded.input, { kind: "workflow.input", workflow: recorded.workflow });
    for (const step of recorded.journal) assertPlainStep(recorded, step);
  } catch (error) {
    if (!(error instanceof CodecError)) throw error;
    throw new CodecError("codec_missing",
      `replay of run ${recorded.id} needs the codec its payloads were encoded with (replay(version, run, { codec }); ` +
      `aiki replay --codec-module <file>): ${error.message}`, { cause: error, keyId: error.keyId });
  }
}
