// The Redis side of the relay, shared by the relay process and the workers that read it: the
// stream names, and a connection made with the `redis` package (node-redis), loaded only when a
// relay is used. It is an optional peer dependency: `npm install redis` to use the relay.
//
// Commands go out raw (sendCommand): the relay needs seven of them, and raw replies keep this
// file independent of the client's typed command API across its major versions. The offline
// queue is off, so a command fails at once while Redis is away instead of waiting for it: that
// is how workers notice within a bounded time and fall back to LISTEN.
import { InvalidInputError } from "../errors.js";

/** One stream per queue; entries are wake-up hints. */
export const streamOf = (queue: string) => `aiki:wake:${queue}`;
/** The consumer group every worker of a queue reads through. */
export const GROUP = "aiki";
/** Set by every live relay with an expiry; workers fall back to LISTEN while it is missing. */
export const ALIVE_KEY = "aiki:relay:alive";

/** A raw reply: strings, numbers, null, arrays of them, or (maps) objects. */
export type Reply = string | number | null | Reply[] | { [key: string]: Reply };

export interface RedisLink {
  send(args: string[]): Promise<Reply>;
  close(): Promise<void>;
}

interface NodeRedisClient {
  connect(): Promise<unknown>;
  sendCommand(args: string[]): Promise<unknown>;
  on(event: "error", listener: (error: unknown) => void): unknown;
  destroy(): void;
}

/**
 * Connects to `url`, or rejects when the first connection fails three times (about a second).
 * Once connected, it reconnects forever in the background (every 100 ms to 1 s), and commands
 * made while disconnected fail at once.
 */
export async function connectRedis(url: string, name: string): Promise<RedisLink> {
  let createClient: (options: object) => NodeRedisClient;
  try {
    ({ createClient } = (await import("redis")) as unknown as { createClient: typeof createClient });
  } catch {
    throw new InvalidInputError("AK003", "the relay needs the `redis` package: npm install redis");
  }
  let connected = false;
  const client = createClient({
    url,
    name,
    disableOfflineQueue: true,
    socket: {
      connectTimeout: 2_000,
      reconnectStrategy: (retries: number, cause: Error) =>
        !connected && retries >= 3 ? cause : Math.min(100 * 2 ** retries, 1_000),
    },
  });
  client.on("error", () => undefined);
  try {
    await client.connect();
    connected = true;
  } catch (error) {
    client.destroy();
    throw error;
  }
  return {
    send: (args) => client.sendCommand(args) as Promise<Reply>,
    async close() {
      client.destroy();
    },
  };
}
