// pg-boss with its fastest documented settings: `concurrency` polling workers per queue, each
// fetching a batch of jobs at the minimum polling interval (0.5 s), maintenance off while measured.
// pg-boss has no LISTEN/NOTIFY: a worker that finds no job sleeps for the polling interval.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import PgBoss from "pg-boss";
import type { Hooks, Kind, Payload, System } from "./types.js";

const require = createRequire(import.meta.url);
const version: string = JSON.parse(readFileSync(require.resolve("pg-boss/package.json"), "utf8")).version;
const queues = ["one", "three_1", "three_2", "three_3"];

export class PgBossSystem implements System {
  readonly name = "pg-boss";
  readonly version = version;
  readonly settings: string;
  private boss!: PgBoss;
  private stopped = false;

  constructor(readonly concurrency: number, readonly pool: number, readonly batchSize = 50) {
    this.settings = `${concurrency} workers per queue, batchSize ${batchSize}, pollingIntervalSeconds 0.5, pool ${pool}, supervise/schedule off`;
  }

  async install(url: string): Promise<void> {
    this.boss = new PgBoss({ connectionString: url, max: this.pool, supervise: false, schedule: false });
    this.boss.on("error", (error) => console.error(`pg-boss: ${error.message}`));
    await this.boss.start();
    for (const name of queues) await this.boss.createQueue(name);
  }

  async enqueue(kind: Kind, count: number): Promise<void> {
    const name = kind === "one" ? "one" : "three_1";
    for (let from = 1; from <= count; from += 5_000) {
      const jobs = Array.from({ length: Math.min(5_000, count - from + 1) }, (_, k) => ({ name, data: { i: from + k } }));
      await this.boss.insert(jobs);
    }
  }

  async start(hooks: Hooks): Promise<void> {
    const options = { batchSize: this.batchSize, pollingIntervalSeconds: 0.5 };
    const chain = (step: number, next?: string) => async (jobs: PgBoss.Job<Payload>[]) => {
      for (const job of jobs) hooks.onTask(job.data, step);
      if (next) await this.boss.insert(jobs.map((job) => ({ name: next, data: job.data })));
    };
    for (let w = 0; w < this.concurrency; w++) {
      await this.boss.work<Payload>("one", options, chain(1));
      await this.boss.work<Payload>("three_1", options, chain(1, "three_2"));
      await this.boss.work<Payload>("three_2", options, chain(2, "three_3"));
      await this.boss.work<Payload>("three_3", options, chain(3));
    }
  }

  async add(kind: Kind, payload: Payload, runAt?: Date): Promise<void> {
    await this.boss.send(kind === "one" ? "one" : "three_1", payload, runAt ? { startAfter: runAt } : {});
  }

  async remaining(): Promise<number> {
    const { rows } = await this.boss.getDb().executeSql(
      `select count(*)::int as n from pgboss.job where state < 'completed'`, []);
    return rows[0].n;
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await this.boss?.stop({ graceful: true, wait: true, timeout: 5_000 });
  }
}
