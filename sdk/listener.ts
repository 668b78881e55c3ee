// One dedicated LISTEN connection (pg-listen) shared by a client's workers and status waits.
// It reconnects forever: a notification lost while disconnected costs latency only, because
// `onReconnect` callbacks make everyone look at the database again. Losing the connection and
// getting it back are reported to the client's logger, once each.
import pgListen, { type Options, type Subscriber } from "pg-listen";
import type { ClientConfig } from "pg";
import type { Logger } from "./logger.js";

// pg-listen is CommonJS with `exports.default`; Node's ESM loader hands us the exports object.
type CreateSubscriber = (config: ClientConfig, options: Options) => Subscriber;
const createSubscriber = (pgListen as unknown as { default: CreateSubscriber }).default;

export type Listener = (payload: string) => void;

export class Notifications {
  private readonly subscriber: Subscriber;
  private readonly listeners = new Map<string, Set<Listener>>();
  private readonly reconnectHooks = new Set<() => void>();
  private connecting: Promise<void> | undefined;
  private closed = false;
  /** Whether the connection was lost and is not back yet. */
  private lost = false;

  constructor(url: string, logger: Logger) {
    this.subscriber = createSubscriber(
      { connectionString: url },
      { parse: (payload: string) => payload, retryLimit: Infinity, retryTimeout: Infinity, retryInterval: 250, paranoidChecking: 10_000 },
    );
    this.subscriber.events.on("notification", ({ channel, payload }) => {
      for (const listener of this.listeners.get(channel) ?? []) listener(String(payload ?? ""));
    });
    // pg-listen's reconnect loop does not look at close(): closed while Postgres is away, it
    // retried forever (the process never exited), and once reconnected it kept the new
    // connection open. Throwing from the attempt callback ends the loop; a connection made
    // anyway is closed at once.
    this.subscriber.events.on("reconnect", () => {
      if (this.closed) throw new Error("notifications closed");
      if (this.lost) return;
      this.lost = true;
      logger.warn("lost the LISTEN connection (wake-ups, status waits); reconnecting, workers poll meanwhile");
    });
    this.subscriber.events.on("connected", () => {
      if (this.closed) return void this.subscriber.close().catch(() => undefined);
      if (this.lost) logger.info("the LISTEN connection is back");
      this.lost = false;
      for (const hook of this.reconnectHooks) hook();
    });
    this.subscriber.events.on("error", () => undefined);
  }

  // A first connection that fails (Postgres down or starting up) is not fatal: pg-listen sees
  // the client end and keeps reconnecting in the background, LISTENs again on every channel
  // asked for meanwhile, and emits `connected`, which runs the reconnect hooks. Until then
  // workers claim on their safety poll and status waits re-read. Without this, a worker started
  // during a Postgres restart crashed in spawn() (found by the chaos suite).
  private connect(): Promise<void> {
    this.connecting ??= this.subscriber.connect().catch(() => undefined);
    return this.connecting;
  }

  /** Calls `listener` with each payload on `channel`; returns the unsubscribe function. */
  async listen(channel: string, listener: Listener): Promise<() => void> {
    await this.connect();
    let set = this.listeners.get(channel);
    if (!set) {
      set = new Set();
      this.listeners.set(channel, set);
      // pg-listen records the channel before it sends LISTEN, and LISTENs again on reconnect.
      await this.subscriber.listenTo(channel)?.catch(() => undefined);
    }
    set.add(listener);
    return () => set.delete(listener);
  }

  /** Runs `hook` after every (re)connection, when notifications may have been missed. */
  onReconnect(hook: () => void): () => void {
    this.reconnectHooks.add(hook);
    return () => this.reconnectHooks.delete(hook);
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.connecting) await this.connecting.then(() => this.subscriber.close()).catch(() => undefined);
  }
}
