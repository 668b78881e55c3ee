// What the SDK says through the client's `logger` (sdk/logger.ts): a worker's start and stop,
// losing the database and getting it back, task and run failures with their causes; console by
// default, nothing with `logger: false`.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createServer, connect, type Server, type Socket } from "node:net";
import { client, task, worker, workflow, type Client } from "../index.js";
import { freePort } from "../db/embedded.js";
import { collect, environment, latch, rejects, unique, type Env } from "./support.js";
import { RunFailedError } from "../errors.js";

let env: Env;
before(async () => {
  env = await environment();
});
after(() => env.close());

const echo = (name: string) => workflow({ name }).v("1", { handler: async (_run, n: number) => n });

describe("a worker's logger", () => {
  it("reports the worker's start, with what it serves, and its stop", async () => {
    const lines: string[] = [];
    const aiki = env.client({ logger: collect(lines) });
    const wf = echo(unique("start-stop"));
    const handle = await worker({ workflows: [wf], queues: ["default", "extra"], concurrency: 3 }).spawn(aiki);
    assert.deepEqual(lines, [`info: worker ${handle.id} started: ${wf.key} on queues default, extra, concurrency 3`]);
    await handle.stop();
    assert.deepEqual(lines.slice(1), [`info: worker ${handle.id} stopped`]);
  });

  it("reports each failed task attempt and the run's failure, with the cause's name and message", async () => {
    const lines: string[] = [];
    const failed = latch("the run's failure in the log");
    const aiki = env.client({ logger: collect(lines, (line) => / failed: TaskFailedError/.test(line) && failed.raise()) });
    const charge = task({
      name: "charge",
      retry: { type: "fixed", maxAttempts: 2, baseDelayMs: 0 },
      handler: () => {
        throw new TypeError("card declined");
      },
    });
    const wf = workflow({ name: unique("failing") }).v("1", {
      async handler(run) {
        return charge.start(run, null);
      },
    });
    await env.spawn({ workflows: [wf] }, aiki);
    const handle = await wf.start(aiki, null);
    const error = await rejects(handle.result({ timeout: 10_000 }), RunFailedError);
    await failed.wait();
    assert.equal(error.message, `run ${handle.id} ended failed: TaskFailedError: task charge failed: card declined`);
    const about = lines.filter((line) => line.includes(handle.id));
    assert.deepEqual(about, [
      `warn: task charge of run ${handle.id} (${wf.key}) failed on attempt 1: TypeError: card declined; retrying in 0 ms`,
      `error: task charge of run ${handle.id} (${wf.key}) failed on attempt 2: TypeError: card declined; no retries left`,
      `error: run ${handle.id} (${wf.key}) failed: TaskFailedError: task charge failed: card declined`,
    ]);
  });

  it("says when it cannot reach the database, once, and when the database answers again", async () => {
    // The worker's client goes through a proxy that is not listening yet: every connection is
    // refused. Once the proxy forwards to Postgres, the next claim succeeds.
    const target = new URL(env.url);
    const port = await freePort();
    const url = new URL(env.url);
    url.hostname = "127.0.0.1";
    url.port = String(port);
    const lines: string[] = [];
    const back = latch("the recovery line");
    const app = client({ url: url.toString(), max: 2, logger: collect(lines, (line) => /answers again/.test(line) && back.raise()) });
    let proxy: Server | undefined;
    const sockets = new Set<Socket>();
    const wf = echo(unique("outage"));
    try {
      const handle = await worker({ workflows: [wf], pollMs: 100, leaseMs: 2_000 }).spawn(app);
      try {
        // The LISTEN connection reports its own loss (the next test); here the worker's lines.
        const mine = () => lines.filter((line) => line.includes(`worker ${handle.id}`));
        assert.match(mine()[0] ?? "", new RegExp(`^warn: worker ${handle.id}: cannot reach the database: Error: .*ECONNREFUSED.*; retrying$`));
        assert.match(mine()[1] ?? "", new RegExp(`^info: worker ${handle.id} started: `));
        proxy = createServer((down) => {
          const up = connect(Number(target.port), target.hostname);
          for (const s of [down, up]) {
            sockets.add(s);
            s.on("error", () => undefined);
            s.on("close", () => sockets.delete(s));
          }
          down.pipe(up).pipe(down);
        });
        await new Promise<void>((resolve) => proxy!.listen(port, "127.0.0.1", resolve));
        await back.wait();
        assert.equal(mine().filter((line) => line.startsWith("warn:")).length, 1, `one warning for the outage: ${lines.join("\n")}`);
        assert.equal(mine().at(-1), `info: worker ${handle.id}: the database answers again; claiming`);
        assert.equal(await (await wf.start(env.aiki, 7)).result({ timeout: 10_000 }), 7);
      } finally {
        await handle.stop({ timeoutMs: 500 });
      }
    } finally {
      await app.close();
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => (proxy ? proxy.close(resolve) : resolve(undefined)));
    }
  });
});

describe("the LISTEN connection", () => {
  it("says when it is lost and when it is back, once each", async () => {
    const lines: string[] = [];
    const back = latch("the LISTEN connection to be back");
    // Every session of this client takes application_name from the URL; the pool's last ran an
    // engine function (aiki.…), the listener's a LISTEN or pg-listen's `SELECT 1` check.
    const app = unique("listener");
    const aiki = client({
      url: `${env.url}?application_name=${app}`,
      logger: collect(lines, (line) => /LISTEN connection is back/.test(line) && back.raise()),
    });
    const handle = await worker({ workflows: [echo(unique("listen"))] }).spawn(aiki);
    try {
      const [killed] = await env.sql<{ n: number }[]>`
        select count(*) filter (where pg_terminate_backend(pid))::int as n from pg_stat_activity
         where application_name = ${app} and query not like '%aiki.%'`;
      assert.equal(killed!.n, 1, "one LISTEN session terminated");
      await back.wait();
      assert.deepEqual(lines.filter((line) => /LISTEN/.test(line)), [
        "warn: lost the LISTEN connection (wake-ups, status waits); reconnecting, workers poll meanwhile",
        "info: the LISTEN connection is back",
      ]);
    } finally {
      await handle.stop();
      await aiki.close();
    }
  });
});

describe("the default logger", () => {
  async function printed(options: { logger?: false }): Promise<string[]> {
    const out: string[] = [];
    const saved = { info: console.info, warn: console.warn, error: console.error };
    for (const level of ["info", "warn", "error"] as const) console[level] = (...args: unknown[]) => void out.push(`${level}: ${args.join(" ")}`);
    let aiki: Client | undefined;
    try {
      aiki = client({ url: env.url, ...options });
      const handle = await worker({ workflows: [echo(unique("console"))] }).spawn(aiki);
      await handle.stop();
    } finally {
      Object.assign(console, saved);
      await aiki?.close();
    }
    return out;
  }

  it("is console, each line prefixed with aiki:", async () => {
    const out = await printed({});
    assert.equal(out.length, 2, out.join("\n"));
    assert.match(out[0]!, /^info: aiki: worker \S+ started: console-\w+@1 on queue default, concurrency 10$/);
    assert.match(out[1]!, /^info: aiki: worker \S+ stopped$/);
  });

  it("is silent with logger: false", async () => {
    assert.deepEqual(await printed({ logger: false }), []);
  });
});
