// Aiki through its real SDK: workflows and tasks defined with the public API, run by sdk/worker.
import postgres from "postgres";
import { readFileSync } from "node:fs";
import { client, event, migrate, task, workflow, worker, type Client, type WorkerHandle } from "../../sdk/index.js";
import { quiet } from "../support.js";
import { epochMs, type Hooks, type Kind, type Payload, type StartOptions, type System } from "./types.js";

const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8"));

/** Poll interval of the polling-only configuration. */
export const aikiPollOnlyMs = 100;

/** The benchmark's workflows, bound to the hooks of one measurement. */
export function aikiWorkflows(hooks: () => Hooks) {
  const step = (n: number) => task({
    name: `step-${n}`,
    handler: (input: Payload) => {
      hooks().onTask(input, n);
      return n;
    },
  });
  const [one, two, three] = [step(1), step(2), step(3)];
  const child = workflow({ name: "child" }).v("1", {
    async handler(run, input: Payload) {
      await one.start(run, input);
      return null;
    },
  });
  return {
    child,
    one: workflow({ name: "one" }).v("1", {
      async handler(run, input: Payload) {
        await one.start(run, input);
        return null;
      },
    }),
    three: workflow({ name: "three" }).v("1", {
      async handler(run, input: Payload) {
        await one.start(run, input);
        await two.start(run, input);
        await three.start(run, input);
        return null;
      },
    }),
    /** Waits for event `go`; its data is the task's input, so the task's start minus `t0` is the resume latency. */
    waiter: workflow({ name: "waiter" }).v("1", {
      events: { go: event<Payload>() },
      async handler(run) {
        const go = await run.events.go.wait();
        if (!go.timeout) await two.start(run, go.data);
        return null;
      },
    }),
    /** Starts `input.i` children at once, waits for all of them, then runs one task. */
    fan: workflow({ name: "fan" }).v("1", {
      async handler(run, input: Payload) {
        const children = await Promise.all(Array.from({ length: input.i }, (_, k) => child.startAsChild(run, { i: k })));
        await Promise.all(children.map((c) => c.waitForStatus("completed")));
        await three.start(run, input);
        return null;
      },
    }),
    /** Sleeps until input.at, then runs one task: the task's start minus `at` is the lateness. */
    sleeper: workflow({ name: "sleeper" }).v("1", {
      async handler(run, input: Payload) {
        await run.sleep("until", Math.max(0, Math.round(input.at! - epochMs())));
        await one.start(run, input);
        return null;
      },
    }),
  };
}

export class AikiSystem implements System {
  readonly name = "aiki";
  readonly version = `${pkg.version} (${process.env.AIKI_BENCH_COMMIT ?? "?"})`;
  readonly settings: string;
  private hooks: Hooks = { onTask: () => {} };
  readonly workflows = aikiWorkflows(() => this.hooks);
  client!: Client;
  handle: WorkerHandle | undefined;
  private stopped = false;

  constructor(readonly concurrency: number, readonly pool: number) {
    this.settings = `SDK worker, concurrency ${concurrency}, pool ${pool}`;
  }

  async install(url: string): Promise<void> {
    const sql = postgres(url, { max: 1, ...quiet });
    try {
      await migrate(sql);
    } finally {
      await sql.end();
    }
    this.client = client({ url, max: this.pool, logger: { info: () => {}, warn: () => {}, error: (line) => console.error(line) } });
  }

  async enqueue(kind: Kind, count: number): Promise<void> {
    for (let from = 1; from <= count; from += 10_000) {
      const to = Math.min(count, from + 9_999);
      await this.client.sql`
        select aiki.start_workflow(${kind}, '1', jsonb_build_object('i', g))
        from generate_series(${from}::int, ${to}::int) g`;
    }
  }

  async start(hooks: Hooks, options: StartOptions = {}): Promise<void> {
    this.hooks = hooks;
    this.handle = await worker({
      workflows: Object.values(this.workflows),
      concurrency: this.concurrency,
      ...(options.listen === false ? { listen: false, pollMs: aikiPollOnlyMs } : {}),
    }).spawn(this.client);
  }

  async add(kind: Kind, payload: Payload, runAt?: Date): Promise<void> {
    await this.workflows[kind].start(this.client, payload, runAt ? { startAt: runAt } : {});
  }

  async remaining(): Promise<number> {
    const [row] = await this.client.sql<{ n: number }[]>`
      select count(*)::int as n from aiki.runs where status not in ('completed', 'failed', 'cancelled')`;
    return row!.n;
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await this.handle?.stop({ timeoutMs: 5_000 });
    await this.client?.close();
  }
}
