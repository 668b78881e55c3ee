// One dedicated LISTEN connection (pg-listen) shared by a client's workers and status waits.
// It reconnects forever: a notification lost while disconnected costs latency only, because
// `onReconnect` callbacks make everyone look at the database again.
import pgListen, { type Options, type Subscriber } from "pg-listen";
import type { ClientConfig } from "pg";

// pg-listen is CommonJS with `exports.default`; Node's ESM loader hands us the exports object.
type CreateSubscriber = (config: ClientConfig, options: Options) => Subscriber;
const createSubscriber = (pgListen as unknown as { default: CreateSubscriber }).default;

export type Listener = (payload: string) => void;

export class Notifications {
  private readonly subscriber: Subscriber;
  private readonly listeners = new Map<string, Set<Listener>>();
  private readonly reconnectHooks = new Set<() => void>();
  private connecting: Promise<void> | undefined;

  constructor(url: string) {
    this.subscriber = createSubscriber(
      { connectionString: url },
      { parse: (payload: string) => payload, retryLimit: Infinity, retryTimeout: Infinity, retryInterval: 250, paranoidChecking: 10_000 },
    );
    this.subscriber.events.on("notification", ({ channel, payload }) => {
      for (const listener of this.listeners.get(channel) ?? []) listener(String(payload ?? ""));
    });
    this.subscriber.events.on("reconnect", () => undefined);
    this.subscriber.events.on("connected", () => {
      for (const hook of this.reconnectHooks) hook();
    });
    this.subscriber.events.on("error", () => undefined);
  }

  private connect(): Promise<void> {
    this.connecting ??= this.subscriber.connect();
    return this.connecting;
  }

  /** Calls `listener` with each payload on `channel`; returns the unsubscribe function. */
  async listen(channel: string, listener: Listener): Promise<() => void> {
    await this.connect();
    let set = this.listeners.get(channel);
    if (!set) {
      set = new Set();
      this.listeners.set(channel, set);
      await this.subscriber.listenTo(channel);
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
    if (this.connecting) await this.connecting.then(() => this.subscriber.close(), () => undefined);
  }
}
