// The relay: one process LISTENs to Postgres once and turns wake-ups into entries of a Redis
// Stream per queue, so a fleet of workers needs neither a LISTEN connection each nor short polls.
//
//   "<queue>" on aiki_wake            XADD aiki:wake:<queue> MAXLEN ~ n * kind wake
//   a timer falls due (aiki.next_due)  XADD aiki:wake:<queue> MAXLEN ~ n * kind due
//   "<queue> <time>" on aiki_wake      the relay looks at aiki.next_due again (an earlier timer)
//   (re)connected to Postgres          a wake for every queue it knows (notifications may be lost)
//
// Timers. The relay claims nothing. It asks the engine for the earliest timer after the last one
// it hinted (aiki.next_due, one index probe), sleeps until it falls due on the database clock,
// hints its queue, and asks again; it also asks every `checkMs`, for timers set by workers'
// suspends (a worker arms its own timer for those: the relay's hint is for when it died).
//
// Liveness. Every live relay sets aiki:relay:alive with an expiry of `aliveMs`; a worker that
// finds it missing (or Redis unreachable) falls back to LISTEN and its poll. Several relays may
// run at once: their hints are duplicates, and a duplicate costs a worker at most one empty claim.
// A hint never decides anything: Postgres stays the only truth.
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import type { Client } from "../client.js";
import { check, relayRules } from "../options.js";
import { ALIVE_KEY, connectRedis, streamOf, type RedisLink } from "./redis.js";

interface NextDue {
  now: string;
  queue: string | null;
  due_at: string | null;
}

export interface RelayOptions {
  /** The Postgres side: its LISTEN connection and pool (one connection is enough). */
  client: Client;
  /** Redis URL, e.g. redis://localhost:6379. */
  redis: string;
  /** Queues to relay. Default: every queue. */
  queues?: string[];
  /** Approximate length each stream is trimmed to (XADD MAXLEN ~). Default: 10,000. */
  maxLen?: number;
  /** How often the relay asks for the next timer without being told. Default: 1 s. */
  checkMs?: number;
  /** Expiry of the liveness key, refreshed every third of it. Default: 3 s. */
  aliveMs?: number;
}

export interface RelayStats {
  /** Stream entries written: wake-ups and due timers. */
  wakes: number;
  dues: number;
  /** Hints lost because Redis was away (the workers fall back to LISTEN meanwhile). */
  failed: number;
}

export interface RelayHandle {
  readonly id: string;
  readonly stats: RelayStats;
  stop(): Promise<void>;
}

export async function relay(options: RelayOptions): Promise<RelayHandle> {
  check("relay option", options, relayRules);
  const r = new Relay(options);
  await r.start();
  return r;
}

class Relay implements RelayHandle {
  readonly id = `relay-${hostname()}-${process.pid}-${randomBytes(3).toString("hex")}`;
  readonly stats: RelayStats = { wakes: 0, dues: 0, failed: 0 };
  private redis: RedisLink | undefined;
  private readonly queues: Set<string> | undefined;
  private readonly known = new Set<string>();
  private readonly maxLen: string;
  private readonly checkMs: number;
  private readonly aliveMs: number;
  private stopped = false;
  private unsubscribe: Array<() => void> = [];
  private aliveTimer: NodeJS.Timeout | undefined;
  private dueTimer: NodeJS.Timeout | undefined;
  private poke: () => void = () => {};
  private loop: Promise<void> = Promise.resolve();

  constructor(private readonly options: RelayOptions) {
    this.queues = options.queues ? new Set(options.queues) : undefined;
    for (const queue of options.queues ?? []) this.known.add(queue);
    this.maxLen = String(options.maxLen ?? 10_000);
    this.checkMs = options.checkMs ?? 1_000;
    this.aliveMs = options.aliveMs ?? 3_000;
  }

  async start(): Promise<void> {
    // Redis first: a relay that cannot reach it has nothing to do (the CLI reports the error).
    this.redis = await connectRedis(this.options.redis, this.id);
    await this.alive();
    this.aliveTimer = setInterval(() => void this.alive(), Math.max(100, Math.floor(this.aliveMs / 3)));
    const notifications = this.options.client.notifications();
    this.unsubscribe.push(await notifications.listen("aiki_wake", (payload) => {
      const [queue, due] = payload.split(" ", 2);
      if (!queue || (this.queues && !this.queues.has(queue))) return;
      this.known.add(queue);
      if (due === undefined) void this.hint(queue, "wake");
      else this.poke();
    }));
    this.unsubscribe.push(notifications.onReconnect(() => {
      for (const queue of this.known) void this.hint(queue, "wake");
      this.poke();
    }));
    this.loop = this.dueLoop();
  }

  private async alive(): Promise<void> {
    await this.redis?.send(["SET", ALIVE_KEY, this.id, "PX", String(this.aliveMs)]).catch(() => undefined);
  }

  private async hint(queue: string, kind: "wake" | "due"): Promise<void> {
    try {
      await this.redis!.send(["XADD", streamOf(queue), "MAXLEN", "~", this.maxLen, "*", "kind", kind]);
      if (kind === "wake") this.stats.wakes++;
      else this.stats.dues++;
    } catch {
      this.stats.failed++;
    }
  }

  /** Hints each timer as it falls due, on the database clock. */
  private async dueLoop(): Promise<void> {
    let after: string | null = null;
    const queues = this.options.queues ?? null;
    while (!this.stopped) {
      let waitMs = this.checkMs;
      try {
        const rows: { due: NextDue }[] = await this.options.client.sql<{ due: NextDue }[]>`
          select aiki.next_due(${queues}::text[], ${after}::timestamptz) as due`;
        const { now, queue, due_at: dueAt }: NextDue = rows[0]!.due;
        if (queue && dueAt) {
          const inMs = Date.parse(dueAt) - Date.parse(now);
          if (inMs <= 0) {
            this.known.add(queue);
            await this.hint(queue, "due");
            after = dueAt;
            continue;
          }
          waitMs = Math.min(waitMs, inMs);
        }
      } catch (error) {
        this.options.client.logger.warn(`${this.id}: next_due failed: ${String(error)}`);
      }
      await new Promise<void>((resolve) => {
        this.poke = resolve;
        this.dueTimer = setTimeout(resolve, waitMs);
      });
      clearTimeout(this.dueTimer);
    }
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.aliveTimer);
    this.poke();
    await this.loop;
    for (const unsubscribe of this.unsubscribe) unsubscribe();
    await this.redis?.close();
  }
}
