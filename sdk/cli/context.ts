// What the operator commands (runs, workers, queues, purge) share: the helpers sdk/cli.ts hands
// them (URL checks, database error lines, its error class, so every command prints and exits
// alike), argument parsing, and one connection per command.
import postgres, { type Sql } from "postgres";
import { parseArgs, type ParseArgsConfig } from "node:util";
import { AikiError, RunNotFoundError } from "../errors.js";

/** Exit codes of the operator commands (also in `aiki --help` and the README). */
export const EXIT = { ok: 0, failed: 1, usage: 2, notFound: 3 } as const;

export interface CliContext {
  /** The database URL from --url or DATABASE_URL, checked (throws a usage error). */
  databaseUrl(given: string | undefined, allowDefaultDatabase: boolean): URL;
  /** One line for a failed database call, or undefined when it is not one. */
  describeDatabaseError(error: unknown): string | undefined;
  /** An error printed as one line by sdk/cli.ts, exiting with `exitCode`. */
  fail(message: string, exitCode: number): Error;
}

/** Options every operator command takes. */
export const commonOptions = {
  url: { type: "string" },
  json: { type: "boolean" },
  "connect-timeout": { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

type Parsed<T extends Options> = ReturnType<typeof parseArgs<{
  args: string[]; options: typeof commonOptions & T; strict: true; allowPositionals: true;
}>>;
type Options = NonNullable<ParseArgsConfig["options"]>;

/** Parses a command's arguments (its options and the common ones); a mistake is a usage error. */
export function parse<T extends Options>(
  ctx: CliContext, command: string, args: string[], options: T, positionals: number | [min: number, max: number],
): Parsed<T> {
  const [min, max] = typeof positionals === "number" ? [positionals, positionals] : positionals;
  let parsed: Parsed<T>;
  try {
    parsed = parseArgs({ args, options: { ...commonOptions, ...options }, strict: true, allowPositionals: true }) as Parsed<T>;
  } catch (error) {
    throw ctx.fail(`${command}: ${(error as Error).message}\nRun \`aiki ${command} --help\` for usage.`, EXIT.usage);
  }
  const given = parsed.positionals.length;
  if (!(parsed.values as { help?: boolean }).help && (given < min || given > max)) {
    throw ctx.fail(`${command}: expected ${max === 0 ? "no arguments" : min === max ? `${min} argument(s)` : `${min} to ${max} arguments`}, ` +
      `got ${given}\nRun \`aiki ${command} --help\` for usage.`, EXIT.usage);
  }
  return parsed;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** A run id as typed, or a usage error: the engine would only say "invalid input syntax". */
export function runId(ctx: CliContext, command: string, text: string): string {
  if (!UUID.test(text)) throw ctx.fail(`${command}: ${JSON.stringify(text)} is not a run id (a UUID)`, EXIT.usage);
  return text;
}

/**
 * Runs `work` with one connection to the database the options name, and turns what can go wrong
 * into one line: an unreachable server or a database error exits 1, a missing run 3.
 */
export async function withDatabase<T>(
  ctx: CliContext, command: string, values: { url?: string; "connect-timeout"?: string }, work: (sql: Sql) => Promise<T>,
): Promise<T> {
  const url = ctx.databaseUrl(values.url, false);
  const timeout = Number(values["connect-timeout"] ?? 10);
  if (!(timeout > 0 && timeout <= 3600)) throw ctx.fail(`${command}: --connect-timeout takes a number of seconds, 1 to 3600`, EXIT.usage);
  const sql = postgres(url.toString(), { max: 1, connect_timeout: timeout, onnotice: () => {} });
  try {
    return await work(sql);
  } catch (error) {
    if (error instanceof AikiError) {
      throw ctx.fail(`${command}: ${error.message} (${error.code})`, error instanceof RunNotFoundError ? EXIT.notFound : EXIT.failed);
    }
    if ((error as { code?: unknown } | null)?.code === "CONNECT_TIMEOUT") {
      throw ctx.fail(`${command}: no answer from ${url.host} within ${timeout} s (CONNECT_TIMEOUT)`, EXIT.failed);
    }
    const message = ctx.describeDatabaseError(error);
    if (message === undefined) throw error;
    throw ctx.fail(`${command}: ${message}`, EXIT.failed);
  } finally {
    await sql.end({ timeout: 1 });
  }
}

/** Prints a value as JSON for scripts (--json). */
export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}
