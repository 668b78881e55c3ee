// OpenTelemetry, when the application has it. `@opentelemetry/api` is an optional peer
// dependency: it is imported once, lazily (loadTracing, awaited by client.ready()), and every
// span of the SDK starts with `activeTracer()`, which is undefined — and the SDK then does
// exactly what it does without tracing — while the package is absent or no tracer provider is
// registered. Registering one later (or disabling it) takes effect at the next start or claim.
//
// The trace context a run carries (runs.trace_context, migration 0011) is W3C Trace Context,
// encoded and decoded here whatever propagators the application configured: the engine checks
// its shape (aiki._check_trace_context), and a worker in another process, or another language,
// reads it the same way.
import type * as Otel from "@opentelemetry/api";
import type { TraceContext } from "../engine.js";

/** undefined: not looked for yet; null: not installed (or not loadable). */
let api: typeof Otel | null | undefined;
let loading: Promise<void> | undefined;
/** The provider the API falls back to while none is registered (a singleton of the API). */
let noopProvider: Otel.TracerProvider | undefined;
let tracer: { provider: Otel.TracerProvider; tracer: Otel.Tracer } | undefined;

/** Imports `@opentelemetry/api` once; never rejects (absent means no tracing). */
export function loadTracing(): Promise<void> {
  return (loading ??= import("@opentelemetry/api").then(
    (module) => {
      api = module;
      noopProvider = new module.ProxyTracerProvider().getDelegate();
    },
    () => {
      api = null;
    },
  ));
}

/** The loaded API, for the span code; only called once activeTracer() returned a tracer. */
export function otel(): typeof Otel {
  return api!;
}

/** The SDK's tracer while a tracer provider is registered, else undefined: the one check on the hot path. */
export function activeTracer(): Otel.Tracer | undefined {
  if (!api) return undefined;
  const provider = (api.trace.getTracerProvider() as Otel.ProxyTracerProvider).getDelegate();
  if (provider === noopProvider) return undefined;
  if (tracer?.provider !== provider) tracer = { provider, tracer: provider.getTracer("aiki") };
  return tracer.tracer;
}

/** The W3C trace context of `span`, or undefined when it has no valid one. */
export function traceContextOf(span: Otel.Span): TraceContext | undefined {
  const context = span.spanContext();
  if (!api!.isSpanContextValid(context)) return undefined;
  const flags = (context.traceFlags & 0xff).toString(16).padStart(2, "0");
  const traceparent = `00-${context.traceId}-${context.spanId}-${flags}`;
  const tracestate = context.traceState?.serialize();
  return tracestate ? { traceparent, tracestate } : { traceparent };
}

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/** A context whose parent is the remote span `carried` names; the root context when none. */
export function contextFrom(carried: TraceContext | null | undefined): Otel.Context {
  const { ROOT_CONTEXT, createTraceState, trace } = api!;
  const match = carried ? TRACEPARENT.exec(carried.traceparent) : null;
  if (!match) return ROOT_CONTEXT;
  return trace.setSpanContext(ROOT_CONTEXT, {
    traceId: match[2]!,
    spanId: match[3]!,
    traceFlags: Number.parseInt(match[4]!, 16),
    isRemote: true,
    traceState: carried!.tracestate ? createTraceState(carried!.tracestate) : undefined,
  });
}

/** Marks `span` failed by `error`: status ERROR with the error's name and message, and the exception event. */
export function failSpan(span: Otel.Span, error: unknown): void {
  const { name, message } = error instanceof Error ? error : { name: "Error", message: String(error) };
  span.recordException(error instanceof Error ? error : message);
  span.setStatus({ code: api!.SpanStatusCode.ERROR, message: `${name}: ${message}` });
}
