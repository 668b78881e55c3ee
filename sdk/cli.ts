// The `aiki` command line: install the engine into a database, or build the psql-only bundle.
//
//   aiki migrate [--url URL]    apply pending migrations and re-apply every function (migrate.ts)
//   aiki bundle [--check]       write aiki.sql (bundle.ts); --check fails when it is stale
//   aiki relay --redis URL      relay wake-ups into Redis Streams until SIGINT/SIGTERM (relay/)
//   aiki help                   usage
//
// Exit codes: 0 success, 1 the work failed (database error, stale bundle), 2 the command line
// or environment is wrong (unknown command or option, no database URL). Errors the user can fix
// are printed as one clear line, never as a stack trace; only a bug in the CLI itself shows one.
import postgres from "postgres";
import { readFileSync, writeFileSync, existsSync } from "node:fs";
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { bundle } from "./db/bundle.js";
import { migrate } from "./db/migrate.js";

const packageRoot = fileURLToPath(new URL("../", import.meta.url));
const defaultBundlePath = resolve(packageRoot, "aiki.sql");

const usage = `Usage: aiki <command> [options]

Commands:
  migrate            Install or upgrade the engine: apply pending migrations in order, then
                     re-apply every function, in one transaction under an advisory lock.
    --url <url>      Postgres connection URL (default: the DATABASE_URL environment variable)

  bundle             Write the whole engine as one psql script, for installs without Node:
                     psql -v ON_ERROR_STOP=1 -1 -f aiki.sql
    --out <file>     Where to write it (default: aiki.sql in the package root)
    --check          Write nothing; exit 1 if the file differs from what bundle would write

  relay              Relay the engine's wake-ups into one Redis Stream per queue, for workers
                     started with worker({ relay: { url } }). Runs until SIGINT or SIGTERM.
                     Several relays may run at once. Needs the redis package.
    --url <url>      Postgres connection URL (default: the DATABASE_URL environment variable)
    --redis <url>    Redis URL (default: the REDIS_URL environment variable)
    --queues <list>  Comma-separated queues to relay (default: every queue)

  help               Show this help

Exit codes: 0 success, 1 failure, 2 usage error (unknown command or option, no database URL).
`;

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

function parse<T extends Options>(args: string[], options: T) {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: false }).values;
  } catch (error) {
    throw new CliError(`${(error as Error).message}\nRun \`aiki help\` for usage.`, 2);
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

/** The database URL from --url or DATABASE_URL, checked. */
function databaseUrl(given: string | undefined): URL {
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
  return url;
}

async function runMigrate(args: string[]): Promise<void> {
  const values = parse(args, { url: { type: "string" } });
  const url = databaseUrl(values.url);

  console.log(`Migrating ${redact(url)}`);
  const sql = postgres(url.toString(), { max: 1, connect_timeout: 10, onnotice: () => {} });
  try {
    const { applied } = await migrate(sql);
    for (const name of applied) console.log(`  applied ${name}`);
    console.log(applied.length === 0 ? "Up to date; functions re-applied." : `Applied ${applied.length} migration(s); functions re-applied.`);
  } catch (error) {
    const message = describeDatabaseError(error);
    if (message === undefined) throw error;
    throw new CliError(`failed: ${message}`, 1);
  } finally {
    await sql.end({ timeout: 5 });
  }
}

function runBundle(args: string[]): void {
  const values = parse(args, { out: { type: "string" }, check: { type: "boolean" } });
  const path = values.out ? resolve(values.out) : defaultBundlePath;
  const text = bundle();
  if (values.check) {
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
  writeFileSync(path, text);
  console.log(`Wrote ${path} (${Buffer.byteLength(text)} bytes).`);
}

async function runRelay(args: string[]): Promise<void> {
  const values = parse(args, { url: { type: "string" }, redis: { type: "string" }, queues: { type: "string" } });
  const url = databaseUrl(values.url);
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
  const aiki = client({ url: url.toString(), max: 1, log: (line) => console.error(line) });
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
    switch (command) {
      case "migrate":
        await runMigrate(args);
        return 0;
      case "bundle":
        runBundle(args);
        return 0;
      case "relay":
        await runRelay(args);
        return 0;
      case "help":
      case "--help":
      case "-h":
        process.stdout.write(usage);
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
