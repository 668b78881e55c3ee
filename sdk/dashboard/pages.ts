// The dashboard's pages, rendered on the server from what the operator SQL functions return
// (aiki.search_runs, count_runs, run_timeline, list_workers, list_queues). Each page marks the
// parts that change with the runs as `data-live`; the browser script swaps them for a fresh
// render when the server says something changed, so nothing is rendered in two places.
import { describePayloads } from "../codec/codec.js";
import type { RunStatus } from "../engine.js";
import { Html, html } from "./html.js";
import { css } from "./assets.js";

export const statuses: RunStatus[] = [
  "scheduled", "pending", "running", "sleeping", "waiting", "retrying", "paused", "completed", "failed", "cancelled", "continued",
];

type Json = unknown;
type Time = string | null;

export interface RunRow {
  id: string; workflow: string; version: string; status: RunStatus; queue: string; attempt: number;
  parent_id: string | null; idempotency_key: string | null; created_at: Time; started_at: Time;
  finished_at: Time; available_at: Time; unserved: boolean; error_name: string | null;
}

export interface RunPage {
  runs: RunRow[];
  next_cursor: string | null;
}

export interface RunFilter {
  status?: string; workflow?: string; queue?: string; search?: string; cursor?: string;
  /** Runs per page, 1-200 (default 50). */
  limit?: string;
}

export interface Step {
  key: string; kind: string; name: string | null; status: string; attempts: number; output: Json; error: Json;
  errors: Json[] | null; created_at: Time; completed_at: Time; duration_ms: number | null; wake_at: Time;
  child_id: string | null;
}

/** An earlier attempt of the run, with the steps it failed (kept for operators when the run went again). */
export interface RunAttempt {
  attempt: number; status: RunStatus; error: Json; ended_at: Time;
  failed_steps: (Partial<Step> & { key: string; kind: string; status: string })[];
}

export interface RunEvent {
  id: string; name: string; data: Json; idempotency_key: string | null; created_at: Time;
  consumed_by: string | null; consumed_at: Time;
}

export interface RunTimeline {
  id: string; workflow: string; version: string; status: RunStatus; queue: string; priority: number;
  attempt: number; input: Json; output: Json; error: Json; parent_id: string | null;
  idempotency_key: string | null; available_at: Time; deadline_at: Time; created_at: Time;
  started_at: Time; finished_at: Time; unserved: boolean; lease_owner: string | null;
  timeline: Step[]; attempts_before: RunAttempt[]; events: RunEvent[];
  children: { id: string; workflow: string; version: string; status: RunStatus; created_at: Time; finished_at: Time }[];
  parent: { id: string; workflow: string; version: string; status: RunStatus } | null;
}

export interface WorkerRow {
  id: string; workflows: string[] | null; queues: string[] | null; started_at: Time; last_seen: Time; alive: boolean; runs_held: number;
}

export interface QueueRow {
  name: string; counts: Record<string, number>; oldest_pending_at: Time; oldest_pending_age_ms: number | null;
  concurrency_limit: number | null; key_concurrency_limit: number | null; paused: boolean;
  rate_limit?: number | null; rate_window_ms?: number | null; rate_per_key?: boolean;
}

/** `2026-11-29 20:55:01` (UTC), or a dash. */
export function time(value: Time): string {
  if (!value) return "—";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toISOString().replace("T", " ").slice(0, 19);
}

/** 850 ms, 12.3 s, 4 min 10 s, 3 h 5 min. */
export function duration(ms: number | null | undefined): string {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms < 3_600_000) return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
  return `${Math.floor(ms / 3_600_000)} h ${Math.round((ms % 3_600_000) / 60_000)} min`;
}

/** A payload as indented JSON; encoded payloads as what they are ("encrypted (key k1)"), not their ciphertext. */
function json(value: Json): string {
  return JSON.stringify(describePayloads(value), null, 2) ?? "null";
}

const badge = (status: string) => html`<span class="badge s-${status}" data-status="${status}">${status}</span>`;
const runLink = (id: string, text = id.slice(0, 8) + "…" + id.slice(-4)) =>
  html`<a class="mono" href="/runs/${id}" title="${id}">${text}</a>`;

/** The query string of a runs-page filter, with `changes` applied; empty values are dropped. */
export function query(filter: RunFilter, changes: RunFilter = {}): string {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries({ ...filter, ...changes })) if (value) params.set(name, value);
  const text = params.toString();
  return text ? `?${text}` : "";
}

export function layout(title: string, active: string, body: Html): string {
  const nav = (href: string, name: string) => html`<a href="${href}" class="${active === name ? "active" : ""}">${name}</a>`;
  return `<!doctype html>\n${html`<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title} · Aiki</title><style>${new Html(css)}</style></head>
<body><header><span class="brand">Aiki</span><nav>${nav("/", "runs")}${nav("/workers", "workers")}${nav("/queues", "queues")}</nav>
<span class="live" id="live-state" title="live updates">● live</span></header>
<main><div id="flash" role="status"></div>${body}</main>
<script src="/app.js" defer></script></body></html>`}`;
}

export function runsPage(filter: RunFilter, page: RunPage, counts: Record<string, number>, workflows: string[]): Html {
  const option = (value: string, current: string | undefined, label = value) =>
    html`<option value="${value}" ${value === (current ?? "") ? html`selected` : ""}>${label}</option>`;
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  return html`
<form class="filters" method="get" action="/">
  <label>Status <select name="status">${option("", filter.status, "any")}${statuses.map((s) => option(s, filter.status))}</select></label>
  <label>Workflow <input name="workflow" list="workflows" value="${filter.workflow ?? ""}" placeholder="any"></label>
  <datalist id="workflows">${workflows.map((w) => html`<option value="${w}">`)}</datalist>
  <label>Queue <input name="queue" value="${filter.queue ?? ""}" placeholder="any"></label>
  <label class="grow">Search <input name="search" value="${filter.search ?? ""}" placeholder="run id or idempotency key"></label>
  <button type="submit">Filter</button> <a class="reset" href="/">reset</a>
</form>
<div id="counts" data-live class="counts">
  <a href="/${query(filter, { status: "", cursor: "" })}" class="${filter.status ? "" : "on"}"><b>${total}</b> all</a>
  ${statuses.map((s) => html`<a href="/${query(filter, { status: s, cursor: "" })}" class="c-${s} ${filter.status === s ? "on" : ""}" data-count="${s}"><b>${counts[s] ?? 0}</b> ${s}</a>`)}
</div>
<div id="runs" data-live>
<table class="runs"><thead><tr><th>Run</th><th>Workflow</th><th>Status</th><th>Queue</th><th>Attempt</th><th>Idempotency key</th><th>Created</th><th>Finished</th></tr></thead>
<tbody>${page.runs.length === 0 ? html`<tr><td colspan="8" class="empty">No runs match.</td></tr>` : page.runs.map((r) => html`
<tr data-run="${r.id}"><td>${runLink(r.id)}${r.parent_id ? html` <span class="muted" title="child of ${r.parent_id}">↳</span>` : ""}</td>
<td>${r.workflow}<span class="muted">@${r.version}</span></td>
<td>${badge(r.status)}${r.unserved ? html` <span class="warn" title="no live worker serves this workflow version on this queue">unserved</span>` : ""}${r.error_name ? html` <span class="muted small">${r.error_name}</span>` : ""}</td>
<td>${r.queue}</td><td class="num">${r.attempt}</td><td class="mono small">${r.idempotency_key ?? ""}</td>
<td class="small">${time(r.created_at)}</td><td class="small">${time(r.finished_at)}</td></tr>`)}</tbody></table>
<p class="paging">${filter.cursor ? html`<a href="/${query(filter, { cursor: "" })}">« newest</a>` : ""}
${page.next_cursor ? html`<a id="older" href="/${query(filter, { cursor: page.next_cursor })}">older »</a>` : ""}</p>
</div>`;
}

const terminal = new Set(["completed", "failed", "cancelled", "continued"]);

function actions(run: RunTimeline): Html {
  const button = (action: string, label: string, danger = false) =>
    html`<button type="button" class="${danger ? "danger" : ""}" data-action="${action}" data-run="${run.id}">${label}</button>`;
  return html`<div class="actions">
${!terminal.has(run.status) ? button("cancel", "Cancel", true) : ""}
${!terminal.has(run.status) && run.status !== "paused" ? button("pause", "Pause") : ""}
${run.status === "paused" ? button("resume", "Resume") : ""}
${run.status === "failed" || run.status === "cancelled" ? button("retry", "Retry") : ""}
</div>`;
}

function block(title: string, value: Json, kind = ""): Html {
  return html`<div class="block ${kind}"><h3>${title}</h3>${kind === "bad" ? failure(value) : html`<pre>${json(value)}</pre>`}</div>`;
}

/** A serialized error as `Name: message`, its stack folded away; anything else as JSON. */
function failure(value: Json): Html {
  const error = value as { name?: unknown; message?: unknown; stack?: unknown } | null;
  if (error === null || typeof error !== "object" || typeof error.message !== "string") return html`<pre class="err">${json(value)}</pre>`;
  const { name, message, stack, ...rest } = error;
  return html`<div class="err"><b>${typeof name === "string" ? name : "Error"}</b>: ${message}</div>
${Object.keys(rest).length > 0 ? html`<pre class="small">${json(rest)}</pre>` : ""}
${typeof stack === "string" ? html`<details class="stack"><summary>stack</summary><pre>${stack}</pre></details>` : ""}`;
}

function stepDetail(step: Partial<Step> & { key: string; kind: string }, detailsKey = step.key): Html {
  const parts: Html[] = [];
  if (step.wake_at) parts.push(html`<div>${step.kind === "sleep" ? "wakes" : step.kind === "task" ? "due" : "times out"} at <b>${time(step.wake_at)}</b></div>`);
  else if (step.kind === "sleep" && step.completed_at) parts.push(html`<div class="muted">woke at ${time(step.completed_at)}</div>`);
  if (step.child_id) parts.push(html`<div>child ${runLink(step.child_id)}</div>`);
  if (step.error !== null && step.error !== undefined) parts.push(failure(step.error));
  else if (step.output !== null && step.output !== undefined) parts.push(html`<pre>${json(step.output)}</pre>`);
  const earlier = (step.errors ?? []).filter((e) => e !== null);
  if (earlier.length > 0) {
    parts.push(html`<details data-key="${detailsKey}"><summary>${earlier.length} failed attempt${earlier.length === 1 ? "" : "s"}</summary>
${earlier.map((e, i) => {
      const entry = e as { attempt?: number; failed_at?: Time; error?: Json };
      return html`<div class="attempt">attempt ${entry.attempt ?? i + 1}${entry.failed_at ? html` · ${time(entry.failed_at)}` : ""}${failure(entry.error ?? e)}</div>`;
    })}</details>`);
  }
  return html`${parts}`;
}

export function runPage(run: RunTimeline): Html {
  const due = run.available_at && ["scheduled", "sleeping", "retrying", "waiting"].includes(run.status)
    ? html`<dt>Due</dt><dd>${time(run.available_at)}</dd>` : "";
  return html`
<div id="run" data-live>
<h1>${run.workflow}<span class="muted">@${run.version}</span> ${badge(run.status)}</h1>
<p class="mono muted" id="run-id">${run.id}</p>
${actions(run)}
<dl class="facts">
<dt>Queue</dt><dd>${run.queue} (priority ${run.priority})</dd>
<dt>Attempt</dt><dd>${run.attempt}</dd>
<dt>Idempotency key</dt><dd class="mono">${run.idempotency_key ?? "—"}</dd>
<dt>Created</dt><dd>${time(run.created_at)}</dd>
<dt>Started</dt><dd>${time(run.started_at)}</dd>
<dt>Finished</dt><dd>${time(run.finished_at)}</dd>
${due}
<dt>Deadline</dt><dd>${time(run.deadline_at)}</dd>
<dt>Held by</dt><dd class="mono">${run.lease_owner ?? "—"}${run.unserved ? html` <span class="warn">unserved: no live worker serves it</span>` : ""}</dd>
<dt>Parent</dt><dd>${run.parent ? html`${runLink(run.parent.id)} ${run.parent.workflow}@${run.parent.version} ${badge(run.parent.status)}` : "—"}</dd>
</dl>
<div class="io">${block("Input", run.input)}${run.error !== null && run.error !== undefined ? block("Error", run.error, "bad") : block("Output", run.output)}</div>
<h2>Timeline</h2>
<table class="timeline"><thead><tr><th>Step</th><th>Kind</th><th>Status</th><th>Attempts</th><th>Started</th><th>Duration</th><th>Detail</th></tr></thead>
<tbody>${run.timeline.length === 0 ? html`<tr><td colspan="7" class="empty">No steps yet.</td></tr>` : run.timeline.map((s) => html`
<tr data-step="${s.key}"><td class="mono">${s.key}${s.name && s.name !== s.key ? html`<div class="muted small">${s.name}</div>` : ""}</td>
<td>${s.kind}</td><td>${badge(s.status)}</td><td class="num">${s.attempts}</td><td class="small">${time(s.created_at)}</td>
<td class="num">${duration(s.duration_ms)}</td><td class="detail">${stepDetail(s)}</td></tr>`)}</tbody></table>
${(run.attempts_before ?? []).length === 0 ? "" : html`<h2>Earlier attempts</h2>
<table class="attempts"><thead><tr><th>Attempt</th><th>Ended</th><th>Error</th><th>Steps it failed</th></tr></thead>
<tbody>${run.attempts_before.map((a) => html`<tr data-attempt="${a.attempt}"><td>${a.attempt} ${badge(a.status)}</td><td class="small">${time(a.ended_at)}</td>
<td class="detail">${a.error === null || a.error === undefined ? "—" : failure(a.error)}</td>
<td class="detail">${a.failed_steps.map((s) => html`<div data-failed-step="${s.key}"><span class="mono">${s.key}</span> ${s.kind} ${badge(s.status)} ${s.attempts ?? 0} attempt${s.attempts === 1 ? "" : "s"}
${stepDetail(s, `${a.attempt}:${s.key}`)}</div>`)}</td></tr>`)}</tbody></table>`}
<h2>Events</h2>
${run.events.length === 0 ? html`<p class="muted">No events.</p>` : html`<table class="events"><thead><tr><th>Name</th><th>Data</th><th>Key</th><th>Sent</th><th>Consumed</th></tr></thead>
<tbody>${run.events.map((e) => html`<tr><td>${e.name}</td><td><pre>${json(e.data)}</pre></td><td class="mono small">${e.idempotency_key ?? ""}</td>
<td class="small">${time(e.created_at)}</td><td class="small">${e.consumed_at ? html`${time(e.consumed_at)} <span class="muted">by ${e.consumed_by}</span>` : html`<span class="warn">not yet</span>`}</td></tr>`)}</tbody></table>`}
<h2>Children</h2>
${run.children.length === 0 ? html`<p class="muted">No children.</p>` : html`<table><thead><tr><th>Run</th><th>Workflow</th><th>Status</th><th>Created</th><th>Finished</th></tr></thead>
<tbody>${run.children.map((c) => html`<tr><td>${runLink(c.id)}</td><td>${c.workflow}<span class="muted">@${c.version}</span></td><td>${badge(c.status)}</td>
<td class="small">${time(c.created_at)}</td><td class="small">${time(c.finished_at)}</td></tr>`)}</tbody></table>`}
</div>
<h2>Send an event</h2>
<form id="send" class="send" data-run="${run.id}">
  <label>Name <input name="name" required placeholder="approved"></label>
  <label>Idempotency key <input name="key" placeholder="optional"></label>
  <label class="data">Data (JSON) <textarea name="data" rows="4" spellcheck="false">{}</textarea></label>
  <div class="submit"><button type="submit">Send event</button> <span id="json-state" class="muted">valid JSON</span></div>
</form>`;
}

export function workersPage(workers: WorkerRow[]): Html {
  return html`<div id="workers" data-live><h1>Workers</h1>
<table><thead><tr><th>Worker</th><th>State</th><th>Workflows</th><th>Queues</th><th>Runs held</th><th>Started</th><th>Last seen</th></tr></thead>
<tbody>${workers.length === 0 ? html`<tr><td colspan="7" class="empty">No workers registered.</td></tr>` : workers.map((w) => html`
<tr><td class="mono">${w.id}</td><td>${w.alive ? html`<span class="badge s-completed">alive</span>` : html`<span class="badge s-failed">gone</span>`}</td>
<td class="small">${w.workflows?.join(", ") ?? "any"}</td><td class="small">${w.queues?.join(", ") ?? "any"}</td><td class="num">${w.runs_held}</td>
<td class="small">${time(w.started_at)}</td><td class="small">${time(w.last_seen)}</td></tr>`)}</tbody></table></div>`;
}

export function queuesPage(queues: QueueRow[]): Html {
  const shown = statuses.filter((s) => !["completed", "failed", "cancelled", "continued"].includes(s));
  return html`<div id="queues" data-live><h1>Queues</h1>
<table><thead><tr><th>Queue</th><th>State</th>${shown.map((s) => html`<th class="num">${s}</th>`)}<th>Oldest pending</th><th>Limits</th></tr></thead>
<tbody>${queues.length === 0 ? html`<tr><td colspan="${shown.length + 4}" class="empty">No queues.</td></tr>` : queues.map((q) => html`
<tr><td><a href="/?queue=${encodeURIComponent(q.name)}">${q.name}</a></td><td>${q.paused ? html`<span class="badge s-paused">paused</span>` : "active"}</td>
${shown.map((s) => html`<td class="num">${q.counts[s] ?? 0}</td>`)}
<td class="small">${q.oldest_pending_at ? html`${time(q.oldest_pending_at)} <span class="muted">(${duration(q.oldest_pending_age_ms)} ago)</span>` : "—"}</td>
<td class="small">${q.concurrency_limit ?? "∞"} per queue, ${q.key_concurrency_limit ?? "∞"} per key${
  q.rate_limit ? `; ${q.rate_limit} starts per ${duration(q.rate_window_ms ?? null)}${q.rate_per_key ? " per key" : ""}` : ""}</td></tr>`)}</tbody></table></div>`;
}

export function errorPage(message: string): Html {
  return html`<div data-live id="failure"><p class="error">${message}</p></div>`;
}
