-- 0011_trace_context: the W3C trace context a run carries (issue 13, tracing).
--
-- runs.trace_context: {"traceparent": "00-<trace id>-<span id>-<flags>", "tracestate"?: "…"},
-- the span that started the run (the caller's `aiki.start` span, or a parent's). start_workflow
-- and start_children set it; claim hands it out with the run, so every execution of the run, on
-- any worker, opens its span under it and the run's executions, its children and the caller
-- join one trace. Null when the starter traced nothing (no OpenTelemetry, or a plain SQL start):
-- a null jsonb costs a row one bit of its null bitmap, so untraced runs pay nothing for it.

alter table aiki.runs add column trace_context jsonb;
