// A worker's side of the relay: reads its queues' streams through the consumer group `aiki`, so
// each hint reaches one worker of the group instead of waking all of them.
//
//   read     XREADGROUP GROUP aiki <worker> COUNT 100 BLOCK <blockMs> STREAMS <its queues> >
//   hint     every entry makes the worker claim (damped like a notification: anyone who can
//            reach Redis can write to the stream); entries wait in `pending` for the claim
//   ack      XACK after the claim that followed them (acknowledged = acted upon)
//   orphans  every `claimIdleMs`, XAUTOCLAIM takes over entries another consumer read and never
//            acknowledged for that long (a worker that died holding them)
//   health   Redis reachable and aiki:relay:alive present, checked every read (at most
//            `blockMs` apart): `onHealth(false)` makes the worker LISTEN again, `onHealth(true)`
//            lets it stop; with Redis down at spawn, the first answer comes when the first
//            connection has failed three times (about a second)
//
// A hint never decides anything: a lost one costs the poll at most (and the fallback keeps even
// that from happening while the relay is away), a duplicate or stale one an empty claim.
import { ALIVE_KEY, GROUP, connectRedis, streamOf, type RedisLink } from "./redis.js";

export interface HintsOptions {
  /** Redis URL of the relay's Redis. */
  url: string;
  /** Longest blocking read, and so the longest time to notice the relay gone. Default: 1 s. */
  blockMs?: number;
  /** Entries another consumer left unacknowledged this long are taken over. Default: 5 s. */
  claimIdleMs?: number;
}

export interface HintsListener {
  hint(): void;
  health(up: boolean): void;
  log(line: string): void;
}

export class RelayHints {
  /** Entries read and not acknowledged yet, per stream. */
  private pending = new Map<string, string[]>();
  private reader: RedisLink | undefined;
  private commands: RedisLink | undefined;
  private up: boolean | undefined;
  private stopped = false;
  private loop: Promise<void> = Promise.resolve();
  private lastAutoclaim = 0;
  private readonly streams: string[];
  private readonly blockMs: number;
  private readonly claimIdleMs: number;

  constructor(
    private readonly options: HintsOptions,
    private readonly consumer: string,
    queues: string[],
    private readonly listener: HintsListener,
  ) {
    this.streams = queues.map(streamOf);
    this.blockMs = options.blockMs ?? 1_000;
    this.claimIdleMs = options.claimIdleMs ?? 5_000;
  }

  start(): void {
    this.loop = this.run();
  }

  /** The entries read so far, to acknowledge once the claim that follows them is done. */
  take(): Map<string, string[]> {
    const taken = this.pending;
    this.pending = new Map();
    return taken;
  }

  /** Acknowledges entries a claim has acted upon. */
  ack(taken: Map<string, string[]>): void {
    for (const [stream, ids] of taken) {
      void this.commands?.send(["XACK", stream, GROUP, ...ids]).catch(() => this.keep(stream, ids));
    }
  }

  private keep(stream: string, ids: string[]): void {
    this.pending.set(stream, [...(this.pending.get(stream) ?? []), ...ids]);
  }

  private health(up: boolean): void {
    if (this.up === up) return;
    this.up = up;
    this.listener.health(up);
  }

  private async connect(): Promise<void> {
    const [reader, commands] = await Promise.allSettled([
      connectRedis(this.options.url, `${this.consumer}-read`),
      connectRedis(this.options.url, `${this.consumer}-cmd`),
    ]);
    if (reader.status === "rejected" || commands.status === "rejected" || this.stopped) {
      await Promise.all([reader, commands].map((r) => (r.status === "fulfilled" ? r.value.close() : undefined)));
      if (reader.status === "rejected") throw reader.reason;
      if (commands.status === "rejected") throw commands.reason;
      return;
    }
    this.reader = reader.value;
    this.commands = commands.value;
  }

  private async run(): Promise<void> {
    let groupsReady = false;
    while (!this.stopped) {
      try {
        if (!this.reader || !this.commands) {
          await this.connect();
          continue;
        }
        if (!groupsReady) {
          for (const stream of this.streams) {
            await this.commands.send(["XGROUP", "CREATE", stream, GROUP, "$", "MKSTREAM"]).catch((error: unknown) => {
              if (!String(error).includes("BUSYGROUP")) throw error;
            });
          }
          groupsReady = true;
        }
        const alive = await this.commands.send(["EXISTS", ALIVE_KEY]);
        this.health(alive === 1);
        if (Date.now() - this.lastAutoclaim >= this.claimIdleMs / 2) {
          this.lastAutoclaim = Date.now();
          for (const stream of this.streams) {
            const reply = await this.commands.send(["XAUTOCLAIM", stream, GROUP, this.consumer, String(this.claimIdleMs), "0-0", "COUNT", "100", "JUSTID"]);
            const ids = Array.isArray(reply) && Array.isArray(reply[1]) ? (reply[1] as string[]) : [];
            if (ids.length > 0) this.received(stream, ids);
          }
        }
        const reply = await this.reader!.send([
          "XREADGROUP", "GROUP", GROUP, this.consumer, "COUNT", "100", "BLOCK", String(this.blockMs),
          "STREAMS", ...this.streams, ...this.streams.map(() => ">"),
        ]);
        for (const [stream, ids] of entriesOf(reply)) this.received(stream, ids);
      } catch (error) {
        // Redis away (or its data gone with a restart: the groups are made again).
        groupsReady = false;
        if (this.up !== false) this.listener.log(`relay hints: ${String(error)}`);
        this.health(false);
        if (this.stopped) break;
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    }
  }

  private received(stream: string, ids: string[]): void {
    this.keep(stream, ids);
    this.listener.hint();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    // Closing the reader ends its blocking read at once.
    await Promise.all([this.reader?.close(), this.commands?.close()]);
    await this.loop;
  }
}

/**
 * [stream, entry ids] from an XREADGROUP reply: null, or per stream its entries [[id, fields], …],
 * as an array of [stream, entries] pairs (RESP2) or an object keyed by stream (how node-redis
 * hands a map back).
 */
export function entriesOf(reply: unknown): [string, string[]][] {
  if (reply === null || typeof reply !== "object") return [];
  const pairs = Array.isArray(reply) ? (reply as [string, unknown][]) : Object.entries(reply);
  return pairs.map(([stream, entries]) => [String(stream), ((entries ?? []) as [string, unknown][]).map(([id]) => String(id))]);
}
