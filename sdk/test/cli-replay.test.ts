// cli replay — `aiki replay --module <file> --workflow <name@version>`, run in a child process as
// a deploy pipeline runs it: the runs of that version still in flight (or --status), replayed
// against the module's code; a table or --json; exit 0 when every run follows the code, 1 when
// one diverged, 2 for a wrong command line or module. `aiki runs show <id> --json` is the export
// replay() takes.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { replay } from "../index.js";
import { shipping } from "./fixtures/replay-shipping.js";
import { codec, countdown } from "./fixtures/replay-countdown.js";
import { environment, until, type Env } from "./support.js";

const cli = fileURLToPath(new URL("../cli.ts", import.meta.url));
const root = fileURLToPath(new URL("../../", import.meta.url));
const tsx = import.meta.resolve("tsx");
const unchanged = "sdk/test/fixtures/replay-shipping.ts";
const reordered = "sdk/test/fixtures/replay-shipping-reordered.ts";
const countdownModule = "sdk/test/fixtures/replay-countdown.ts";

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

let env: Env;
const inFlight: string[] = [];
const completed: string[] = [];
/** The runs of an encrypted replay-countdown chain: two continued, the last completed. */
const chain: string[] = [];

function aiki(args: string[]): Promise<Result> {
  return node([cli, ...args], root);
}

function node(args: string[], cwd: string): Promise<Result> {
  return new Promise((resolve) => {
    const childEnv = { ...process.env, DATABASE_URL: env.url };
    execFile(process.execPath, ["--import", tsx, ...args], { env: childEnv, cwd }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === "number" ? error.code : 1) : 0, stdout, stderr });
    });
  });
}

before(async () => {
  env = await environment();
  const worker = await env.spawn({ workflows: [shipping] });
  // Two runs sleeping, two waiting for `shipped`, two completed.
  const handles: Awaited<ReturnType<typeof shipping.start>>[] = [];
  for (let n = 0; n < 6; n++) handles.push(await shipping.start(env.aiki, { n, coolOffMs: n < 2 ? 86_400_000 : 1 }));
  await until("the runs to suspend", async () => {
    const runs = await Promise.all(handles.map((h) => h.get()));
    return runs.every((r, n) => r.status === (n < 2 ? "sleeping" : "waiting")) || undefined;
  });
  for (const handle of handles.slice(4)) await handle.events.shipped.send({ tracking: "t" });
  for (const handle of handles.slice(4)) await handle.waitForStatus("completed", { timeout: 15_000 });
  await worker.stop();
  const encrypting = env.client({ codec });
  const counting = await env.spawn({ workflows: [countdown] }, encrypting);
  const loop = await countdown.start(encrypting, { n: 2, total: 0 });
  assert.deepEqual(await loop.result({ timeout: 15_000 }), { total: 6 });
  await counting.stop();
  chain.push(...(await env.sql<{ id: string }[]>`
    select id::text from aiki.runs where chain_id = ${loop.id}::uuid order by created_at, id`).map((r) => r.id));
  inFlight.push(...handles.slice(0, 4).map((h) => h.id));
  completed.push(...handles.slice(4).map((h) => h.id));
});
after(() => env.close());

describe("aiki replay", () => {
  it("replays the runs in flight against an unchanged module and exits 0", async () => {
    const result = await aiki(["replay", "--module", unchanged, "--workflow", "replay-shipping@1"]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /^RUN\s+STATUS\s+RESULT\s+DIVERGENCE$/m);
    for (const id of inFlight) assert.match(result.stdout, new RegExp(`^${id}\\s+(sleeping|waiting)\\s+ok \\(journal-end\\)\\s+-$`, "m"));
    for (const id of completed) assert.doesNotMatch(result.stdout, new RegExp(id), "completed runs are not in flight");
    assert.match(result.stdout, /replay-shipping@1: 4 run\(s\) replayed, 0 diverged/);
  });

  it("takes --status and --limit", async () => {
    const done = await aiki(["replay", "--module", unchanged, "--workflow", "replay-shipping@1", "--status", "completed", "--json"]);
    assert.equal(done.code, 0, done.stderr);
    const report = JSON.parse(done.stdout) as { replayed: number; runs: { id: string; result: string; end: string }[] };
    assert.deepEqual(report.runs.map((r) => [r.result, r.end]), [["ok", "returned"], ["ok", "returned"]]);
    assert.deepEqual(report.runs.map((r) => r.id).sort(), [...completed].sort());
    const one = await aiki(["replay", "--module", unchanged, "--workflow", "replay-shipping@1", "--status", "sleeping,waiting", "--limit", "1", "--json"]);
    assert.equal((JSON.parse(one.stdout) as { replayed: number }).replayed, 1);
  });

  it("reports each run a changed module diverges from, with the step and both calls, and exits 1", async () => {
    const result = await aiki(["replay", "--module", reordered, "--workflow", "replay-shipping@1"]);
    assert.equal(result.code, 1, result.stderr);
    for (const id of inFlight) {
      assert.match(result.stdout, new RegExp(`^${id}\\s+\\w+\\s+diverged\\s+reserve#1: task reserve, now task pack \\(pack#1\\)$`, "m"));
    }
    assert.match(result.stdout, /4 run\(s\) replayed, 4 diverged/);
    const json = await aiki(["replay", "--module", reordered, "--workflow", "replay-shipping@1", "--json"]);
    assert.equal(json.code, 1);
    const report = JSON.parse(json.stdout) as { workflow: string; diverged: number; runs: { divergence: unknown; message: string }[] };
    assert.equal(report.workflow, "replay-shipping@1");
    assert.equal(report.diverged, 4);
    assert.deepEqual(report.runs[0]!.divergence, {
      runId: (report.runs[0] as unknown as { id: string }).id, step: "reserve#1",
      recorded: { kind: "task", name: "reserve" }, call: { key: "pack#1", kind: "task", name: "pack" },
    });
    assert.match(report.runs[0]!.message, /^non-determinism at step 'reserve#1'/);
  });

  it("replays encrypted runs that continued as new with --codec-module, and refuses them without it", async () => {
    const args = ["replay", "--module", countdownModule, "--workflow", "replay-countdown@1", "--status", "continued,completed", "--json"];
    const clean = await aiki([...args, "--codec-module", countdownModule]);
    assert.equal(clean.code, 0, clean.stderr);
    const report = JSON.parse(clean.stdout) as { replayed: number; diverged: number; runs: { id: string; status: string; result: string; end: string }[] };
    assert.deepEqual(report.runs.map((r) => [r.id, r.status, r.result, r.end]).sort(), [
      [chain[0], "continued", "ok", "continued"], [chain[1], "continued", "ok", "continued"], [chain[2], "completed", "ok", "returned"],
    ].sort());
    const refused = await aiki(args.filter((a) => a !== "--json"));
    assert.equal(refused.code, 1, refused.stderr);
    for (const id of chain) {
      assert.match(refused.stdout, new RegExp(`^${id}\\s+(continued|completed)\\s+error\\s+CodecError: encoded \\(key test\\); pass --codec-module <file>$`, "m"));
    }
    assert.match(refused.stdout, /replay-countdown@1: 3 run\(s\) replayed, 3 diverged/);
  });

  it("exits 2 for a codec module that exports no codec", async () => {
    const result = await aiki(["replay", "--module", countdownModule, "--workflow", "replay-countdown@1", "--codec-module", unchanged]);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /replay: sdk\/test\/fixtures\/replay-shipping\.ts exports no codec \(a `codec` or default export with encode and decode\)/);
  });

  it("exits 2 for a workflow the module does not export, a module it cannot import, or a bad option", async () => {
    const missing = await aiki(["replay", "--module", unchanged, "--workflow", "replay-shipping@2"]);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /exports no workflow version replay-shipping@2; it exports replay-shipping@1/);
    const nothing = await aiki(["replay", "--module", "sdk/test/fixtures/no-such-module.ts", "--workflow", "replay-shipping@1"]);
    assert.equal(nothing.code, 2);
    assert.match(nothing.stderr, /cannot import sdk\/test\/fixtures\/no-such-module\.ts/);
    const status = await aiki(["replay", "--module", unchanged, "--workflow", "replay-shipping@1", "--status", "asleep"]);
    assert.equal(status.code, 2);
    assert.match(status.stderr, /unknown status "asleep"/);
    const noModule = await aiki(["replay", "--workflow", "replay-shipping@1"]);
    assert.equal(noModule.code, 2);
    assert.match(noModule.stderr, /--module <file> is required/);
    for (const result of [missing, nothing, status, noModule]) assert.doesNotMatch(result.stderr, /^\s+at /m, "no stack trace");
  });
});

describe("aiki runs show --json", () => {
  it("is a complete export replay() takes", async () => {
    for (const id of [...inFlight, ...completed]) {
      const shown = await aiki(["runs", "show", id, "--json"]);
      assert.equal(shown.code, 0, shown.stderr);
      const result = await replay(shipping, JSON.parse(shown.stdout));
      assert.equal(result.orderChecked, true);
      assert.equal(result.end, completed.includes(id) ? "returned" : "journal-end");
    }
  });
});

describe("README", () => {
  it("runs the replayer example of \"Checking a deploy with the replayer\" as written", async () => {
    const readme = readFileSync(join(root, "README.md"), "utf8");
    const section = readme.slice(readme.indexOf("## Checking a deploy with the replayer"));
    const example = /```ts\n([\s\S]*?)```/.exec(section)?.[1];
    assert.ok(example, "the section has a ```ts example");
    const dir = mkdtempSync(join(tmpdir(), "aiki-replay-readme-"));
    try {
      // The example's imports, pointed at this repository: the package, and a module of workflows.
      writeFileSync(join(dir, "package.json"), `{ "type": "module" }\n`);
      writeFileSync(join(dir, "example.ts"), example
        .replace(`from "aiki"`, `from ${JSON.stringify(pathToFileURL(join(root, "sdk/index.ts")).href)}`)
        .replace(`from "./workflows.js"`, `from "./workflows.ts"`));
      for (const [id, module] of [[completed[0]!, unchanged], [inFlight[0]!, reordered]] as const) {
        const shown = await aiki(["runs", "show", id, "--json"]);
        writeFileSync(join(dir, "run.json"), shown.stdout);
        writeFileSync(join(dir, "workflows.ts"),
          `export { ${module === unchanged ? "shipping" : "shippingReordered"} as orderV1 } from ${JSON.stringify(pathToFileURL(join(root, module)).href)};\n`);
        const result = await node(["example.ts"], dir);
        assert.equal(result.code, 0, result.stderr);
        if (module === unchanged) assert.equal(result.stdout, `run ${id} follows the code: returned\n`);
        else assert.match(result.stdout, /step: 'reserve#1',\s+recorded: \{ kind: 'task', name: 'reserve' \},\s+call: \{ key: 'pack#1', kind: 'task', name: 'pack' \}/);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
