// cli schedules — `aiki schedules list|pause|resume|trigger`, run in child processes as a user
// runs them (like cli-operators.test.ts): tables and --json, exit codes (0 ok, 2 usage, 3 no such
// schedule), one-line errors.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
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

function aiki(args: string[]): Promise<Result> {
  return new Promise((resolve) => {
    const env = { ...process.env, DATABASE_URL: db.url };
    execFile(process.execPath, ["--import", tsx, cli, ...args], { env, cwd: root }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === "number" ? error.code : 1) : 0, stdout, stderr });
    });
  });
}

function assertOk(result: Result): void {
  assert.equal(result.code, 0, `exit code; stderr:\n${result.stderr}`);
}

before(async () => {
  db = await testDatabase();
  await db.sql`select aiki.create_schedule('nightly-report', 'report', '1.0.0', '0 2 * * *', '{"format": "pdf"}', 'Europe/Berlin')`;
});
after(() => db.close());

describe("aiki schedules", () => {
  it("list prints a table of every schedule, and --json the engine's JSON", async () => {
    const human = await aiki(["schedules", "list"]);
    assertOk(human);
    const [header, row] = human.stdout.trimEnd().split("\n");
    assert.match(header!, /^SCHEDULE\s+WORKFLOW\s+CRON\s+TIME ZONE\s+OVERLAP\s+NEXT FIRE\s+LAST FIRE\s+LAST RUN\s+STATE\s+ERROR$/);
    assert.match(row!, /^nightly-report\s+report@1\.0\.0\s+0 2 \* \* \*\s+Europe\/Berlin\s+skip\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ\s+-\s+-\s+active\s+-$/);
    const json = await aiki(["schedules", "list", "--json"]);
    assertOk(json);
    const [s] = JSON.parse(json.stdout);
    assert.deepEqual([s.name, s.input, s.paused], ["nightly-report", { format: "pdf" }, false]);
  });

  it("pause, resume and trigger act on one schedule and say what they did", async () => {
    const paused = await aiki(["schedules", "pause", "nightly-report"]);
    assertOk(paused);
    assert.equal(paused.stdout, "schedule nightly-report: paused\n");
    assert.match((await aiki(["schedules", "list"])).stdout, /nightly-report .* paused/);
    const resumed = await aiki(["schedules", "resume", "nightly-report"]);
    assertOk(resumed);
    assert.match(resumed.stdout, /^schedule nightly-report: active, next fire \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ\n$/);
    const fired = await aiki(["schedules", "trigger", "nightly-report", "--json"]);
    assertOk(fired);
    const t = JSON.parse(fired.stdout);
    assert.equal(t.action, "started");
    const [run] = await db.sql`select idempotency_key, input from aiki.runs where id = ${t.run_id}`;
    assert.match(run!.idempotency_key, /^schedule:nightly-report:\d{4}-/);
    assert.deepEqual(run!.input, { format: "pdf" });
  });

  it("a missing schedule exits 3, a wrong verb or argument count 2, each with one line", async () => {
    const missing = await aiki(["schedules", "pause", "nope"]);
    assert.equal(missing.code, 3);
    assert.match(missing.stderr, /^aiki: schedules pause: schedule nope not found \(AK002\)\n$/);
    const verb = await aiki(["schedules", "delete", "nightly-report"]);
    assert.equal(verb.code, 2);
    assert.match(verb.stderr, /schedules: unknown verb "delete"; use list, pause, resume or trigger/);
    const count = await aiki(["schedules", "trigger"]);
    assert.equal(count.code, 2);
    assert.match(count.stderr, /schedules trigger: expected 1 argument\(s\), got 0/);
    assert.doesNotMatch(missing.stderr + verb.stderr + count.stderr, /^\s+at /m);
  });

  it("help shows the verbs", async () => {
    const help = await aiki(["help", "schedules", "trigger"]);
    assertOk(help);
    assert.match(help.stdout, /^Usage: aiki schedules trigger <name>/);
    assert.match((await aiki(["--help"])).stdout, /schedules <verb>\s+Schedules: list, pause, resume, trigger/);
  });
});
