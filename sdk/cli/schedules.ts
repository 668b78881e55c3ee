// `aiki schedules list | pause | resume | trigger`: thin callers of the engine's schedule
// functions (sql/72_schedules.sql), human tables by default and the engine's JSON with --json.
import * as engine from "../engine.js";
import { EXIT, parse, printJson, withDatabase, type CliContext } from "./context.js";
import { table, time } from "./table.js";

const connection = `    --url <url>              Postgres connection URL (default: the DATABASE_URL environment variable)
    --connect-timeout <s>    Give up connecting after this many seconds (default: 10)
    --json                   Print the engine's JSON instead of a table (for scripts)`;

export const schedulesHelp: Record<string, string> = {
  schedules: `aiki schedules <verb> [options]
  See and steer schedules (declared in code with schedule(…), or with aiki.create_schedule):
    list                     Every schedule: cron, zone, next and last fire, last run, state
    pause <name>             Stop firing it (trigger still fires it)
    resume <name>            Fire again from its next fire time after now
    trigger <name>           Fire it now, under its overlap policy
${connection}
`,
  "schedules list": `aiki schedules list [options]
  Every schedule by name: its workflow, cron and time zone, overlap policy, next fire, last
  fire and the status of the run it started last, paused or active, and the last fire's error.
${connection}
`,
  "schedules pause": `aiki schedules pause <name> [options]
  Stop firing the schedule until resumed.
${connection}
`,
  "schedules resume": `aiki schedules resume <name> [options]
  Fire the schedule again, from its next fire time after now (missed fires never start).
${connection}
`,
  "schedules trigger": `aiki schedules trigger <name> [options]
  Fire the schedule now, under its overlap policy; prints the run it started.
${connection}
`,
};

async function list(ctx: CliContext, args: string[]): Promise<void> {
  const command = "schedules list";
  const { values } = parse(ctx, command, args, {}, 0);
  if (values.help) return void process.stdout.write(`Usage: ${schedulesHelp[command]}`);
  const rows = await withDatabase(ctx, command, values, (sql) => engine.listSchedules(sql));
  if (values.json) return printJson(rows);
  process.stdout.write(table(["SCHEDULE", "WORKFLOW", "CRON", "TIME ZONE", "OVERLAP", "NEXT FIRE", "LAST FIRE", "LAST RUN", "STATE", "ERROR"],
    rows.map((s) => [s.name, `${s.workflow}@${s.version}`, s.cron, s.timezone, s.overlap, time(s.next_fire_at),
      time(s.last_fire_at), s.last_run_id ? `${s.last_run_id} (${s.last_run_status ?? "purged"})` : null,
      s.paused ? "paused" : s.buffered_at ? `buffered ${time(s.buffered_at)}` : "active", s.last_error])));
}

async function act(ctx: CliContext, verb: "pause" | "resume" | "trigger", args: string[]): Promise<void> {
  const command = `schedules ${verb}`;
  const { values, positionals } = parse(ctx, command, args, {}, 1);
  if (values.help) return void process.stdout.write(`Usage: ${schedulesHelp[command]}`);
  const name = positionals[0]!;
  if (verb === "trigger") {
    const fired = await withDatabase(ctx, command, values, (sql) => engine.triggerSchedule(sql, name));
    if (values.json) return printJson(fired);
    process.stdout.write(`schedule ${name}: fired at ${time(fired.fired_at)}: ${fired.action}` +
      `${fired.run_id ? ` run ${fired.run_id}` : ""}\n`);
    return;
  }
  const s = await withDatabase(ctx, command, values, (sql) =>
    verb === "pause" ? engine.pauseSchedule(sql, name) : engine.resumeSchedule(sql, name));
  if (values.json) return printJson(s);
  process.stdout.write(`schedule ${name}: ${s.paused ? "paused" : `active, next fire ${time(s.next_fire_at)}`}\n`);
}

/** Runs `aiki schedules …`; errors are thrown through ctx.fail for sdk/cli.ts to print. */
export async function schedulesCommand(ctx: CliContext, args: string[]): Promise<void> {
  const [verb, ...rest] = args;
  switch (verb) {
    case "list": return list(ctx, rest);
    case "pause": case "resume": case "trigger": return act(ctx, verb, rest);
    case undefined: case "--help": case "-h": case "help":
      process.stdout.write(`Usage: ${schedulesHelp.schedules}`);
      if (verb === undefined) throw ctx.fail("schedules: which verb? list, pause, resume or trigger", EXIT.usage);
      return;
    default:
      throw ctx.fail(`schedules: unknown verb ${JSON.stringify(verb)}; use list, pause, resume or trigger`, EXIT.usage);
  }
}
