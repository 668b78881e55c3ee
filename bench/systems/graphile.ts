// graphile-worker, in two configurations: its defaults (one get_job and one complete_job per
// job), and its batching (a local queue fed by batched fetches, completions batched per tick).
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import postgres, { type Sql } from "postgres";
import { Logger, run, runMigrations, type Runner, type TaskList } from "graphile-worker";
import { quiet } from "../support.js";
import type { Hooks, Kind, Payload, System } from "./types.js";

const require = createRequire(import.meta.url);
const version: string = JSON.parse(readFileSync(require.resolve("graphile-worker/package.json"), "utf8")).version;
const silent = new Logger(() => () => {});

export class GraphileSystem implements System {
  readonly name: string;
  readonly version = version;
  readonly settings: string;
  private url = "";
  private sql!: Sql;
  private runner: Runner | undefined;
  private stopped = false;

  constructor(readonly batched: boolean, readonly concurrency: number, readonly pool: number, readonly localQueueSize = 4 * concurrency) {
    this.name = batched ? "graphile-worker (batched)" : "graphile-worker";
    this.settings = batched
      ? `concurrency ${concurrency}, pool ${pool}, localQueue.size ${localQueueSize}, completeJobBatchDelay 0, failJobBatchDelay 0`
      : `defaults, concurrency ${concurrency}, pool ${pool}`;
  }

  async install(url: string): Promise<void> {
    this.url = url;
    await runMigrations({ connectionString: url, logger: silent });
    this.sql = postgres(url, { max: 2, ...quiet });
  }

  async enqueue(kind: Kind, count: number): Promise<void> {
    const identifier = kind === "one" ? "one" : "three_1";
    for (let from = 1; from <= count; from += 10_000) {
      const to = Math.min(count, from + 9_999);
      await this.sql`
        select graphile_worker.add_jobs(array(
          select row(${identifier}, json_build_object('i', g), null, null, null, null, null, null)::graphile_worker.job_spec
          from generate_series(${from}::int, ${to}::int) g))`;
    }
  }

  async start(hooks: Hooks): Promise<void> {
    const taskList: TaskList = {
      one: (payload) => hooks.onTask(payload as Payload, 1),
      three_1: async (payload, helpers) => {
        hooks.onTask(payload as Payload, 1);
        await helpers.addJob("three_2", payload as Payload);
      },
      three_2: async (payload, helpers) => {
        hooks.onTask(payload as Payload, 2);
        await helpers.addJob("three_3", payload as Payload);
      },
      three_3: (payload) => hooks.onTask(payload as Payload, 3),
    };
    this.runner = await run({
      connectionString: this.url,
      concurrency: this.concurrency,
      maxPoolSize: this.pool,
      noHandleSignals: true,
      logger: silent,
      taskList,
      preset: this.batched
        ? { worker: { localQueue: { size: this.localQueueSize }, completeJobBatchDelay: 0, failJobBatchDelay: 0 } }
        : undefined,
    });
  }

  async add(kind: Kind, payload: Payload, runAt?: Date): Promise<void> {
    await this.sql`select graphile_worker.add_job(${kind === "one" ? "one" : "three_1"}, ${this.sql.json(payload as never)}::json,
                                                  run_at => ${runAt ?? null}::timestamptz)`;
  }

  async remaining(): Promise<number> {
    const [row] = await this.sql<{ n: number }[]>`select count(*)::int as n from graphile_worker._private_jobs`;
    return row!.n;
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await this.runner?.stop();
    await this.sql?.end();
  }
}
