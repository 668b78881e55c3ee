// The web dashboard: a node:http server that renders pages from the operator SQL functions and
// posts the run actions to the engine's own functions. It reads no table: whatever role the
// client's URL has decides what it may see and do, and a refusal (42501, AK005, …) is shown as
// the database worded it.
//
//   GET  /                     runs: filters, counts per status, keyset paging (aiki.search_runs, count_runs)
//   GET  /runs/<id>            one run: timeline, input/output/error, events, parent, children (run_timeline)
//   GET  /workers, /queues     aiki.list_workers, aiki.list_queues
//   GET  /events               server-sent events: one message per burst of engine notifications
//   POST /runs/<id>/<action>   cancel | pause | resume | retry | send, JSON body, JSON answer
//
// Live updates come from one LISTEN connection per dashboard (the client's), fanned out to every
// browser. The engine announces terminal statuses, pauses and claimable runs, not a run going
// to running, sleeping or waiting, so browsers are also told to refresh every `tickMs`.
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { createHash, timingSafeEqual } from "node:crypto";
import type { AddressInfo } from "node:net";
import type { Client } from "../client.js";
import * as engine from "../engine.js";
import { fromDatabaseError } from "../errors.js";
import { script } from "./assets.js";
import type { Html } from "./html.js";
import {
  errorPage, layout, queuesPage, runPage, runsPage, workersPage, statuses,
  type QueueRow, type RunFilter, type RunPage, type RunTimeline, type WorkerRow,
} from "./pages.js";

export interface DashboardOptions {
  /** The client whose pool and LISTEN connection the dashboard uses; its role decides what it may do. */
  client: Client;
  /** Default: 9851; 0 picks a free port. */
  port?: number;
  /** Default: 127.0.0.1 (this machine only). */
  host?: string;
  /** When set, every request must carry it: `?token=` once (then a cookie), or the cookie. */
  token?: string;
}

export interface Dashboard {
  /** Where it listens, e.g. http://127.0.0.1:9851/ */
  readonly url: string;
  close(): Promise<void>;
}

const cookieName = "aiki_dashboard_token";
const tickMs = 5_000;
const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** An answer the dashboard gives on purpose: an HTTP status and a message for the person. */
class Refusal extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

/** The HTTP status that fits a database error's code. */
function httpStatus(code: string | undefined): number {
  if (code === "42501") return 403;
  if (code === "AK002") return 404;
  if (code === "AK005" || code === "AK009") return 409;
  if (code?.startsWith("AK") || code?.startsWith("22")) return 400;
  return 500;
}

/** The database's refusal as one line, with the HTTP status that fits it. */
function refusal(error: unknown): Refusal {
  const mapped = fromDatabaseError(error) as { code?: unknown; message?: unknown } | null;
  const code = typeof mapped?.code === "string" ? mapped.code : undefined;
  const message = String(mapped?.message ?? error);
  const status = httpStatus(code);
  if (status === 403) return new Refusal(403, `Refused by the database: ${message} (42501). The dashboard's role may not do this.`);
  if (status === 500) return new Refusal(500, `The database call failed: ${message}${code ? ` (${code})` : ""}`);
  return new Refusal(status, `${message} (${code})`);
}

export async function dashboard(options: DashboardOptions): Promise<Dashboard> {
  const { client } = options;
  const sql = client.sql;
  const streams = new Set<ServerResponse>();
  const tokenHash = options.token ? digest(options.token) : undefined;
  let loopback = false;
  const loopbackHosts = new Set<string>();

  // Bursts of notifications become one message per 250 ms.
  let pending: NodeJS.Timeout | undefined;
  const announce = () => {
    pending ??= setTimeout(() => {
      pending = undefined;
      for (const stream of streams) stream.write("data: refresh\n\n");
    }, 250);
  };
  const notifications = client.notifications();
  const unlisten = [
    await notifications.listen("aiki_status", announce),
    await notifications.listen("aiki_wake", announce),
    notifications.onReconnect(announce),
  ];
  const tick = setInterval(announce, tickMs);

  const pages: Record<string, (url: URL) => Promise<[string, Html]>> = {
    "/": async (url) => {
      const filter: RunFilter = {};
      for (const name of ["status", "workflow", "queue", "search", "cursor", "limit"] as const) {
        const value = url.searchParams.get(name)?.trim();
        if (value) filter[name] = value;
      }
      if (filter.status && !(statuses as string[]).includes(filter.status)) throw new Refusal(400, `unknown status ${JSON.stringify(filter.status)}`);
      const limit = Number(filter.limit ?? 50);
      if (!(Number.isInteger(limit) && limit >= 1 && limit <= 200)) throw new Refusal(400, "limit takes a number of runs, 1 to 200");
      const { cursor, limit: _limit, ...where } = filter;
      const { status: _status, ...countFilter } = where;
      const [page, counts, workflows] = await Promise.all([
        one<RunPage>(sql`select aiki.search_runs(${sql.json(where)}::jsonb, ${limit}, ${cursor ?? null}) as v`),
        one<Record<string, number>>(sql`select aiki.count_runs(${sql.json(countFilter)}::jsonb) as v`),
        one<WorkerRow[]>(sql`select aiki.list_workers() as v`).then((ws) => [...new Set(ws.flatMap((w) => (w.workflows ?? []).map((f) => f.split("@")[0]!)))].sort()),
      ]);
      return ["Runs", runsPage(filter, page, counts, workflows)];
    },
    "/workers": async () => ["Workers", workersPage(await one<WorkerRow[]>(sql`select aiki.list_workers() as v`))],
    "/queues": async () => ["Queues", queuesPage(await one<QueueRow[]>(sql`select aiki.list_queues() as v`))],
  };

  async function runView(id: string): Promise<[string, Html]> {
    if (!uuid.test(id)) throw new Refusal(404, `${JSON.stringify(id)} is not a run id`);
    const run = await one<RunTimeline>(sql`select aiki.run_timeline(${id}::uuid) as v`);
    return [`${run.workflow} ${run.id.slice(0, 8)}`, runPage(run)];
  }

  const actions: Record<string, (id: string, body: Record<string, unknown>) => Promise<string>> = {
    cancel: async (id) => `Cancelled; the run is now ${await engine.cancel(sql, id, "cancelled from the dashboard")}.`,
    pause: async (id) => `Paused; the run is now ${await engine.pause(sql, id)}.`,
    resume: async (id) => `Resumed; the run is now ${await engine.resume(sql, id)}.`,
    retry: async (id) => `Retried; the run is now ${await one<string>(sql`select aiki.retry_run(${id}::uuid) as v`)}.`,
    send: async (id, body) => {
      if (typeof body.name !== "string" || body.name === "") throw new Refusal(400, "the event needs a name");
      const key = typeof body.key === "string" && body.key !== "" ? body.key : undefined;
      const eventId = await engine.sendEvent(sql, id, body.name, body.data ?? null, key);
      return `Sent event ${body.name} (${eventId}).`;
    },
  };

  async function handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const url = new URL(request.url ?? "/", "http://dashboard");
    // A page elsewhere may not use the browser to act here: on a loopback address, only a
    // loopback Host is served (DNS rebinding), and a POST must come from this origin (CSRF).
    const host = request.headers.host ?? "";
    if (loopback && !loopbackHosts.has(host)) return send(response, 421, "text/plain", "this dashboard answers on 127.0.0.1 or localhost only");
    const origin = request.headers.origin;
    if (request.method === "POST" && origin !== undefined && origin !== `http://${host}`) {
      return send(response, 403, "application/json", JSON.stringify({ error: "cross-origin requests are refused" }));
    }
    if (tokenHash && !authorised(request, response, url, tokenHash)) return;
    const path = url.pathname;

    if (request.method === "GET" && path === "/app.js") {
      return send(response, 200, "text/javascript; charset=utf-8", script);
    }
    if (request.method === "GET" && path === "/events") {
      response.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-store", connection: "keep-alive" });
      response.write("retry: 2000\n\n");
      streams.add(response);
      request.on("close", () => streams.delete(response));
      return;
    }
    const action = /^\/runs\/([^/]+)\/([a-z]+)$/.exec(path);
    if (request.method === "POST" && action) {
      try {
        const run = action[1]!, name = action[2]!;
        const act = Object.hasOwn(actions, name) ? actions[name] : undefined;
        if (!act) throw new Refusal(404, `no action ${name}`);
        if (!uuid.test(run)) throw new Refusal(404, `${JSON.stringify(run)} is not a run id`);
        // JSON only: a cross-site form cannot send it without a CORS preflight this server refuses.
        if (!/^application\/json\b/.test(request.headers["content-type"] ?? "")) throw new Refusal(415, "send JSON");
        const message = await act(run, await readJson(request)).catch((error: unknown) => {
          throw error instanceof Refusal ? error : refusal(error);
        });
        return send(response, 200, "application/json", JSON.stringify({ message }));
      } catch (error) {
        const { status, message } = error instanceof Refusal ? error : refusal(error);
        return send(response, status, "application/json", JSON.stringify({ error: message }));
      }
    }
    if (request.method !== "GET") return send(response, 405, "text/plain", "method not allowed");

    const view = pages[path] ?? (path.startsWith("/runs/") ? () => runView(path.slice("/runs/".length)) : undefined);
    const active = path === "/" || path.startsWith("/runs/") ? "runs" : path.slice(1);
    if (!view) return send(response, 404, "text/html; charset=utf-8", layout("Not found", active, errorPage(`No page ${path}.`)));
    try {
      const [title, body] = await view(url);
      send(response, 200, "text/html; charset=utf-8", layout(title, active, body));
    } catch (error) {
      const { status, message } = error instanceof Refusal ? error : refusal(error);
      send(response, status, "text/html; charset=utf-8", layout("Error", active, errorPage(message)));
    }
  }

  const server = createServer((request, response) => {
    handle(request, response).catch((error: unknown) => {
      client.logger.error("dashboard request failed", { error: String(error) });
      if (!response.headersSent) send(response, 500, "text/plain", "internal error");
      else response.end();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 9851, options.host ?? "127.0.0.1", () => resolve());
  });
  const address = server.address() as AddressInfo;
  const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
  loopback = /^(127\.|\[::1\]$)/.test(host);
  for (const name of ["127.0.0.1", "localhost", "[::1]", host]) loopbackHosts.add(`${name}:${address.port}`);

  return {
    url: `http://${host}:${address.port}/`,
    async close() {
      clearInterval(tick);
      clearTimeout(pending);
      for (const stop of unlisten) stop();
      for (const stream of streams) stream.end();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

async function one<T>(query: Promise<{ v: unknown }[]>): Promise<T> {
  const rows = await query;
  return rows[0]!.v as T;
}

function send(response: ServerResponse, status: number, type: string, body: string): void {
  response.writeHead(status, {
    "content-type": type, "cache-control": "no-store", "x-content-type-options": "nosniff",
    "content-security-policy": "default-src 'self'; style-src 'unsafe-inline'; frame-ancestors 'none'",
  });
  response.end(body);
}

async function readJson(request: IncomingMessage): Promise<Record<string, unknown>> {
  let text = "";
  for await (const chunk of request) {
    text += chunk;
    if (text.length > 2_000_000) throw new Refusal(413, "the request is too large");
  }
  try {
    const value: unknown = JSON.parse(text || "{}");
    if (value !== null && typeof value === "object" && !Array.isArray(value)) return value as Record<string, unknown>;
  } catch {
    // answered below
  }
  throw new Refusal(400, "the request body is not a JSON object");
}

function digest(text: string): Buffer {
  return createHash("sha256").update(text).digest();
}

/**
 * The token check: the cookie, or `?token=` (which sets the cookie and redirects to the same
 * address without it, so the token leaves the address bar and the history). 401 otherwise.
 */
function authorised(request: IncomingMessage, response: ServerResponse, url: URL, expected: Buffer): boolean {
  const matches = (given: string | undefined) => given !== undefined && timingSafeEqual(digest(given), expected);
  const cookie = (request.headers.cookie ?? "").split(";").map((c) => c.trim().split("="))
    .find(([name]) => name === cookieName)?.[1];
  if (matches(cookie === undefined ? undefined : decodeURIComponent(cookie))) return true;
  const given = url.searchParams.get("token") ?? undefined;
  if (matches(given) && request.method === "GET") {
    url.searchParams.delete("token");
    response.writeHead(303, {
      location: url.pathname + url.search,
      "set-cookie": `${cookieName}=${encodeURIComponent(given!)}; HttpOnly; SameSite=Strict; Path=/`,
    });
    response.end();
    return false;
  }
  send(response, 401, "text/plain; charset=utf-8", "401 Unauthorized: open the dashboard with ?token=<its token>\n");
  return false;
}
