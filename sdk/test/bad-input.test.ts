// Bad input, through the SDK and the SQL API: one test per row. Every row asserts the error a user
// gets (its class and code: an engine SQLSTATE, a Postgres SQLSTATE, or an SDK error class) and
// its message, and that nothing was written: a digest of every row of aiki.runs, steps, events
// and queues is the same before and after. sql/test/validation.test.ts covers each SQL function's
// argument checks one by one; this table adds what reaches the engine through the SDK (durations,
// schemas, payloads that are not JSON, idempotency, handles), SQL injection in every text
// parameter, unknown workflow versions, and calls made with another role's privileges.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import postgres, { type Sql } from "postgres";
import { z } from "zod";
import {
  DataError, DefinitionError, IdempotencyConflictError, InvalidInputError, InvalidTransitionError, PayloadTooLargeError,
  RunNotFoundError, SchemaValidationError, client, event, relay, task, worker, workflow, type Client,
} from "../index.js";
import * as engine from "../engine.js";
import { quiet } from "../testing/database.js";
import { environment, untilStatus, type Env } from "./support.js";

let env: Env;
const suffix = randomBytes(4).toString("hex");
const logins = { client: `aiki_bi_client_${suffix}`, worker: `aiki_bi_worker_${suffix}` };
let asClient: Client;
let raw: { client: Sql; worker: Sql };

const injection = "x'); drop table aiki.runs; --";
const big = "x".repeat(1_100_000);
const nobody = "00000000-0000-4000-8000-000000000000";

const echo = task({ name: "echo", handler: (n: number) => n });
const order = workflow({ name: `bad-order-${suffix}` }).v("1", {
  events: { go: event(z.object({ eta: z.number().int().positive() })), free: event() },
  schema: { input: z.object({ id: z.string() }) },
  async handler(run, input: { id: string }) {
    const go = await run.events.go.wait();
    await echo.start(run, go.timeout ? 0 : go.data.eta);
    return { id: input.id };
  },
});
const orderV2 = workflow({ name: order.name }).v("2", { handler: async () => null });
const plain = workflow({ name: `bad-plain-${suffix}` }).v("1", { handler: async (_run, input: unknown) => input });

/** The world every row runs against: a completed run and a run waiting for its `go` event. */
const world = { completed: "", waiting: "" };

before(async () => {
  env = await environment();
  const w = await env.spawn({ workflows: [order] });
  const done = await order.start(env.aiki, { id: "done" }, { idempotencyKey: "done" });
  await done.events.go.send({ eta: 1 });
  await untilStatus(env.aiki, done.id, "completed");
  const waiting = await order.start(env.aiki, { id: "waiting" }, { idempotencyKey: "waiting" });
  await untilStatus(env.aiki, waiting.id, "waiting");
  await w.stop({ timeoutMs: 1_000 });
  world.completed = done.id;
  world.waiting = waiting.id;

  for (const [role, login] of Object.entries(logins)) {
    await env.sql.unsafe(`create role ${login} login password 'pw-${suffix}' in role aiki_${role}`);
  }
  const as = (login: string) => {
    const url = new URL(env.url);
    url.username = login;
    url.password = `pw-${suffix}`;
    return url.toString();
  };
  asClient = client({ url: as(logins.client), max: 2 });
  raw = { client: postgres(as(logins.client), { max: 1, ...quiet }), worker: postgres(as(logins.worker), { max: 1, ...quiet }) };
});

after(async () => {
  await asClient?.close();
  await raw?.client.end({ timeout: 1 });
  await raw?.worker.end({ timeout: 1 });
  await env.sql`select pg_terminate_backend(pid) from pg_stat_activity where usename in ${env.sql(Object.values(logins))}`;
  for (const login of Object.values(logins)) await env.sql.unsafe(`drop role if exists ${login}`);
  await env.close();
});

/** Every engine row, as one digest: an INSERT, UPDATE or DELETE anywhere changes it. */
async function digest(): Promise<string> {
  const [row] = await env.sql<{ d: string }[]>`
    select md5(concat_ws('|',
      (select string_agg(r::text, ',' order by r.id) from aiki.runs r),
      (select string_agg(s::text, ',' order by s.run_id, s.step_key) from aiki.steps s),
      (select string_agg(e::text, ',' order by e.id) from aiki.events e),
      (select string_agg(q::text, ',' order by q.name) from aiki.queues q))) as d`;
  return row!.d;
}

type ErrorClass = new (...args: any[]) => Error;

interface Case {
  name: string;
  /** The error's class, when the SDK has one for it. */
  error?: ErrorClass;
  /** `code` of the error: an engine SQLSTATE (AK...), a Postgres SQLSTATE, or the SDK's code. */
  code: string;
  message: RegExp;
  act(): unknown;
}

function table(title: string, cases: Case[]) {
  describe(title, () => {
    for (const c of cases) {
      it(`${c.name} → ${c.error?.name ?? ""}${c.error ? " " : ""}${c.code}`, async () => {
        const before = await digest();
        let error: unknown;
        try {
          await c.act();
        } catch (e) {
          error = e;
        }
        assert.ok(error, "expected an error, but the call succeeded");
        if (c.error) assert.ok(error instanceof c.error, `expected ${c.error.name}, got ${String((error as Error)?.stack ?? error)}`);
        assert.equal((error as { code?: string }).code, c.code, `code of ${String(error)}`);
        assert.match((error as Error).message, c.message);
        assert.equal(await digest(), before, "a rejected call must write nothing");
      });
    }
  });
}

const start = (input: unknown, options: Parameters<typeof plain.start>[2] = {}) => plain.start(env.aiki, input, options);
const named = (name: string, version = "1") => workflow({ name }).v(version, { handler: async () => null });
const circular: Record<string, unknown> = { a: 1 };
circular.self = circular;

table("starting a workflow", [
  { name: "empty workflow name", error: InvalidInputError, code: "AK003", message: /^invalid workflow name ''$/, act: () => named("").start(env.aiki, null) },
  { name: "workflow name of 129 characters", error: InvalidInputError, code: "AK003", message: /^invalid workflow name 'w{129}'$/, act: () => named("w".repeat(129)).start(env.aiki, null) },
  { name: "SQL injection as the workflow name", error: InvalidInputError, code: "AK003", message: /^invalid workflow name 'x''\); drop table aiki\.runs; --'$/, act: () => named(injection).start(env.aiki, null) },
  { name: "workflow name with '@'", error: InvalidInputError, code: "AK003", message: /^invalid workflow name 'a@b'$/, act: () => named("a@b").start(env.aiki, null) },
  { name: "workflow name with an emoji", error: InvalidInputError, code: "AK003", message: /^invalid workflow name 'order-🚀'$/, act: () => named("order-🚀").start(env.aiki, null) },
  { name: "empty version", error: InvalidInputError, code: "AK003", message: /^invalid version ''$/, act: () => named("ok", "").start(env.aiki, null) },
  { name: "version of 65 characters", error: InvalidInputError, code: "AK003", message: /^invalid version '9{65}'$/, act: () => named("ok", "9".repeat(65)).start(env.aiki, null) },
  { name: "SQL injection as the version", error: InvalidInputError, code: "AK003", message: /^invalid version '1''; delete from aiki\.runs; --'$/, act: () => named("ok", "1'; delete from aiki.runs; --").start(env.aiki, null) },
  { name: "SQL injection as the queue", error: InvalidInputError, code: "AK003", message: /^invalid queue name 'x''\); drop table aiki\.runs; --'$/, act: () => start(null, { queue: injection }) },
  { name: "input over 1 MiB", error: PayloadTooLargeError, code: "AK007", message: /^workflow input is \d+ bytes, over the limit of 1048576 bytes$/, act: () => start({ big }) },
  { name: "input with a BigInt (not JSON)", error: InvalidInputError, code: "AK003", message: /^workflow input is not JSON: a bigint at \$\.n$/, act: () => start({ n: 10n }) },
  { name: "circular input (not JSON)", error: InvalidInputError, code: "AK003", message: /^workflow input is not JSON: a circular reference at \$\.self$/, act: () => start(circular) },
  { name: "input with NaN (not JSON)", error: InvalidInputError, code: "AK003", message: /^workflow input is not JSON: NaN at \$\.list\[1\]$/, act: () => start({ list: [1, NaN] }) },
  { name: "input with Infinity (not JSON)", error: InvalidInputError, code: "AK003", message: /^workflow input is not JSON: Infinity at \$$/, act: () => start(Infinity) },
  { name: "input with a function (not JSON)", error: InvalidInputError, code: "AK003", message: /^workflow input is not JSON: a function at \$\.f$/, act: () => start({ f: () => 1 }) },
  { name: "input with a NUL character", error: InvalidInputError, code: "AK003", message: /^workflow input is not JSON: a NUL character \(\\u0000\) at \$\.s$/, act: () => start({ s: "a\u0000" }) },
  { name: "input with a lone surrogate", error: InvalidInputError, code: "AK003", message: /^workflow input is not JSON: a lone surrogate \(\\udc00\) at \$\[0\]$/, act: () => start(["\udc00"]) },
  { name: "input with a NUL in a key", error: InvalidInputError, code: "AK003", message: /^workflow input is not JSON: a NUL character \(\\u0000\) in a key at \$$/, act: () => start({ "k\u0000": 1 }) },
  { name: "input nested 5,000 deep", error: InvalidInputError, code: "AK003", message: /^workflow input is not JSON: nesting deeper than 1000 levels at \$(\.a){66}/, act: () => start(Array.from({ length: 5_000 }).reduce((inner) => ({ a: inner }), 1)) },
  { name: "input violating the workflow's zod schema", error: SchemaValidationError, code: "schema_validation", message: /^input of workflow bad-order-\w+@1 does not match its schema: /, act: () => order.start(env.aiki, { id: 7 } as never) },
  { name: "idempotency key reused with another input", error: IdempotencyConflictError, code: "AK004", message: /^idempotency key 'done' of workflow bad-order-\w+ already started run [0-9a-f-]{36} with another input$/, act: () => order.start(env.aiki, { id: "other" }, { idempotencyKey: "done" }) },
  { name: "idempotency key reused with another version", error: IdempotencyConflictError, code: "AK004", message: /already started run [0-9a-f-]{36} with another version$/, act: () => orderV2.start(env.aiki, null, { idempotencyKey: "done" }) },
  { name: "idempotency key of 257 characters", error: InvalidInputError, code: "AK003", message: /^invalid idempotency key 'k{200}'$/, act: () => start(null, { idempotencyKey: "k".repeat(257) }) },
  { name: "idempotency key with a newline", error: InvalidInputError, code: "AK003", message: /^invalid idempotency key 'a\nb'$/, act: () => start(null, { idempotencyKey: "a\nb" }) },
  { name: "concurrency key with a NUL-like control character", error: InvalidInputError, code: "AK003", message: /^invalid concurrency key 'a\x07b'$/, act: () => start(null, { concurrencyKey: "a\x07b" }) },
  { name: "negative delay", error: InvalidInputError, code: "AK003", message: /^invalid duration -1: must be a finite, non-negative time \(at most 2\^53 ms\)$/, act: () => start(null, { delay: -1 }) },
  { name: "NaN delay", error: InvalidInputError, code: "AK003", message: /^invalid duration NaN: must be a finite/, act: () => start(null, { delay: NaN }) },
  { name: "infinite delay", error: InvalidInputError, code: "AK003", message: /^invalid duration Infinity: must be a finite/, act: () => start(null, { delay: Infinity }) },
  { name: "delay in an unknown unit", error: InvalidInputError, code: "AK003", message: /^invalid duration unit "weeks"$/, act: () => start(null, { delay: { weeks: 1 } as never }) },
  { name: "delay with a string amount", error: InvalidInputError, code: "AK003", message: /^invalid duration days: 1$/, act: () => start(null, { delay: { days: "1" } as never }) },
  { name: "delay of 200 years", error: InvalidInputError, code: "AK003", message: /^invalid start delay 6307200000000 ms$/, act: () => start(null, { delay: { days: 73_000 } }) },
  { name: "absurd delay (1e300 ms)", error: InvalidInputError, code: "AK003", message: /^invalid duration 1e\+300: must be a finite, non-negative time \(at most 2\^53 ms\)$/, act: () => start(null, { delay: 1e300 }) },
  { name: "negative run timeout", error: InvalidInputError, code: "AK003", message: /^invalid duration \{"seconds":-5\}/, act: () => start(null, { timeout: { seconds: -5 } }) },
  { name: "fractional priority", error: InvalidInputError, code: "AK003", message: /^invalid priority 1\.5: use an integer between -1000000 and 1000000$/, act: () => start(null, { priority: 1.5 }) },
  { name: "priority beyond integer range", error: InvalidInputError, code: "AK003", message: /^invalid priority 3000000000/, act: () => start(null, { priority: 3e9 }) },
  { name: "start time that is not a date", error: InvalidInputError, code: "AK003", message: /^invalid start time Invalid Date$/, act: () => start(null, { startAt: new Date("soon") }) },
]);

table("events, handles and operator calls", [
  { name: "an event to a run that does not exist", error: RunNotFoundError, code: "AK002", message: /^run 00000000-0000-4000-8000-000000000000 not found$/, act: () => order.handle(env.aiki, nobody).events.go.send({ eta: 1 }) },
  { name: "an event to a completed run", error: InvalidTransitionError, code: "AK005", message: /^run [0-9a-f-]{36} is completed and takes no more events$/, act: () => order.handle(env.aiki, world.completed).events.go.send({ eta: 1 }) },
  { name: "an event violating its zod schema", error: SchemaValidationError, code: "schema_validation", message: /^event go does not match its schema: /, act: () => order.handle(env.aiki, world.waiting).events.go.send({ eta: -3 }) },
  { name: "event data over 1 MiB", error: PayloadTooLargeError, code: "AK007", message: /^event data is \d+ bytes, over the limit of 1048576 bytes$/, act: () => order.handle(env.aiki, world.waiting).events.free.send(big) },
  { name: "event data with a BigInt (not JSON)", error: InvalidInputError, code: "AK003", message: /^event data is not JSON: a bigint at \$$/, act: () => order.handle(env.aiki, world.waiting).events.free.send(1n) },
  { name: "event idempotency key of 257 characters", error: InvalidInputError, code: "AK003", message: /^invalid idempotency key 'k{200}'$/, act: () => order.handle(env.aiki, world.waiting).events.free.send(1, { idempotencyKey: "k".repeat(257) }) },
  { name: "SQL injection as the event name", error: InvalidInputError, code: "AK003", message: /^invalid event name 'x''\); drop table aiki\.runs; --'$/, act: () => engine.sendEvent(env.aiki.sql, world.waiting, injection, null) },
  { name: "event data that is not JSON text (SQL)", code: "22P02", message: /^invalid input syntax for type json$/, act: () => env.sql`select aiki.send_event(${world.waiting}::uuid, 'free', '{not json'::jsonb)` },
  { name: "a run id that is not a UUID, past the SDK's check: a Postgres data error", error: DataError, code: "22P02", message: /^invalid input syntax for type uuid: "x"$/, act: () => engine.getRun(env.aiki.sql, "x") },
  { name: "a handle on a run id that is not a UUID", error: InvalidInputError, code: "AK003", message: /^invalid run id 'x''\); drop table aiki\.runs; --': expected a UUID$/, act: () => order.handle(env.aiki, injection).get() },
  { name: "waiting with a negative timeout", error: InvalidInputError, code: "AK003", message: /^invalid duration -1/, act: () => order.handle(env.aiki, world.waiting).waitForStatus("completed", { timeout: -1 }) },
  { name: "cancelling a completed run", error: InvalidTransitionError, code: "AK005", message: /^run [0-9a-f-]{36} is already completed and cannot be cancelled$/, act: () => order.handle(env.aiki, world.completed).cancel() },
  { name: "cancelling a run that does not exist", error: RunNotFoundError, code: "AK002", message: /^run 00000000-0000-4000-8000-000000000000 not found$/, act: () => order.handle(env.aiki, nobody).cancel(injection) },
  { name: "resuming a run that is not paused", error: InvalidTransitionError, code: "AK005", message: /^run [0-9a-f-]{36} is waiting, not paused; only a paused run can be resumed$/, act: () => order.handle(env.aiki, world.waiting).resume() },
  { name: "an unknown idempotency key", error: RunNotFoundError, code: "AK002", message: /^no run of workflow 'bad-order-\w+' has idempotency key 'x''\); drop table aiki\.runs; --'$/, act: () => order.handleByIdempotencyKey(env.aiki, injection) },
  { name: "listing with limit 0", error: InvalidInputError, code: "AK003", message: /^invalid limit 0$/, act: () => env.aiki.listRuns({ limit: 0 }) },
  { name: "SQL injection as a status filter (SQL)", code: "22P02", message: /^invalid input value for enum aiki\.run_status: "x'\); drop table aiki\.runs; --"$/, act: () => env.aiki.listRuns({ status: injection as never }) },
]);

table("worker definitions", [
  { name: "two handlers for one workflow version", error: DefinitionError, code: "definition", message: /^workflow bad-order-\w+@1 is registered twice; a worker runs one handler per version$/, act: () => worker({ workflows: [order, workflow({ name: order.name }).v("1", { handler: async () => 1 })] }) },
  { name: "a worker without workflows", error: DefinitionError, code: "definition", message: /^a worker needs at least one workflow version$/, act: () => worker({ workflows: [] }) },
  { name: "worker concurrency 0", error: InvalidInputError, code: "AK003", message: /^invalid worker concurrency 0: use 1-1000$/, act: () => worker({ workflows: [order], concurrency: 0 }) },
  { name: "worker concurrency NaN", error: InvalidInputError, code: "AK003", message: /^invalid worker concurrency NaN: use 1-1000$/, act: () => worker({ workflows: [order], concurrency: NaN }) },
  { name: "a claim with a lease of 50 ms", error: InvalidInputError, code: "AK003", message: /^invalid lease 50 ms$/, act: () => engine.claim(env.aiki.sql, "w", [order.key], ["default"], 1, 50) },
  { name: "SQL injection as the claimed queue's worker id, with a tab", error: InvalidInputError, code: "AK003", message: /^invalid worker id 'x\t''; drop table aiki\.runs; --'$/, act: () => engine.claim(env.aiki.sql, "x\t'; drop table aiki.runs; --", null, ["default"], 1, 1000) },
]);

// Options objects: a misspelt or missing key, or a value of the wrong type, fails where the
// object is given (definition time), naming the key and the keys the object knows.
const definition = { error: DefinitionError, code: "definition" } as const;
const policy = (retry: unknown) => task({ name: "t", handler: () => 1, retry: retry as never });
table("options objects", [
  { name: "a retry policy with delayMs for baseDelayMs", ...definition, message: /^unknown task retry option `delayMs`: did you mean `baseDelayMs` or `maxDelayMs`\? \(task retry options: type, maxAttempts, baseDelayMs, maxDelayMs, factor\)$/, act: () => policy({ type: "fixed", maxAttempts: 3, delayMs: 5000 }) },
  { name: "a retry policy of an unknown type", ...definition, message: /^task retry option `type` must be one of "never", "fixed", "exponential", "jittered", got the string "linear"$/, act: () => policy({ type: "linear", maxAttempts: 3 }) },
  { name: "a retry policy without maxAttempts", ...definition, message: /^task retry option `maxAttempts` is required/, act: () => policy({ type: "exponential" }) },
  { name: "a retry policy with maxAttempts as a string", ...definition, message: /^task retry option `maxAttempts` must be a number, got the string "3"$/, act: () => policy({ type: "fixed", maxAttempts: "3" }) },
  { name: "a task defined with exec instead of handler", ...definition, message: /^unknown task option `exec`: did you mean `handler`\? \(task options: name, handler, retry, schema, timeout, heartbeatTimeout\)$/, act: () => task({ name: "t", exec: () => 1 } as never) },
  { name: "a task without a name", ...definition, message: /^task option `name` is required \(task options: name, handler, retry, schema, timeout, heartbeatTimeout\)$/, act: () => task({ handler: () => 1 } as never) },
  { name: "a task whose schema is not a schema", ...definition, message: /^task schema option `input` must be a schema with safeParse \(e\.g\. a zod schema\), got an object$/, act: () => task({ name: "t", handler: () => 1, schema: { input: {} as never } }) },
  { name: "a workflow version defined with exec instead of handler", ...definition, message: /^unknown workflow version option `exec`: did you mean `handler`\? \(workflow version options: handler, events, schema, retry, queue\)$/, act: () => workflow({ name: "w" }).v("1", { exec: async () => null } as never) },
  { name: "a workflow version with a retry policy's typo", ...definition, message: /^unknown workflow version retry option `maxAttempt`: did you mean `maxAttempts`\?/, act: () => workflow({ name: "w" }).v("1", { handler: async () => null, retry: { type: "fixed", maxAttempt: 2 } as never }) },
  { name: "a workflow version with a numeric version", ...definition, message: /^workflow w: \.v\(version, options\) takes the version as a string, got number$/, act: () => workflow({ name: "w" }).v(1 as never, { handler: async () => null }) },
  { name: "a workflow with title for name", ...definition, message: /^unknown workflow option `title`: did you mean `name`\? \(workflow options: name\)$/, act: () => workflow({ title: "w" } as never) },
  { name: "an event whose schema has no safeParse", ...definition, message: /^event\(schema\) takes a schema with safeParse/, act: () => event({ parse: () => 1 } as never) },
  { name: "a worker with concurency (typo)", ...definition, message: /^unknown worker option `concurency`: did you mean `concurrency`\? \(worker options: workflows, queues, concurrency, leaseMs, heartbeatMs, pollMs, listen, inlineRetryMaxMs, shutdownTimeoutMs, id, relay, schedules\)$/, act: () => worker({ workflows: [order], concurency: 5 } as never) },
  { name: "a worker relay with redis for url", ...definition, message: /^unknown worker relay option `redis`: did you mean `url`\? \(worker relay options: url, blockMs, claimIdleMs\)$/, act: () => worker({ workflows: [order], relay: { redis: "redis://x" } } as never) },
  { name: "a relay with url for redis", ...definition, message: /^unknown relay option `url`/, act: () => relay({ url: "redis://x" } as never) },
  { name: "a worker with queues as a string", ...definition, message: /^worker option `queues` must be an array of strings, got the string "default"$/, act: () => worker({ workflows: [order], queues: "default" as never }) },
  { name: "a worker given workflow() instead of a version", ...definition, message: /^worker option `workflows` must be an array of workflow versions/, act: () => worker({ workflows: [workflow({ name: "w" }) as never] }) },
  { name: "a client with a logger that has no warn", ...definition, message: /^client option `logger` must be false, or an object with info, warn and error functions, got an object$/, act: () => client({ url: env.url, logger: { info() {}, error() {} } as never }) },
  { name: "a client with database for url", ...definition, message: /^unknown client option `database`/, act: () => client({ database: env.url } as never) },
  { name: "a client with an http URL", error: InvalidInputError, code: "AK003", message: /^the database URL must start with postgres:\/\/ or postgresql:\/\/, not http:\/\/$/, act: () => client({ url: "http://localhost:9850" }) },
  { name: "a client with a malformed password", error: InvalidInputError, code: "AK003", message: /^the database URL is malformed \(percent-encode/, act: () => client({ url: "postgres://me:pa%ss@localhost/app" }) },
  { name: "a start with idempotency_key (snake case)", ...definition, message: /^unknown start option `idempotency_key`: did you mean `idempotencyKey`\?/, act: () => start(null, { idempotency_key: "k" } as never) },
  { name: "a start with startAt as a string", ...definition, message: /^start option `startAt` must be a Date, got the string "2030-01-01"$/, act: () => start(null, { startAt: "2030-01-01" as never }) },
  { name: "a wait with timeoutMs", ...definition, message: /^unknown wait option `timeoutMs`: did you mean `timeout`\?/, act: () => order.handle(env.aiki, world.waiting).waitForStatus("completed", { timeoutMs: 5 } as never) },
]);

table("another role's privileges", [
  { name: "aiki_client claims", code: "42501", message: /^permission denied for function claim$/, act: () => engine.claim(asClient.sql, "intruder", null, ["default"], 1, 1000) },
  { name: "aiki_client completes a run", code: "42501", message: /^permission denied for function complete_run$/, act: () => engine.completeRun(asClient.sql, world.waiting, nobody, "stolen") },
  { name: "aiki_client reads the runs table", code: "42501", message: /^permission denied for table runs$/, act: () => raw.client`select * from aiki.runs` },
  { name: "aiki_client writes the events table", code: "42501", message: /^permission denied for table events$/, act: () => raw.client`insert into aiki.events (run_id, created_at, name) values (${world.waiting}::uuid, now(), 'go')` },
  { name: "aiki_worker purges runs", code: "42501", message: /^permission denied for function purge_runs$/, act: () => raw.worker`select aiki.purge_runs(now())` },
  { name: "aiki_worker sets a queue's limits", code: "42501", message: /^permission denied for function set_queue$/, act: () => raw.worker`select aiki.set_queue('default', 1)` },
  { name: "aiki_worker rewrites a journal entry", code: "42501", message: /^permission denied for table steps$/, act: () => raw.worker`update aiki.steps set output = '"forged"'` },
]);

describe("unknown workflow versions", () => {
  it("a run of a version no worker registers is never claimed, and claiming it changes nothing", async () => {
    const unknown = workflow({ name: order.name }).v("9.9.9", { handler: async () => null });
    const handle = await unknown.start(env.aiki, null);
    const before = await digest();
    const claimed = await engine.claim(env.aiki.sql, "w-known-only", [order.key], ["default"], 10, 1000);
    assert.deepEqual(claimed.runs, []);
    assert.equal(await digest(), before, "a claim that finds nothing writes nothing");
    // A real worker of version 1 polls past it too.
    const w = await env.spawn({ workflows: [order], pollMs: 50 });
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.ok(w.stats.claimed === 0, "the v1 worker claimed nothing");
    await w.stop({ timeoutMs: 100 });
    assert.equal((await handle.get()).status, "pending");
    await handle.cancel("cleanup");
  });
});

describe("SQL injection in free-text parameters", () => {
  // Keys and reasons may hold any printable text: an injection string is data, stored verbatim.
  it("is stored verbatim as idempotency key, concurrency key, event key and cancel reason", async () => {
    const handle = await plain.start(env.aiki, injection, { idempotencyKey: injection, concurrencyKey: injection, delay: 60_000 });
    await order.handle(env.aiki, world.waiting).events.free.send(injection, { idempotencyKey: injection });
    await handle.cancel(injection);
    const [run] = await env.sql`select idempotency_key, concurrency_key, input, error->>'message' as reason from aiki.runs where id = ${handle.id}::uuid`;
    assert.deepEqual({ ...run }, { idempotency_key: injection, concurrency_key: injection, input: injection, reason: injection });
    const [ev] = await env.sql`select idempotency_key, data from aiki.events where run_id = ${world.waiting}::uuid and name = 'free'`;
    assert.deepEqual({ ...ev }, { idempotency_key: injection, data: injection });
    const [tables] = await env.sql`select count(*)::int as n from pg_tables where schemaname = 'aiki'`;
    assert.ok(tables!.n >= 5, "every engine table is still there");
  });
});

// Data sent from SQL bypasses the SDK's schema checks on start and send; the worker checks what
// it receives, fails the run or the wait with SchemaValidationError, and never hands the
// handler data its schema forbids.
describe("data past the SDK's schemas, sent from SQL, is refused on receipt", () => {
  it("a run input its workflow's schema forbids fails the run for good; the handler never runs", async () => {
    let ran = 0;
    const wf = workflow({ name: `schema-in-${suffix}` }).v("1", {
      schema: { input: z.object({ id: z.string() }) },
      retry: { type: "fixed", maxAttempts: 3, baseDelayMs: 0 },
      async handler(_run, input: { id: string }) {
        ran++;
        return input.id;
      },
    });
    const w = await env.spawn({ workflows: [wf] });
    const [row] = await raw.client`select run_id from aiki.start_workflow(${wf.name}, '1', '{"id": 7}')`;
    const failed = await untilStatus(env.aiki, row!.run_id, "failed");
    await w.stop({ timeoutMs: 1_000 });
    assert.equal(ran, 0, "the handler never saw the input");
    assert.equal((failed.error as { name: string }).name, "SchemaValidationError");
    assert.match((failed.error as { message: string }).message, new RegExp(`^input of workflow ${wf.key} \\(run ${row!.run_id}\\) does not match its schema: `));
    assert.equal(failed.attempt, 1, "not retried: the input cannot change");
  });

  it("event data its schema forbids fails the wait; the handler never sees the data", async () => {
    const seen: unknown[] = [];
    const wf = workflow({ name: `schema-event-${suffix}` }).v("1", {
      events: { go: event(z.object({ eta: z.number() })) },
      async handler(run) {
        try {
          const got = await run.events.go.wait();
          seen.push(got);
          return "handed";
        } catch (error) {
          return `${(error as Error).name}: ${(error as Error).message}`;
        }
      },
    });
    const w = await env.spawn({ workflows: [wf] });
    const handle = await wf.start(env.aiki, null);
    await untilStatus(env.aiki, handle.id, "waiting");
    await raw.client`select aiki.send_event(${handle.id}::uuid, 'go', '{"eta": "soon"}')`;
    const output = await handle.result({ timeout: 10_000 });
    await w.stop({ timeoutMs: 1_000 });
    assert.deepEqual(seen, []);
    assert.match(String(output), new RegExp(`^SchemaValidationError: event go received by run ${handle.id} does not match its schema: `));
  });

  it("a typed child's result its schema forbids fails the parent's wait", async () => {
    const childName = `schema-child-${suffix}`;
    // The parent's worker knows the child as typed; the child's own worker (other code) returns a string.
    const typedChild = workflow({ name: childName }).v("1", { schema: { output: z.number() }, handler: async () => 1 });
    const untypedChild = workflow({ name: childName }).v("1", { handler: async () => "not a number" as unknown as number });
    const parent = workflow({ name: `schema-parent-${suffix}` }).v("1", {
      async handler(run) {
        const child = await typedChild.startAsChild(run, null, { queue: `kids-${suffix}` });
        try {
          return await child.waitForStatus("completed");
        } catch (error) {
          return `${(error as Error).name}: ${(error as Error).message}`;
        }
      },
    });
    const parents = await env.spawn({ workflows: [parent, typedChild] });
    const children = await env.spawn({ workflows: [untypedChild], queues: [`kids-${suffix}`] }, env.client());
    const handle = await parent.start(env.aiki, null);
    const output = await handle.result({ timeout: 10_000 });
    await parents.stop({ timeoutMs: 1_000 });
    await children.stop({ timeoutMs: 1_000 });
    assert.match(String(output), /^SchemaValidationError: output of child run [0-9a-f-]{36} \(workflow schema-child-\w+\) does not match its schema: /);
  });
});

// Item: a value Postgres cannot store is a data error, not a lost connection. Each of five such
// values, returned by a task, thrown by a task, or returned by a workflow, fails its step or run
// once, at once, with an error that says which step and what was wrong; the task never runs again
// (no retry policy here), and nothing is retried as connection trouble.
describe("values Postgres cannot store, through a real worker", () => {
  const deep: unknown[] = [];
  let inner = deep;
  for (let n = 0; n < 2_000; n++) {
    const next: unknown[] = [];
    inner.push(next);
    inner = next;
  }
  const cyclic: Record<string, unknown> = { a: 1 };
  cyclic.self = cyclic;
  const values: { name: string; value: unknown; problem: RegExp; thrown: RegExp }[] = [
    { name: "a string with \\u0000", value: "a\u0000b", problem: /is not JSON: a NUL character \(\\u0000\) at \$$/, thrown: /^a\ufffdb$/ },
    { name: "a lone surrogate \\ud800", value: "x\ud800", problem: /is not JSON: a lone surrogate \(\\ud800\) at \$$/, thrown: /^x\ufffd$/ },
    { name: "a BigInt", value: 10n, problem: /is not JSON: a bigint at \$$/, thrown: /^10$/ },
    { name: "an object that contains itself", value: cyclic, problem: /is not JSON: a circular reference at \$\.self$/, thrown: /^\[object Object\]$/ },
    { name: "an array nested 2,000 deep", value: deep, problem: /is not JSON: nesting deeper than 1000 levels at \$(\[0\]){66}/, thrown: /^\[\[\[\[/ },
  ];
  const places = [
    { place: "a task result", expect: (v: (typeof values)[number], wf: string) => new RegExp(`^task poison failed: output of task poison \\(step poison#1\\) ${v.problem.source}`) },
    { place: "a task error", expect: (v: (typeof values)[number]) => new RegExp(`^task poison failed: ${v.thrown.source.replace(/^\^/, "")}`) },
    { place: "a workflow output", expect: (v: (typeof values)[number], wf: string) => new RegExp(`^output of workflow ${wf}@1 ${v.problem.source}`) },
  ];
  for (const { place, expect } of places) {
    for (const v of values) {
      it(`${v.name} as ${place} fails the run once, at once, naming what was wrong`, async () => {
        let calls = 0;
        const poison = task({
          name: "poison",
          handler: () => {
            calls++;
            if (place === "a task error") throw v.value;
            return place === "a task result" ? v.value : "fine";
          },
        });
        const name = `bad-value-${suffix}-${values.indexOf(v)}-${places.findIndex((p) => p.place === place)}`;
        const wf = workflow({ name }).v("1", {
          async handler(run) {
            const out = await poison.start(run, null);
            return place === "a workflow output" ? v.value : out;
          },
        });
        const w = await env.spawn({ workflows: [wf] });
        const run = await wf.start(env.aiki, null);
        const failed = await untilStatus(env.aiki, run.id, "failed");
        await w.stop({ timeoutMs: 1_000 });
        assert.match((failed.error as { message: string }).message, expect(v, name));
        assert.equal(calls, 1, "the task ran once");
        assert.equal(failed.attempt, 1, "the run failed on its first attempt");
        assert.deepEqual([w.stats.ended.failed, w.stats.ended.abandoned, w.stats.ended.lost], [1, 0, 0]);
      });
    }
  }
});

describe("client", () => {
  it("without a database URL → InvalidInputError AK003", () => {
    const saved = process.env.DATABASE_URL;
    delete process.env.DATABASE_URL;
    try {
      assert.throws(() => client({}), (e: unknown) => e instanceof InvalidInputError && e.code === "AK003" && /no database/.test(e.message));
    } finally {
      if (saved !== undefined) process.env.DATABASE_URL = saved;
    }
  });
});
