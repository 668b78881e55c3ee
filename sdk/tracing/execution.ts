// The spans of one execution of a run on a worker (worker/execution.ts calls in; it holds no
// trace of its own when tracing is off, so each hook there costs one undefined check).
//
//   aiki.run <workflow>            the execution: claim to its end (completed, failed, retrying,
//                                  suspended, lost, abandoned: aiki.execution.end), a child of the
//                                  span that started the run (the context the run carries), so
//                                  every execution of a run, on any worker, is a sibling in one trace
//   ├─ aiki.task <name>            one per attempt the execution runs; ERROR when the attempt throws
//   ├─ aiki.start <workflow>       one per child the execution starts; the child carries its context
//   └─ aiki.wait <kind> <name>     one per wait the execution opens (sleep, event, child)
//
// Waits. A span cannot stay open across processes, so a wait is represented by what each
// execution does with it: its span runs from the moment the code blocks on it until it resolves
// in this execution (aiki.wait.outcome resolved, or timeout for an event wait whose timeout
// passed), or until the execution ends on it (suspended: the run was released until the wait
// resolves). The execution that resumes the run then replays the wait from the journal without
// a span, and its `aiki.run` span gets an `aiki.wait.resumed` event for each wait it resumed past
// (step key, kind, name, outcome): the waits between the last other step it replayed and the
// first new call it made.
//
// Only code the execution runs gets spans: steps answered from the journal are not work, and
// leave no span. User spans in a task's handler are children of its attempt span, and those in
// the workflow's handler of the execution span, when a context manager is registered.
import type * as Otel from "@opentelemetry/api";
import type { ChildStart, ClaimedRun, StepRecord, Wait } from "../engine.js";
import type { ExecutionEnd } from "../worker/execution.js";
import {
  EXECUTION_END, PARENT_RUN_ID, QUEUE, RESUMED_EVENT, RUN_ATTEMPT, RUN_ID, STEP_KEY, TASK_ATTEMPT, TASK_NAME,
  VERSION, WAIT_KIND, WAIT_NAME, WAIT_OUTCOME, WORKFLOW,
} from "./attributes.js";
import { activeTracer, contextFrom, failSpan, otel, traceContextOf } from "./otel.js";

const WAIT_KINDS: Record<Wait["kind"], string> = { sleep: "sleep", event: "event", wait_child: "child" };
const isWait = (step: StepRecord) => step.kind === "sleep" || step.kind === "event" || step.kind === "wait_child";

/** A span the execution opened and has not ended; ended at the latest with the execution. */
export class OpenSpan {
  private ended = false;

  constructor(readonly span: Otel.Span, private readonly context: Otel.Context, private readonly onEnd?: (span: OpenSpan) => void) {}

  /** Runs `fn` with this span active, so spans the user's code starts are its children. */
  call<T>(fn: () => T): T {
    return otel().context.with(otel().trace.setSpan(this.context, this.span), fn);
  }

  fail(error: unknown): void {
    if (!this.ended) failSpan(this.span, error);
  }

  end(attributes?: Otel.Attributes): void {
    if (this.ended) return;
    this.ended = true;
    if (attributes) this.span.setAttributes(attributes);
    this.span.end();
    this.onEnd?.(this);
  }

  get open(): boolean {
    return !this.ended;
  }
}

export class ExecutionTrace {
  private readonly span: OpenSpan;
  private readonly context: Otel.Context;
  private readonly base: Otel.Attributes;
  private readonly opened = new Set<OpenSpan>();
  private readonly waits = new Map<string, OpenSpan>();
  /** Completed waits replayed since the last other completed step (see "Waits"); undefined once caught up. */
  private trailingWaits: StepRecord[] | undefined = [];

  /** The trace of an execution of `record`, or undefined when tracing is off. */
  static open(record: ClaimedRun): ExecutionTrace | undefined {
    const tracer = activeTracer();
    return tracer && new ExecutionTrace(tracer, record);
  }

  private constructor(private readonly tracer: Otel.Tracer, record: ClaimedRun) {
    const { SpanKind } = otel();
    this.base = { [RUN_ID]: record.id, [WORKFLOW]: record.workflow, [VERSION]: record.version };
    const parent = contextFrom(record.trace_context);
    const span = tracer.startSpan(`aiki.run ${record.workflow}`, {
      kind: SpanKind.CONSUMER,
      attributes: { ...this.base, [QUEUE]: record.queue, [RUN_ATTEMPT]: record.attempt },
    }, parent);
    this.span = new OpenSpan(span, parent);
    this.context = otel().trace.setSpan(parent, span);
  }

  /** Runs the workflow's handler with the execution span active. */
  call<T>(fn: () => T): T {
    return this.span.call(fn);
  }

  /**
   * The code reached `step` (undefined: a call the journal does not hold) and the replay is now
   * `caughtUp` or not: notes the waits this execution resumed past, once, on the execution span.
   */
  reached(step: StepRecord | undefined, caughtUp: boolean): void {
    if (!this.trailingWaits) return;
    if (step?.status === "completed") {
      if (isWait(step)) this.trailingWaits.push(step);
      else this.trailingWaits = [];
    }
    if (!caughtUp) return;
    for (const wait of this.trailingWaits) {
      this.span.span.addEvent(RESUMED_EVENT, {
        [STEP_KEY]: wait.key, [WAIT_KIND]: WAIT_KINDS[wait.kind as Wait["kind"]], [WAIT_NAME]: wait.name, [WAIT_OUTCOME]: outcome(wait),
      });
    }
    this.trailingWaits = undefined;
  }

  /** A span for one attempt of a task. */
  taskAttempt(name: string, key: string, attempt: number): OpenSpan {
    return this.child(`aiki.task ${name}`, { [STEP_KEY]: key, [TASK_NAME]: name, [TASK_ATTEMPT]: attempt });
  }

  /** A span for a child's start, until `id` settles; the child carries its context (start.trace_context). */
  childStart(start: ChildStart, id: Promise<string>): void {
    // Its run id is the child's, known once started: not the base attributes of the parent's spans.
    const attributes: Otel.Attributes = {
      [PARENT_RUN_ID]: this.base[RUN_ID], [STEP_KEY]: start.key, [WORKFLOW]: start.workflow, [VERSION]: start.version,
    };
    if (start.queue !== undefined) attributes[QUEUE] = start.queue;
    const span = this.open(`aiki.start ${start.workflow}`, attributes, otel().SpanKind.PRODUCER);
    start.trace_context = traceContextOf(span.span);
    id.then((childId) => span.end({ [RUN_ID]: childId }), (error: unknown) => {
      span.fail(error);
      span.end();
    });
  }

  /** The code blocks on `wait`: its span opens (see "Waits"). */
  waitOpened(wait: Wait): void {
    if (this.waits.has(wait.key)) return;
    const kind = WAIT_KINDS[wait.kind];
    this.waits.set(wait.key, this.child(`aiki.wait ${kind} ${wait.name}`, { [STEP_KEY]: wait.key, [WAIT_KIND]: kind, [WAIT_NAME]: wait.name }));
  }

  /** The engine resolved a wait while this execution ran. */
  waitResolved(step: StepRecord): void {
    this.waits.get(step.key)?.end({ [WAIT_OUTCOME]: outcome(step) });
    this.waits.delete(step.key);
  }

  /** A wait the engine could not register (the error reaches the code). */
  waitFailed(key: string, error: unknown): void {
    const span = this.waits.get(key);
    span?.fail(error);
    span?.end();
    this.waits.delete(key);
  }

  /** The handler threw, or the run failed for another reason (non-determinism, an engine refusal). */
  runFailed(error: unknown): void {
    this.span.fail(error);
  }

  /** The execution ended: every span it left open ends with it. */
  end(how: ExecutionEnd): void {
    if (!this.span.open) return;
    for (const span of this.waits.values()) span.end({ [WAIT_OUTCOME]: how });
    for (const span of [...this.opened]) span.end();
    if (how === "abandoned") this.span.fail(new Error("the database stayed unreachable; the lease will expire and another worker resumes the run"));
    this.span.end({ [EXECUTION_END]: how });
  }

  /** A span under the execution's with the run's attributes and `attributes`. */
  private child(name: string, attributes: Otel.Attributes): OpenSpan {
    return this.open(name, { ...this.base, ...attributes }, otel().SpanKind.INTERNAL);
  }

  private open(name: string, attributes: Otel.Attributes, kind: Otel.SpanKind): OpenSpan {
    const span = new OpenSpan(this.tracer.startSpan(name, { kind, attributes }, this.context),
      this.context, (ended) => this.opened.delete(ended));
    this.opened.add(span);
    return span;
  }
}

/** How a resolved wait ended: timeout for an event wait whose timeout passed, else resolved. */
function outcome(step: StepRecord): string {
  return (step.output as { timeout?: boolean } | null)?.timeout === true ? "timeout" : "resolved";
}
