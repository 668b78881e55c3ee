// Workload 7: the idle path. One worker with nothing else to do, on default settings (its safety
// poll is 30 s), so every figure is how fast a wake-up reaches an idle worker — the path the
// busy-worker workloads never exercise:
//
//   lone sleep      a run sleeps 10-500 ms (uniform, in 10 ms steps); lateness is when the code after the sleep
//                   runs minus when the sleep began plus its duration (so it includes the suspend's
//                   round trip and the replay). A few lanes run side by side, each one run at a
//                   time, so the worker is idle for almost all of every sleep.
//   start + send    a run is started and sent its event at once (the send races the worker's
//                   claim of the new run); latency from send_event's return to the code after the
//                   wait.
//   retry due       a task fails once with a fixed retry delay of 10-500 ms and the run suspends
//                   (no in-process retry); lateness of the second attempt after its due time.
//
// "near poll" counts samples later than half the poll interval: a wake-up that was missed.
// Measured twice when a Redis is at hand (sdk/testing/redis.ts): the worker LISTENing, and the
// worker reading a relay's streams (relay and worker in this process, Redis beside them).
import { client, event, migrate, relay, task, workflow, worker, type WorkerHandle } from "../../sdk/index.js";
import { testRedis } from "../../sdk/testing/redis.js";
import postgres from "postgres";
import type { Section } from "../report.js";
import { percentiles, quiet, until, type Percentiles } from "../support.js";
import { withDatabase, type Context } from "./context.js";

export interface IdleMode {
  /** "NOTIFY" (the worker LISTENs) or "relay" (Redis Streams through a relay). */
  mode: string;
  sleep: Percentiles;
  startSend: Percentiles;
  retry: Percentiles;
  /** Samples of all three later than half the poll interval. */
  nearPoll: number;
  /** Claim statements the worker made, for this many runs. */
  claims: number;
  runs: number;
}

export interface IdleResult {
  pollMs: number;
  modes: IdleMode[];
}

const POLL_MS = 30_000;

const uniform = (lo: number, hi: number) => lo + Math.floor(Math.random() * (hi - lo + 1));

/** One idle worker on a fresh database, woken by NOTIFY or (with `redisUrl`) by a relay. */
async function measure(ctx: Context, mode: string, redisUrl: string | undefined): Promise<IdleMode> {
  const { idleSleeps, idleLanes } = ctx.settings;
  return withDatabase(ctx, async (url) => {
    const admin = postgres(url, { max: 1, ...quiet });
    await migrate(admin).finally(() => admin.end());
    let reading = false;
    const log = (line: string) => {
      if (line.includes("reading wake-ups from the relay")) reading = true;
      else if (/failed|error|unavailable/i.test(line)) console.error(line);
    };
    const aiki = client({ url, max: 4, logger: { info: log, warn: log, error: log } });
    const relayClient = redisUrl ? client({ url, max: 1, logger: { info: log, warn: log, error: log } }) : undefined;
    const relayHandle = redisUrl ? await relay({ client: relayClient!, redis: redisUrl }) : undefined;
    const woke = new Map<string, (at: number) => void>();
    const napper = workflow({ name: "napper" }).v("1", {
      async handler(run, input: { ms: number }) {
        await run.sleep("nap", input.ms);
        woke.get(run.id)?.(performance.now());
        return null;
      },
    });
    const listener = workflow({ name: "listener" }).v("1", {
      events: { go: event<null>() },
      async handler(run) {
        await run.events.go.wait();
        woke.get(run.id)?.(performance.now());
        return null;
      },
    });
    // A task's retry policy is part of its definition: one retrier per delay (delays are drawn in
    // 10 ms steps, so at most 50 of them).
    const failedAt = new Map<string, number>();
    const retriers = new Map<number, ReturnType<typeof makeRetrier>>();
    function makeRetrier(ms: number) {
      const flaky = task({
        name: `flaky-${ms}`,
        retry: { type: "fixed", maxAttempts: 2, baseDelayMs: ms },
        handler: (input: { id: string }, attempt) => {
          if (attempt.attempt === 1) {
            failedAt.set(input.id, performance.now());
            throw new Error("the first attempt fails");
          }
          woke.get(input.id)?.(performance.now());
        },
      });
      return workflow({ name: `retrier-${ms}` }).v("1", {
        async handler(run) {
          await flaky.start(run, { id: run.id });
          return null;
        },
      });
    }
    const delays = Array.from({ length: idleSleeps }, () => 10 * uniform(1, 50));
    for (const ms of delays) if (!retriers.has(ms)) retriers.set(ms, makeRetrier(ms));

    let handle: WorkerHandle | undefined;
    try {
      handle = await worker({
        workflows: [napper, listener, ...retriers.values()],
        concurrency: 10,
        inlineRetryMaxMs: 0,
        ...(redisUrl ? { relay: { url: redisUrl } } : {}),
      }).spawn(aiki);
      if (redisUrl) await until("the worker to read from the relay", () => reading, 60_000, 20);

      const lanes = async (count: number, one: (k: number) => Promise<number>) => {
        const samples: number[] = [];
        let next = 0;
        await Promise.all(Array.from({ length: idleLanes }, async () => {
          while (next < count) samples.push(await one(next++));
        }));
        return samples;
      };
      const wake = (id: string) => new Promise<number>((resolve) => woke.set(id, resolve));

      const sleeps = await lanes(idleSleeps, async (k) => {
        const handle = await napper.start(aiki, { ms: delays[k]! });
        const woken = wake(handle.id);
        const began = performance.now();
        return (await woken) - began - delays[k]!;
      });
      const sends = await lanes(Math.min(idleSleeps, 200), async () => {
        const handle = await listener.start(aiki, null);
        const woken = wake(handle.id);
        await handle.events.go.send(null);
        const sent = performance.now();
        return (await woken) - sent;
      });
      const retries = await lanes(Math.min(idleSleeps, 200), async (k) => {
        const ms = delays[k]!;
        const handle = await retriers.get(ms)!.start(aiki, null);
        const woken = wake(handle.id);
        return (await woken) - failedAt.get(handle.id)! - ms;
      });

      const result: IdleMode = {
        mode,
        sleep: percentiles(sleeps),
        startSend: percentiles(sends),
        retry: percentiles(retries),
        nearPoll: [...sleeps, ...sends, ...retries].filter((ms) => ms >= POLL_MS / 2).length,
        claims: handle.stats.claims,
        runs: sleeps.length + sends.length + retries.length,
      };
      ctx.log(`  ${mode}: lone sleep lateness p50 ${result.sleep.p50.toFixed(1)} p99 ${result.sleep.p99.toFixed(1)} max ${result.sleep.max.toFixed(1)} ms; ` +
        `start+send p99 ${result.startSend.p99.toFixed(1)} ms; retry lateness p99 ${result.retry.p99.toFixed(1)} ms; near poll ${result.nearPoll}`);
      return result;
    } finally {
      await handle?.stop({ timeoutMs: 5_000 });
      await relayHandle?.stop();
      await relayClient?.close();
      await aiki.close();
    }
  });
}

export async function idle(ctx: Context): Promise<{ sections: Section[]; results: IdleResult }> {
  const modes = [await measure(ctx, "NOTIFY", undefined)];
  const redis = await testRedis();
  if (redis) {
    try {
      modes.push(await measure(ctx, "relay", redis.url));
    } finally {
      await redis.stop();
    }
  } else {
    ctx.log("  relay: skipped (no redis-server on PATH and no REDIS_URL)");
  }
  const row = (system: string, p: Percentiles) => ({ system, values: [p.n, p.p50, p.p90, p.p99, p.max] });
  return {
    results: { pollMs: POLL_MS, modes },
    sections: [{
      id: "idle",
      title: `7. Idle worker wake-ups, ms (one worker, safety poll ${POLL_MS / 1000} s, ${ctx.settings.idleLanes} lanes of one run at a time)`,
      columns: ["samples", "p50", "p90", "p99", "max"],
      rows: modes.flatMap((m) => [
        row(`${m.mode}: lone sleep 10-500 ms, lateness`, m.sleep),
        row(`${m.mode}: start, then send at once, send to resume`, m.startSend),
        row(`${m.mode}: task retry due in 10-500 ms, lateness`, m.retry),
      ]),
      notes: modes.map((m) => `${m.mode}: ${m.nearPoll} samples later than half the poll interval (a missed wake-up); ` +
        `${m.claims} claim statements for ${m.runs} runs (each run is claimed twice: at its start and at its wake-up)`),
    }],
  };
}
