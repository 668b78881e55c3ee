// The Redis Streams relay against a real Redis (sdk/testing/redis.ts: REDIS_URL, or a
// redis-server of our own on a free port). Workers here have a ten-minute poll, so a run that
// finishes was found through the relay (or, while it is away, the LISTEN fallback): nothing
// waits for the poll, and a lost wake-up fails the test by its timeout. Every load test ends
// with every run completed: none lost.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { relay, task, workflow, type RelayHandle } from "../index.js";
import { connectRedis, streamOf, ALIVE_KEY, GROUP } from "../relay/redis.js";
import { entriesOf } from "../relay/hints.js";
import { hasRedisServer, testRedis, type TestRedis } from "../testing/redis.js";
import { environment, unique, until, type Env } from "./support.js";

/** A logger that keeps every line, whatever its level. */
const collect = (lines: string[]) => {
  const keep = (line: string) => void lines.push(line);
  return { info: keep, warn: keep, error: keep };
};

const NEVER = { pollMs: 600_000 } as const;
const T = { timeout: 120_000 };
/** Fast relay settings: a worker notices a gone relay within about a second. */
const hintsOptions = (url: string) => ({ url, blockMs: 200, claimIdleMs: 600 });

let env: Env;
let redis: TestRedis | undefined;
before(async () => {
  env = await environment();
  redis = await testRedis();
});
after(async () => {
  await redis?.stop();
  await env.close();
});

const skip = process.env.REDIS_URL || hasRedisServer() ? false : "no redis-server on PATH and no REDIS_URL";

/** A workflow that sleeps briefly and runs a task: each run needs two wake-ups. */
function napThenWork() {
  const work = task({ name: unique("work"), handler: (n: number) => n * 2 });
  return workflow({ name: unique("nap") }).v("1", {
    async handler(run, n: number) {
      await run.sleep("nap", 20);
      return work.start(run, n);
    },
  });
}

let inputs = 0;
async function startMany(wf: ReturnType<typeof napThenWork>, queue: string, count: number) {
  const started = [];
  for (let i = 0; i < count; i++) {
    const n = inputs++;
    started.push({ n, handle: await wf.start(env.aiki, n, { queue }) });
  }
  return started;
}

async function allCompleted(started: Awaited<ReturnType<typeof startMany>>) {
  const outputs = await Promise.all(started.map(({ handle }) => handle.result({ timeout: 90_000 })));
  assert.deepEqual(outputs, started.map(({ n }) => n * 2), "every run completed, none lost");
}

const listenersOfWake = async () => {
  const [row] = await env.sql<{ n: number }[]>`
    select count(*)::int as n from pg_stat_activity where datname = current_database() and query ilike 'listen%aiki_wake%'`;
  return row!.n;
};

describe("relay", { skip }, () => {
  it("end to end: wake-ups and due timers reach a worker that has no LISTEN connection of its own", T, async () => {
    const r = await relay({ client: env.client({ max: 1 }), redis: redis!.url, aliveMs: 1_000 });
    try {
      const wf = napThenWork();
      const queue = unique("q");
      const logs: string[] = [];
      const w = await env.spawn({ workflows: [wf], queues: [queue], relay: hintsOptions(redis!.url), ...NEVER },
        env.client({ logger: collect(logs) }));
      await until("the worker to read from the relay", () => (logs.some((l) => l.includes("reading wake-ups from the relay")) ? true : undefined));
      const handles = await startMany(wf, queue, 20);
      const n = inputs++;
      const later = { n, handle: await wf.start(env.aiki, n, { queue, delay: 300 }) };
      await allCompleted([...handles, later]);
      assert.ok(r.stats.wakes > 0, `relayed ${r.stats.wakes} wake-ups`);
      // The worker may learn a due time from its own claims and beat the relay's hint to it, so
      // the due-timer hint is proven on a queue no worker reads: only the relay can hint it.
      const unread = unique("q");
      await wf.start(env.aiki, inputs++, { queue: unread, delay: 200 });
      await until("the relay to hint a due timer", () => (r.stats.dues > 0 ? true : undefined));
      assert.equal(await listenersOfWake(), 1, "one LISTEN connection: the relay's, none per worker");
      assert.ok(!logs.some((l) => l.includes("relay unavailable")), logs.join("\n"));
      assert.ok(w.stats.claimed >= 42);
    } finally {
      await r.stop();
    }
  });

  it("Redis killed and restarted mid-load: workers fall back to LISTEN, return, and every run finishes", T, async (t) => {
    if (!redis!.owned) return t.skip("REDIS_URL is not ours to kill");
    const r = await relay({ client: env.client({ max: 1 }), redis: redis!.url, aliveMs: 1_000 });
    try {
      const wf = napThenWork();
      const queue = unique("q");
      const logs: string[] = [];
      const c = env.client({ logger: collect(logs) });
      for (let i = 0; i < 2; i++) await env.spawn({ workflows: [wf], queues: [queue], relay: hintsOptions(redis!.url), ...NEVER }, c);
      const handles = await startMany(wf, queue, 100);
      await until("a third of the runs to finish", async () => {
        const [row] = await env.sql<{ n: number }[]>`select count(*)::int as n from aiki.runs where queue = ${queue} and status = 'completed'`;
        return row!.n >= 30 ? true : undefined;
      });
      await redis!.kill();
      const more = await startMany(wf, queue, 50);
      await until("the workers to fall back to LISTEN", () => (logs.filter((l) => l.includes("relay unavailable")).length >= 2 ? true : undefined));
      await redis!.restart();
      await until("the workers to return to the relay", () =>
        (logs.filter((l) => l.includes("reading wake-ups from the relay")).length >= 4 ? true : undefined), 30_000);
      const last = await startMany(wf, queue, 50);
      await allCompleted([...handles, ...more, ...last]);
    } finally {
      await r.stop();
    }
  });

  it("the relay killed mid-load: workers notice within a bounded time, LISTEN meanwhile, and use a new relay", T, async () => {
    const first = await relay({ client: env.client({ max: 1 }), redis: redis!.url, aliveMs: 600 });
    let second: RelayHandle | undefined;
    try {
      const wf = napThenWork();
      const queue = unique("q");
      const logs: string[] = [];
      await env.spawn({ workflows: [wf], queues: [queue], relay: hintsOptions(redis!.url), ...NEVER },
        env.client({ logger: collect(logs) }));
      await until("the worker to read from the relay", () => (logs.some((l) => l.includes("reading wake-ups from the relay")) ? true : undefined));
      const handles = await startMany(wf, queue, 60);
      // Stopped without a word to anyone, as a killed relay: its liveness key simply expires.
      await first.stop();
      const more = await startMany(wf, queue, 40);
      await until("the worker to fall back to LISTEN", () => (logs.some((l) => l.includes("relay unavailable")) ? true : undefined), 10_000);
      second = await relay({ client: env.client({ max: 1 }), redis: redis!.url, aliveMs: 600 });
      await until("the worker to return to the relay", () =>
        (logs.filter((l) => l.includes("reading wake-ups from the relay")).length >= 2 ? true : undefined), 10_000);
      const last = await startMany(wf, queue, 20);
      await allCompleted([...handles, ...more, ...last]);
    } finally {
      await first.stop();
      await second?.stop();
    }
  });

  it("a worker that died holding stream entries: another worker takes them over (XAUTOCLAIM) and claims", T, async () => {
    const link = await connectRedis(redis!.url, "test");
    try {
      const wf = napThenWork();
      const queue = unique("q");
      const stream = streamOf(queue);
      // A relay that is "alive" but sends nothing more: the dead worker's entry is the only hint.
      await link.send(["SET", ALIVE_KEY, "test", "PX", "600000"]);
      await env.sql`select aiki.pause_queue(${queue})`;
      const handles = await startMany(wf, queue, 3);
      await link.send(["XGROUP", "CREATE", stream, GROUP, "$", "MKSTREAM"]);
      await link.send(["XADD", stream, "*", "kind", "wake"]);
      const read = await link.send(["XREADGROUP", "GROUP", GROUP, "dead-worker", "COUNT", "10", "STREAMS", stream, ">"]);
      assert.equal(entriesOf(read)[0]?.[1].length, 1, "the dead worker holds the entry, unacknowledged");

      const logs: string[] = [];
      const w = await env.spawn({ workflows: [wf], queues: [queue], relay: hintsOptions(redis!.url), ...NEVER },
        env.client({ logger: collect(logs) }));
      await until("the worker to read from the relay", () => (logs.some((l) => l.includes("reading wake-ups from the relay")) ? true : undefined));
      await until("its first claims", () => (w.stats.claims >= 2 ? true : undefined));
      assert.equal(w.stats.claimed, 0, "the queue is paused");
      // Nobody relays this resume: only the entry the dead worker left can tell the worker.
      await env.sql`update aiki.queues set paused = false where name = ${queue}`;
      await allCompleted(handles);
      await until("the entry to be acknowledged", async () => {
        const pending = await link.send(["XPENDING", stream, GROUP]);
        return Array.isArray(pending) && pending[0] === 0 ? true : undefined;
      });
    } finally {
      await link.send(["DEL", ALIVE_KEY]);
      await link.close();
    }
  });
});
