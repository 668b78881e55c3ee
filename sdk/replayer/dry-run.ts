// One side-effect-free replay of a recorded run: the workflow's handler runs against the run's
// journal the way a worker replays it — the same step keys and judgements (worker/replay.ts),
// the same `run` object and results handed to the code (worker/run.ts, worker/results.ts) — but nothing is executed and nothing
// is written. A call the journal answers gets its recorded result; any other call (a task to
// run, a value to draw, a wait still open, a child to start) is where the journal ends: it
// stays pending, and once the handler is idle the replay is judged.
//
// Judgements, the first one found ends the replay with a NonDeterminismError:
//   - a call whose key the journal recorded with another kind or name (the worker's mismatch);
//   - a call the journal does not hold, or a return, while journal entries remain unreached
//     (a removed or renamed call: the worker's divergence);
//   - Order: a call whose key the journal holds, answered out of the recorded order. Keys are a
//     name plus an occurrence counter, so a reordered call still finds its key. The replay hands
//     out recorded results in the order they were recorded (each step's completion time, from
//     `aiki runs show --json`; results recorded in one transaction, e.g. a Promise.all's tasks
//     recorded together, are one turn): a result waits until every result recorded strictly
//     before it has been asked for. Unchanged code asks for them, because in the recorded run
//     every call was made before anything recorded after it reached the code (a task's result
//     reaches the code before its record, but no later durable effect precedes that record). So
//     when the handler is idle with a result held back, the code has skipped or postponed the
//     entry recorded before it: that entry is the divergence. Without completion times (a
//     journal from client.getRun) results are handed out at once and order is not judged.
//   - for a run that completed or continued as new (its code returned): a call past its journal,
//     a throw, or the other return (run.continueAsNew(…) for a completed run, a value for a
//     continued one).
// Reaching the end of the journal of a run in flight is success: the code would go on from there.
import { ContinueAsNew } from "../definitions/continue.js";
import type { ChildRunHandle, ChildStartOptions, Logger, WorkflowVersion } from "../definitions/workflow.js";
import type { EventWaitResult } from "../definitions/event.js";
import type { TaskOptions } from "../definitions/task.js";
import type { Duration } from "../duration.js";
import type { RunStatus, StepKind, StepRecord } from "../engine.js";
import { NonDeterminismError, type Divergence } from "../errors.js";
import { validate } from "../schema.js";
import { Replay, type DurableCall } from "../worker/replay.js";
import { workflowRun, type RunCalls } from "../worker/run.js";
import { childWaitResult, describe, eventWaitResult, never, taskFailed } from "../worker/results.js";
import { microseconds, type RecordedRun, type RecordedStep } from "./recorded-run.js";

/** How a replay that found no divergence ended. */
export type ReplayEnd =
  /** The handler returned a value. */
  | "returned"
  /** The handler returned run.continueAsNew(…). */
  | "continued"
  /** The handler threw (the run failed or is retrying, as recorded). */
  | "threw"
  /** The handler reached the end of the journal of a run in flight. */
  | "journal-end";

/** A held-back recorded result (see "Order"). */
interface Turn {
  call: DurableCall;
  at: number;
  deliver(): void;
}

/** The logger of a replayed run: a replay logs nothing. */
const SILENT: Logger = { info: () => {}, warn: () => {}, error: () => {} };

const callOf = (key: string, kind: StepKind, name: string): DurableCall => ({ key, kind, name });

export class DryRun implements RunCalls {
  readonly done: Promise<ReplayEnd>;
  private resolveDone!: (end: ReplayEnd) => void;
  private rejectDone!: (error: NonDeterminismError) => void;
  private finished = false;
  private readonly replay: Replay;
  /** Recorded results with a completion time, in the order they were recorded. */
  private readonly order: { key: string; at: number }[];
  private readonly completedAt = new Map<string, number>();
  private readonly delivered = new Set<string>();
  /** Index in `order` of the first result not handed out yet. */
  private next = 0;
  private turns: Turn[] = [];
  /** Calls the journal does not answer, in the order the code made them. */
  private readonly held: DurableCall[] = [];
  private ended: { threw: false; continued: boolean } | { threw: true; error: unknown } | undefined;
  private checkQueued = false;

  constructor(private readonly recorded: RecordedRun, private readonly definition: WorkflowVersion) {
    this.done = new Promise((resolve, reject) => {
      this.resolveDone = resolve;
      this.rejectDone = reject;
    });
    this.replay = new Replay(recorded.id, recorded.journal);
    for (const step of recorded.journal) {
      if (resolved(step) && step.completed_at) this.completedAt.set(step.key, microseconds(step.completed_at));
    }
    this.order = [...this.completedAt].map(([key, at]) => ({ key, at })).sort((a, b) => a.at - b.at);
  }

  /** Runs the handler against the journal; `done` resolves with how it ended or rejects with the divergence. */
  start(): Promise<ReplayEnd> {
    const run = workflowRun(this.recorded, this.definition, SILENT, this);
    Promise.resolve()
      .then(() => this.definition.options.handler(run,
        validate(this.definition.options.schema?.input, this.recorded.input, `input of workflow ${this.definition.key} (run ${this.recorded.id})`)))
      .then((output: unknown) => {
        // A successor's input the schema refuses fails the run in a worker (execution.ts): a throw.
        if (output instanceof ContinueAsNew) {
          validate(this.definition.options.schema?.input, output.input, `input of workflow ${this.definition.key} (continued as new)`);
        }
        return output instanceof ContinueAsNew;
      })
      .then((continued) => this.onEnd({ threw: false, continued }), (error: unknown) => this.onEnd({ threw: true, error }));
    return this.done;
  }

  // ---- durable calls -------------------------------------------------------------------------

  async task<I, O>(options: TaskOptions<I, O>, _input: I): Promise<O> {
    const step = await this.answer(this.replay.nextKey(options.name), "task", options.name);
    if (step.status === "failed") throw taskFailed(options.name, step.error as Parameters<typeof taskFailed>[1]);
    return step.output as O;
  }

  async startChild<O>(child: WorkflowVersion<any, O, any>, _input: unknown, _options: ChildStartOptions): Promise<ChildRunHandle<O>> {
    const key = this.replay.nextKey(child.name);
    const step = await this.answer(key, "child", child.name);
    const childId = step.child_id!;
    return {
      id: childId,
      waitForStatus: async (expected) => {
        const waited = await this.answer(this.replay.nextKey(`${key}/wait`), "wait_child", child.name);
        return childWaitResult<O>(waited, childId, child.name, expected, child.options.schema?.output) as never;
      },
    };
  }

  async sleep(name: string, _duration: Duration): Promise<void> {
    await this.answer(this.replay.nextKey(name), "sleep", name);
  }

  async waitEvent<T>(name: string, _timeout: Duration | undefined): Promise<EventWaitResult<T>> {
    const step = await this.answer(this.replay.nextKey(name), "event", name);
    return eventWaitResult<T>(step, this.definition, this.recorded.id);
  }

  async value<T>(name: "now" | "random" | "uuid", _produce: () => T): Promise<T> {
    return (await this.answer(this.replay.nextKey(name), "value", name)).output as T;
  }

  /**
   * The recorded result of the call `key`, in its turn (see "Order"); a call the journal does not
   * answer, or answers with another kind or name, never settles.
   */
  private answer(key: string, kind: StepKind, name: string): Promise<StepRecord> {
    if (this.finished) return never();
    const found = this.replay.lookup(key, kind, name);
    const call = callOf(key, kind, name);
    if ("mismatch" in found) {
      this.diverge(found.mismatch, { step: key, recorded: this.stepOf(key), call });
      return never();
    }
    const step = found.step;
    if (!step || !resolved(step)) {
      this.held.push(call);
      this.scheduleCheck();
      return never();
    }
    const at = this.completedAt.get(key);
    if (at === undefined) return Promise.resolve(step);
    return new Promise((deliver) => {
      this.turns.push({ call, at, deliver: () => deliver(step) });
      this.handOut();
    });
  }

  /** Hands out every held-back result whose turn has come: nothing recorded strictly before it is still out. */
  private handOut(): void {
    for (;;) {
      while (this.next < this.order.length && this.delivered.has(this.order[this.next]!.key)) this.next++;
      const frontier = this.order[this.next]?.at ?? Infinity;
      const due = this.turns.filter((t) => t.at <= frontier);
      if (due.length === 0) break;
      this.turns = this.turns.filter((t) => t.at > frontier);
      for (const turn of due) {
        this.delivered.add(turn.call.key);
        turn.deliver();
      }
    }
    this.scheduleCheck();
  }

  // ---- judgement -----------------------------------------------------------------------------

  private scheduleCheck(): void {
    if (this.checkQueued || this.finished) return;
    this.checkQueued = true;
    // setImmediate runs after every pending microtask, i.e. once the handler went as far as it can.
    setImmediate(() => {
      this.checkQueued = false;
      this.judge();
    });
  }

  private onEnd(ended: NonNullable<DryRun["ended"]>): void {
    this.ended = ended;
    this.scheduleCheck();
  }

  /** The handler is idle: it diverged, reached the end of the journal, or ended. */
  private judge(): void {
    if (this.finished) return;
    const runId = this.recorded.id;
    const first = this.turns[0];
    if (first) {
      const missed = this.stepOf(this.order[this.next]!.key);
      return this.diverge(
        `non-determinism at step '${missed.key}' of run ${runId}: the journal recorded ${missed.kind} '${missed.name}' ` +
        `before ${first.call.kind} '${first.call.name}' (step '${first.call.key}'), the code now calls ${first.call.kind} ` +
        `'${first.call.name}' without it. Deploy changed workflow code as a new version.`,
        { step: missed.key, recorded: missed, call: first.call });
    }
    const call = this.held[0];
    const missed = this.replay.firstUnreached();
    if (missed && (call || this.ended)) {
      const now = call ? `the code now calls ${call.kind} '${call.name}' (step '${call.key}') instead`
        : this.ended?.threw ? `the code threw ${describe(this.ended.error)} without reaching it` : "the code returned without reaching it";
      return this.diverge(
        `non-determinism at step '${missed.key}' of run ${runId}: the journal recorded ${missed.kind} '${missed.name}', ` +
        `${now}. Deploy changed workflow code as a new version.`,
        { step: missed.key, recorded: missed, call: call ?? null });
    }
    const status: RunStatus = this.recorded.status;
    // The recorded run's code returned: a value (completed) or run.continueAsNew(…) (continued).
    const returned = status === "completed" || status === "continued";
    const how = status === "continued" ? "continued as new" : "completed";
    if (call) {
      if (returned) {
        return this.diverge(
          `non-determinism in run ${runId}: the run ${how} after its last recorded step, the code now calls ` +
          `${call.kind} '${call.name}' (step '${call.key}'). Deploy changed workflow code as a new version.`,
          { step: null, recorded: null, call });
      }
      return this.finish("journal-end");
    }
    if (!this.ended) {
      // Idle with no durable call outstanding: the handler awaits something that is not durable
      // (a workflow must not) and would stop here in a worker too.
      return missed ? this.diverge(
        `non-determinism at step '${missed.key}' of run ${runId}: the journal recorded ${missed.kind} '${missed.name}', ` +
        "the code now stops (awaiting something not durable) without reaching it. Deploy changed workflow code as a new version.",
        { step: missed.key, recorded: missed, call: null }) : this.finish("journal-end");
    }
    if (this.ended.threw && !(status === "failed" || status === "retrying" || status === "cancelled")) {
      return this.diverge(
        `non-determinism in run ${runId} (${status}): the code threw ${describe(this.ended.error)} after its last recorded step. ` +
        "Deploy changed workflow code as a new version.", { step: null, recorded: null, call: null });
    }
    if (!this.ended.threw && returned && this.ended.continued !== (status === "continued")) {
      return this.diverge(
        `non-determinism in run ${runId}: the run ${how} after its last recorded step, the code now ` +
        `${this.ended.continued ? "continues as new" : "returns a value"}. Deploy changed workflow code as a new version.`,
        { step: null, recorded: null, call: null });
    }
    this.finish(this.ended.threw ? "threw" : this.ended.continued ? "continued" : "returned");
  }

  private stepOf(key: string): RecordedStep {
    return this.recorded.journal.find((step) => step.key === key)!;
  }

  private diverge(message: string, where: Omit<Divergence, "runId" | "recorded"> & { recorded: RecordedStep | null }): void {
    if (this.finished) return;
    this.finished = true;
    const divergence: Divergence = {
      runId: this.recorded.id,
      step: where.step,
      recorded: where.recorded ? { kind: where.recorded.kind, name: where.recorded.name } : null,
      call: where.call ? { key: where.call.key, kind: where.call.kind, name: where.call.name } : null,
    };
    this.rejectDone(new NonDeterminismError("AK006", message, { divergence }));
  }

  private finish(end: ReplayEnd): void {
    if (this.finished) return;
    this.finished = true;
    this.resolveDone(end);
  }
}

/** A journal entry whose outcome the code may receive: completed, or (a task) failed for good. */
function resolved(step: StepRecord): boolean {
  return step.status === "completed" || step.status === "failed";
}
