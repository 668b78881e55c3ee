// The `aiki` command line: install the engine into a database, or build the psql-only bundle.
//
//   aiki migrate [--url URL]    apply pending migrations and re-apply every function (migrate.ts)
//   aiki bundle [--out FILE]    print or write aiki.sql (bundle.ts); --check fails when it is stale
//   aiki relay --redis URL      relay wake-ups into Redis Streams until SIGINT/SIGTERM (relay/)
//   aiki runs|workers|queues|purge …   see and steer runs (cli/runs.ts)
//   aiki schedules list|pause|resume|trigger   see and steer schedules (cli/schedules.ts)
//   aiki replay --module F --workflow N@V   check a module's code against runs in flight (cli/replay.ts)
//   aiki help [command]         usage; also `aiki <command> --help`
//   aiki --version              the package's and the engine's versions
//
// Exit codes: 0 success, 1 the work failed (database error, stale bundle), 2 the command line
// or environment is wrong (unknown command or option, no database URL), 3 no such run. Errors the user can fix
// are printed as one clear line, never as a stack trace; only a bug in the CLI itself shows one.
import postgres from "postgres";
import { readFileSync, writeFileSync, existsSync } from "node:fs";
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { bundle } from "./db/bundle.js";
import { migrate } from "./db/migrate.js";
import { packageSchemaVersion } from "./db/version.js";
import { SchemaVersionError } from "./errors.js";
import { dashboardHelp, runDashboard } from "./dashboard/command.js";
import { operatorCommand, operatorHelp } from "./cli/runs.js";
import { schedulesCommand, schedulesHelp } from "./cli/schedules.js";
import { replayCommand, replayHelp } from "./cli/replay.js";

const packageRoot = fileURLToPath(new URL("../", import.meta.url));
const packagedBundle = resolve(packageRoot, "aiki.sql");
const packageVersion = (JSON.parse(readFileSync(resolve(packageRoot, "package.json"), "utf8")) as { version: string }).version;

const help = {
  migrate: `aiki migrate [--url URL] [options]
  Install or upgrade the engine: apply pending migrations in order, then re-apply every
  function, in one transaction under an advisory lock. Refuses to go backwards over an engine
  newer than this package.
    --url <url>              Postgres connection URL (default: the DATABASE_URL environment variable)
    --connect-timeout <s>    Give up connecting after this many seconds (default: 10)
    --default-database       Accept a URL that names no database (Postgres then picks one,
                             usually the user's name); refused otherwise
    --force                  Re-apply this package's functions even over a newer engine
`,
  bundle: `aiki bundle [--out FILE] [--check]
  The whole engine as one psql script, for installs without Node:
  psql -v ON_ERROR_STOP=1 -1 -f aiki.sql
    --out <file>     Write it to this file (default: standard output)
    --check          Write nothing; exit 1 if the file (--out, default: the package's aiki.sql)
                     differs from what bundle would write
`,
  relay: `aiki relay [--url URL] [--redis URL] [--queues LIST]
  Relay the engine's wake-ups into one Redis Stream per queue, for workers started with
  worker({ relay: { url } }). Runs until SIGINT or SIGTERM. Several relays may run at once.
  Needs the redis package (npm install redis).
    --url <url>      Postgres connection URL (default: the DATABASE_URL environment variable)
    --redis <url>    Redis URL (default: the REDIS_URL environment variable)
    --queues <list>  Comma-separated queues to relay (default: every queue)
`,
};

const usage = `Usage: aiki <command> [options]

Commands:
  migrate            Install or upgrade the engine in a database
  bundle             Write the engine as one psql script (aiki.sql)
  relay              Relay the engine's wake-ups into Redis Streams, for worker({ relay })
  runs <verb>        See and steer runs: list, show, cancel, pause, resume, retry, send
  workers            Registered workers, alive or not, and the runs they hold
  queues             Queues: runs per status, oldest pending, limits, paused; queues set <queue>
                     sets concurrency and rate limits
  schedules <verb>   Schedules: list, pause, resume, trigger
  purge              Delete runs finished before a time, in batches
  replay             Check a module's workflow code against the runs in flight, without side effects
  dashboard          Serve the web dashboard (runs, a run's timeline, workers, queues)
  help [command]     Show this help, or a command's (also: aiki <command> --help)

Options: --version prints the package and engine versions.
Exit codes: 0 success, 1 failure (database error, unreachable server, act refused), 2 usage error
(unknown command or option, no or bad database URL, not a run id), 3 no such run.

${help.migrate}
${help.bundle}
${help.relay}
${operatorHelp.runs}
${operatorHelp.workers}
${operatorHelp.queues}
${operatorHelp["queues set"]}
${operatorHelp.purge}
${schedulesHelp.schedules}
${replayHelp}
${dashboardHelp}`;

/** An error the user can fix: printed as one line, with the exit code it carries. */
class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
  }
}

type Options = Record<string, { type: "string" | "boolean" }>;

function parse<T extends Options>(command: keyof typeof help, args: string[], options: T) {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: false }).values;
  } catch (error) {
    throw new CliError(`${(error as Error).message}\nRun \`aiki ${command} --help\` for usage.`, 2);
  }
}

/** The URL with its password masked, for messages. */
function redact(url: URL): string {
  const copy = new URL(url.toString());
  if (copy.password) copy.password = "***";
  return copy.toString();
}

/** Describes a failed database call in one line: SQLSTATE errors and socket errors alike. */
function describeDatabaseError(error: unknown): string | undefined {
  if (error instanceof postgres.PostgresError) {
    const hint = error.hint ? `\nhint: ${error.hint}` : "";
    return `${error.message} (SQLSTATE ${error.code})${hint}`;
  }
  const code = (error as { code?: unknown } | null)?.code;
  if (error instanceof Error && typeof code === "string") {
    // Socket and driver errors: ECONNREFUSED, ENOTFOUND, CONNECT_TIMEOUT, …
    return error.message.includes(code) ? error.message : `${error.message} (${code})`;
  }
  return undefined;
}

/** The database URL from --url or DATABASE_URL, checked: one clear line for each mistake. */
function databaseUrl(given: string | undefined, allowDefaultDatabase: boolean): URL {
  const text = given ?? process.env.DATABASE_URL;
  if (!text) {
    throw new CliError("no database given: set DATABASE_URL or pass --url postgres://…", 2);
  }
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new CliError("the database URL is not a URL; expected postgres://user:password@host:port/database", 2);
  }
  if (url.protocol !== "postgres:" && url.protocol !== "postgresql:") {
    throw new CliError(`the database URL must start with postgres:// or postgresql://, not ${url.protocol}//`, 2);
  }
  try {
    decodeURIComponent(url.username);
    decodeURIComponent(url.password);
    decodeURIComponent(url.pathname);
  } catch {
    // The URL may hold a password: it is never repeated.
    throw new CliError("the database URL is malformed: percent-encode special characters in the user name, " +
      "password and database name (e.g. %40 for @, %25 for %)", 2);
  }
  if ((url.pathname === "" || url.pathname === "/") && !allowDefaultDatabase) {
    throw new CliError(`the database URL ${redact(url)} names no database, so Postgres would pick one (usually the ` +
      "user's name, often `postgres`): add /<database> to the URL, or pass --default-database to install there", 2);
  }
  return url;
}

async function runMigrate(args: string[]): Promise<void> {
  const values = parse("migrate", args, {
    url: { type: "string" }, "connect-timeout": { type: "string" }, "default-database": { type: "boolean" },
    force: { type: "boolean" },
  });
  const url = databaseUrl(values.url, values["default-database"] ?? false);
  const timeout = Number(values["connect-timeout"] ?? 10);
  if (!(timeout > 0 && timeout <= 3600)) throw new CliError("--connect-timeout takes a number of seconds, 1 to 3600", 2);

  console.log(`Migrating ${redact(url)}`);
  const sql = postgres(url.toString(), { max: 1, connect_timeout: timeout, onnotice: () => {} });
  try {
    const { applied } = await migrate(sql, { force: values.force ?? false });
    for (const name of applied) console.log(`  applied ${name}`);
    console.log(applied.length === 0 ? "Up to date; functions re-applied." : `Applied ${applied.length} migration(s); functions re-applied.`);
  } catch (error) {
    if (error instanceof SchemaVersionError) throw new CliError(`refused: ${error.message}`, 1);
    if ((error as { code?: unknown } | null)?.code === "CONNECT_TIMEOUT") {
      throw new CliError(`failed: no answer from ${url.host} within ${timeout} s (CONNECT_TIMEOUT): is it a Postgres ` +
        "server, reachable and not overloaded? (--connect-timeout sets the limit)", 1);
    }
    const message = describeDatabaseError(error);
    if (message === undefined) throw error;
    throw new CliError(`failed: ${message}`, 1);
  } finally {
    await sql.end({ timeout: 1 });
  }
}

function runBundle(args: string[]): void {
  const values = parse("bundle", args, { out: { type: "string" }, check: { type: "boolean" } });
  const text = bundle();
  if (values.check) {
    const path = values.out ? resolve(values.out) : packagedBundle;
    const current = existsSync(path) ? readFileSync(path, "utf8") : undefined;
    if (current === text) {
      console.log(`${path} is up to date.`);
      return;
    }
    throw new CliError(
      `${path} is ${current === undefined ? "missing" : "stale: it differs from what migrations/ and sql/ build"}. ` +
        "Run `npm run bundle` and commit the result.",
      1,
    );
  }
  if (!values.out) {
    process.stdout.write(text);
    return;
  }
  const path = resolve(values.out);
  writeFileSync(path, text);
  console.log(`Wrote ${path} (${Buffer.byteLength(text)} bytes).`);
}

async function runRelay(args: string[]): Promise<void> {
  const values = parse("relay", args, {
    url: { type: "string" }, redis: { type: "string" }, queues: { type: "string" }, "default-database": { type: "boolean" },
  });
  const url = databaseUrl(values.url, values["default-database"] ?? false);
  const redisText = values.redis ?? process.env.REDIS_URL;
  if (!redisText) throw new CliError("no Redis given: set REDIS_URL or pass --redis redis://…", 2);
  let redisUrl: URL;
  try {
    redisUrl = new URL(redisText);
  } catch {
    throw new CliError("the Redis URL is not a URL; expected redis://host:port", 2);
  }
  if (redisUrl.protocol !== "redis:" && redisUrl.protocol !== "rediss:") {
    throw new CliError(`the Redis URL must start with redis:// or rediss://, not ${redisUrl.protocol}//`, 2);
  }
  const queues = values.queues?.split(",").map((q) => q.trim()).filter((q) => q.length > 0);
  const { client } = await import("./client.js");
  const { relay } = await import("./relay/relay.js");
  const aiki = client({ url: url.toString(), max: 1, logger: { info: console.error, warn: console.error, error: console.error } });
  console.log(`Relaying wake-ups of ${queues ? queues.join(", ") : "every queue"} from ${redact(url)} to ${redact(redisUrl)}`);
  try {
    const handle = await relay({ client: aiki, redis: redisUrl.toString(), queues });
    console.log(`${handle.id} running; stop with SIGINT or SIGTERM`);
    await new Promise<void>((resolve) => {
      process.once("SIGINT", resolve);
      process.once("SIGTERM", resolve);
    });
    await handle.stop();
    console.log(`stopped: ${handle.stats.wakes} wake-ups and ${handle.stats.dues} due timers relayed, ${handle.stats.failed} lost while Redis was away`);
  } catch (error) {
    if (error instanceof Error && "code" in error && error.code === "AK003") throw new CliError(error.message, 2);
    // Redis unreachable at start (a supervisor restarts the relay), or Postgres refusing LISTEN.
    throw new CliError(`failed: ${describeDatabaseError(error) ?? String(error)}`, 1);
  } finally {
    await aiki.close();
  }
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...args] = argv;
  try {
    if ((command === "migrate" || command === "bundle" || command === "relay") && (args.includes("--help") || args.includes("-h"))) {
      process.stdout.write(`Usage: ${help[command]}`);
      return 0;
    }
    switch (command) {
      case "dashboard":
        return await runDashboard(args);
      case "migrate":
        await runMigrate(args);
        return 0;
      case "bundle":
        runBundle(args);
        return 0;
      case "relay":
        await runRelay(args);
        return 0;
      case "runs":
      case "workers":
      case "queues":
      case "purge":
        await operatorCommand({ databaseUrl, describeDatabaseError, fail: (m, c) => new CliError(m, c) }, command, args);
        return 0;
      case "schedules":
        await schedulesCommand({ databaseUrl, describeDatabaseError, fail: (m, c) => new CliError(m, c) }, args);
        return 0;
      case "replay":
        return await replayCommand({ databaseUrl, describeDatabaseError, fail: (m, c) => new CliError(m, c) }, args);
      case "help":
      case "--help":
      case "-h": {
        const topic = args[0];
        if (topic === undefined) process.stdout.write(usage);
        else if (topic === "migrate" || topic === "bundle" || topic === "relay") process.stdout.write(`Usage: ${help[topic]}`);
        else if (topic === "dashboard") process.stdout.write(`Usage: ${dashboardHelp}`);
        else if (topic === "replay") process.stdout.write(`Usage: ${replayHelp}`);
        else if (operatorHelp[args.join(" ")]) process.stdout.write(`Usage: ${operatorHelp[args.join(" ")]}`);
        else if (schedulesHelp[args.join(" ")]) process.stdout.write(`Usage: ${schedulesHelp[args.join(" ")]}`);
        else throw new CliError(`no help on ${JSON.stringify(args.join(" "))}: \`aiki help\` lists the commands`, 2);
        return 0;
      }
      case "--version":
      case "-v":
        console.log(`aiki ${packageVersion} (engine version ${packageSchemaVersion()})`);
        return 0;
      case undefined:
        process.stderr.write(usage);
        return 2;
      default:
        throw new CliError(`unknown command ${JSON.stringify(command)}\nRun \`aiki help\` for usage.`, 2);
    }
  } catch (error) {
    if (!(error instanceof CliError)) throw error;
    console.error(`${command === "migrate" || command === "bundle" || command === "relay" ? `aiki ${command}` : "aiki"}: ${error.message}`);
    return error.exitCode;
  }
}

process.exitCode = await main(process.argv.slice(2));
