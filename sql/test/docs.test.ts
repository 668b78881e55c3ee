// docs/sql-api.md — the SQL manual's examples are executed, so the manual cannot drift from the
// engine unnoticed.
//
//   ```sql        runs: all such blocks, in order, in ONE session of the real psql binary with
//                 ON_ERROR_STOP (examples keep ids in psql variables with \gset);
//   ```sql-error  must fail: each runs alone, in a transaction that is rolled back, and its
//                 first error must carry the SQLSTATE its first line names (`-- expect AK003`).
//
// The runnable script keeps every example on its own line number of the page (all other lines
// blanked), so a psql error message points straight at the failing line of docs/sql-api.md.
// Also checked: every public function and every SQLSTATE of the engine is documented.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { testDatabase, type TestDatabase } from "../../sdk/testing/database.js";

const root = fileURLToPath(new URL("../../", import.meta.url));
const docPath = "docs/sql-api.md";
const doc = readFileSync(join(root, docPath), "utf8");
const docLines = doc.split("\n");
const hasPsql = spawnSync("psql", ["--version"]).status === 0;
const skip = !hasPsql && "no psql binary on PATH";

interface Block {
  lang: string;
  /** 1-based line of the block's first code line in the page. */
  line: number;
  lines: string[];
}

function fencedBlocks(): Block[] {
  const blocks: Block[] = [];
  let open: Block | undefined;
  docLines.forEach((text, index) => {
    const fence = /^```(\S*)\s*$/.exec(text);
    if (!fence) {
      open?.lines.push(text);
    } else if (open) {
      blocks.push(open);
      open = undefined;
    } else {
      open = { lang: fence[1]!, line: index + 2, lines: [] };
    }
  });
  assert.equal(open, undefined, `${docPath}: a code block opened at line ${open && open.line - 1} is never closed`);
  return blocks;
}

const blocks = fencedBlocks();
const runnable = blocks.filter((b) => b.lang === "sql");
const failing = blocks.filter((b) => b.lang === "sql-error");

/** The page with every line outside ```sql blocks blanked: psql's line numbers are the page's. */
function runnableScript(): string {
  const lines = docLines.map(() => "");
  for (const block of runnable) block.lines.forEach((text, i) => (lines[block.line - 1 + i] = text));
  return lines.join("\n");
}

let tmp: string | undefined;
function psql(url: string, script: string, name: string, args: string[] = []) {
  tmp ??= mkdtempSync(join(tmpdir(), "aiki-docs-"));
  const file = join(tmp, name);
  writeFileSync(file, script);
  const result = spawnSync("psql", ["-X", "-q", "-v", "ON_ERROR_STOP=1", ...args, "-f", file, url], {
    encoding: "utf8",
    env: { ...process.env, PGOPTIONS: "-c client_min_messages=warning", PGCONNECT_TIMEOUT: "10" },
  });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr.replaceAll(file, docPath) };
}

describe("docs/sql-api.md", () => {
  let db: TestDatabase;

  before(async () => {
    db = await testDatabase();
  });

  after(async () => {
    await db.close();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it("has runnable examples, each ending its last statement", () => {
    assert.ok(runnable.length >= 20, `expected many \`\`\`sql blocks, found ${runnable.length}`);
    for (const block of runnable) {
      const code = block.lines.filter((l) => l.trim() !== "" && !l.trim().startsWith("--"));
      const last = code.at(-1)?.trimEnd() ?? "";
      // An unterminated statement would silently run together with the next block.
      assert.match(last, /(;|\\gset)$/, `${docPath}:${block.line}: the block's last statement is not terminated`);
    }
  });

  it("runs every ```sql block, in order, in one psql session", { skip }, () => {
    const result = psql(db.url, runnableScript(), "sql-api.md");
    assert.equal(result.status, 0, `psql failed (exit ${result.status}):\n${result.stderr}`);
    assert.doesNotMatch(result.stderr, /ERROR|WARNING/, result.stderr);
  });

  it("leaves the state the page describes", { skip }, async () => {
    const sql = db.sql;
    const [order] = await sql<{ run: any }[]>`select aiki.find_run('order', 'o-1') as run`;
    assert.equal(order!.run.status, "completed");
    assert.deepEqual(order!.run.output, { status: "completed", eta: 25 });
    assert.deepEqual(
      order!.run.journal.map((s: any) => [s.key, s.status]),
      [["charge-card#1", "completed"], ["feedback-delay#1", "completed"], ["accepted#1", "completed"]],
    );

    const [signup] = await sql<{ run: any }[]>`
      select aiki.get_run(id) as run from aiki.list_runs(p_workflow => 'signup')`;
    assert.equal(signup!.run.status, "completed");
    assert.equal(signup!.run.attempt, 2);
    const steps = Object.fromEntries(signup!.run.journal.map((s: any) => [s.key, s]));
    assert.equal(steps["send-sms#1"].attempts, 2);
    assert.equal(steps["verify-address#1"].status, "completed", "fail_run forgot the failed step, the retry completed it");
    assert.deepEqual(steps["feedback#1"].output, { timeout: true });
    assert.equal(steps["welcome-email#1:wait"].output.status, "completed");

    const [invoice] = await sql<{ run: any }[]>`select aiki.find_run('invoice', 'inv-1') as run`;
    assert.equal(invoice!.run.status, "cancelled");
    const [events] = await sql<{ buffered: number }[]>`
      select count(*)::int as buffered from aiki.events where run_id = ${invoice!.run.id} and consumed_by is null`;
    assert.equal(events!.buffered, 1, "the deduplicated approval is buffered once");

    const queues = await sql`select name, concurrency_limit, key_concurrency_limit, rate_limit, paused from aiki.queues order by name`;
    assert.deepEqual(queues.map((q) => ({ ...q })), [
      { name: "mailer", concurrency_limit: null, key_concurrency_limit: 1, rate_limit: 2, paused: false },
      { name: "reports", concurrency_limit: null, key_concurrency_limit: 1, rate_limit: null, paused: false },
      { name: "signups", concurrency_limit: 10, key_concurrency_limit: 2, rate_limit: null, paused: false },
    ]);
    const mail = await sql`select status::text, count(*)::int as n from aiki.runs where workflow = 'send-mail' group by 1`;
    assert.deepEqual(mail.map((r) => [r.status, r.n]), [["running", 3]], "two starts in the first window, one in the next");

    const [feed] = await sql<{ run: any }[]>`select aiki.find_run('poll-feed', 'feed-1') as run`;
    assert.deepEqual([feed!.run.status, feed!.run.input], ["cancelled", { cursor: 100 }]);
    const [first] = await sql<{ run: any }[]>`select aiki.get_run(${feed!.run.continued_from}) as run`;
    assert.deepEqual([first!.run.status, first!.run.continued_to, first!.run.journal.length], ["continued", feed!.run.id, 1]);
  });

  for (const block of failing) {
    const expected = /^--\s*expect\s+([0-9A-Z]{5})\b/.exec(block.lines[0] ?? "")?.[1];
    it(`the sql-error block at line ${block.line} fails with ${expected ?? "?"}`, { skip }, () => {
      assert.ok(expected, `${docPath}:${block.line}: a sql-error block must start with "-- expect <SQLSTATE>"`);
      const script = [...Array(block.line - 1).fill(""), ...block.lines].join("\n");
      // -1: one transaction, rolled back by the error; VERBOSITY verbose prints the SQLSTATE.
      const result = psql(db.url, script, `error-${block.line}.sql`, ["-1", "-v", "VERBOSITY=verbose"]);
      assert.equal(result.status, 3, `expected psql to stop on an error (exit 3), got ${result.status}:\n${result.stderr}`);
      const errors = [...result.stderr.matchAll(/ERROR:\s+([0-9A-Z]{5}):/g)].map((m) => m[1]);
      assert.deepEqual(errors, [expected], result.stderr);
      // The failing statement is the block's last: the setup before it worked.
      const codeLines = block.lines.map((l, i) => (l.trim() === "" || l.trim().startsWith("--") ? -1 : i));
      const lastLine = block.line + Math.max(...codeLines);
      assert.ok(
        result.stderr.includes(`${docPath}:${lastLine}:`),
        `${docPath}:${block.line}: expected the error on line ${lastLine}, got:\n${result.stderr}`,
      );
    });
  }

  it("the error examples were rolled back", { skip }, async () => {
    const leftovers = await db.sql`
      select workflow from aiki.runs
      where workflow in ('archive', 'nd', 'fenced', 'sleepy', 'busy', 'big') or idempotency_key = 'inv-9'`;
    assert.deepEqual(leftovers.map((r) => r.workflow), []);
  });

  it("documents every public function, with a runnable example", async () => {
    const rows = await db.sql<{ proname: string }[]>`
      select distinct proname from pg_proc
      where pronamespace = 'aiki'::regnamespace and proname !~ '^_' order by proname`;
    assert.ok(rows.length > 20);
    const examples = runnable.map((b) => b.lines.join("\n")).join("\n");
    for (const { proname } of rows) {
      assert.ok(docLines.includes(`### aiki.${proname}`), `${docPath} has no section "### aiki.${proname}"`);
      assert.ok(examples.includes(`aiki.${proname}(`), `${docPath} has no runnable example calling aiki.${proname}`);
    }
  });

  it("lists every SQLSTATE of sql/00_core.sql, each with a failing example", () => {
    const core = readFileSync(join(root, "sql/00_core.sql"), "utf8");
    const catalogue = [...core.matchAll(/^--\s+(AK\d{3})\s+(\w+)/gm)].map((m) => [m[1]!, m[2]!] as const);
    assert.ok(catalogue.length >= 7);
    const raised = new Set(failing.map((b) => /expect\s+(\w{5})/.exec(b.lines[0] ?? "")?.[1]));
    for (const [code, name] of catalogue) {
      assert.ok(doc.includes(`| ${code} | ${name} |`), `${docPath}: the SQLSTATE table lacks ${code} ${name}`);
      assert.ok(raised.has(code), `${docPath}: no sql-error example raises ${code}`);
    }
  });
});
