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
  await analyzeRuns();
});

// The plans follow the statistics, so they must not vary between runs: analyze reads the whole
// table (a sample of 300 x the statistics target rows, above the table's size; the default 100
// samples 30,000 rows at random, and a rare queue's estimate then varied enough to flip a plan
// now and then), and autovacuum never replaces them with a sampled analyze of its own.
async function analyzeRuns(): Promise<void> {
  await h.sql`alter table aiki.runs set (autovacuum_enabled = off)`;
  await h.sql.begin(async (tx) => {
    await tx`set local default_statistics_target = 1000`;
    await tx`analyze aiki.runs`;
  });
}
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

// The operator reads build their SQL at run time (sql/75_operators.sql), so their plans are
// taken from the real calls: auto_explain hands the plan of every statement they run back to
// this session as a notice.
async function plansOf(call: string): Promise<{ query: string; plan: PlanNode[] }[]> {
  const notices: string[] = [];
  const s = h.db.connect({ max: 1, onnotice: (n) => notices.push(String(n.message)) });
  try {
    await s`select set_config('aiki.fake_now', ${T0}, false)`;
    await s`load 'auto_explain'`;
    await s`select set_config('auto_explain.log_min_duration', '0', false), set_config('auto_explain.log_nested_statements', 'on', false),
                   set_config('auto_explain.log_format', 'json', false), set_config('auto_explain.log_level', 'notice', false)`;
    await s.unsafe(call);
  } finally {
    await s.end();
  }
  return notices
    .map((n) => JSON.parse(n.slice(n.indexOf("{"))) as { "Query Text": string; Plan: PlanNode })
    .filter((p) => /aiki\.runs r\b/.test(p["Query Text"]) && !p["Query Text"].startsWith(call))
    .map((p) => ({ query: p["Query Text"], plan: nodes(p.Plan) }));
}

describe("operator reads (search_runs, count_runs, list_queues)", () => {
  before(async () => {
    await h.sql`
      insert into aiki.runs (id, created_at, updated_at, finished_at, status, workflow, version, queue, idempotency_key, input, error)
      select gen_random_uuid(), t, t, t, 'failed', 'bulk', '1', 'q' || (g % 10), 'key-' || g, 'null', '{"name": "Boom"}'
      from (select g, ${T0}::timestamptz - g * interval '1 second' as t from generate_series(1, 2000) g) s`;
    // As in production, unfinished runs are few: the sleepers above finish.
    await h.sql`update aiki.runs set status = 'completed', finished_at = created_at, available_at = null where status = 'sleeping'`;
    await h.sql`vacuum aiki.runs`;
    await analyzeRuns();
  });

  const cases: [string, string, string][] = [
    ["newest first", `select aiki.search_runs('{}', 50)`, "runs_created"],
    ["by status", `select aiki.search_runs('{"status": "failed"}', 50)`, "runs_status_created"],
    ["by queue", `select aiki.search_runs('{"queue": "q3"}', 50)`, "runs_created"],
    ["by workflow", `select aiki.search_runs('{"workflow": "live"}', 50)`, "runs_by_workflow"],
    ["by idempotency key", `select aiki.search_runs('{"search": "key-17"}', 50)`, "runs_idempotency_key"],
    ["one day", `select aiki.search_runs('{"created_after": "2029-12-31T23:00:00Z", "created_before": "2029-12-31T23:30:00Z"}', 50)`, "runs_created"],
  ];
  for (const [what, call, index] of cases) {
    it(`search_runs ${what} reads ${index}, without a sort or a sequential scan`, async () => {
      const plan = (await plansOf(call))[0]!.plan;
      assert.ok(plan.some((n) => n["Index Name"] === index), describePlan(plan));
      assert.ok(!plan.some((n) => n["Node Type"] === "Seq Scan"), describePlan(plan));
      if (index !== "runs_idempotency_key" && index !== "runs_by_workflow") {
        assert.ok(!plan.some((n) => n["Node Type"] === "Sort"), describePlan(plan));
      }
    });
  }

  it("count_runs counts each status by a bounded scan, the rare ones through an index", async () => {
    const plans = await plansOf(`select aiki.count_runs('{}')`);
    assert.equal(plans.length, 11, "one statement per status");
    for (const { query, plan } of plans) {
      assert.ok(plan.some((n) => n["Node Type"] === "Limit"), `${query}: ${describePlan(plan)}`);
      // completed holds 200,000 rows here, past the cap: the planner may read the table in its
      // order until the cap, which is as bounded as the index.
      if (/'completed'/.test(query)) continue;
      assert.ok(plan.some((n) => n["Index Name"] !== undefined), `${query}: ${describePlan(plan)}`);
      assert.ok(!plan.some((n) => n["Node Type"] === "Seq Scan"), `${query}: ${describePlan(plan)}`);
    }
  });

  it("list_queues reads unfinished runs through an index, not the 200,000 finished ones", async () => {
    const plan = (await plansOf(`select aiki.list_queues()`))[0]!.plan;
    assert.ok(!plan.some((n) => n["Node Type"] === "Seq Scan" && n["Relation Name"] === "runs"), describePlan(plan));
    assert.ok(plan.some((n) => n["Index Name"] === "runs_status_created" || n["Index Name"] === "runs_timers"), describePlan(plan));
  });
});
