// cli operators — `aiki runs list|show|cancel|pause|resume|retry|send`, `aiki workers`,
// `aiki queues`, `aiki purge`, run in child processes as a user runs them (like cli.test.ts):
// tables and --json, exit codes (0 ok, 1 failed, 2 usage, 3 no such run), one-line errors.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { freePort } from "../db/embedded.js";
import { testDatabase, type TestDatabase } from "../testing/database.js";

const cli = fileURLToPath(new URL("../cli.ts", import.meta.url));
const root = fileURLToPath(new URL("../../", import.meta.url));
const tsx = import.meta.resolve("tsx");

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

let db: TestDatabase;

function aiki(args: string[], env: Record<string, string | undefined> = { DATABASE_URL: db.url }): Promise<Result> {
  return new Promise((resolve) => {
    const childEnv = { ...process.env, DATABASE_URL: undefined, ...env };
    execFile(process.execPath, ["--import", tsx, cli, ...args], { env: childEnv as NodeJS.ProcessEnv, cwd: root }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === "number" ? error.code : 1) : 0, stdout, stderr });
    });
  });
}

function assertOk(result: Result): void {
  assert.equal(result.code, 0, `exit code; stderr:\n${result.stderr}`);
}

function assertUserError(result: Result, code: number, message: RegExp): void {
  assert.equal(result.code, code, `exit code; stdout:\n${result.stdout}\nstderr:\n${result.stderr}`);
  assert.match(result.stderr, message);
  assert.doesNotMatch(result.stderr, /^\s+at /m, "no stack trace");
}

const missing = "00000000-0000-4000-8000-0000000000aa";

async function start(workflow: string, o: { queue?: string; key?: string } = {}): Promise<string> {
  const [row] = await db.sql<{ id: string }[]>`
    select run_id as id from aiki.start_workflow(${workflow}, '1', 'null', ${o.key ?? null}::text, ${o.queue ?? "default"})`;
  return row!.id;
}

async function claimLease(id: string, queue: string): Promise<string> {
  const [claimed] = await db.sql<{ id: string; lease: string }[]>`
    select r ->> 'id' as id, r ->> 'lease_token' as lease
    from jsonb_array_elements(aiki.claim('w-cli', null, array[${queue}], 1, 60000) -> 'runs') r`;
  assert.equal(claimed?.id, id);
  return claimed!.lease;
}

/** A run that completed one step, failed another twice, and then failed for good. */
async function failedRun(o: { queue?: string; key?: string } = {}): Promise<string> {
  const queue = o.queue ?? "cli-failing";
  const id = await start("billing", { queue, key: o.key });
  const lease = await claimLease(id, queue);
  await db.sql`select aiki.complete_step(${id}::uuid, ${lease}::uuid, 'fetch#1', 'task', 'fetch', '"page"')`;
  await db.sql`select aiki.fail_step(${id}::uuid, ${lease}::uuid, 'charge#1', 'charge', '{"name": "CardDeclined", "message": "first"}',
                                     '{"type": "fixed", "maxAttempts": 3, "baseDelayMs": 0}', false, 1000)`;
  await db.sql`select aiki.fail_step(${id}::uuid, ${lease}::uuid, 'charge#1', 'charge', '{"name": "CardDeclined", "message": "second"}',
                                     null, true)`;
  await db.sql`select aiki.fail_run(${id}::uuid, ${lease}::uuid, '{"name": "CardDeclined", "message": "second"}', true)`;
  return id;
}

before(async () => {
  db = await testDatabase();
});
after(() => db.close());

describe("cli: operator commands", () => {
  it("each command and verb has --help; aiki --help lists them with the exit codes", async () => {
    const results = await Promise.all([
      aiki(["--help"]), aiki(["runs", "--help"]), aiki(["runs", "list", "--help"]), aiki(["help", "runs", "show"]),
      aiki(["runs", "retry", "--help"]), aiki(["runs", "send", "--help"]), aiki(["workers", "--help"]),
      aiki(["queues", "--help"]), aiki(["purge", "--help"]),
    ]);
    for (const r of results) assertOk(r);
    const [top, runs, list, show, retry, send, workers, queues, purge] = results.map((r) => r.stdout);
    assert.match(top!, /runs <verb>/);
    assert.match(top!, /3 no such run/);
    assert.match(runs!, /retry <id>/);
    assert.match(list!, /--status <s>/);
    assert.match(show!, /aiki runs show <id>/);
    assert.match(retry!, /failed or cancelled run again/);
    assert.match(send!, /--key <key>/);
    assert.match(workers!, /aiki workers/);
    assert.match(queues!, /aiki queues/);
    assert.match(purge!, /--before <time>/);
  });

  it("usage mistakes exit 2 with one line: unknown verb, bad id, bad status, bad limit, extra arguments", async () => {
    const [verb, noVerb, badId, status, limit, extra, json, noUrl] = await Promise.all([
      aiki(["runs", "restart", missing]), aiki(["runs"]), aiki(["runs", "show", "nope"]),
      aiki(["runs", "list", "--status", "done"]), aiki(["runs", "list", "--limit", "0"]),
      aiki(["runs", "cancel", missing, "again"]), aiki(["runs", "send", missing, "go", "{not json"]),
      aiki(["workers"], {}),
    ]);
    assertUserError(verb!, 2, /^aiki: runs: unknown verb "restart"/);
    assertUserError(noVerb!, 2, /^aiki: runs: which verb\?/);
    assertUserError(badId!, 2, /^aiki: runs show: "nope" is not a run id/);
    assertUserError(status!, 2, /^aiki: runs list: unknown status "done"/);
    assertUserError(limit!, 2, /--limit takes a whole number from 1 to 1000/);
    assertUserError(extra!, 2, /runs cancel: expected 1 argument\(s\), got 2/);
    assertUserError(json!, 2, /runs send: the event data is not JSON/);
    assertUserError(noUrl!, 2, /^aiki: no database given: set DATABASE_URL or pass --url/);
  });

  it("an unreachable server: one line, exit 1, no password", async () => {
    const port = await freePort();
    const url = `postgres://someone:secret@127.0.0.1:${port}/app`;
    const [list, retry] = await Promise.all([aiki(["runs", "list", "--url", url]), aiki(["runs", "retry", missing], { DATABASE_URL: url })]);
    for (const r of [list!, retry!]) {
      assertUserError(r, 1, /^aiki: runs (list|retry): .*ECONNREFUSED/);
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
      assert.doesNotMatch(r.stdout + r.stderr, /secret/);
    }
  });

  it("a run that does not exist exits 3 for show and every act", async () => {
    const results = await Promise.all(["show", "cancel", "pause", "resume", "retry"].map((verb) => aiki(["runs", verb, missing])));
    for (const r of results) assertUserError(r, 3, new RegExp(`run ${missing} not found \\(AK002\\)`));
    assertUserError(await aiki(["runs", "send", missing, "go"]), 3, /not found \(AK002\)/);
  });

  it("runs list: a table by default, --json for scripts, filters and pages", async () => {
    const failed = await failedRun({ key: "invoice-7" });
    const a = await start("listing", { key: "list-a" });
    const b = await start("listing", { key: "list-b" });
    const [table, json, byStatus, page1, search] = await Promise.all([
      aiki(["runs", "list", "--workflow", "listing"]),
      aiki(["runs", "list", "--workflow", "listing", "--json"]),
      aiki(["runs", "list", "--status", "failed,cancelled", "--workflow", "billing", "--json"]),
      aiki(["runs", "list", "--workflow", "listing", "--limit", "1", "--json"]),
      aiki(["runs", "list", "--search", "invoice-7"]),
    ]);
    for (const r of [table!, json!, byStatus!, page1!, search!]) assertOk(r);
    const lines = table!.stdout.trim().split("\n");
    assert.match(lines[0]!, /^ID\s+WORKFLOW\s+STATUS\s+QUEUE\s+ATTEMPT\s+CREATED\s+FINISHED\s+ERROR$/);
    assert.match(lines[1]!, new RegExp(`^${b}\\s+listing@1\\s+pending \\(unserved\\)\\s+default\\s+1\\s`));
    assert.match(lines[2]!, new RegExp(`^${a}\\s`));
    assert.deepEqual(JSON.parse(json!.stdout).runs.map((r: { id: string }) => r.id), [b, a]);
    const failedRows = JSON.parse(byStatus!.stdout).runs;
    assert.deepEqual(failedRows.map((r: { id: string; error_name: string }) => [r.id, r.error_name]), [[failed, "CardDeclined"]]);
    const first = JSON.parse(page1!.stdout);
    assert.deepEqual(first.runs.map((r: { id: string }) => r.id), [b]);
    const page2 = await aiki(["runs", "list", "--workflow", "listing", "--limit", "1", "--cursor", first.next_cursor]);
    assertOk(page2);
    assert.match(page2.stdout, new RegExp(`^${a}\\s`, "m"));
    assert.match(search!.stdout, new RegExp(`^${failed}\\s+billing@1\\s+failed\\s+cli-failing\\s+1\\s.*CardDeclined$`, "m"));
    const limited = await aiki(["runs", "list", "--workflow", "listing", "--limit", "1"]);
    assert.match(limited.stdout, /^More: aiki runs list --cursor \S+ \(same filters\)$/m);
  });

  it("runs show: the timeline with attempts and errors; --json is run_timeline's", async () => {
    const id = await failedRun();
    const [human, json] = await Promise.all([aiki(["runs", "show", id]), aiki(["runs", "show", id, "--json"])]);
    assertOk(human);
    assertOk(json);
    assert.match(human.stdout, new RegExp(`^run:\\s+${id}$`, "m"));
    assert.match(human.stdout, /^status:\s+failed$/m);
    assert.match(human.stdout, /^error:\s+CardDeclined: second$/m);
    assert.match(human.stdout, /^fetch#1\s+task\s+completed\s+1\s/m);
    assert.match(human.stdout, /^charge#1\s+task\s+failed\s+2\s.*2, last: CardDeclined: second/m);
    assert.match(human.stdout, /^Events\n\(none\)$/m);
    const run = JSON.parse(json.stdout);
    assert.equal(run.id, id);
    assert.deepEqual(run.timeline.find((s: { key: string }) => s.key === "charge#1").errors.map((e: { error: { message: string } }) => e.error.message),
      ["first", "second"]);
    assert.equal(run.lease_token, undefined);
  });

  it("runs retry: a failed run goes back to pending, its failure kept; a second retry is refused (exit 1)", async () => {
    const id = await failedRun();
    const retried = await aiki(["runs", "retry", id]);
    assertOk(retried);
    assert.equal(retried.stdout, `run ${id}: pending\n`);
    const shown = await aiki(["runs", "show", id]);
    assert.match(shown.stdout, /^attempt:\s+2$/m);
    assert.match(shown.stdout, /^Earlier attempts\nATTEMPT.*\n1\s+\S+ \S+\s+failed\s+1\s+CardDeclined: second$/m);
    assertUserError(await aiki(["runs", "retry", id]), 1, /^aiki: runs retry: run .* is pending; only a failed, cancelled or retrying run can be retried \(AK005\)$/m);
  });

  it("runs pause, resume, send, cancel: each prints the new status, or JSON with --json", async () => {
    const id = await start("steering");
    const paused = await aiki(["runs", "pause", id]);
    assertOk(paused);
    assert.equal(paused.stdout, `run ${id}: paused\n`);
    const resumed = await aiki(["runs", "resume", id, "--json"]);
    assertOk(resumed);
    assert.deepEqual(JSON.parse(resumed.stdout), { id, status: "pending" });
    const sent = await aiki(["runs", "send", id, "approved", '{"by": "ada"}', "--key", "k1"]);
    assertOk(sent);
    assert.match(sent.stdout, new RegExp(`^run ${id}: sent approved \\(event \\d+\\)\n$`));
    const [event] = await db.sql`select name, data, idempotency_key from aiki.events where run_id = ${id}::uuid`;
    assert.deepEqual({ ...event }, { name: "approved", data: { by: "ada" }, idempotency_key: "k1" });
    const cancelled = await aiki(["runs", "cancel", id, "--reason", "operator said so"]);
    assertOk(cancelled);
    assert.equal(cancelled.stdout, `run ${id}: cancelled\n`);
    const [row] = await db.sql`select error ->> 'message' as m from aiki.runs where id = ${id}::uuid`;
    assert.equal(row!.m, "operator said so");
    assertUserError(await aiki(["runs", "send", id, "late"]), 1, /\(AK005\)/);
  });

  it("workers and queues: tables and --json", async () => {
    await db.sql`select aiki.register_worker('cli-worker-1', array['billing@1'], array['cli-queue'])`;
    await db.sql`select aiki.set_queue('cli-queue', 7, 2)`;
    await start("queued", { queue: "cli-queue" });
    const [workers, workersJson, queues, queuesJson] = await Promise.all([
      aiki(["workers"]), aiki(["workers", "--json"]), aiki(["queues"]), aiki(["queues", "--json"]),
    ]);
    for (const r of [workers!, workersJson!, queues!, queuesJson!]) assertOk(r);
    assert.match(workers!.stdout, /^ID\s+ALIVE\s+LAST SEEN/);
    assert.match(workers!.stdout, /^cli-worker-1\s+yes\s+.*\s0\s+billing@1\s+cli-queue$/m);
    assert.ok(JSON.parse(workersJson!.stdout).some((w: { id: string }) => w.id === "cli-worker-1"));
    assert.match(queues!.stdout, /^QUEUE\s+PENDING\s+RUNNING/);
    assert.match(queues!.stdout, /^cli-queue\s+1\s+0\s+0\s+0\s+0\s+0\s+0\s+\S+ ago\s+7\s+2\s+none\s+active$/m);
    const q = JSON.parse(queuesJson!.stdout).find((x: { name: string }) => x.name === "cli-queue");
    assert.deepEqual([q.counts.pending, q.concurrency_limit, q.key_concurrency_limit, q.paused], [1, 7, 2, false]);
  });

  it("queues set: sets concurrency and rate limits, with --json; bad input is a usage error or AK003", async () => {
    const set = await aiki(["queues", "set", "cli-rated", "--concurrency", "4", "--rate", "100", "--per", "1m", "--per-key"]);
    assertOk(set);
    assert.equal(set.stdout, "queue cli-rated: concurrency 4, per key 1, rate 100/1m00s per key\n");
    const json = await aiki(["queues", "set", "cli-rated", "--rate", "5", "--per", "500ms", "--json"]);
    assertOk(json);
    const row = JSON.parse(json.stdout);
    assert.deepEqual([row.concurrency_limit, row.rate_limit, row.rate_window_ms, row.rate_per_key], [null, 5, 500, false]);
    const listed = await aiki(["queues"]);
    assert.match(listed.stdout, /^cli-rated\s.*\s5\/500ms\s+active$/m);
    assertUserError(await aiki(["queues", "set", "cli-rated", "--rate", "5"]), 2, /give --rate and --per together/);
    assertUserError(await aiki(["queues", "set", "cli-rated", "--rate", "5", "--per", "soon"]), 2, /--per takes a duration/);
    assertUserError(await aiki(["queues", "set", "cli-rated", "--per-key"]), 1, /\(AK003\)/);
  });

  it("purge: needs --before, loops purge_runs to the end, and reports what it deleted", async () => {
    assertUserError(await aiki(["purge"]), 2, /^aiki: purge: --before <time> is required/);
    assertUserError(await aiki(["purge", "--before", "last tuesday"]), 2, /--before takes an ISO date or time, or an age/);
    // A run retried once and failed again: it has history (run_attempts) to purge too.
    const id = await failedRun({ queue: "cli-purge" });
    await db.sql`select aiki.retry_run(${id}::uuid)`;
    const lease = await claimLease(id, "cli-purge");
    await db.sql`select aiki.fail_run(${id}::uuid, ${lease}::uuid, '{"name": "Again"}', true)`;
    const [history] = await db.sql<{ n: number }[]>`select count(*)::int as n from aiki.run_attempts where run_id = ${id}::uuid`;
    assert.equal(history!.n, 1);
    const kept = await start("kept");
    const [finished] = await db.sql<{ n: number }[]>`select count(*)::int as n from aiki.runs where finished_at is not null`;
    const purged = await aiki(["purge", "--before", "2999-01-01", "--batch-size", "1", "--json"]);
    assertOk(purged);
    const report = JSON.parse(purged.stdout);
    assert.ok(report.deleted >= finished!.n + 2, `deleted ${report.deleted}`);
    assert.ok(report.batches > 1);
    assert.match(purged.stderr, /^(purging: \d+ rows in \d+ batches\n)*$/);
    const left = await db.sql`select id from aiki.runs where finished_at is not null`;
    assert.equal(left.length, 0);
    const [still] = await db.sql`select count(*)::int as n from aiki.runs where id = ${kept}::uuid`;
    assert.equal(still!.n, 1, "unfinished runs stay");
    const [attempts] = await db.sql`select count(*)::int as n from aiki.run_attempts where run_id = ${id}::uuid`;
    assert.equal(attempts!.n, 0);
    const again = await aiki(["purge", "--before", "30d"]);
    assertOk(again);
    assert.match(again.stdout, /^Purged 0 rows .* of runs finished before \d{4}-/);
  });
});
