// `aiki replay --module <file> --workflow <name@version>`: checks a deployable module's code of
// one workflow version against that version's runs in the database (by default the ones still in
// flight), each read as `aiki runs show --json` exports it and replayed without side effects
// (sdk/replayer/). Exits 1 if any run diverged, so a deploy pipeline stops before the change
// reaches the workers. Runs written by a client with a codec are decoded with the `codec` (or
// default) export of --codec-module; without it they are reported as errors (CodecError), never
// as divergences.
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import type { Codec } from "../codec/codec.js";
import { WorkflowVersion } from "../definitions/workflow.js";
import * as engine from "../engine.js";
import { AikiError, CodecError, NonDeterminismError, type Divergence } from "../errors.js";
import { replay, type ReplayEnd } from "../replayer/replay.js";
import { EXIT, parse, printJson, withDatabase, type CliContext } from "./context.js";
import { table } from "./table.js";

const IN_FLIGHT: engine.RunStatus[] = ["scheduled", "pending", "running", "sleeping", "waiting", "retrying", "paused"];
const STATUSES: readonly engine.RunStatus[] = [...IN_FLIGHT, "completed", "failed", "cancelled", "continued"];

export const replayHelp = `aiki replay --module <file> --workflow <name@version> [options]
  Replay the runs of one workflow version against a module's code, without side effects, and
  report each run the code no longer follows (exit 1 if any).
    --module <file>          The deployable module (an ES module exporting the workflow version)
    --workflow <name@v>      The workflow version to check, as name@version
    --codec-module <file>    An ES module whose \`codec\` export (or default export) is the codec the
                             runs' payloads were encoded with (may be the --module file)
    --status <s>             Only runs in this status; repeat or comma-separate for several
                             (default: the statuses still in flight: ${IN_FLIGHT.join(", ")})
    --limit <n>              Replay at most this many runs, newest first, 1-100000 (default: 1000)
    --url <url>              Postgres connection URL (default: the DATABASE_URL environment variable)
    --connect-timeout <s>    Give up connecting after this many seconds (default: 10)
    --json                   Print {workflow, replayed, diverged, runs: [...]} instead of a table
`;

interface RunReport {
  id: string;
  status: engine.RunStatus;
  result: "ok" | "diverged" | "error";
  end?: ReplayEnd;
  divergence?: Divergence;
  message?: string;
}

/** Runs `aiki replay …`; returns the exit code (1 when a run diverged). */
export async function replayCommand(ctx: CliContext, args: string[]): Promise<number> {
  const command = "replay";
  const { values } = parse(ctx, command, args, {
    module: { type: "string" }, workflow: { type: "string" }, status: { type: "string", multiple: true }, limit: { type: "string" },
    "codec-module": { type: "string" },
  }, 0);
  if (values.help) {
    process.stdout.write(`Usage: ${replayHelp}`);
    return EXIT.ok;
  }
  if (!values.module) throw ctx.fail(`${command}: --module <file> is required`, EXIT.usage);
  if (!values.workflow || !/^[^@]+@[^@]+$/.test(values.workflow)) {
    throw ctx.fail(`${command}: --workflow takes name@version, not ${JSON.stringify(values.workflow ?? "")}`, EXIT.usage);
  }
  const statuses = (values.status ?? []).flatMap((s) => s.split(",")).map((s) => s.trim()).filter(Boolean);
  const unknown = statuses.find((s) => !STATUSES.includes(s as engine.RunStatus));
  if (unknown !== undefined) throw ctx.fail(`${command}: unknown status ${JSON.stringify(unknown)}; use ${STATUSES.join(", ")}`, EXIT.usage);
  const limit = values.limit === undefined ? 1000 : Number(values.limit);
  if (!Number.isInteger(limit) || limit < 1 || limit > 100_000) {
    throw ctx.fail(`${command}: --limit takes a whole number from 1 to 100000, not ${JSON.stringify(values.limit)}`, EXIT.usage);
  }
  const version = await workflowVersion(ctx, values.module, values.workflow);
  const codec = values["codec-module"] === undefined ? undefined : await codecOf(ctx, values["codec-module"]);

  const reports = await withDatabase(ctx, command, values, async (sql) => {
    const out: RunReport[] = [];
    let cursor: string | null = null;
    const filter: engine.RunFilter = {
      workflow: version.name, version: version.version,
      status: (statuses.length > 0 ? statuses : IN_FLIGHT) as engine.RunStatus[],
    };
    do {
      const page: engine.RunPage = await engine.searchRuns(sql, filter, Math.min(1000, limit - out.length), cursor);
      for (const listed of page.runs) {
        let run: engine.RunTimeline;
        try {
          run = await engine.runTimeline(sql, listed.id);
        } catch (error) {
          if (error instanceof AikiError && error.code === "AK002") continue; // purged meanwhile
          throw error;
        }
        out.push(await check(version, run, codec));
      }
      cursor = page.next_cursor;
    } while (cursor !== null && out.length < limit);
    return out;
  });

  const diverged = reports.filter((r) => r.result !== "ok").length;
  if (values.json) {
    printJson({ workflow: version.key, replayed: reports.length, diverged, runs: reports });
  } else {
    process.stdout.write(table(["RUN", "STATUS", "RESULT", "DIVERGENCE"], reports.map((r) =>
      [r.id, r.status, r.result === "ok" ? `ok (${r.end})` : r.result, r.divergence ? summary(r.divergence) : r.message ?? null])));
    process.stdout.write(`${version.key}: ${reports.length} run(s) replayed, ${diverged} diverged\n`);
  }
  return diverged > 0 ? EXIT.failed : EXIT.ok;
}

/** A divergence in one table cell: `reserve#1: task reserve, now task pack (pack#1)`. */
function summary(d: Divergence): string {
  const now = d.call ? `${d.call.kind} ${d.call.name} (${d.call.key})` : "returns or throws";
  return d.step === null || d.recorded === null ? `past the end: now ${now}` : `${d.step}: ${d.recorded.kind} ${d.recorded.name}, now ${now}`;
}

async function check(version: WorkflowVersion, run: engine.RunTimeline, codec: Codec | undefined): Promise<RunReport> {
  try {
    const result = await replay(version, run, { codec });
    return { id: run.id, status: run.status, result: "ok", end: result.end };
  } catch (error) {
    if (error instanceof NonDeterminismError) {
      return { id: run.id, status: run.status, result: "diverged", divergence: error.divergence, message: error.message };
    }
    if (error instanceof CodecError && error.code === "codec_missing") {
      // Short enough for the table's cell: what is missing and the option that supplies it.
      const key = error.keyId === undefined ? "" : ` (key ${error.keyId})`;
      return { id: run.id, status: run.status, result: "error", message: `CodecError: encoded${key}; pass --codec-module <file>` };
    }
    // The module's code failed outside the handler's flow (e.g. a schema refusing the input), or
    // the codec could not decode the run's payloads (CodecError: a key it lacks).
    return { id: run.id, status: run.status, result: "error", message: `${(error as Error).name}: ${(error as Error).message}` };
  }
}

async function importModule(ctx: CliContext, file: string): Promise<Record<string, unknown>> {
  try {
    return await import(pathToFileURL(resolve(file)).href) as Record<string, unknown>;
  } catch (error) {
    throw ctx.fail(`replay: cannot import ${file}: ${(error as Error).message}`, EXIT.usage);
  }
}

/** The codec a --codec-module exports: its `codec` export, else its default export. */
async function codecOf(ctx: CliContext, file: string): Promise<Codec> {
  const module = await importModule(ctx, file);
  const codec = (module.codec ?? module.default) as Partial<Codec> | null | undefined;
  if (typeof codec?.encode !== "function" || typeof codec.decode !== "function") {
    throw ctx.fail(`replay: ${file} exports no codec (a \`codec\` or default export with encode and decode)`, EXIT.usage);
  }
  return codec as Codec;
}

/** The workflow version `key` among the module's exports (top level, or inside an exported array or object). */
async function workflowVersion(ctx: CliContext, file: string, key: string): Promise<WorkflowVersion> {
  const module = await importModule(ctx, file);
  const found: WorkflowVersion[] = [];
  for (const value of Object.values(module)) {
    const candidates = Array.isArray(value) ? value : value instanceof WorkflowVersion ? [value]
      : value !== null && typeof value === "object" ? Object.values(value) : [];
    for (const candidate of candidates) if (candidate instanceof WorkflowVersion && !found.includes(candidate)) found.push(candidate);
  }
  const match = found.find((v) => v.key === key);
  if (!match) {
    throw ctx.fail(`replay: ${file} exports no workflow version ${key}` +
      (found.length > 0 ? `; it exports ${found.map((v) => v.key).join(", ")}` : " (and no other from this aiki package)"), EXIT.usage);
  }
  return match;
}
