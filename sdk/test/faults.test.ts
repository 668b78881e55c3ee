// Regressions for the bugs the chaos suite (sdk/test/chaos) found, each reduced to a
// deterministic case: what a worker and the client must survive when connections die under them.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer, connect, type Server, type Socket } from "node:net";
import { fileURLToPath } from "node:url";
import type { Sql } from "postgres";
import { client, task, worker, workflow, type Client } from "../index.js";
import { healingPool } from "../db/pool.js";
import { freePort } from "../db/embedded.js";
import { environment, gate, latch, unique, untilStatus, type Env } from "./support.js";

let env: Env;
before(async () => {
  env = await environment();
});
after(() => env.close());

const terminate = (app: string) => env.sql`
  select count(*) filter (where pg_terminate_backend(pid))::int as n from pg_stat_activity
   where application_name = ${app} and pid <> pg_backend_pid()`;

describe("client pool", () => {
  it("settles every query through a storm of terminated connections (no query stranded, no crash)", async () => {
    // postgres.js 3.4.9 strands queries on connections the server closed, and crashes the
    // process when one dies while it fetches array types (see sdk/db/pool.ts).
    const app = unique("storm");
    const sql = healingPool(env.url, { max: 6, onnotice: () => {}, connection: { application_name: app } }, { drainMs: 1_000 });
    const unhandled: unknown[] = [];
    const onUnhandled = (error: unknown) => unhandled.push(error);
    process.on("unhandledRejection", onUnhandled);
    try {
      const pending = new Map<number, number>();
      let stop = false;
      let ok = 0;
      let n = 0;
      const loops = Array.from({ length: 12 }, async () => {
        while (!stop) {
          const id = n++;
          pending.set(id, Date.now());
          await sql`select pg_sleep(${Math.random() * 0.004}), ${id}::int as id`.then(() => ok++, () => undefined);
          pending.delete(id);
        }
      });
      for (let round = 0; round < 40; round++) {
        await new Promise((resolve) => setTimeout(resolve, 10 + Math.random() * 40));
        await terminate(app);
      }
      // Stranded queries are rejected when their pool is ended: within drainMs of the last kill.
      const deadline = Date.now() + 10_000;
      let stuck: number[] = [];
      do {
        await new Promise((resolve) => setTimeout(resolve, 200));
        stuck = [...pending.values()].filter((since) => Date.now() - since > 3_000);
      } while (stuck.length > 0 && Date.now() < deadline);
      stop = true;
      await Promise.all(loops);
      assert.deepEqual(stuck, [], "queries in flight for more than 3 s after the storm");
      assert.deepEqual(unhandled, [], "unhandled rejections");
      assert.ok(ok > 100, `queries kept succeeding through the storm (${ok})`);
      const [row] = await sql<{ x: number }[]>`select 1 as x`;
      assert.equal(row!.x, 1);
    } finally {
      process.off("unhandledRejection", onUnhandled);
      await sql.end({ timeout: 1 });
    }
  });

  it("passes arrays to the engine without fetched array types", async () => {
    // claim takes text[] and start_children returns uuid[]; the pool does not fetch array types.
    // (Queue names with the characters array literals escape, `,"\`, are refused by claim.)
    const name = unique("arrays");
    const child = workflow({ name: `${name}-child` }).v("1", { handler: async (_run, n: number) => n * 2 });
    const parent = workflow({ name }).v("1", {
      async handler(run, n: number) {
        const kids = await Promise.all([1, 2].map((k) => child.startAsChild(run, n + k)));
        const results = await Promise.all(kids.map((kid) => kid.waitForStatus("completed")));
        return results.map((r) => (r.success ? r.state.output : null));
      },
    });
    await env.spawn({ workflows: [parent, child], queues: ["default", "q.odd:1/x-y_z"] });
    const handle = await parent.start(env.aiki, 10);
    assert.deepEqual(await handle.result({ timeout: 15_000 }), [22, 24]);
  });
});

describe("heartbeat", () => {
  it("does not keep alive a run whose claim reply the worker never got", async () => {
    // A claim commits, then the connection dies before its answer arrives: the run is leased to
    // a worker that does not know it. While that worker is busy with another run, its heartbeats
    // must not renew the unknown lease, or the run stays `running` forever.
    const name = unique("lost-claim");
    const busy = gate();
    const started = latch("the blocker's task to start");
    const block = task({ name: "block", handler: async () => (started.raise(), await busy.wait(), "done") });
    const blocker = workflow({ name: `${name}-blocker` }).v("1", { handler: async (run) => block.start(run, null) });
    let ran = 0;
    const step = task({ name: "step", handler: () => ++ran });
    const wf = workflow({ name }).v("1", { handler: async (run) => step.start(run, null) });
    const workerId = unique("w");
    try {
      await env.spawn({ workflows: [blocker, wf], id: workerId, leaseMs: 1_000, heartbeatMs: 200 });
      const blocked = await blocker.start(env.aiki, null);
      await started.wait();

      const handle = await wf.start(env.aiki, null, { delay: 60_000 });
      // Due now and claimed in one transaction, so the worker cannot claim it first.
      const lost = await env.sql.begin(async (tx) => {
        await tx`update aiki.runs set status = 'pending', available_at = now() where id = ${handle.id}::uuid`;
        const [row] = await tx<{ n: number }[]>`
          select jsonb_array_length(aiki.claim(${workerId}, ${`{${name}@1}`}::text[], '{default}', 1, 1000)->'runs')::int as n`;
        return row!;
      });
      assert.equal(lost.n, 1, "the run was claimed behind the worker's back");

      const run = await untilStatus(env.aiki, handle.id, "completed", 10_000);
      assert.equal(run.status, "completed");
      assert.equal(ran, 1);
      assert.equal((await blocked.get()).status, "running", "the blocker was held (and heartbeated) all along");
    } finally {
      busy.open();
    }
  });
});

describe("worker startup", () => {
  it("a worker spawned while Postgres is unreachable starts, and works once Postgres is back", async () => {
    // A worker process restarted during a Postgres restart crashed in spawn(): its LISTEN
    // connection's first attempt failed, and the failure was cached and rethrown.
    const target = new URL(env.url);
    const port = await freePort();
    const url = new URL(env.url);
    url.hostname = "127.0.0.1";
    url.port = String(port);
    const name = unique("late-db");
    const wf = workflow({ name }).v("1", { handler: async (_run, n: number) => n + 1 });
    const app = client({ url: url.toString(), max: 2 });
    let proxy: Server | undefined;
    const sockets = new Set<Socket>();
    try {
      // Nothing listens on `port` yet: every connection is refused.
      const handle = await worker({ workflows: [wf], pollMs: 100, leaseMs: 2_000 }).spawn(app);
      try {
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
        const run = await wf.start(env.aiki, 41);
        assert.equal(await run.result({ timeout: 15_000 }), 42);
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

describe("client close", () => {
  it("a client closed while Postgres is unreachable lets its process exit", async () => {
    // pg-listen kept retrying its connection after close(), so the process never exited.
    const port = await freePort();
    const url = new URL(env.url);
    url.hostname = "127.0.0.1";
    url.port = String(port);
    const child = spawn(process.execPath, ["--import", "tsx", fileURLToPath(new URL("./fixtures/close-offline.ts", import.meta.url)), url.toString()], {
      cwd: fileURLToPath(new URL("../../", import.meta.url)),
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout!.on("data", (chunk) => (output += chunk));
    child.stderr!.on("data", (chunk) => (output += chunk));
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
    const code = await exited;
    clearTimeout(timer);
    assert.equal(code, 0, `the process exited on its own (output: ${output})`);
    assert.match(output, /closed/);
  });
});

describe("a journal write whose reply is lost", () => {
  // The write commits, then the connection dies before the answer arrives: the worker sees a
  // connection error and sends the same write again. Every write must take that: be idempotent,
  // or be refused by its fence (AK001) so the execution stops quietly.
  function lossy(base: Client, fn: string): { client: Client; dropped: () => number } {
    let dropped = 0;
    const sql = new Proxy(base.sql, {
      apply(target, thisArg, args: unknown[]) {
        const query = Reflect.apply(target, thisArg, args) as Promise<unknown>;
        const text = Array.isArray(args[0]) ? (args[0] as string[]).join("?") : "";
        if (dropped > 0 || !text.includes(`aiki.${fn}(`)) return query;
        dropped++;
        return query.then(() => {
          throw Object.assign(new Error(`reply to ${fn} lost`), { code: "ECONNRESET" });
        });
      },
    }) as Sql;
    return { client: { ...base, sql }, dropped: () => dropped };
  }

  const cases: { fn: string; expect: unknown; build(name: string, counts: Map<string, number>): ReturnType<typeof workflow>["v"] extends (...a: any[]) => infer R ? R : never }[] = [
    {
      fn: "fail_step", expect: { v: 2 },
      build: (name, counts) => {
        // Fails on its first attempt only; the policy allows exactly one retry.
        const flaky = task({
          name: "flaky", retry: { type: "fixed", maxAttempts: 2, baseDelayMs: 10 },
          handler: (_: null, ctx) => {
            counts.set("flaky", (counts.get("flaky") ?? 0) + 1);
            if (ctx.attempt === 1) throw new Error("first attempt fails");
            return ctx.attempt;
          },
        });
        return workflow({ name }).v("1", { handler: async (run) => ({ v: await flaky.start(run, null) }) });
      },
    },
    {
      fn: "record", expect: { v: 1 },
      build: (name, counts) => {
        const once = task({ name: "once", handler: () => (counts.set("once", (counts.get("once") ?? 0) + 1), 1) });
        return workflow({ name }).v("1", { handler: async (run) => ({ v: await once.start(run, null) }) });
      },
    },
    {
      fn: "suspend", expect: { v: "slept" },
      build: (name) => workflow({ name }).v("1", { handler: async (run) => (await run.sleep("nap", 10), { v: "slept" }) }),
    },
    {
      fn: "start_children", expect: { v: [2, 4] },
      build: (name) => {
        const kid = workflow({ name: `${name}-kid` }).v("1", { handler: async (_run, n: number) => n * 2 });
        return workflow({ name }).v("1", {
          async handler(run) {
            const kids = await Promise.all([1, 2].map((n) => kid.startAsChild(run, n)));
            const done = await Promise.all(kids.map((k) => k.waitForStatus("completed")));
            return { v: done.map((d) => (d.success ? d.state.output : null)) };
          },
        });
      },
    },
    {
      fn: "fail_run", expect: { v: 2 },
      build: (name) => workflow({ name }).v("1", {
        retry: { type: "fixed", maxAttempts: 2, baseDelayMs: 10 },
        async handler(run) {
          if (run.attempt === 1) throw new Error("first run attempt fails");
          return { v: run.attempt };
        },
      }),
    },
  ];

  for (const c of cases) {
    it(`${c.fn}: retried after a lost reply, the run still ends as if nothing happened`, async () => {
      const name = unique(`lost-${c.fn}`);
      const counts = new Map<string, number>();
      const wf = c.build(name, counts);
      const kid = c.fn === "start_children" ? [workflow({ name: `${name}-kid` }).v("1", { handler: async (_run, n: number) => n * 2 })] : [];
      const base = env.client();
      const { client: flaky, dropped } = lossy(base, c.fn);
      await env.spawn({ workflows: [wf, ...kid], leaseMs: 2_000 }, flaky);
      const handle = await wf.start(env.aiki, null);
      const outcome = await handle.waitForStatus("completed", { timeout: 15_000 });
      assert.equal(dropped(), 1, `one reply to ${c.fn} was lost`);
      assert.deepEqual(outcome, { success: true, state: { status: "completed", output: c.expect } },
        JSON.stringify((await handle.get()).journal));
      if (c.fn === "fail_step") assert.equal(counts.get("flaky"), 2, "two attempts, no more");
      if (c.fn === "record") assert.equal(counts.get("once"), 1);
    });
  }
});
