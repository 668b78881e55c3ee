// The shape of every options object the SDK takes — task, workflow, workflow version, retry
// policy, worker, client, start and child start — checked once, where the object is given.
//
// A misspelt key is the silent failure this module exists for: `{ delayMs: 5000 }` in a retry
// policy would otherwise retry after the default delay, and a workflow defined with `exec`
// instead of `handler` would fail only when a run executes. So unknown keys, missing required
// keys and values of the wrong type throw DefinitionError at once, naming the key and the keys
// the object knows. Only shapes are checked here; value ranges (a negative delay, concurrency 0)
// stay InvalidInputError (AK003) where the value is used, as the engine raises them too.
import { DefinitionError } from "./errors.js";

interface Rule {
  /** Said in the message when the value fails `test`: "a string", "a function", … */
  expect: string;
  test(value: unknown): boolean;
  required?: boolean;
  /** Checks inside the value once `test` passed (a retry policy's own keys). */
  inner?(value: unknown, where: string): void;
}

type Rules = Record<string, Rule>;

const rule = (expect: string, test: (value: unknown) => boolean, more: Partial<Rule> = {}): Rule => ({ expect, test, ...more });
const required = (r: Rule): Rule => ({ ...r, required: true });

export const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
const string = rule("a string", (v) => typeof v === "string");
const number = rule("a number", (v) => typeof v === "number");
const boolean = rule("a boolean", (v) => typeof v === "boolean");
const func = rule("a function", (v) => typeof v === "function");
const strings = rule("an array of strings", (v) => Array.isArray(v) && v.every((s) => typeof s === "string"));
const date = rule("a Date", (v) => v instanceof Date);
const duration = rule("a duration (milliseconds or { days, hours, minutes, seconds, milliseconds })",
  (v) => typeof v === "number" || isObject(v));
const schema = rule("a schema with safeParse (e.g. a zod schema)", (v) => isObject(v) && typeof v.safeParse === "function");
const schemas = rule("an object { input?, output? } of schemas", isObject, {
  inner: (v, where) => check(where, v, { input: schema, output: schema }),
});
const retry = rule("a retry policy object", isObject, { inner: (v, where) => checkRetry(v as Record<string, unknown>, where) });
const logger = rule("false, or an object with info, warn and error functions", (v) =>
  v === false || (isObject(v) && ["info", "warn", "error"].every((level) => typeof v[level] === "function")));

/** Throws DefinitionError unless `value` is an object whose keys and value types match `rules`. */
export function check(what: string, value: unknown, rules: Rules): void {
  if (!isObject(value)) throw new DefinitionError("definition", `${what} must be an object, got ${describe(value)}`);
  const known = Object.keys(rules);
  const missing = known.filter((key) => rules[key]!.required && value[key] === undefined);
  for (const key of Object.keys(value)) {
    if (key in rules) continue;
    const guesses = similar(key, known);
    const hint = guesses.length > 0 ? guesses : missing;
    throw new DefinitionError("definition",
      `unknown ${what} \`${key}\`${hint.length > 0 ? `: did you mean ${hint.map((k) => `\`${k}\``).join(" or ")}?` : ""}` +
      ` (${what}s: ${known.join(", ")})`);
  }
  if (missing.length > 0) {
    throw new DefinitionError("definition", `${what} \`${missing[0]}\` is required (${what}s: ${known.join(", ")})`);
  }
  for (const [key, r] of Object.entries(rules)) {
    const v = value[key];
    if (v === undefined) continue;
    if (!r.test(v)) throw new DefinitionError("definition", `${what} \`${key}\` must be ${r.expect}, got ${describe(v)}`);
    r.inner?.(v, `${what.replace(/ option$/, "")} ${key} option`);
  }
}

function checkRetry(value: Record<string, unknown>, where: string): void {
  const types = ["never", "fixed", "exponential", "jittered"];
  if (!types.includes(value.type as string)) {
    throw new DefinitionError("definition", `${where} \`type\` must be one of ${types.map((t) => `"${t}"`).join(", ")}, got ${describe(value.type)}`);
  }
  check(where, value, value.type === "never"
    ? { type: string }
    : { type: string, maxAttempts: required(number), baseDelayMs: number, maxDelayMs: number, factor: number });
}

export const taskRules: Rules = {
  name: required(string), handler: required(func), retry, schema: schemas, timeout: duration, heartbeatTimeout: duration,
};
export const workflowRules: Rules = { name: required(string) };
export const versionRules: Rules = {
  handler: required(func),
  events: rule("an object of event() definitions", (v) =>
    isObject(v) && Object.values(v).every((e) => isObject(e) && "schema" in e)),
  schema: schemas,
  retry,
  queue: string,
};
export const workerRules: Rules = {
  workflows: required(rule("an array of workflow versions (workflow(…).v(…))", (v) =>
    Array.isArray(v) && v.every((w) => isObject(w) && typeof w.key === "string" && isObject(w.options)))),
  queues: strings,
  concurrency: number,
  leaseMs: number,
  heartbeatMs: number,
  pollMs: number,
  listen: boolean,
  inlineRetryMaxMs: number,
  shutdownTimeoutMs: number,
  id: string,
  relay: rule("a relay options object { url, blockMs?, claimIdleMs? }", isObject, {
    inner: (v, where) => check(where, v, { url: required(string), blockMs: number, claimIdleMs: number }),
  }),
  schedules: rule("an array of schedule(…) and removedSchedule(…)", (v) =>
    Array.isArray(v) && v.every((s) => isObject(s) && typeof s.name === "string" && typeof s.apply === "function")),
};
export const scheduleRules: Rules = {
  name: required(string),
  workflow: required(rule("a workflow version (workflow(…).v(…))", (v) =>
    isObject(v) && typeof v.key === "string" && typeof v.name === "string" && isObject(v.options))),
  cron: required(string),
  timezone: string,
  input: rule("any value", () => true),
  overlap: rule('"skip", "buffer_one", "allow" or "cancel_previous"', (v) =>
    typeof v === "string" && ["skip", "buffer_one", "allow", "cancel_previous"].includes(v)),
  catchup: duration,
  queue: string,
  priority: number,
};
export const relayRules: Rules = {
  client: required(rule("a client (client({ url }))", (v) => isObject(v) && typeof v.sql === "function")),
  redis: required(string),
  queues: strings,
  maxLen: number,
  checkMs: number,
  aliveMs: number,
};
const codec = rule("a codec, an object with encode and decode functions (e.g. aesGcmCodec(…))", (v) =>
  isObject(v) && typeof v.encode === "function" && typeof v.decode === "function");
export const clientRules: Rules = { url: string, max: number, logger, stallMs: number, codec };
export const startRules: Rules = {
  idempotencyKey: string,
  queue: string,
  priority: number,
  startAt: date,
  delay: duration,
  concurrencyKey: string,
  timeout: duration,
  maxLeaseExpiries: number,
};
export const childStartRules: Rules = { queue: string, priority: number, concurrencyKey: string, timeout: duration };
export const waitRules: Rules = { timeout: duration };
const rateLimit = rule("a rate limit { limit, per, perKey? }", isObject, {
  inner: (v, where) => check(where, v, { limit: required(number), per: required(duration), perKey: boolean }),
});
export const queueRules: Rules = { concurrencyLimit: number, keyConcurrencyLimit: number, rateLimit };

/** Known keys a misspelt `key` probably meant: one contains the other, or a few edits apart. */
function similar(key: string, known: string[]): string[] {
  const k = key.toLowerCase();
  return known.filter((candidate) => {
    const c = candidate.toLowerCase();
    return c.includes(k) || k.includes(c) || editDistance(k, c) <= Math.max(1, Math.floor(c.length / 4));
  }).slice(0, 2);
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(previous[j]! + 1, row[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = row;
  }
  return previous[b.length]!;
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "string") return `the string ${JSON.stringify(value.slice(0, 50))}`;
  if (typeof value === "number" || typeof value === "boolean") return `${typeof value} ${String(value)}`;
  return typeof value === "object" ? "an object" : `a ${typeof value}`;
}
export const testEnvRules: Rules = { url: string, logger, settleTimeout: duration, codec };
