// The physical limit of this server: what bare SQL reaches with the same connections. No queue
// library, no PL/pgSQL: single-row insert commits, with and without a NOTIFY in the same
// transaction, and a SKIP LOCKED claim+delete loop, one job or a batch per statement.
import postgres, { type Sql } from "postgres";
import { now, quiet } from "../support.js";

const ddl = `
  create table raw_jobs (id bigint generated always as identity primary key,
                         run_at timestamptz not null default now(), payload jsonb);`;

export class Raw {
  private sql!: Sql;
  constructor(readonly connections: number) {}

  async install(url: string): Promise<void> {
    this.sql = postgres(url, { max: this.connections, ...quiet });
    await this.sql.unsafe(ddl);
  }

  /** `connections` loops of `statement` for `seconds`; returns statements (= commits) per second. */
  private async loop(seconds: number, statement: () => Promise<unknown>): Promise<number> {
    let done = 0;
    const until = now() + seconds * 1000;
    const started = now();
    await Promise.all(Array.from({ length: this.connections }, async () => {
      while (now() < until) {
        await statement();
        done++;
      }
    }));
    return done / ((now() - started) / 1000);
  }

  insertCommitsPerSecond(seconds: number, notify: boolean): Promise<number> {
    return this.loop(seconds, () => notify
      ? this.sql`with i as (insert into raw_jobs (payload) values (${this.sql.json({ i: 1 })}) returning id)
                 select pg_notify('raw_jobs', '') from i`
      : this.sql`insert into raw_jobs (payload) values (${this.sql.json({ i: 1 })})`);
  }

  /** Claims and deletes `count` prefilled jobs, `batch` per statement; returns jobs per second. */
  async claimDelete(count: number, batch: number): Promise<number> {
    await this.sql`truncate raw_jobs`;
    await this.sql`insert into raw_jobs (payload) select jsonb_build_object('i', g) from generate_series(1, ${count}::int) g`;
    await this.sql`vacuum analyze raw_jobs`;
    let left = count;
    const started = now();
    await Promise.all(Array.from({ length: this.connections }, async () => {
      while (left > 0) {
        const rows = await this.sql`
          delete from raw_jobs where id = any(array(
            select id from raw_jobs where run_at <= now() order by id limit ${batch} for update skip locked))
          returning id, payload`;
        if (rows.length === 0) break;
        left -= rows.length;
      }
    }));
    return count / ((now() - started) / 1000);
  }

  async stop(): Promise<void> {
    await this.sql?.end();
  }
}
