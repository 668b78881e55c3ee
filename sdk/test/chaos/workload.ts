// The chaos workload: workflow definitions shared by the worker processes (which run them), the
// event sender and the controller (which starts runs and checks every output).
//
// Everything a run returns is a pure function of its input, so the controller can compute the
// expected output of each run without looking at the journal. Tasks fail deterministically by
// attempt number (attempt <= fails), with retry budgets that are exactly large enough: a retry
// counted twice, or a failed attempt lost, shows up as a failed run or a wrong output.
//
// Every task calls `effect` just before it returns, the side effect under test (at-least-once):
// one increment of a counter keyed by (run id, step key), in its own autocommit statement.
import { z } from "zod";
import { event, task, workflow, type WorkflowVersion } from "../../index.js";

/** Journal of one task execution, reported by the worker (see worker.ts). */
export interface TaskHooks {
  /** Called when a task execution starts; returns its execution id. */
  started(runId: string, stepKey: string, attempt: number): string;
  /** The side effect: must be durable when it resolves. */
  effect(runId: string, stepKey: string, execId: string, signal: AbortSignal): Promise<void>;
}

export const VERSION = "1.0.0";

/** The deterministic function every task computes. */
export const f = (x: number): number => (x * 31 + 7) % 100_003;

export type Kind = "tasks" | "sleep" | "event" | "event-timeout" | "parent" | "retry" | "values" | "poison" | "hang";

/**
 * Top-level workflow of run number i (children belong to chaos-parent runs). One run in 50 is
 * poisoned (its task returns a string Postgres cannot store) and one in 50 hangs (its task never
 * settles, past its timeout): both must end failed with their real errors, and sink no other run.
 */
export const kindOf = (i: number): Kind =>
  i % 50 === 13 ? "poison"
    : i % 50 === 37 ? "hang"
    : (["tasks", "sleep", "event", "values", "event-timeout", "parent", "retry", "values"] as const)[i % 8]!;

/** The error a run of a failing kind must end with; undefined for the kinds that complete. */
export function expectedError(workflowName: string): RegExp | undefined {
  switch (workflowName) {
    case "chaos-poison": return /^task poison failed: output of task poison \(step poison#1\) is not JSON: a NUL character \(\\u0000\) at \$\.y$/;
    case "chaos-hang": return /^task hang failed: task hang \(step hang#1\) timed out/;
    default: return undefined;
  }
}

export const workflowName = (kind: Kind): string => `chaos-${kind}`;

/** Runs of these kinds wait for a `go` event that the sender delivers; its data is goData(i). */
export const needsEvent = (kind: Kind): boolean => kind === "event" || kind === "event-timeout";
export const goData = (i: number) => ({ v: i * 3 });

const tasksFails = (i: number) => i % 3;
const sleepFails = (i: number) => i % 2;
const sleepMs = (i: number) => 20 + (i % 5) * 40;
const neverTimeoutMs = (i: number) => 100 + (i % 3) * 100;
export const CHILDREN = 3;
/** run.random() calls of a chaos-values run: back-to-back journal writes, no task in between. */
export const VALUES = 12;

/**
 * The output a completed run of `workflow` with `input` must have. `recorded` reads the run's
 * journal: chaos-values returns the sum of its recorded random values, which replays must keep.
 */
export function expectedOutput(workflowName: string, input: { i: number; j?: number }, recorded: (key: string) => unknown): unknown {
  const { i } = input;
  switch (workflowName) {
    case "chaos-values": {
      let sum = 0;
      for (let k = 1; k <= VALUES; k++) sum += recorded(`random#${k}`) as number;
      return { v: f(i), sum };
    }
    case "chaos-tasks": return { v: f(f(i)) + 1 };
    case "chaos-sleep": return { v: f(f(i)) + 2 };
    case "chaos-event": return { v: f(goData(i).v) };
    case "chaos-event-timeout": return { v: f(goData(i).v), timedOut: true };
    case "chaos-child": return { v: childValue(i, input.j!) };
    case "chaos-parent": {
      let sum = 0;
      for (let j = 0; j < CHILDREN; j++) sum += childValue(i, j);
      return { v: sum, statuses: Array(CHILDREN).fill("completed") };
    }
    case "chaos-retry": return { v: f(f(i)), attempt: 2 };
    default: throw new Error(`unknown workflow ${workflowName}`);
  }
}

function childValue(i: number, j: number): number {
  const a = f(i * 10 + j);
  return j === 2 ? f(a) + 1 : a;
}

/** The completed output each task step must have recorded: `${name}#n` → output. */
export function expectedTaskOutputs(workflowName: string, input: { i: number; j?: number }): Record<string, unknown> {
  const { i } = input;
  switch (workflowName) {
    case "chaos-tasks": return { "compute#1": { y: f(i) }, "flaky#1": { y: f(f(i)) + 1 } };
    case "chaos-sleep": return { "compute#1": { y: f(i) }, "flaky-slow#1": { y: f(f(i)) + 2 } };
    case "chaos-event": return { "compute#1": { y: f(goData(i).v) } };
    case "chaos-event-timeout": return { "compute#1": { y: f(goData(i).v) } };
    case "chaos-child": {
      const j = input.j!;
      const a = f(i * 10 + j);
      return j === 2 ? { "compute#1": { y: a }, "flaky#1": { y: f(a) + 1 } } : { "compute#1": { y: a } };
    }
    case "chaos-parent": return {};
    case "chaos-retry": return { "compute#1": { y: f(i) }, "compute#2": { y: f(f(i)) } };
    case "chaos-values": return { "compute#1": { y: f(i) } };
    case "chaos-poison": return {};
    case "chaos-hang": return {};
    default: throw new Error(`unknown workflow ${workflowName}`);
  }
}

const goSchema = z.object({ v: z.number().int().nonnegative() });

export function defineWorkload(hooks: TaskHooks) {
  const pause = (ms: number, signal: AbortSignal) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
    });

  async function body(x: number, fails: number, bonus: number, ctx: { runId: string; stepKey: string; attempt: number; signal: AbortSignal }) {
    const execId = hooks.started(ctx.runId, ctx.stepKey, ctx.attempt);
    await pause(5 + Math.floor(Math.random() * 75), ctx.signal);
    if (ctx.attempt <= fails) throw new Error(`planned failure of attempt ${ctx.attempt} of ${fails}`);
    const y = f(x) + bonus;
    await hooks.effect(ctx.runId, ctx.stepKey, execId, ctx.signal);
    return { y };
  }

  const compute = task({
    name: "compute",
    handler: (x: number, ctx) => body(x, 0, 0, ctx),
  });
  // Budgets are exact: fails <= 2 with 3 attempts, fails <= 1 with 2 attempts.
  const flaky = task({
    name: "flaky",
    retry: { type: "fixed", maxAttempts: 3, baseDelayMs: 20 },
    handler: (input: { x: number; fails: number }, ctx) => body(input.x, input.fails, 1, ctx),
  });
  const flakySlow = task({
    name: "flaky-slow",
    // Longer than the workers' inline retry limit: the run is released as `retrying`.
    retry: { type: "fixed", maxAttempts: 2, baseDelayMs: 250 },
    handler: (input: { x: number; fails: number }, ctx) => body(input.x, input.fails, 2, ctx),
  });

  const tasks = workflow({ name: "chaos-tasks" }).v(VERSION, {
    async handler(run, input: { i: number }) {
      const a = await compute.start(run, input.i);
      const b = await flaky.start(run, { x: a.y, fails: tasksFails(input.i) });
      return { v: b.y };
    },
  });

  const sleep = workflow({ name: "chaos-sleep" }).v(VERSION, {
    async handler(run, input: { i: number }) {
      const a = await compute.start(run, input.i);
      await run.sleep("nap", sleepMs(input.i));
      const b = await flakySlow.start(run, { x: a.y, fails: sleepFails(input.i) });
      return { v: b.y };
    },
  });

  const events = { go: event(goSchema), never: event<{ v: number }>() };

  const onEvent = workflow({ name: "chaos-event" }).v(VERSION, {
    events,
    async handler(run, input: { i: number }) {
      const go = await run.events.go.wait();
      if (go.timeout) throw new Error("an event wait without a timeout timed out");
      const c = await compute.start(run, go.data.v);
      return { v: c.y };
    },
  });

  const onEventTimeout = workflow({ name: "chaos-event-timeout" }).v(VERSION, {
    events,
    async handler(run, input: { i: number }) {
      // Delivered long before its timeout; the second never comes and times out.
      const go = await run.events.go.wait({ timeout: { minutes: 30 } });
      if (go.timeout) throw new Error("the go event timed out");
      const never = await run.events.never.wait({ timeout: neverTimeoutMs(input.i) });
      const c = await compute.start(run, go.data.v);
      return { v: c.y, timedOut: never.timeout };
    },
  });

  const child = workflow({ name: "chaos-child" }).v(VERSION, {
    async handler(run, input: { i: number; j: number }) {
      const a = await compute.start(run, input.i * 10 + input.j);
      if (input.j === 1) await run.sleep("nap", 30);
      if (input.j === 2) return { v: (await flaky.start(run, { x: a.y, fails: 1 })).y };
      return { v: a.y };
    },
  });

  const parent = workflow({ name: "chaos-parent" }).v(VERSION, {
    async handler(run, input: { i: number }) {
      // Fan-out in one start_children call, fan-in: the parent wakes once, when the last child ends.
      const handles = await Promise.all(
        Array.from({ length: CHILDREN }, (_, j) => child.startAsChild(run, { i: input.i, j })));
      const results = await Promise.all(handles.map((h) => h.waitForStatus("completed")));
      let sum = 0;
      const statuses: string[] = [];
      for (const r of results) {
        statuses.push(r.state.status);
        if (r.success) sum += (r.state.output as { v: number }).v;
      }
      return { v: sum, statuses };
    },
  });

  const retry = workflow({ name: "chaos-retry" }).v(VERSION, {
    retry: { type: "fixed", maxAttempts: 3, baseDelayMs: 50 },
    async handler(run, input: { i: number }) {
      const a = await compute.start(run, input.i);
      // The first run attempt throws after its task; the retry replays the recorded task.
      if (run.attempt === 1) throw new Error("planned failure of run attempt 1");
      const b = await compute.start(run, a.y);
      return { v: b.y, attempt: run.attempt };
    },
  });

  const values = workflow({ name: "chaos-values" }).v(VERSION, {
    async handler(run, input: { i: number }) {
      // Journal writes back to back: whenever the worker stops, one is likely in flight.
      let sum = 0;
      for (let k = 0; k < VALUES; k++) sum += await run.random();
      const a = await compute.start(run, input.i);
      return { v: a.y, sum };
    },
  });

  // Neither calls `effect`: they have no side effect to count, only an end to check.
  const poisonTask = task({ name: "poison", handler: (x: number) => ({ y: `${x}\u0000` }) });
  const poison = workflow({ name: "chaos-poison" }).v(VERSION, {
    handler: async (run, input: { i: number }) => ({ v: (await poisonTask.start(run, input.i)).y }),
  });
  const hangTask = task({ name: "hang", timeout: 300, handler: () => new Promise<never>(() => {}) });
  const hang = workflow({ name: "chaos-hang" }).v(VERSION, {
    handler: async (run) => hangTask.start(run, null),
  });

  return {
    workflows: [tasks, sleep, onEvent, onEventTimeout, child, parent, retry, values, poison, hang] as WorkflowVersion<any, any, any>[],
    byKind: { tasks, sleep, event: onEvent, "event-timeout": onEventTimeout, parent, retry, values, poison, hang } as Record<Kind, WorkflowVersion<{ i: number }, any, any>>,
    onEvent,
  };
}

/** Definitions without hooks, for processes that only start runs or send events. */
export const definitions = () =>
  defineWorkload({
    started: () => { throw new Error("tasks run only in workers"); },
    effect: () => { throw new Error("tasks run only in workers"); },
  });
