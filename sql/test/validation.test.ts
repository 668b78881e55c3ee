// Bad input, function by function. Every case asserts the SQLSTATE from the catalogue
// (00_core.sql), the message a user will read, and that the engine tables are exactly as they
// were (row counts and a digest of every row), i.e. the call wrote nothing.
//
// Each case runs against the same small world, rebuilt before every case: a running run with a
// completed task step `done#1`, a buffered event, and an unrelated pending run.
import { after, before, beforeEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  expectRejected, harness, jsonb, reset, startAndClaim, startRun, tableCounts, type Harness, type Sql,
} from "./support.js";

interface World {
  sql: Sql;
  /** A running run and its lease token. */
  run: string;
  token: string;
  /** A pending run that is nobody's child. */
  other: string;
}

interface Case {
  name: string;
  code: string;
  message: RegExp;
  act(w: World): PromiseLike<unknown>;
}

const nobody = "00000000-0000-4000-8000-000000000000";
const big = "x".repeat(1_100_000);

let h: Harness;
let w: World;
before(async () => {
  h = await harness();
});
after(() => h.close());
beforeEach(async () => {
  await reset(h.sql);
  const run = await startAndClaim(h.sql, { workflow: "order" });
  await h.sql`select aiki.complete_step(${run.id}::uuid, ${run.lease_token}::uuid, 'done#1', 'task', 'done', '{"ok": true}')`;
  await h.sql`select aiki.send_event(${run.id}::uuid, 'buffered', '1')`;
  const other = await startRun(h.sql, { workflow: "other" });
  w = { sql: h.sql, run: run.id, token: run.lease_token, other };
});

function cases(fn: string, list: Case[]) {
  describe(fn, () => {
    for (const c of list) {
      it(`${c.name} → ${c.code}`, async () => {
        await expectRejected(h.sql, () => c.act(w), c.code, c.message);
      });
    }
  });
}

const start = (w: World, args: Record<string, unknown>) => {
  const a: Record<string, any> = { workflow: "wf", version: "1.0.0", input: null, key: null, queue: "default", priority: 0,
    startAt: null, delayMs: null, concurrencyKey: null, timeoutMs: null, retry: null, maxLeaseExpiries: 5, traceContext: null, ...args };
  return w.sql`select * from aiki.start_workflow(
    ${a.workflow as string}::text, ${a.version as string}::text, ${jsonb(w.sql, a.input)},
    ${a.key as string}::text, ${a.queue as string}::text, ${a.priority as number}::integer,
    ${a.startAt as string}::text::timestamptz, ${a.delayMs as number}::bigint, ${a.concurrencyKey as string}::text,
    ${a.timeoutMs as number}::bigint, ${a.retry === null ? null : JSON.stringify(a.retry)}::text::jsonb,
    ${a.maxLeaseExpiries as number}::integer, ${a.traceContext === null ? null : JSON.stringify(a.traceContext)}::text::jsonb)`;
};

const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

cases("start_workflow", [
  { name: "empty workflow name", code: "AK003", message: /^invalid workflow name ''$/, act: (w) => start(w, { workflow: "" }) },
  { name: "null workflow name", code: "AK003", message: /^invalid workflow name null$/, act: (w) => start(w, { workflow: null }) },
  { name: "workflow name of 129 characters", code: "AK003", message: /^invalid workflow name 'a{129}'$/, act: (w) => start(w, { workflow: "a".repeat(129) }) },
  { name: "workflow name with a space", code: "AK003", message: /^invalid workflow name 'my order'$/, act: (w) => start(w, { workflow: "my order" }) },
  { name: "workflow name with '@' (the version separator)", code: "AK003", message: /^invalid workflow name 'order@1'$/, act: (w) => start(w, { workflow: "order@1" }) },
  { name: "workflow name starting with a dash", code: "AK003", message: /^invalid workflow name '-order'$/, act: (w) => start(w, { workflow: "-order" }) },
  { name: "SQL injection as workflow name", code: "AK003", message: /^invalid workflow name 'x''\); drop table aiki\.runs; --'$/, act: (w) => start(w, { workflow: "x'); drop table aiki.runs; --" }) },
  { name: "empty version", code: "AK003", message: /^invalid version ''$/, act: (w) => start(w, { version: "" }) },
  { name: "null version", code: "AK003", message: /^invalid version null$/, act: (w) => start(w, { version: null }) },
  { name: "version with a space", code: "AK003", message: /^invalid version '1\.0 beta'$/, act: (w) => start(w, { version: "1.0 beta" }) },
  { name: "version of 65 characters", code: "AK003", message: /^invalid version '1{65}'$/, act: (w) => start(w, { version: "1".repeat(65) }) },
  { name: "version with a slash", code: "AK003", message: /^invalid version '1\/2'$/, act: (w) => start(w, { version: "1/2" }) },
  { name: "input over 1 MiB", code: "AK007", message: /^workflow input is \d+ bytes, over the limit of 1048576 bytes$/, act: (w) => start(w, { input: { big } }) },
  { name: "queue name with a space", code: "AK003", message: /^invalid queue name 'my queue'$/, act: (w) => start(w, { queue: "my queue" }) },
  { name: "negative delay", code: "AK003", message: /^invalid start delay -1 ms$/, act: (w) => start(w, { delayMs: -1 }) },
  { name: "delay over 100 years", code: "AK003", message: /^invalid start delay 3153600000001 ms$/, act: (w) => start(w, { delayMs: 3153600000001 }) },
  { name: "huge delay (bigint max)", code: "AK003", message: /^invalid start delay 9223372036854775807 ms$/, act: (w) => start(w, { delayMs: "9223372036854775807" }) },
  { name: "negative run timeout", code: "AK003", message: /^invalid run timeout -5 ms$/, act: (w) => start(w, { timeoutMs: -5 }) },
  { name: "run timeout over 100 years", code: "AK003", message: /^invalid run timeout 4000000000000 ms$/, act: (w) => start(w, { timeoutMs: 4e12 }) },
  { name: "start time and delay together", code: "AK003", message: /^give either a start time or a delay, not both$/, act: (w) => start(w, { startAt: "2030-01-02T00:00:00Z", delayMs: 10 }) },
  { name: "start time infinity", code: "AK003", message: /^invalid start time infinity$/, act: (w) => start(w, { startAt: "infinity" }) },
  { name: "start time in year 294276 (the last year timestamptz holds)", code: "AK003", message: /^invalid start time 294276-/, act: (w) => start(w, { startAt: "294276-06-01 00:00:00+00" }) },
  { name: "start time 101 years ahead, with a timeout", code: "AK003", message: /^invalid start time 2131-/, act: (w) => start(w, { startAt: "2131-01-01 00:00:00+00", timeoutMs: 1000 }) },
  { name: "priority above 1000000", code: "AK003", message: /^invalid priority 1000001$/, act: (w) => start(w, { priority: 1_000_001 }) },
  { name: "null priority", code: "AK003", message: /^invalid priority null$/, act: (w) => start(w, { priority: null }) },
  { name: "retry policy that is not an object", code: "AK003", message: /^invalid retry policy: expected a JSON object$/, act: (w) => start(w, { retry: [3] }) },
  { name: "retry policy of unknown type", code: "AK003", message: /^invalid retry policy type 'linear'$/, act: (w) => start(w, { retry: { type: "linear" } }) },
  { name: "retry policy with maxAttempts 0", code: "AK003", message: /^invalid retry policy \{.*"maxAttempts": 0.*\}$/, act: (w) => start(w, { retry: { type: "fixed", maxAttempts: 0 } }) },
  { name: "retry policy with a non-numeric maxAttempts", code: "AK003", message: /^invalid retry policy .*: numbers expected$/, act: (w) => start(w, { retry: { maxAttempts: "many" } }) },
  { name: "retry policy with a fractional maxAttempts", code: "AK003", message: /^invalid retry policy .*: numbers expected$/, act: (w) => start(w, { retry: { maxAttempts: 2.5 } }) },
  { name: "retry policy with factor below 1", code: "AK003", message: /^invalid retry policy .*"factor": 0\.5/, act: (w) => start(w, { retry: { factor: 0.5 } }) },
  { name: "retry policy with a negative base delay", code: "AK003", message: /^invalid retry policy .*"baseDelayMs": -1/, act: (w) => start(w, { retry: { baseDelayMs: -1 } }) },
  { name: "empty idempotency key", code: "AK003", message: /^invalid idempotency key ''$/, act: (w) => start(w, { key: "" }) },
  { name: "idempotency key of 257 characters", code: "AK003", message: /^invalid idempotency key 'k{200}'$/, act: (w) => start(w, { key: "k".repeat(257) }) },
  { name: "idempotency key with a newline", code: "AK003", message: /^invalid idempotency key 'a\nb'$/, act: (w) => start(w, { key: "a\nb" }) },
  { name: "concurrency key with a control character", code: "AK003", message: /^invalid concurrency key 'a\x01b'$/, act: (w) => start(w, { concurrencyKey: "a\x01b" }) },
  { name: "max lease expiries 0", code: "AK003", message: /^invalid max lease expiries 0$/, act: (w) => start(w, { maxLeaseExpiries: 0 }) },
  { name: "trace context that is a string", code: "AK003", message: /^invalid trace context "00-0af7/, act: (w) => start(w, { traceContext: traceparent }) },
  { name: "trace context without a traceparent", code: "AK003", message: /^invalid trace context \{"tracestate": "k=v"\}$/, act: (w) => start(w, { traceContext: { tracestate: "k=v" } }) },
  { name: "traceparent in upper case", code: "AK003", message: /^invalid trace context/, act: (w) => start(w, { traceContext: { traceparent: traceparent.toUpperCase() } }) },
  { name: "traceparent with a short span id", code: "AK003", message: /^invalid trace context/, act: (w) => start(w, { traceContext: { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b71-01" } }) },
  { name: "traceparent with an all-zero trace id", code: "AK003", message: /^invalid trace context/, act: (w) => start(w, { traceContext: { traceparent: `00-${"0".repeat(32)}-b7ad6b7169203331-01` } }) },
  { name: "traceparent with an all-zero span id", code: "AK003", message: /^invalid trace context/, act: (w) => start(w, { traceContext: { traceparent: `00-0af7651916cd43dd8448eb211c80319c-${"0".repeat(16)}-01` } }) },
  { name: "traceparent of version ff", code: "AK003", message: /^invalid trace context/, act: (w) => start(w, { traceContext: { traceparent: `ff${traceparent.slice(2)}` } }) },
  { name: "tracestate of 513 characters", code: "AK003", message: /^invalid trace context/, act: (w) => start(w, { traceContext: { traceparent, tracestate: `k=${"v".repeat(511)}` } }) },
  { name: "tracestate with a newline", code: "AK003", message: /^invalid trace context/, act: (w) => start(w, { traceContext: { traceparent, tracestate: "a=1\nb=2" } }) },
  { name: "tracestate that is a number", code: "AK003", message: /^invalid trace context/, act: (w) => start(w, { traceContext: { traceparent, tracestate: 7 } }) },
  { name: "trace context with another key", code: "AK003", message: /^invalid trace context/, act: (w) => start(w, { traceContext: { traceparent, baggage: "k=v" } }) },
]);

const claim = (w: World, args: Record<string, unknown>) => {
  const a: Record<string, any> = { worker: "w", queues: ["default"], limit: 1, leaseMs: 30000, ...args };
  return w.sql`select aiki.claim(${a.worker as string}::text, null, ${a.queues as string[]}::text[],
                                 ${a.limit as number}::integer, ${a.leaseMs as number}::integer)`;
};

cases("claim", [
  { name: "limit 0", code: "AK003", message: /^invalid claim limit 0$/, act: (w) => claim(w, { limit: 0 }) },
  { name: "limit 1001", code: "AK003", message: /^invalid claim limit 1001$/, act: (w) => claim(w, { limit: 1001 }) },
  { name: "null limit", code: "AK003", message: /^invalid claim limit null$/, act: (w) => claim(w, { limit: null }) },
  { name: "lease of 99 ms", code: "AK003", message: /^invalid lease 99 ms$/, act: (w) => claim(w, { leaseMs: 99 }) },
  { name: "lease over a day", code: "AK003", message: /^invalid lease 86400001 ms$/, act: (w) => claim(w, { leaseMs: 86_400_001 }) },
  { name: "no queues", code: "AK003", message: /^claim needs at least one queue$/, act: (w) => claim(w, { queues: [] }) },
  { name: "null queues", code: "AK003", message: /^claim needs at least one queue$/, act: (w) => claim(w, { queues: null }) },
  { name: "empty worker id", code: "AK003", message: /^invalid worker id ''$/, act: (w) => claim(w, { worker: "" }) },
  { name: "a null queue ('{NULL}')", code: "AK003", message: /^invalid queue name null$/, act: (w) => claim(w, { queues: [null] }) },
  { name: "an invalid queue name after a good one", code: "AK003", message: /^invalid queue name 'my queue'$/, act: (w) => claim(w, { queues: ["default", "my queue"] }) },
  { name: "a null workflow in the workflow list", code: "AK003", message: /^invalid workflow null in the claim's workflow list$/, act: (w) => w.sql`select aiki.claim('w', '{NULL}', '{default}')` },
]);

cases("heartbeat", [
  { name: "worker id with a tab", code: "AK003", message: /^invalid worker id 'a\tb'$/, act: (w) => w.sql`select * from aiki.heartbeat(${"a\tb"})` },
  { name: "null lease", code: "AK003", message: /^invalid lease null ms$/, act: (w) => w.sql`select * from aiki.heartbeat('w', null)` },
]);

cases("release", [
  { name: "null run id", code: "AK003", message: /^run id is required$/, act: (w) => w.sql`select aiki.release(null, ${w.token}::uuid)` },
  { name: "stale lease token", code: "AK001", message: /^lease lost: run .* was claimed again by worker-1$/, act: (w) => w.sql`select aiki.release(${w.run}::uuid, ${nobody}::uuid)` },
  { name: "unknown run", code: "AK002", message: /^run 00000000-0000-4000-8000-000000000000 not found$/, act: (w) => w.sql`select aiki.release(${nobody}::uuid, ${w.token}::uuid)` },
]);

const completeStep = (w: World, args: Record<string, unknown>) => {
  const a: Record<string, any> = { run: w.run, token: w.token, key: "pay#1", kind: "task", name: "pay", output: { ok: 1 }, ...args };
  return w.sql`select aiki.complete_step(${a.run as string}::uuid, ${a.token as string}::uuid, ${a.key as string}::text,
                                         ${a.kind as string}::text, ${a.name as string}::text, ${jsonb(w.sql, a.output)})`;
};

cases("complete_step", [
  { name: "kind sleep (waits are written by suspend)", code: "AK003", message: /^invalid step kind 'sleep' for complete_step$/, act: (w) => completeStep(w, { kind: "sleep" }) },
  { name: "unknown kind", code: "AK003", message: /^invalid step kind 'nap' for complete_step$/, act: (w) => completeStep(w, { kind: "nap" }) },
  { name: "empty step key", code: "AK003", message: /^invalid step key ''$/, act: (w) => completeStep(w, { key: "" }) },
  { name: "step key of 257 characters", code: "AK003", message: /^invalid step key 'k{200}'$/, act: (w) => completeStep(w, { key: "k".repeat(257) }) },
  { name: "step key with a carriage return", code: "AK003", message: /^invalid step key 'a\rb'$/, act: (w) => completeStep(w, { key: "a\rb" }) },
  { name: "step key with DEL", code: "AK003", message: /^invalid step key 'a\x7fb'$/, act: (w) => completeStep(w, { key: "a\x7fb" }) },
  { name: "step name with a space", code: "AK003", message: /^invalid step name 'pay now'$/, act: (w) => completeStep(w, { name: "pay now" }) },
  { name: "output over 1 MiB", code: "AK007", message: /^step output is \d+ bytes, over the limit of 1048576 bytes$/, act: (w) => completeStep(w, { output: big }) },
  { name: "unknown run", code: "AK002", message: /^run 00000000-0000-4000-8000-000000000000 not found$/, act: (w) => completeStep(w, { run: nobody }) },
  { name: "null run id", code: "AK003", message: /^run id is required$/, act: (w) => completeStep(w, { run: null }) },
  { name: "stale lease token", code: "AK001", message: /^lease lost: run .* was claimed again by worker-1$/, act: (w) => completeStep(w, { token: nobody }) },
  { name: "a recorded task key now asked as a value", code: "AK006", message: /^non-determinism at step 'done#1': the journal recorded task 'done', the code now calls value 'done'$/, act: (w) => completeStep(w, { key: "done#1", kind: "value", name: "done" }) },
  { name: "a recorded key now asked with another name", code: "AK006", message: /^non-determinism at step 'done#1': the journal recorded task 'done', the code now calls task 'charge'$/, act: (w) => completeStep(w, { key: "done#1", name: "charge" }) },
]);

const failStep = (w: World, args: Record<string, unknown>) => {
  const a: Record<string, any> = { key: "pay#1", name: "pay", error: { message: "boom" }, retry: null, inline: 0, ...args };
  return w.sql`select aiki.fail_step(${w.run}::uuid, ${w.token}::uuid, ${a.key as string}::text, ${a.name as string}::text,
                                     ${jsonb(w.sql, a.error)}, ${a.retry === null ? null : JSON.stringify(a.retry)}::text::jsonb,
                                     false, ${a.inline as number}::bigint)`;
};

cases("fail_step", [
  { name: "a step that already completed", code: "AK005", message: /^step 'done#1' of run .* already completed and cannot fail$/, act: (w) => failStep(w, { key: "done#1", name: "done" }) },
  { name: "negative inline retry limit", code: "AK003", message: /^invalid inline retry limit -1 ms$/, act: (w) => failStep(w, { inline: -1 }) },
  { name: "retry policy of unknown type", code: "AK003", message: /^invalid retry policy type 'soon'$/, act: (w) => failStep(w, { retry: { type: "soon" } }) },
  { name: "error over 1 MiB", code: "AK007", message: /^step error is \d+ bytes/, act: (w) => failStep(w, { error: big }) },
  { name: "a recorded key asked with another name", code: "AK006", message: /^non-determinism at step 'done#1'/, act: (w) => failStep(w, { key: "done#1", name: "other" }) },
]);

const suspend = (w: World, waits: unknown) =>
  w.sql`select aiki.suspend(${w.run}::uuid, ${w.token}::uuid, ${jsonb(w.sql, waits)})`;

cases("suspend", [
  { name: "waits that are not an array", code: "AK003", message: /^suspend needs a JSON array of 1-10000 waits$/, act: (w) => suspend(w, { key: "a#1", kind: "sleep", name: "a", duration_ms: 1 }) },
  { name: "an empty array of waits", code: "AK003", message: /^suspend needs a JSON array of 1-10000 waits$/, act: (w) => suspend(w, []) },
  { name: "a wait that is not an object", code: "AK003", message: /^invalid wait 7: expected an object$/, act: (w) => suspend(w, [7]) },
  { name: "unknown wait kind", code: "AK003", message: /^invalid wait kind 'nap'$/, act: (w) => suspend(w, [{ key: "a#1", kind: "nap", name: "a" }]) },
  { name: "missing wait kind", code: "AK003", message: /^invalid wait kind null$/, act: (w) => suspend(w, [{ key: "a#1", name: "a" }]) },
  { name: "kind task is not a wait", code: "AK003", message: /^invalid wait kind 'task'$/, act: (w) => suspend(w, [{ key: "a#1", kind: "task", name: "a" }]) },
  { name: "sleep with a fractional duration", code: "AK003", message: /^invalid sleep duration 1\.5$/, act: (w) => suspend(w, [{ key: "a#1", kind: "sleep", name: "a", duration_ms: 1.5 }]) },
  { name: "sleep with a string duration", code: "AK003", message: /^invalid sleep duration "100"$/, act: (w) => suspend(w, [{ key: "a#1", kind: "sleep", name: "a", duration_ms: "100" }]) },
  { name: "sleep without a duration", code: "AK003", message: /^invalid sleep duration null$/, act: (w) => suspend(w, [{ key: "a#1", kind: "sleep", name: "a" }]) },
  { name: "sleep with a negative duration", code: "AK003", message: /^invalid sleep duration -1 ms$/, act: (w) => suspend(w, [{ key: "a#1", kind: "sleep", name: "a", duration_ms: -1 }]) },
  { name: "event wait with a timeout over 100 years", code: "AK003", message: /^invalid event timeout 4000000000000 ms$/, act: (w) => suspend(w, [{ key: "e#1", kind: "event", name: "go", timeout_ms: 4e12 }]) },
  { name: "wait key with a newline", code: "AK003", message: /^invalid step key 'a\n'$/, act: (w) => suspend(w, [{ key: "a\n", kind: "sleep", name: "a", duration_ms: 1 }]) },
  { name: "wait for a run that is not this run's child", code: "AK003", message: /^run .* is not a child of run /, act: (w) => suspend(w, [{ key: "c#1", kind: "wait_child", name: "other", child_id: w.other }]) },
  { name: "wait for a child id that is not a UUID", code: "AK003", message: /^invalid child id 42$/, act: (w) => suspend(w, [{ key: "c#1", kind: "wait_child", name: "x", child_id: 42 }]) },
  { name: "a valid wait after a bad one writes nothing either", code: "AK003", message: /^invalid wait kind 'nap'$/, act: (w) => suspend(w, [{ key: "ok#1", kind: "sleep", name: "ok", duration_ms: 10 }, { key: "a#1", kind: "nap", name: "a" }]) },
  { name: "a sleep on a key the journal holds as a task", code: "AK006", message: /^non-determinism at step 'done#1': the journal recorded task 'done', the code now calls sleep 'done'$/, act: (w) => suspend(w, [{ key: "done#1", kind: "sleep", name: "done", duration_ms: 10 }]) },
  { name: "unknown run", code: "AK002", message: /not found/, act: (w) => w.sql`select aiki.suspend(${nobody}::uuid, ${w.token}::uuid, '[{"key":"a#1","kind":"sleep","name":"a","duration_ms":1}]')` },
  { name: "null run id", code: "AK003", message: /^run id is required$/, act: (w) => w.sql`select aiki.suspend(null, ${w.token}::uuid, '[{"key":"a#1","kind":"sleep","name":"a","duration_ms":1}]')` },
  { name: "two waits with one key", code: "AK003", message: /^duplicate step key 'a#1' in one suspend call$/, act: (w) => suspend(w, [{ key: "a#1", kind: "sleep", name: "a", duration_ms: 10 }, { key: "a#1", kind: "sleep", name: "a", duration_ms: 20 }]) },
  { name: "two event waits with one key", code: "AK003", message: /^duplicate step key 'e#1' in one suspend call$/, act: (w) => suspend(w, [{ key: "e#1", kind: "event", name: "buffered" }, { key: "e#1", kind: "event", name: "buffered" }]) },
]);

cases("sleep", [
  { name: "negative duration", code: "AK003", message: /^invalid sleep duration -10 ms$/, act: (w) => w.sql`select aiki.sleep(${w.run}::uuid, ${w.token}::uuid, 'nap#1', 'nap', -10)` },
  { name: "stale lease token", code: "AK001", message: /^lease lost/, act: (w) => w.sql`select aiki.sleep(${w.run}::uuid, ${nobody}::uuid, 'nap#1', 'nap', 10)` },
]);

cases("wait_event", [
  { name: "event name with a space", code: "AK003", message: /^invalid event name 'go now'$/, act: (w) => w.sql`select aiki.wait_event(${w.run}::uuid, ${w.token}::uuid, 'e#1', 'go now')` },
  { name: "negative timeout", code: "AK003", message: /^invalid event timeout -1 ms$/, act: (w) => w.sql`select aiki.wait_event(${w.run}::uuid, ${w.token}::uuid, 'e#1', 'go', -1)` },
]);

cases("wait_child", [
  { name: "a run that is not this run's child", code: "AK003", message: /^run .* is not a child of run /, act: (w) => w.sql`select aiki.wait_child(${w.run}::uuid, ${w.token}::uuid, 'c#1', ${w.other}::uuid)` },
  { name: "a child that does not exist", code: "AK003", message: /^run .* is not a child of run /, act: (w) => w.sql`select aiki.wait_child(${w.run}::uuid, ${w.token}::uuid, 'c#1', ${nobody}::uuid)` },
]);

cases("complete_run", [
  { name: "output over 1 MiB", code: "AK007", message: /^workflow output is \d+ bytes/, act: (w) => w.sql`select aiki.complete_run(${w.run}::uuid, ${w.token}::uuid, ${jsonb(w.sql, big)})` },
  { name: "stale lease token", code: "AK001", message: /^lease lost: run .* was claimed again by worker-1$/, act: (w) => w.sql`select aiki.complete_run(${w.run}::uuid, ${nobody}::uuid)` },
  { name: "unknown run", code: "AK002", message: /not found/, act: (w) => w.sql`select aiki.complete_run(${nobody}::uuid, ${w.token}::uuid)` },
  { name: "null run id", code: "AK003", message: /^run id is required$/, act: (w) => w.sql`select aiki.complete_run(null, ${w.token}::uuid)` },
]);

cases("fail_run", [
  { name: "error over 1 MiB", code: "AK007", message: /^workflow error is \d+ bytes/, act: (w) => w.sql`select aiki.fail_run(${w.run}::uuid, ${w.token}::uuid, ${jsonb(w.sql, big)})` },
  { name: "stale lease token", code: "AK001", message: /^lease lost/, act: (w) => w.sql`select aiki.fail_run(${w.run}::uuid, ${nobody}::uuid, '{}')` },
]);

const send = (w: World, args: Record<string, unknown>) => {
  const a: Record<string, any> = { run: w.run, event: "go", data: 1, key: null, ...args };
  return w.sql`select aiki.send_event(${a.run as string}::uuid, ${a.event as string}::text, ${jsonb(w.sql, a.data)}, ${a.key as string}::text)`;
};

cases("send_event", [
  { name: "unknown run", code: "AK002", message: /^run 00000000-0000-4000-8000-000000000000 not found$/, act: (w) => send(w, { run: nobody }) },
  { name: "null run id", code: "AK003", message: /^run id is required$/, act: (w) => send(w, { run: null }) },
  { name: "empty event name", code: "AK003", message: /^invalid event name ''$/, act: (w) => send(w, { event: "" }) },
  { name: "event name with a quote", code: "AK003", message: /^invalid event name 'it''s'$/, act: (w) => send(w, { event: "it's" }) },
  { name: "data over 1 MiB", code: "AK007", message: /^event data is \d+ bytes/, act: (w) => send(w, { data: big }) },
  { name: "idempotency key of 257 characters", code: "AK003", message: /^invalid idempotency key/, act: (w) => send(w, { key: "k".repeat(257) }) },
]);

const children = (w: World, list: unknown) =>
  w.sql`select aiki.start_children(${w.run}::uuid, ${w.token}::uuid, ${jsonb(w.sql, list)})`;

cases("start_children", [
  { name: "children that are not an array", code: "AK003", message: /^start_children needs a JSON array of 1-10000 children$/, act: (w) => children(w, { key: "c#1" }) },
  { name: "an empty array", code: "AK003", message: /^start_children needs a JSON array of 1-10000 children$/, act: (w) => children(w, []) },
  { name: "a child that is not an object", code: "AK003", message: /^invalid child "c": expected an object$/, act: (w) => children(w, ["c"]) },
  { name: "a child without a key", code: "AK003", message: /^invalid step key null$/, act: (w) => children(w, [{ workflow: "kid", version: "1" }]) },
  { name: "a child with a bad workflow name", code: "AK003", message: /^invalid workflow name 'kid kid'$/, act: (w) => children(w, [{ key: "c#1", workflow: "kid kid", version: "1" }]) },
  { name: "a child without a version", code: "AK003", message: /^invalid version null$/, act: (w) => children(w, [{ key: "c#1", workflow: "kid" }]) },
  { name: "a child with a fractional priority", code: "AK003", message: /^invalid priority 1\.5$/, act: (w) => children(w, [{ key: "c#1", workflow: "kid", version: "1", priority: 1.5 }]) },
  { name: "a child with a priority beyond integer range", code: "AK003", message: /^invalid priority 3000000000$/, act: (w) => children(w, [{ key: "c#1", workflow: "kid", version: "1", priority: 3e9 }]) },
  { name: "a child with a negative timeout", code: "AK003", message: /^invalid run timeout -1 ms$/, act: (w) => children(w, [{ key: "c#1", workflow: "kid", version: "1", timeout_ms: -1 }]) },
  { name: "a child input over 1 MiB", code: "AK007", message: /^workflow input is \d+ bytes/, act: (w) => children(w, [{ key: "c#1", workflow: "kid", version: "1", input: big }]) },
  { name: "a good child before a bad one writes nothing either", code: "AK003", message: /^invalid workflow name ''$/, act: (w) => children(w, [{ key: "c#1", workflow: "kid", version: "1" }, { key: "c#2", workflow: "", version: "1" }]) },
  { name: "two children with one key", code: "AK003", message: /^duplicate step key 'c#1' in one start_children call$/, act: (w) => children(w, [{ key: "c#1", workflow: "kid", version: "1" }, { key: "c#1", workflow: "kid", version: "1" }]) },
  { name: "a child with a malformed trace context", code: "AK003", message: /^invalid trace context \{"traceparent": "00-xyz"\}$/, act: (w) => children(w, [{ key: "c#1", workflow: "kid", version: "1", trace_context: { traceparent: "00-xyz" } }]) },
  { name: "a key the journal holds as a task", code: "AK006", message: /^non-determinism at step 'done#1': the journal recorded task 'done', the code now calls child 'kid'$/, act: (w) => children(w, [{ key: "done#1", workflow: "kid", version: "1" }]) },
]);

cases("start_child", [
  { name: "bad version", code: "AK003", message: /^invalid version '\?'$/, act: (w) => w.sql`select aiki.start_child(${w.run}::uuid, ${w.token}::uuid, 'c#1', 'kid', '?')` },
  { name: "stale lease token", code: "AK001", message: /^lease lost/, act: (w) => w.sql`select aiki.start_child(${w.run}::uuid, ${nobody}::uuid, 'c#1', 'kid', '1')` },
]);

const startAttempt = (w: World, args: Record<string, unknown>) => {
  const a: Record<string, any> = { run: w.run, token: w.token, key: "slow#1", name: "slow", deadlineMs: 1000, inlineMs: 0, ...args };
  return w.sql`select aiki.start_attempt(${a.run as string}::uuid, ${a.token as string}::uuid, ${a.key as string}::text,
                                         ${a.name as string}::text, ${a.deadlineMs as number}::bigint, null, ${a.inlineMs as number}::bigint)`;
};

cases("start_attempt", [
  { name: "a negative deadline", code: "AK003", message: /^invalid attempt deadline -1 ms$/, act: (w) => startAttempt(w, { deadlineMs: -1 }) },
  { name: "a null deadline", code: "AK003", message: /^invalid attempt deadline null ms$/, act: (w) => startAttempt(w, { deadlineMs: null }) },
  { name: "an empty step key", code: "AK003", message: /^invalid step key ''$/, act: (w) => startAttempt(w, { key: "" }) },
  { name: "a step name with a space", code: "AK003", message: /^invalid step name 'a b'$/, act: (w) => startAttempt(w, { name: "a b" }) },
  { name: "a negative inline retry limit", code: "AK003", message: /^invalid inline retry limit -1 ms$/, act: (w) => startAttempt(w, { inlineMs: -1 }) },
  { name: "a stale lease token", code: "AK001", message: /^lease lost/, act: (w) => startAttempt(w, { token: nobody }) },
  { name: "a completed step", code: "AK005", message: /^step 'done#1' of run .* already completed and cannot start another attempt$/, act: (w) => startAttempt(w, { key: "done#1", name: "done" }) },
  { name: "a recorded key asked with another name", code: "AK006", message: /^non-determinism at step 'done#1'/, act: (w) => startAttempt(w, { key: "done#1", name: "other" }) },
]);

// record answers per write instead of raising: each case is a batch, and every write of it must
// be answered with its error while nothing is written.
interface RecordCase {
  name: string;
  writes(w: World): unknown[];
  answers: { status: string; sqlstate?: string; message: RegExp }[];
}

function recordCases(list: RecordCase[]) {
  describe("record", () => {
    for (const c of list) {
      it(`${c.name} → ${c.answers.map((a) => a.sqlstate ?? a.status).join(", ")}`, async () => {
        const before = await tableCounts(h.sql);
        const [row] = await h.sql`select aiki.record(${jsonb(h.sql, c.writes(w))}) as r`;
        const answers = row!.r as { status: string; sqlstate?: string; message: string }[];
        assert.equal(answers.length, c.answers.length);
        for (const [i, expected] of c.answers.entries()) {
          assert.equal(answers[i]!.status, expected.status, JSON.stringify(answers[i]));
          assert.equal(answers[i]!.sqlstate, expected.sqlstate, JSON.stringify(answers[i]));
          assert.match(answers[i]!.message, expected.message);
        }
        assert.deepEqual(await tableCounts(h.sql), before, "a refused write must write nothing");
      });
    }
  });
}

const write = (w: World, fields: Record<string, unknown> = {}) =>
  ({ run_id: w.run, lease_token: w.token, steps: [{ key: "pay#1", kind: "task", name: "pay", output: 1 }], ...fields });
const invalid = (message: RegExp, sqlstate = "AK003") => ({ status: "error", sqlstate, message });

recordCases([
  { name: "a run id that is not a UUID", writes: (w) => [write(w, { run_id: "run-1" })], answers: [invalid(/^invalid run id "run-1": expected a UUID$/)] },
  { name: "a null run id", writes: (w) => [write(w, { run_id: null })], answers: [invalid(/^invalid run id null: expected a UUID$/)] },
  { name: "a lease token that is not a UUID", writes: (w) => [write(w, { lease_token: 7 })], answers: [invalid(/^invalid lease token 7 of run [0-9a-f-]{36}: expected a UUID$/)] },
  { name: "a write that is not an object", writes: () => ["x"], answers: [invalid(/^invalid write "x": expected a JSON object$/)] },
  { name: "steps as an object", writes: (w) => [write(w, { steps: {} })], answers: [invalid(/^invalid steps of run [0-9a-f-]{36}: expected a JSON array$/)] },
  { name: "complete as the string \"true\"", writes: (w) => [write(w, { complete: "true" })], answers: [invalid(/^invalid complete "true" of run [0-9a-f-]{36}: expected true or false$/)] },
  { name: "the same run completed twice in one batch", writes: (w) => [write(w, { complete: true, output: 1 }), write(w, { steps: [], complete: true, output: 2 })],
    answers: [invalid(/^run [0-9a-f-]{36} is completed by more than one write of one record call$/), invalid(/completed by more than one write/)] },
  { name: "a step that is not an object", writes: (w) => [write(w, { steps: [1] })], answers: [invalid(/^invalid step 1 of run [0-9a-f-]{36}: expected a JSON object$/)] },
  { name: "step kind sleep", writes: (w) => [write(w, { steps: [{ key: "s#1", kind: "sleep", name: "s" }] })], answers: [invalid(/^invalid step kind 'sleep' for record$/)] },
  { name: "an empty step key", writes: (w) => [write(w, { steps: [{ key: "", kind: "task", name: "s" }] })], answers: [invalid(/^invalid step key ''$/)] },
  { name: "a step key that is a number", writes: (w) => [write(w, { steps: [{ key: 1, kind: "task", name: "s" }] })], answers: [invalid(/^invalid step key '1'$/)] },
  { name: "a step name with a space", writes: (w) => [write(w, { steps: [{ key: "a#1", kind: "task", name: "a b" }] })], answers: [invalid(/^invalid step name 'a b'$/)] },
  { name: "a step output over 1 MiB", writes: (w) => [write(w, { steps: [{ key: "a#1", kind: "task", name: "a", output: big }] })], answers: [invalid(/^step output is \d+ bytes, over the limit of 1048576 bytes$/, "AK007")] },
  { name: "a workflow output over 1 MiB", writes: (w) => [write(w, { complete: true, output: big })], answers: [invalid(/^workflow output is \d+ bytes, over the limit of 1048576 bytes$/, "AK007")] },
  { name: "a stale lease token", writes: (w) => [write(w, { lease_token: nobody })], answers: [{ status: "lease_lost", message: /^lease lost: run [0-9a-f-]{36} was claimed again by worker-1$/ }] },
  { name: "a run that is not running", writes: (w) => [write(w, { run_id: w.other })], answers: [{ status: "lease_lost", message: /^lease lost: run [0-9a-f-]{36} is pending$/ }] },
  { name: "an unknown run", writes: (w) => [write(w, { run_id: nobody })], answers: [invalid(/^run 00000000-0000-4000-8000-000000000000 not found$/, "AK002")] },
  { name: "a recorded key asked with another name", writes: (w) => [write(w, { steps: [{ key: "done#1", kind: "task", name: "charge" }] })], answers: [invalid(/^non-determinism at step 'done#1': the journal recorded task 'done', the code now calls task 'charge'$/, "AK006")] },
  { name: "a good write's steps with a bad one's", writes: (w) => [write(w, { steps: [{ key: "a#1", kind: "task", name: "a" }, { key: "b#1", kind: "wait", name: "b" }] })], answers: [invalid(/^invalid step kind 'wait' for record$/)] },
]);

cases("get_run", [
  { name: "unknown run", code: "AK002", message: /^run 00000000-0000-4000-8000-000000000000 not found$/, act: (w) => w.sql`select aiki.get_run(${nobody}::uuid)` },
  { name: "null run id", code: "AK003", message: /^run id is required$/, act: (w) => w.sql`select aiki.get_run(null)` },
]);

cases("find_run", [
  { name: "unknown idempotency key", code: "AK002", message: /^no run of workflow 'order' has idempotency key 'nope'$/, act: (w) => w.sql`select aiki.find_run('order', 'nope')` },
  { name: "null arguments", code: "AK002", message: /^no run of workflow null has idempotency key null$/, act: (w) => w.sql`select aiki.find_run(null, null)` },
]);

cases("list_runs", [
  { name: "limit 0", code: "AK003", message: /^invalid limit 0$/, act: (w) => w.sql`select * from aiki.list_runs(p_limit => 0)` },
  { name: "limit 10001", code: "AK003", message: /^invalid limit 10001$/, act: (w) => w.sql`select * from aiki.list_runs(p_limit => 10001)` },
  { name: "a page after an unknown run", code: "AK002", message: /^run 00000000-0000-4000-8000-000000000000 not found$/, act: (w) => w.sql`select * from aiki.list_runs(p_before_id => ${nobody}::uuid)` },
]);

cases("cancel", [
  { name: "unknown run", code: "AK002", message: /^run 00000000-0000-4000-8000-000000000000 not found$/, act: (w) => w.sql`select aiki.cancel(${nobody}::uuid)` },
  { name: "null run id", code: "AK003", message: /^run id is required$/, act: (w) => w.sql`select aiki.cancel(null)` },
]);

cases("pause", [
  { name: "unknown run", code: "AK002", message: /not found/, act: (w) => w.sql`select aiki.pause(${nobody}::uuid)` },
  { name: "null run id", code: "AK003", message: /^run id is required$/, act: (w) => w.sql`select aiki.pause(null)` },
]);

cases("resume", [
  { name: "unknown run", code: "AK002", message: /not found/, act: (w) => w.sql`select aiki.resume(${nobody}::uuid)` },
  { name: "null run id", code: "AK003", message: /^run id is required$/, act: (w) => w.sql`select aiki.resume(null)` },
  { name: "a run that is not paused", code: "AK005", message: /^run .* is running, not paused; only a paused run can be resumed$/, act: (w) => w.sql`select aiki.resume(${w.run}::uuid)` },
]);

cases("set_queue", [
  { name: "queue name with a space", code: "AK003", message: /^invalid queue name 'a b'$/, act: (w) => w.sql`select aiki.set_queue('a b', 1)` },
  { name: "concurrency limit 0", code: "AK003", message: /^invalid concurrency limit 0$/, act: (w) => w.sql`select aiki.set_queue('q', 0)` },
  { name: "key concurrency limit 0", code: "AK003", message: /^invalid key concurrency limit 0$/, act: (w) => w.sql`select aiki.set_queue('q', null, 0)` },
  { name: "null key concurrency limit", code: "AK003", message: /^invalid key concurrency limit null$/, act: (w) => w.sql`select aiki.set_queue('q', null, null)` },
]);

cases("pause_queue", [
  { name: "empty queue name", code: "AK003", message: /^invalid queue name ''$/, act: (w) => w.sql`select aiki.pause_queue('')` },
]);

cases("resume_queue", [
  { name: "null queue name", code: "AK003", message: /^invalid queue name null$/, act: (w) => w.sql`select aiki.resume_queue(null)` },
]);

cases("purge_runs", [
  { name: "null cutoff", code: "AK003", message: /^purge_runs needs a cutoff time$/, act: (w) => w.sql`select aiki.purge_runs(null)` },
  { name: "batch size 0", code: "AK003", message: /^invalid batch size 0$/, act: (w) => w.sql`select aiki.purge_runs(now(), 0)` },
]);

describe("validation", () => {
  it("the SQL-injection name did not drop anything", async () => {
    await expectRejected(h.sql, () => start(w, { workflow: "x'); drop table aiki.runs; --" }), "AK003", /invalid workflow name/);
    const [row] = await h.sql`select to_regclass('aiki.runs') is not null as exists`;
    assert.equal(row!.exists, true);
  });
});
