// `aiki runs list | show | cancel | pause | resume | retry | send`, `aiki workers`, `aiki queues`,
// `aiki queues set` and `aiki purge`: thin callers of the engine's SQL functions (sdk/engine.ts), human tables by
// default and the engine's JSON with --json. Nothing here decides a run's state.
import * as engine from "../engine.js";
import { EXIT, parse, printJson, runId, withDatabase, type CliContext } from "./context.js";
import { cell, duration, table, time } from "./table.js";

const connection = `    --url <url>              Postgres connection URL (default: the DATABASE_URL environment variable)
    --connect-timeout <s>    Give up connecting after this many seconds (default: 10)
    --json                   Print the engine's JSON instead of a table (for scripts)`;

export const operatorHelp: Record<string, string> = {
  runs: `aiki runs <verb> [options]
  See and steer runs:
    list                     Runs, newest first (aiki runs list --help)
    show <id>                One run's timeline: steps, attempts, errors, events, children
    cancel <id>              Cancel a run and its unfinished descendants
    pause <id>               Hold a run until resumed
    resume <id>              Release a paused run
    retry <id>               Run a failed or cancelled run again (keeps its completed steps),
                             or a retrying one now
    send <id> <event> [json] Send an event (data: JSON, default null)
${connection}
`,
  "runs list": `aiki runs list [options]
  Runs, newest first, one page at a time.
    --status <s>             Only this status; repeat or comma-separate for several
    --workflow <name>        Only this workflow
    --version <v>            Only this workflow version
    --queue <name>           Only this queue
    --search <text>          A run id or an idempotency key
    --unserved               Only pending runs no live worker serves
    --limit <n>              Runs per page, 1-1000 (default: 50)
    --cursor <c>             The page after the one that printed this cursor
${connection}
`,
  "runs show": `aiki runs show <id> [options]
  One run: its state, then its steps in order (attempts, errors, durations, due times), its
  earlier attempts, its events (consumed or not) and its children.
${connection}
`,
  "runs cancel": `aiki runs cancel <id> [--reason <text>] [options]
  Cancel the run and, top-down, its unfinished descendants.
    --reason <text>          Recorded as the run's error message
${connection}
`,
  "runs pause": `aiki runs pause <id> [options]
  Hold the run: nothing but resume moves it again.
${connection}
`,
  "runs resume": `aiki runs resume <id> [options]
  Release a paused run to be claimed (or to wait for its scheduled or retry time).
${connection}
`,
  "runs retry": `aiki runs retry <id> [options]
  Run a failed or cancelled run again as a new attempt, resuming after its completed steps (its
  failed attempt stays in its history: aiki runs show), or make a retrying run due now.
${connection}
`,
  "runs send": `aiki runs send <id> <event> [json] [options]
  Send event <event> to the run, with JSON data (default: null).
    --key <key>              Idempotency key: the same key sends the event once
${connection}
`,
  workers: `aiki workers [options]
  Registered workers: alive or not, when last seen, the runs each holds, what each serves.
${connection}
`,
  queues: `aiki queues [options]
  Queues with unfinished runs or settings: runs per status, the oldest pending run's wait,
  limits (RATE: starts per window), paused. \`aiki queues set --help\` changes the limits.
${connection}
`,
  "queues set": `aiki queues set <queue> [options]
  Set the queue's limits (admin role). Replaces all of them: a limit not given is removed.
    --concurrency <n>        Runs of the queue running at once (default: no limit)
    --key-concurrency <n>    Runs per concurrency key running at once (default: 1)
    --rate <n>               Runs started (first lease) per window (default: no limit)
    --per <duration>         The rate window: 500ms, 30s, 1m, 2h, 1d (required with --rate);
                             windows are aligned to the Unix epoch
    --per-key                The rate limit holds per concurrency key
${connection}
`,
  purge: `aiki purge --before <time> [options]
  Delete runs that finished before <time>, with their steps, events and history, in batches,
  printing progress. <time> is an ISO date or time (2030-01-31, 2030-01-31T12:00:00Z) or an age
  (90m, 12h, 30d: that long ago).
    --before <time>          Required
    --batch-size <n>         Rows per table per batch, 1-100000 (default: 1000)
${connection}
`,
};

const STATUSES: readonly string[] = ["scheduled", "pending", "running", "sleeping", "waiting", "retrying", "paused",
  "completed", "failed", "cancelled", "continued"];

function positiveInt(ctx: CliContext, command: string, option: string, text: string | undefined, fallback: number, max: number): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1 || n > max) throw ctx.fail(`${command}: ${option} takes a whole number from 1 to ${max}, not ${JSON.stringify(text)}`, EXIT.usage);
  return n;
}

async function list(ctx: CliContext, args: string[]): Promise<void> {
  const command = "runs list";
  const { values } = parse(ctx, command, args, {
    status: { type: "string", multiple: true }, workflow: { type: "string" }, version: { type: "string" },
    queue: { type: "string" }, search: { type: "string" }, unserved: { type: "boolean" },
    limit: { type: "string" }, cursor: { type: "string" },
  }, 0);
  if (values.help) return void process.stdout.write(`Usage: ${operatorHelp[command]}`);
  const statuses = (values.status ?? []).flatMap((s) => s.split(",")).map((s) => s.trim()).filter(Boolean);
  const unknown = statuses.find((s) => !STATUSES.includes(s));
  if (unknown !== undefined) throw ctx.fail(`${command}: unknown status ${JSON.stringify(unknown)}; use ${STATUSES.join(", ")}`, EXIT.usage);
  const limit = positiveInt(ctx, command, "--limit", values.limit, 50, 1000);
  const filter: engine.RunFilter = {
    status: statuses.length === 0 ? undefined : (statuses.length === 1 ? statuses[0] : statuses) as engine.RunFilter["status"],
    workflow: values.workflow, version: values.version, queue: values.queue, search: values.search,
    unserved: values.unserved || undefined,
  };
  const page = await withDatabase(ctx, command, values, (sql) => engine.searchRuns(sql, filter, limit, values.cursor ?? null));
  if (values.json) return printJson(page);
  process.stdout.write(table(["ID", "WORKFLOW", "STATUS", "QUEUE", "ATTEMPT", "CREATED", "FINISHED", "ERROR"],
    page.runs.map((r) => [r.id, `${r.workflow}@${r.version}`, r.unserved ? `${r.status} (unserved)` : r.status, r.queue,
      r.attempt, time(r.created_at), time(r.finished_at), r.error_name])));
  if (page.next_cursor) process.stdout.write(`More: aiki runs list --cursor ${page.next_cursor} (same filters)\n`);
}

async function show(ctx: CliContext, args: string[]): Promise<void> {
  const command = "runs show";
  const { values, positionals } = parse(ctx, command, args, {}, 1);
  if (values.help) return void process.stdout.write(`Usage: ${operatorHelp[command]}`);
  const id = runId(ctx, command, positionals[0]!);
  const run = await withDatabase(ctx, command, values, (sql) => engine.runTimeline(sql, id));
  if (values.json) return printJson(run);
  const error = run.error as { name?: string; message?: string } | null;
  const fields: [string, unknown][] = [
    ["run", run.id], ["workflow", `${run.workflow}@${run.version}`],
    ["status", run.unserved ? `${run.status} (no live worker serves it)` : run.status],
    ["queue", run.queue], ["attempt", run.attempt], ["created", time(run.created_at)], ["started", time(run.started_at)],
    ["finished", time(run.finished_at)], ["due", time(run.available_at)], ["deadline", time(run.deadline_at)],
    ["idempotency key", run.idempotency_key], ["lease owner", run.lease_owner],
    ["parent", run.parent ? `${run.parent.id} (${run.parent.workflow}@${run.parent.version}, ${run.parent.status})` : null],
    ["input", run.input], ["output", run.output],
    ["error", error ? `${error.name ?? "Error"}: ${error.message ?? ""}` : null],
  ];
  process.stdout.write(fields.map(([k, v]) => `${`${k}:`.padEnd(17)}${cell(v)}`).join("\n") + "\n");
  process.stdout.write("\nSteps\n");
  process.stdout.write(table(["KEY", "KIND", "STATUS", "ATTEMPTS", "CREATED", "DURATION", "DUE", "ERRORS", "RESULT"],
    run.timeline.map((s) => {
      const last = s.errors.at(-1)?.error as { name?: string; message?: string } | undefined;
      return [s.key, s.kind, s.status, s.attempts, time(s.created_at), duration(s.duration_ms), time(s.wake_at),
        s.errors.length === 0 ? null : `${s.errors.length}, last: ${last?.name ?? "Error"}: ${last?.message ?? ""}`,
        s.child_id ?? s.output];
    })));
  if (run.attempts_before.length > 0) {
    process.stdout.write("\nEarlier attempts\n");
    process.stdout.write(table(["ATTEMPT", "ENDED", "AS", "FAILED STEPS", "ERROR"],
      run.attempts_before.map((a) => {
        const e = a.error as { name?: string; message?: string } | null;
        return [a.attempt, time(a.ended_at), a.status, a.failed_steps.length, e ? `${e.name ?? "Error"}: ${e.message ?? ""}` : null];
      })));
  }
  process.stdout.write("\nEvents\n");
  process.stdout.write(table(["ID", "NAME", "SENT", "CONSUMED BY", "DATA"],
    run.events.map((e) => [e.id, e.name, time(e.created_at), e.consumed_by ?? "(waiting in inbox)", e.data])));
  process.stdout.write("\nChildren\n");
  process.stdout.write(table(["ID", "WORKFLOW", "STATUS", "CREATED", "FINISHED"],
    run.children.map((c) => [c.id, `${c.workflow}@${c.version}`, c.status, time(c.created_at), time(c.finished_at)])));
}

/** cancel, pause, resume, retry: one run, one SQL call, the status it leaves the run in. */
async function act(ctx: CliContext, verb: "cancel" | "pause" | "resume" | "retry", args: string[]): Promise<void> {
  const command = `runs ${verb}`;
  const { values, positionals } = parse(ctx, command, args, verb === "cancel" ? { reason: { type: "string" } } : {}, 1);
  if (values.help) return void process.stdout.write(`Usage: ${operatorHelp[command]}`);
  const id = runId(ctx, command, positionals[0]!);
  const status = await withDatabase(ctx, command, values, (sql) =>
    verb === "cancel" ? engine.cancel(sql, id, (values as { reason?: string }).reason)
    : verb === "pause" ? engine.pause(sql, id)
    : verb === "resume" ? engine.resume(sql, id)
    : engine.retryRun(sql, id));
  if (values.json) return printJson({ id, status });
  process.stdout.write(`run ${id}: ${status}\n`);
}

async function send(ctx: CliContext, args: string[]): Promise<void> {
  const command = "runs send";
  const { values, positionals } = parse(ctx, command, args, { key: { type: "string" } }, [2, 3]);
  if (values.help) return void process.stdout.write(`Usage: ${operatorHelp[command]}`);
  const id = runId(ctx, command, positionals[0]!);
  const event = positionals[1]!;
  let data: unknown = null;
  if (positionals[2] !== undefined) {
    try {
      data = JSON.parse(positionals[2]);
    } catch (error) {
      throw ctx.fail(`${command}: the event data is not JSON: ${(error as Error).message}`, EXIT.usage);
    }
  }
  const eventId = await withDatabase(ctx, command, values, (sql) => engine.sendEvent(sql, id, event, data, values.key));
  if (values.json) return printJson({ id, event, event_id: eventId });
  process.stdout.write(`run ${id}: sent ${event} (event ${eventId})\n`);
}

async function workers(ctx: CliContext, args: string[]): Promise<void> {
  const { values } = parse(ctx, "workers", args, {}, 0);
  if (values.help) return void process.stdout.write(`Usage: ${operatorHelp.workers}`);
  const rows = await withDatabase(ctx, "workers", values, (sql) => engine.listWorkers(sql));
  if (values.json) return printJson(rows);
  process.stdout.write(table(["ID", "ALIVE", "LAST SEEN", "STARTED", "RUNS HELD", "WORKFLOWS", "QUEUES"],
    rows.map((w) => [w.id, w.alive ? "yes" : "no", time(w.last_seen), time(w.started_at), w.runs_held,
      w.workflows?.join(",") ?? "(any)", w.queues?.join(",") ?? "(any)"])));
}

/** --per: a window like 500ms, 30s, 1m, 2h or 1d, in milliseconds. */
function windowMs(ctx: CliContext, command: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const m = /^(\d+)(ms|s|m|h|d)$/.exec(text);
  if (!m) throw ctx.fail(`${command}: --per takes a duration like 500ms, 30s, 1m, 2h or 1d, not ${JSON.stringify(text)}`, EXIT.usage);
  return Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as "ms" | "s" | "m" | "h" | "d"];
}

async function queueSet(ctx: CliContext, args: string[]): Promise<void> {
  const command = "queues set";
  const { values, positionals } = parse(ctx, command, args, {
    concurrency: { type: "string" }, "key-concurrency": { type: "string" }, rate: { type: "string" },
    per: { type: "string" }, "per-key": { type: "boolean" },
  }, 1);
  if (values.help) return void process.stdout.write(`Usage: ${operatorHelp[command]}`);
  const name = positionals[0]!;
  const whole = (option: string, text: string | undefined) => (text === undefined ? undefined : positiveInt(ctx, command, option, text, 0, 1_000_000));
  if ((values.rate === undefined) !== (values.per === undefined)) {
    throw ctx.fail(`${command}: give --rate and --per together (e.g. --rate 100 --per 1m)`, EXIT.usage);
  }
  const settings = {
    concurrencyLimit: whole("--concurrency", values.concurrency),
    keyConcurrencyLimit: whole("--key-concurrency", values["key-concurrency"]),
    rateLimit: whole("--rate", values.rate),
    rateWindowMs: windowMs(ctx, command, values.per),
    ratePerKey: values["per-key"] ?? false,
  };
  const row = await withDatabase(ctx, command, values, async (sql) => {
    await engine.setQueue(sql, name, settings);
    return (await engine.listQueues(sql)).find((q) => q.name === name)!;
  });
  if (values.json) return printJson(row);
  process.stdout.write(`queue ${name}: concurrency ${row.concurrency_limit ?? "unlimited"}, ` +
    `per key ${row.key_concurrency_limit}, rate ${rate(row)}\n`);
}

function rate(q: engine.QueueInfo): string {
  if (q.rate_limit === null || q.rate_window_ms === null) return "none";
  return `${q.rate_limit}/${duration(q.rate_window_ms)}${q.rate_per_key ? " per key" : ""}`;
}

async function queues(ctx: CliContext, args: string[]): Promise<void> {
  if (args[0] === "set") return queueSet(ctx, args.slice(1));
  const { values } = parse(ctx, "queues", args, {}, 0);
  if (values.help) return void process.stdout.write(`Usage: ${operatorHelp.queues}`);
  const rows = await withDatabase(ctx, "queues", values, (sql) => engine.listQueues(sql));
  if (values.json) return printJson(rows);
  process.stdout.write(table(["QUEUE", "PENDING", "RUNNING", "SCHEDULED", "SLEEPING", "WAITING", "RETRYING", "PAUSED",
    "OLDEST PENDING", "LIMIT", "KEY LIMIT", "RATE", "STATE"],
    rows.map((q) => [q.name, q.counts.pending, q.counts.running, q.counts.scheduled, q.counts.sleeping, q.counts.waiting,
      q.counts.retrying, q.counts.paused, q.oldest_pending_at ? `${duration(q.oldest_pending_age_ms)} ago` : null,
      q.concurrency_limit ?? "none", q.key_concurrency_limit, rate(q), q.paused ? "paused" : "active"])));
}

/** --before: an ISO date or time, or an age (90m, 12h, 30d) before now. */
function cutoff(ctx: CliContext, text: string | undefined): Date {
  if (text === undefined) throw ctx.fail("purge: --before <time> is required (e.g. --before 30d)", EXIT.usage);
  const age = /^(\d+)(m|h|d)$/.exec(text);
  if (age) return new Date(Date.now() - Number(age[1]) * { m: 60_000, h: 3_600_000, d: 86_400_000 }[age[2] as "m" | "h" | "d"]);
  const date = /^\d{4}-\d{2}-\d{2}/.test(text) ? new Date(text) : new Date(Number.NaN);
  if (Number.isNaN(date.getTime())) throw ctx.fail(`purge: --before takes an ISO date or time, or an age like 30d, not ${JSON.stringify(text)}`, EXIT.usage);
  return date;
}

async function purge(ctx: CliContext, args: string[]): Promise<void> {
  const { values } = parse(ctx, "purge", args, { before: { type: "string" }, "batch-size": { type: "string" } }, 0);
  if (values.help) return void process.stdout.write(`Usage: ${operatorHelp.purge}`);
  const before = cutoff(ctx, values.before);
  const batchSize = positiveInt(ctx, "purge", "--batch-size", values["batch-size"], 1000, 100_000);
  const tty = process.stderr.isTTY === true;
  let deleted = 0;
  let batches = 0;
  await withDatabase(ctx, "purge", values, async (sql) => {
    for (;;) {
      const n = await engine.purgeRuns(sql, before, batchSize);
      if (n === 0) break;
      deleted += n;
      batches++;
      // A progress line: redrawn in place on a terminal, one line per 10 batches otherwise.
      if (tty) process.stderr.write(`\rpurging runs finished before ${before.toISOString()}: ${deleted} rows in ${batches} batches`);
      else if (batches % 10 === 0) process.stderr.write(`purging: ${deleted} rows in ${batches} batches\n`);
    }
  });
  if (tty && batches > 0) process.stderr.write("\n");
  if (values.json) return printJson({ before: before.toISOString(), deleted, batches });
  process.stdout.write(`Purged ${deleted} rows (runs, steps, events, history) of runs finished before ${before.toISOString()}.\n`);
}

/** Runs `aiki runs|workers|queues|purge …`; errors are thrown through ctx.fail for sdk/cli.ts to print. */
export async function operatorCommand(ctx: CliContext, command: string, args: string[]): Promise<void> {
  if (command === "workers") return workers(ctx, args);
  if (command === "queues") return queues(ctx, args);
  if (command === "purge") return purge(ctx, args);
  const [verb, ...rest] = args;
  switch (verb) {
    case "list": return list(ctx, rest);
    case "show": return show(ctx, rest);
    case "cancel": case "pause": case "resume": case "retry": return act(ctx, verb, rest);
    case "send": return send(ctx, rest);
    case undefined: case "--help": case "-h": case "help":
      process.stdout.write(`Usage: ${operatorHelp.runs}`);
      if (verb === undefined) throw ctx.fail("runs: which verb? list, show, cancel, pause, resume, retry or send", EXIT.usage);
      return;
    default:
      throw ctx.fail(`runs: unknown verb ${JSON.stringify(verb)}; use list, show, cancel, pause, resume, retry or send`, EXIT.usage);
  }
}
