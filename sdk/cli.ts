// The `aiki` command line: install the engine into a database, or build the psql-only bundle.
//
//   aiki migrate [--url URL]    apply pending migrations and re-apply every function (migrate.ts)
//   aiki bundle [--check]       write aiki.sql (bundle.ts); --check fails when it is stale
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

async function runMigrate(args: string[]): Promise<void> {
  const values = parse(args, { url: { type: "string" } });
  const text = values.url ?? process.env.DATABASE_URL;
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
    console.error(`${command === "migrate" || command === "bundle" ? `aiki ${command}` : "aiki"}: ${error.message}`);
    return error.exitCode;
  }
}

process.exitCode = await main(process.argv.slice(2));
