// The hot claim path stays narrow with a large table: with 100,000 finished and 100,000 sleeping
// runs beside a few pending ones, the claim's pending selection uses the partial index
// runs_pending and the timer promotion uses runs_timers — never a sequential scan; list_runs
// pages through runs_created. Only plan shapes are asserted here; speed belongs in bench/.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { T0, claim, harness, setNow, startRun, type Harness } from "./support.js";

let h: Harness;

interface PlanNode {
  "Node Type": string;
  "Index Name"?: string;
  "Relation Name"?: string;
  Plans?: PlanNode[];
}

function nodes(plan: PlanNode): PlanNode[] {
  return [plan, ...(plan.Plans ?? []).flatMap(nodes)];
}

async function explain(query: string): Promise<PlanNode[]> {
  const [row] = await h.sql.unsafe(`explain (format json) ${query}`);
  return nodes((row!["QUERY PLAN"] as { Plan: PlanNode }[])[0]!.Plan);
}

function describePlan(plan: PlanNode[]): string {
  return plan.map((n) => `${n["Node Type"]}${n["Index Name"] ? ` using ${n["Index Name"]}` : ""}`).join(" > ");
}

before(async () => {
  h = await harness();
  await setNow(h.sql, T0);
  // Set-based, as the superuser test connection: 200,000 rows in two statements.
  await h.sql`
    insert into aiki.runs (id, created_at, updated_at, finished_at, status, workflow, version, queue, input, output)
    select gen_random_uuid(), t, t, t, 'completed', 'bulk', '1', 'default', 'null', '"ok"'
    from (select ${T0}::timestamptz - g * interval '1 second' as t from generate_series(1, 100000) g) s`;
  await h.sql`
    insert into aiki.runs (id, created_at, updated_at, available_at, status, workflow, version, queue, input)
    select gen_random_uuid(), ${T0}::timestamptz, ${T0}::timestamptz, ${T0}::timestamptz + g * interval '1 minute',
           'sleeping', 'bulk', '1', 'default', 'null'
    from generate_series(1, 100000) g`;
  for (let i = 0; i < 5; i++) await startRun(h.sql, { workflow: "live" });
  await h.sql`analyze aiki.runs`;
});
after(() => h.close());

describe("claim", () => {
  it("selects pending runs through runs_pending, not a scan of 200,000 rows", async () => {
    const plan = await explain(`
      select id from aiki.runs
      where status = 'pending' and queue = 'default' and available_at <= aiki.now() and concurrency_key is null
      order by priority desc, available_at
      limit 10
      for update skip locked`);
    assert.ok(plan.some((n) => n["Index Name"] === "runs_pending"), describePlan(plan));
    assert.ok(!plan.some((n) => n["Node Type"] === "Seq Scan"), describePlan(plan));
  });

  it("promotes due timers through runs_timers", async () => {
    const plan = await explain(`
      select id from aiki.runs
      where status in ('scheduled', 'sleeping', 'waiting', 'retrying', 'running')
        and available_at <= aiki.now()
      order by available_at
      limit 100
      for update skip locked`);
    assert.ok(plan.some((n) => n["Index Name"] === "runs_timers"), describePlan(plan));
    assert.ok(!plan.some((n) => n["Node Type"] === "Seq Scan"), describePlan(plan));
  });

  it("finds the next due time through runs_timers", async () => {
    const plan = await explain(`
      select min(available_at) from aiki.runs
      where status in ('scheduled', 'sleeping', 'waiting', 'retrying', 'running') and available_at > aiki.now()`);
    assert.ok(plan.some((n) => n["Index Name"] === "runs_timers"), describePlan(plan));
    assert.ok(!plan.some((n) => n["Node Type"] === "Seq Scan"), describePlan(plan));
  });

  it("the real claim with this backlog leases the pending runs and reports the next sleeper", async () => {
    const result = await claim(h.sql, { limit: 10 });
    assert.equal(result.runs.length, 5);
    assert.ok(result.runs.every((r) => r.workflow === "live"));
    assert.equal(Date.parse(result.next_due_at!), Date.parse(T0) + 60_000);
  });
});

describe("list_runs", () => {
  it("pages newest first through runs_created, not a sort of 200,000 rows", async () => {
    const plan = await explain(`
      select r.id from aiki.runs r
      where r.created_at > '-infinity' and r.created_at < 'infinity'
        and (r.created_at, r.id) < ('infinity'::timestamptz, 'ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid)
      order by r.created_at desc, r.id desc
      limit 100`);
    assert.ok(plan.some((n) => n["Index Name"] === "runs_created"), describePlan(plan));
    assert.ok(!plan.some((n) => n["Node Type"] === "Sort" || n["Node Type"] === "Seq Scan"), describePlan(plan));
  });
});
