// Tracing: with an OpenTelemetry tracer provider registered, a start, each execution of its run,
// each task attempt, each wait and each child start is a span, and the trace context the run
// carries (runs.trace_context) joins them into the caller's trace — across suspensions, children
// and worker processes. Without a provider nothing is recorded and runs work as before. Spans
// are read from the OpenTelemetry SDK's in-memory exporter (a worker process prints its own).
import { after, afterEach, before, describe, it, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { context, SpanStatusCode, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from "@opentelemetry/sdk-trace-base";
import { InvalidInputError, task, workflow } from "../index.js";
import { environment, gate, rejects, unique, until, untilStatus, within, type Env } from "./support.js";

const root = fileURLToPath(new URL("../../", import.meta.url));
const fixture = fileURLToPath(new URL("./fixtures/tracing-worker.ts", import.meta.url));

const exporter = new InMemorySpanExporter();
const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
const register = () => trace.setGlobalTracerProvider(provider);

let env: Env;
before(async () => {
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  register();
  env = await environment();
});
after(async () => {
  await env.close();
  await provider.shutdown();
});
afterEach(() => exporter.reset());

/** Runs `act` inside an application span `request`, as a web handler that starts a run would. */
async function inRequest<T>(act: () => Promise<T>): Promise<{ result: T; request: ReadableSpan }> {
  const result = await trace.getTracer("app").startActiveSpan("request", async (span) => {
    try {
      return await act();
    } finally {
      span.end();
    }
  });
  return { result, request: exporter.getFinishedSpans().find((s) => s.name === "request")! };
}

/**
 * The finished spans once, for each [name, count], `count` of them are named `name`: an
 * execution's span ends a moment after the run's status changed, when its last write returned.
 */
function finishedOnce(...wanted: Array<[name: string, count: number]>): Promise<ReadableSpan[]> {
  return until(`finished spans ${wanted.map(([name, count]) => `${count} × ${name}`).join(", ")}`, () => {
    const spans = exporter.getFinishedSpans();
    return wanted.every(([name, count]) => spans.filter((s) => s.name === name).length >= count) ? spans : undefined;
  });
}

/** The one span named `name` (or the `n`th, in start order). */
function span(spans: ReadableSpan[], name: string, n = 0): ReadableSpan {
  const found = spans.filter((s) => s.name === name).sort((a, b) => hrMs(a.startTime) - hrMs(b.startTime));
  assert.ok(found[n], `no span ${name} #${n + 1}; spans: ${spans.map((s) => s.name).join(", ")}`);
  return found[n];
}

const hrMs = ([s, ns]: [number, number]) => s * 1e3 + ns / 1e6;
const parentOf = (s: ReadableSpan) => s.parentSpanContext?.spanId;
const idOf = (s: ReadableSpan) => s.spanContext().spanId;
const traceOf = (s: ReadableSpan) => s.spanContext().traceId;

describe("tracing", () => {
  it("a start, both executions of its run (around a sleep), their tasks and the sleep form one trace under the caller's span", async () => {
    const name = unique("traced");
    const first = task({
      name: "first",
      handler: async (n: number) => trace.getTracer("app").startActiveSpan("charge", (charge) => (charge.end(), n + 1)),
    });
    const second = task({ name: "second", handler: async (n: number) => n * 10 });
    const wf = workflow({ name }).v("1", {
      async handler(run, n: number) {
        const x = await first.start(run, n);
        await run.sleep("pause", 100);
        return second.start(run, x);
      },
    });
    await env.spawn({ workflows: [wf] });
    const { result: handle, request } = await inRequest(() => wf.start(env.aiki, 1));
    assert.equal(await handle.result({ timeout: { seconds: 15 } }), 20);

    const spans = await finishedOnce([`aiki.run ${name}`, 2]);
    const start = span(spans, `aiki.start ${name}`);
    const [run1, run2] = [span(spans, `aiki.run ${name}`, 0), span(spans, `aiki.run ${name}`, 1)];
    const [task1, task2] = [span(spans, "aiki.task first"), span(spans, "aiki.task second")];
    const sleep = span(spans, "aiki.wait sleep pause");
    assert.deepEqual(spans.filter((s) => traceOf(s) === traceOf(request)).map((s) => s.name).sort(), [
      `aiki.run ${name}`, `aiki.run ${name}`, `aiki.start ${name}`, "aiki.task first", "aiki.task second", "aiki.wait sleep pause",
      "charge", "request",
    ].sort(), "one trace; the replayed task and sleep leave no second span");

    assert.equal(parentOf(start), idOf(request));
    assert.deepEqual(start.attributes, {
      "aiki.workflow.name": name, "aiki.workflow.version": "1", "aiki.queue": "default", "aiki.run.id": handle.id, "aiki.run.created": true,
    });
    for (const run of [run1, run2]) {
      assert.equal(parentOf(run), idOf(start), "every execution continues the context the run carries");
      assert.equal(run.attributes["aiki.run.id"], handle.id);
      assert.equal(run.attributes["aiki.workflow.version"], "1");
      assert.equal(run.attributes["aiki.run.attempt"], 1);
      assert.equal(run.status.code, SpanStatusCode.UNSET);
    }
    assert.equal(run1.attributes["aiki.execution.end"], "suspended");
    assert.equal(run2.attributes["aiki.execution.end"], "completed");

    assert.equal(parentOf(task1), idOf(run1));
    assert.deepEqual(task1.attributes, {
      "aiki.run.id": handle.id, "aiki.workflow.name": name, "aiki.workflow.version": "1",
      "aiki.step.key": "first#1", "aiki.task.name": "first", "aiki.task.attempt": 1,
    });
    assert.equal(parentOf(span(spans, "charge")), idOf(task1), "the task's own spans are children of its attempt");
    assert.equal(parentOf(sleep), idOf(run1));
    assert.deepEqual([sleep.attributes["aiki.step.key"], sleep.attributes["aiki.wait.kind"], sleep.attributes["aiki.wait.outcome"]],
      ["pause#1", "sleep", "suspended"]);
    assert.deepEqual(run2.events.map((e) => [e.name, e.attributes]), [["aiki.wait.resumed", {
      "aiki.step.key": "pause#1", "aiki.wait.kind": "sleep", "aiki.wait.name": "pause", "aiki.wait.outcome": "resolved",
    }]], "the resuming execution says which wait it resumed past");
    assert.equal(parentOf(task2), idOf(run2));
    assert.equal(task2.attributes["aiki.step.key"], "second#1");

    const carried = (await env.aiki.getRun(handle.id)).trace_context;
    assert.deepEqual(carried, { traceparent: `00-${traceOf(start)}-${idOf(start)}-01` }, "the run carries the start span's context");
  });

  it("a child workflow joins its parent's trace, under the parent's start of it", async () => {
    const parentName = unique("parent");
    const childName = unique("child");
    const release = gate();
    const work = task({ name: "child-work", handler: async (n: number) => (await release.wait(), n * 2) });
    const child = workflow({ name: childName }).v("1", { handler: (run, n: number) => work.start(run, n) });
    const parent = workflow({ name: parentName }).v("1", {
      async handler(run, n: number) {
        const started = await child.startAsChild(run, n);
        const outcome = await started.waitForStatus("completed");
        return outcome.success ? outcome.state.output : -1;
      },
    });
    await env.spawn({ workflows: [parent, child] });
    const { result: handle, request } = await inRequest(() => parent.start(env.aiki, 21));
    // The child's task holds until the parent is released on its wait, so the wait suspends.
    await untilStatus(env.aiki, handle.id, "waiting");
    release.open();
    assert.equal(await handle.result({ timeout: { seconds: 15 } }), 42);

    const spans = await finishedOnce([`aiki.run ${parentName}`, 2], [`aiki.run ${childName}`, 1]);
    const parentRun1 = span(spans, `aiki.run ${parentName}`, 0);
    const parentRun2 = span(spans, `aiki.run ${parentName}`, 1);
    const childStart = span(spans, `aiki.start ${childName}`);
    const childRun = span(spans, `aiki.run ${childName}`);
    const childWork = span(spans, "aiki.task child-work");
    const wait = span(spans, `aiki.wait child ${childName}`);
    const childId = (await env.aiki.getRun(handle.id)).journal!.find((s) => s.kind === "child")!.child_id!;

    for (const s of [parentRun1, parentRun2, childStart, childRun, childWork, wait]) assert.equal(traceOf(s), traceOf(request), `${s.name} is in the caller's trace`);
    assert.equal(parentOf(childStart), idOf(parentRun1));
    assert.deepEqual(childStart.attributes, {
      "aiki.parent.run.id": handle.id, "aiki.step.key": `${childName}#1`, "aiki.workflow.name": childName,
      "aiki.workflow.version": "1", "aiki.run.id": childId,
    });
    assert.equal(parentOf(childRun), idOf(childStart));
    assert.equal(childRun.attributes["aiki.run.id"], childId);
    assert.equal(parentOf(childWork), idOf(childRun));
    assert.equal(parentOf(wait), idOf(parentRun1));
    assert.equal(wait.attributes["aiki.wait.outcome"], "suspended");
    assert.deepEqual(parentRun2.events.map((e) => [e.name, e.attributes?.["aiki.step.key"], e.attributes?.["aiki.wait.kind"]]),
      [["aiki.wait.resumed", `${childName}#1/wait#1`, "child"]]);
    assert.deepEqual((await env.aiki.getRun(childId)).trace_context, { traceparent: `00-${traceOf(childStart)}-${idOf(childStart)}-01` });
  });

  it("an execution in another worker process joins the trace of the caller that started the run", async (t) => {
    const name = unique("remote");
    const worker = workerProcess(t, name);
    await until("the worker process to be ready", () => (worker.output().includes("ready\n") ? true : undefined));
    const wf = workflow({ name }).v("1", { handler: async (_run, input: string) => input });
    const { result: handle, request } = await inRequest(() => wf.start(env.aiki, "hello"));
    const output = await handle.result({ timeout: { seconds: 15 } });
    assert.match(output, /^hello in process \d+$/);
    assert.notEqual(output, `hello in process ${process.pid}`);

    const remote = await until("the worker process to print its run and task spans", () => {
      const printed = worker.spans();
      return printed.some((s) => s.name === `aiki.run ${name}`) && printed.some((s) => s.name === "aiki.task remote-step") ? printed : undefined;
    });
    const start = span(exporter.getFinishedSpans(), `aiki.start ${name}`);
    const run = remote.find((s) => s.name === `aiki.run ${name}`)!;
    const step = remote.find((s) => s.name === "aiki.task remote-step")!;
    assert.equal(run.traceId, traceOf(request));
    assert.equal(run.parentSpanId, idOf(start), "the remote execution's parent is the caller's start span");
    assert.equal(run.attributes["aiki.execution.end"], "completed");
    assert.equal(step.traceId, traceOf(request));
    assert.equal(step.parentSpanId, run.spanId);
    assert.equal(step.attributes["aiki.run.id"], handle.id);
  });

  it("a run started from SQL with a trace context joins that trace; one started without gets a new trace per execution", async () => {
    const name = unique("sql-started");
    const wf = workflow({ name }).v("1", { handler: async (run) => run.id });
    await env.spawn({ workflows: [wf] });
    const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const [traced] = await env.sql<{ run_id: string }[]>`
      select run_id from aiki.start_workflow(${name}, '1', p_trace_context => ${JSON.stringify({ traceparent, tracestate: "vendor=x" })}::text::jsonb)`;
    const [untraced] = await env.sql<{ run_id: string }[]>`select run_id from aiki.start_workflow(${name}, '1')`;
    await untilStatus(env.aiki, traced!.run_id, "completed");
    await untilStatus(env.aiki, untraced!.run_id, "completed");

    const spans = await finishedOnce([`aiki.run ${name}`, 2]);
    const runOf = (id: string) => spans.find((s) => s.name === `aiki.run ${name}` && s.attributes["aiki.run.id"] === id)!;
    assert.equal(traceOf(runOf(traced!.run_id)), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert.equal(parentOf(runOf(traced!.run_id)), "00f067aa0ba902b7");
    assert.equal(runOf(traced!.run_id).spanContext().traceState?.get("vendor"), "x", "tracestate travels too");
    assert.equal(parentOf(runOf(untraced!.run_id)), undefined, "a root span");
  });

  it("failures set ERROR: a failed task attempt, a run whose handler throws, a refused start", async () => {
    const name = unique("failing");
    let calls = 0;
    const flaky = task({
      name: "flaky",
      retry: { type: "fixed", maxAttempts: 2, baseDelayMs: 0 },
      handler: async () => {
        if (++calls === 1) throw new Error("first attempt fails");
        return "ok";
      },
    });
    const wf = workflow({ name }).v("1", {
      async handler(run) {
        await flaky.start(run, null);
        throw new Error("boom");
      },
    });
    await env.spawn({ workflows: [wf] });
    const handle = await wf.start(env.aiki, null);
    await untilStatus(env.aiki, handle.id, "failed");

    const spans = await finishedOnce([`aiki.run ${name}`, 1]);
    const [attempt1, attempt2] = [span(spans, "aiki.task flaky", 0), span(spans, "aiki.task flaky", 1)];
    assert.equal(attempt1.attributes["aiki.task.attempt"], 1);
    assert.deepEqual(attempt1.status, { code: SpanStatusCode.ERROR, message: "Error: first attempt fails" });
    assert.deepEqual(attempt1.events.map((e) => [e.name, e.attributes?.["exception.message"]]), [["exception", "first attempt fails"]]);
    assert.equal(attempt2.attributes["aiki.task.attempt"], 2);
    assert.equal(attempt2.status.code, SpanStatusCode.UNSET);
    const run = span(spans, `aiki.run ${name}`);
    assert.deepEqual(run.status, { code: SpanStatusCode.ERROR, message: "Error: boom" });
    assert.equal(run.attributes["aiki.execution.end"], "failed");

    await rejects(wf.start(env.aiki, null, { priority: 1.5 }), InvalidInputError);
    const refused = span(exporter.getFinishedSpans(), `aiki.start ${name}`, 1);
    assert.equal(refused.status.code, SpanStatusCode.ERROR);
    assert.match(refused.status.message ?? "", /^InvalidInputError: invalid priority 1\.5/);
    assert.equal(refused.attributes["aiki.run.id"], undefined);
  });

  it("the README's Tracing example runs as written and prints one trace", async (t) => {
    const readme = readFileSync(join(root, "README.md"), "utf8");
    const block = /```ts\n([\s\S]*?)```/.exec(readme.slice(readme.indexOf("### Tracing (optional)")))?.[1];
    assert.ok(block, "README.md has a ```ts block in its Tracing section");
    // The example imports "aiki" and the OpenTelemetry packages as an app would; here they are
    // this repository's sources and node_modules.
    const script = block.replace(/from "([^"]+)"/g, (_, name: string) =>
      `from ${JSON.stringify(name === "aiki" ? pathToFileURL(join(root, "sdk/index.ts")).href : import.meta.resolve(name))}`);
    const dir = mkdtempSync(join(tmpdir(), "aiki-tracing-readme-"));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    writeFileSync(join(dir, "example.mts"), script);
    const child = spawn(process.execPath, ["--import", "tsx", join(dir, "example.mts")], {
      cwd: root, env: { ...process.env, DATABASE_URL: env.url }, stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout!.on("data", (chunk) => (output += chunk));
    child.stderr!.on("data", (chunk) => (output += chunk));
    const code = await within(new Promise((resolve) => child.on("exit", resolve)), 30_000, "the README example to exit");
    assert.equal(code, 0, output);
    assert.match(output, /^hello ada$/m);
    // ConsoleSpanExporter prints each span as an object literal: its traceId, then its name.
    const printed = [...output.matchAll(/traceId: '([0-9a-f]{32})',[\s\S]*?name: '([^']+)'/g)].map((m) => [m[1], m[2]]);
    assert.deepEqual(printed.map(([, name]) => name).sort(),
      ["aiki.run hello", "aiki.run hello", "aiki.start hello", "aiki.task greet", "aiki.wait sleep pause", "request"]);
    assert.equal(new Set(printed.map(([traceId]) => traceId)).size, 1, "one trace");
  });

  it("without a registered tracer provider nothing is recorded, the run carries no context, and runs work as before", async (t) => {
    trace.disable();
    t.after(register);
    const name = unique("untraced");
    const step = task({ name: "step", handler: async (n: number) => n + 1 });
    const wf = workflow({ name }).v("1", {
      async handler(run, n: number) {
        const x = await step.start(run, n);
        await run.sleep("pause", 50);
        return step.start(run, x);
      },
    });
    await env.spawn({ workflows: [wf] });
    const { result: handle } = await inRequest(() => wf.start(env.aiki, 1));
    assert.equal(await handle.result({ timeout: { seconds: 15 } }), 3);
    assert.deepEqual(exporter.getFinishedSpans().map((s) => s.name), []);
    assert.equal((await env.aiki.getRun(handle.id)).trace_context, null);
  });
});

interface PrintedSpan {
  name: string;
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  attributes: Record<string, unknown>;
}

/** Starts tracing-worker.ts in its own Node process; stopped when the test ends. */
function workerProcess(t: TestContext, name: string) {
  const child = spawn(process.execPath, ["--import", "tsx", fixture, env.url, name], { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout!.on("data", (chunk) => (output += chunk));
  child.stderr!.on("data", (chunk) => (output += chunk));
  const exited = new Promise((resolve) => child.on("exit", resolve));
  t.after(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill("SIGTERM");
    await within(exited, 10_000, "the worker process to exit").catch(() => child.kill("SIGKILL"));
  });
  return {
    output: () => output,
    spans: (): PrintedSpan[] => output.split("\n").filter((line) => line.startsWith("span ")).map((line) => JSON.parse(line.slice(5)) as PrintedSpan),
  };
}
