// The span of a start from a client: `aiki.start <workflow>`, a child of whatever span is active
// where the application calls `start` (an HTTP request, a task of another run). The run carries
// this span's context, so every execution of the run joins the caller's trace.
import { QUEUE, RUN_CREATED, RUN_ID, VERSION, WORKFLOW } from "./attributes.js";
import type { TraceContext } from "../engine.js";
import { activeTracer, failSpan, otel, traceContextOf } from "./otel.js";

export interface StartedRun {
  run_id: string;
  created: boolean;
}

/** Runs `start` inside an `aiki.start` span when tracing is on, giving it the context the run carries. */
export async function traceStart<T extends StartedRun>(
  what: { workflow: string; version: string; queue: string },
  start: (traceContext: TraceContext | undefined) => Promise<T>,
): Promise<T> {
  const tracer = activeTracer();
  if (!tracer) return start(undefined);
  const { SpanKind, context } = otel();
  const span = tracer.startSpan(`aiki.start ${what.workflow}`, {
    kind: SpanKind.PRODUCER,
    attributes: { [WORKFLOW]: what.workflow, [VERSION]: what.version, [QUEUE]: what.queue },
  }, context.active());
  try {
    const started = await start(traceContextOf(span));
    span.setAttributes({ [RUN_ID]: started.run_id, [RUN_CREATED]: started.created });
    return started;
  } catch (error) {
    failSpan(span, error);
    throw error;
  } finally {
    span.end();
  }
}
