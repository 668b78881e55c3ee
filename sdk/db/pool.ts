// The client's query pool: postgres.js behind a stable `Sql` that replaces the pool after a
// connection failure.
//
// Why. postgres.js 3.4.9 can strand a query forever on a connection the server closed: the
// write scheduler's timer is cleared on close but never reset, so the connection's next startup
// message is never sent (LanternOps/breeze#3225); a query parked as a reconnecting connection's
// first query is never settled on a clean close (porsager/postgres#1193); queries pipelined on a
// dying socket wait for answers that cannot come. A worker whose claim or journal write is
// stranded stops claiming, or keeps a run leased forever while its heartbeats (on another
// connection) renew it. The chaos suite (sdk/test/chaos) found these within seconds of
// `pg_terminate_backend` and Postgres restarts.
//
// What. After a query fails with a connection-level error, or when an engine call (engine.ts
// marks its queries with `engineQuery`) has been in flight for `stallMs`, new queries go to a
// fresh pool and the old one is ended: its in-flight queries get `drainMs` to finish, then its
// connections are destroyed, which rejects every stranded query with CONNECTION_DESTROYED.
// Callers retry those like any connection error (every engine write is idempotent or fenced by
// its lease token). A fresh pool costs nothing until used: its connections open lazily.
//
// Stall watchdog, only what it must. A user's own query on `client.sql` may run as long as it
// likes: it is never watched. An engine call may wait on a lock (a record behind a transaction
// that holds a parent's row): before replacing the pool the watchdog asks the server, on a
// one-off connection, whether a backend of this pool's application_name waits on a lock, and
// leaves the pool alone while one does. A stranded call has no backend at work; a silent
// connection does not answer the probe within `stallMs` either, and the pool is replaced. (The
// probe sees every process of that application_name on the database: another process's lock
// wait only postpones the verdict.)
//
// Also: `fetch_types` is off. With it on, postgres.js fetches array types on every new
// connection in a promise nobody awaits, and a connection killed during that query crashes the
// process with an unhandled rejection. Engine calls therefore pass arrays as text literals
// (engine.ts, textArray) and read array results as JSON.
import postgres, { type Options, type Sql } from "postgres";

export interface HealingPoolOptions {
  /**
   * An engine call in flight this long, not waiting on a lock, is presumed stranded and its pool
   * replaced. User queries are never watched. Default: 30 s.
   */
  stallMs?: number;
  /** How long a replaced pool's in-flight queries may still finish. Default: 5 s. */
  drainMs?: number;
}

// SQLSTATE class 08 (connection exception), 57P01-03 (shutdown, crash, cannot connect now), and
// the socket-level codes of Node and postgres.js.
const connectionCodes = new Set([
  "57P01", "57P02", "57P03", "CONNECTION_CLOSED", "CONNECTION_DESTROYED", "CONNECT_TIMEOUT",
  "ECONNRESET", "ECONNREFUSED", "EPIPE", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH",
]);

export function isConnectionError(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" && (connectionCodes.has(code) || code.startsWith("08"));
}

const engineQueries = new WeakSet<object>();

/** Marks `query` as an engine call: the stall watchdog watches it (see the file header). */
export function engineQuery<T>(query: T): T {
  if (query !== null && typeof query === "object") engineQueries.add(query);
  return query;
}

interface Generation {
  sql: Sql;
  /** Queries handed out and not settled yet, with when they were made. */
  inFlight: Map<number, { query: Promise<unknown>; since: number }>;
  retired: boolean;
}

/**
 * A postgres.js pool for `url` that heals itself (see the file header). The returned `Sql`
 * forwards tagged queries and every property (`json`, `begin`, `unsafe`, …) to the current pool
 * and hands back postgres.js's own query objects, so fragments, `.values()` and the like work as
 * usual; `end()` ends every pool it made.
 */
export function healingPool(url: string, options: Options<{}>, healing: HealingPoolOptions = {}): Sql {
  const stallMs = healing.stallMs ?? 30_000;
  const drainSec = (healing.drainMs ?? 5_000) / 1_000;
  const make = (): Generation => ({ sql: postgres(url, { ...options, fetch_types: false }), inFlight: new Map(), retired: false });
  let current = make();
  const draining = new Set<Promise<void>>();
  let ids = 0;

  const retire = (generation: Generation) => {
    if (generation.retired) return;
    generation.retired = true;
    if (generation === current) current = make();
    const ended: Promise<void> = generation.sql.end({ timeout: drainSec }).catch(() => undefined).then(() => {
      draining.delete(ended);
    });
    draining.add(ended);
  };

  // Whether a backend of this pool waits on a lock; false when the server does not answer in time.
  const application = String((options.connection as { application_name?: unknown } | undefined)?.application_name ?? "postgres.js");
  const waitsOnLock = async (): Promise<boolean> => {
    const probe = postgres(url, { ...options, max: 1, fetch_types: false, connect_timeout: Math.max(1, stallMs / 1_000) });
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        probe<{ waiting: boolean }[]>`
          select exists (select 1 from pg_stat_activity
                          where datname = current_database() and application_name = ${application}
                            and state = 'active' and wait_event_type = 'Lock') as waiting`.then((rows) => rows[0]!.waiting),
        new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), stallMs))),
      ]);
    } catch {
      return false;
    } finally {
      clearTimeout(timer);
      void probe.end({ timeout: 0 }).catch(() => undefined);
    }
  };

  let probing = false;
  const watchdog = setInterval(() => {
    if (probing) return;
    const now = performance.now();
    let stalled = false;
    for (const [id, { query, since }] of current.inFlight) {
      if (now - since <= stallMs) continue;
      // postgres.js runs a query when it is first awaited; one never awaited (a fragment) is no stall.
      if (!(query as { executed?: boolean }).executed) current.inFlight.delete(id);
      else if (engineQueries.has(query)) stalled = true;
    }
    if (!stalled) return;
    const generation = current;
    probing = true;
    void waitsOnLock().then((waiting) => {
      probing = false;
      if (!waiting) retire(generation);
    });
  }, Math.min(1_000, stallMs));
  watchdog.unref();

  // Observes a query without running it: Promise.prototype.then, unlike postgres.js's own
  // `then`, does not start the query.
  const observe = (generation: Generation, query: unknown) => {
    if (!(query instanceof Promise)) return;
    const id = ids++;
    generation.inFlight.set(id, { query, since: performance.now() });
    Promise.prototype.then.call(query, () => generation.inFlight.delete(id), (error: unknown) => {
      generation.inFlight.delete(id);
      if (isConnectionError(error)) retire(generation);
    });
  };

  const end = async (endOptions?: { timeout?: number }) => {
    clearInterval(watchdog);
    current.retired = true;
    await Promise.all([current.sql.end(endOptions), ...draining]);
  };

  return new Proxy(current.sql, {
    apply(_target, _this, args: unknown[]) {
      const generation = current;
      const result = Reflect.apply(generation.sql, undefined, args);
      // Only tagged templates are queries; sql(rows) and sql(name) build fragments.
      if (Array.isArray(args[0]) && "raw" in (args[0] as object)) observe(generation, result);
      return result;
    },
    get(_target, property) {
      if (property === "end") return end;
      const generation = current;
      const value = Reflect.get(generation.sql, property);
      if (property !== "unsafe" || typeof value !== "function") return value;
      return (...args: unknown[]) => {
        const query = (value as (...a: unknown[]) => unknown)(...args);
        observe(generation, query);
        return query;
      };
    },
  }) as Sql;
}
