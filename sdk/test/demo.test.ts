// `npm start`: the README's first command runs both Aiki examples to their final states and
// exits 0. Run here as a real process against the test database (DATABASE_URL), as a user
// with their own Postgres would run it.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { testDatabase, type TestDatabase } from "../testing/database.js";

let db: TestDatabase;
before(async () => {
  db = await testDatabase();
});
after(() => db.close());

function runDemo(url: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["--import", "tsx", "sdk/demo/main.ts", "--fast"], {
      env: { ...process.env, DATABASE_URL: url },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (chunk) => (output += chunk));
    child.stderr.on("data", (chunk) => (output += chunk));
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

describe("npm start (sdk/demo)", () => {
  it("completes the subscription-trial and restaurant-order examples and exits 0", async () => {
    const { code, output } = await runDemo(db.url);
    assert.equal(code, 0, output);
    assert.match(output, /alice \(trial\)\s+completed\s+\{"plan":"pro"\}/);
    assert.match(output, /bob \(trial\)\s+completed\s+\{"plan":"free"\}/);
    assert.match(output, /o-1 \(order\)\s+completed\s+\{"status":"completed","deliveredBy":"courier-7"\}/);
    assert.match(output, /o-2 \(order\)\s+completed\s+\{"status":"cancelled"\}/);
    assert.match(output, /o-1: card charged \(attempt 2/, "the flaky charge is retried");
    assert.match(output, /bob did not pay within 14 days/);
    const [row] = await db.sql<{ n: number }[]>`select count(*)::int as n from aiki.runs where status = 'completed'`;
    assert.equal(row?.n, 5, "four runs and o-1's courier child");
  });

  it("runs again on the same database: the engine is already installed and new runs complete", async () => {
    const { code, output } = await runDemo(db.url);
    assert.equal(code, 0, output);
    assert.match(output, /Engine installed \(up to date\)/);
  });
});
