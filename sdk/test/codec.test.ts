// Payload codec: client({ codec }) with aesGcmCodec. Postgres holds only ciphertext of every user
// payload (read straight from the tables), keys rotate, a worker without the key fails the run
// once with a CodecError naming the key, and idempotent starts still recognise a repeated input.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import { z } from "zod";
import {
  aesGcmCodec, CodecError, event, IdempotencyConflictError, InvalidInputError, NonRetryableError, PayloadTooLargeError,
  schedule, task, workflow, type Client, type Codec, type WorkflowRun,
} from "../index.js";
import * as engine from "../engine.js";
import { Counts, environment, gate, rejects, unique, until, untilStatus, type Env } from "./support.js";

let env: Env;
const k1 = randomBytes(32);
const k2 = randomBytes(32);
let withK1: Client;

before(async () => {
  env = await environment();
  withK1 = env.client({ codec: aesGcmCodec({ keys: { k1 }, current: "k1" }) });
});
after(() => env.close());

/** Every row of the tables that hold payloads, as text. */
async function storedText(): Promise<{ table: string; row: string }[]> {
  return env.sql<{ table: string; row: string }[]>`
    select 'runs' as table, r::text as row from aiki.runs r
    union all select 'steps', s::text from aiki.steps s
    union all select 'events', e::text from aiki.events e
    union all select 'run_attempts', a::text from aiki.run_attempts a`;
}

describe("aesGcmCodec", () => {
  it("takes 32-byte keys as a Buffer, base64 or hex, and refuses other lengths naming the key id, never the key", () => {
    for (const key of [k1, new Uint8Array(k1), k1.toString("base64"), k1.toString("hex")]) {
      const codec = aesGcmCodec({ keys: { k1: key }, current: "k1" });
      const context = { kind: "workflow.input", workflow: "w" } as const;
      assert.deepEqual(codec.decode(codec.encode({ a: 1 }, context), context), { a: 1 });
    }
    const short = randomBytes(16);
    for (const [key, bytes] of [[short, 16], [randomBytes(31).toString("base64"), 31], [randomBytes(33).toString("hex"), 33]] as const) {
      assert.throws(() => aesGcmCodec({ keys: { old: k1, bad: key }, current: "old" }), (error: Error) => {
        assert.ok(error instanceof InvalidInputError);
        assert.match(error.message, new RegExp(`key bad is ${bytes} bytes: AES-256-GCM needs 32`));
        assert.ok(!error.message.includes(short.toString("base64")) && !error.message.includes(short.toString("hex")));
        return true;
      });
    }
    assert.throws(() => aesGcmCodec({ keys: { k1 }, current: "k2" }), /`current` must name one of its keys \(k1\), got "k2"/);
  });

  it("seals each payload with a fresh IV and its key id in a JSON envelope", () => {
    const codec = aesGcmCodec({ keys: { k1 }, current: "k1" });
    const context = { kind: "task.output", runId: "r", stepKey: "charge#1" } as const;
    const a = codec.encode({ card: "4242" }, context) as Record<string, string>;
    const b = codec.encode({ card: "4242" }, context) as Record<string, string>;
    assert.deepEqual(Object.keys(a), ["$aiki", "key", "iv", "tag", "data"]);
    assert.equal(a.$aiki, "enc:v1");
    assert.equal(a.key, "k1");
    assert.equal(Buffer.from(a.iv!, "base64").length, 12);
    assert.notEqual(a.iv, b.iv);
    assert.notEqual(a.data, b.data);
  });

  it("binds a payload to what it belongs to: moved to another run, step, event or field, it fails authentication", () => {
    const codec = aesGcmCodec({ keys: { k1 }, current: "k1" });
    const sealed = codec.encode("secret", { kind: "task.output", runId: "run-a", stepKey: "charge#1" });
    for (const elsewhere of [
      { kind: "task.output", runId: "run-b", stepKey: "charge#1" },
      { kind: "task.output", runId: "run-a", stepKey: "charge#2" },
      { kind: "task.error", runId: "run-a", stepKey: "charge#1" },
      { kind: "workflow.output", runId: "run-a" },
      { kind: "event.data", runId: "run-a", event: "charge#1" },
    ] as const) {
      assert.throws(() => codec.decode(sealed, elsewhere), (error: Error) =>
        error instanceof CodecError && error.code === "codec_auth_failed" && error.keyId === "k1");
    }
    const tampered = { ...(sealed as object), key: "k1", data: Buffer.from("other").toString("base64") };
    assert.throws(() => codec.decode(tampered, { kind: "task.output", runId: "run-a", stepKey: "charge#1" }), /fails authentication/);
  });
});

describe("client({ codec })", () => {
  it("stores only ciphertext: inputs, task results and errors, heartbeat details, events, a child, errors and the output", async () => {
    const secret = `SECRET${randomBytes(4).toString("hex")}`;
    const s = (what: string) => `${secret}:${what}`;
    const lookup = task({ name: unique("lookup"), handler: (input: { email: string }) => ({ customer: s("task-result"), email: input.email }) });
    const flaky = task({
      name: unique("flaky"),
      retry: { type: "fixed", maxAttempts: 2, baseDelayMs: 1 },
      handler: (_input: null, ctx) => {
        if (ctx.attempt === 1) throw new Error(s("task-error"));
        return s("flaky-result");
      },
    });
    const resumable = task({
      name: unique("resumable"),
      heartbeatTimeout: 3_000,
      retry: { type: "fixed", maxAttempts: 2, baseDelayMs: 1 },
      async handler(_input: null, ctx) {
        if (ctx.attempt === 2) return ctx.heartbeatDetails;
        // Heartbeats until the engine journalled the details, then fails: the next attempt gets them.
        await until("heartbeat details journalled", async () => {
          ctx.heartbeat({ resumeFrom: s("heartbeat") });
          const [step] = await env.sql`select output from aiki.steps where run_id = ${ctx.runId}::uuid and step_key = ${ctx.stepKey}`;
          return step?.output != null ? true : undefined;
        });
        throw new Error(s("heartbeat-attempt-error"));
      },
    });
    const receipt = workflow({ name: unique("receipt") }).v("1", {
      schema: { input: z.object({ to: z.string() }) },
      async handler(_run, input) {
        return { sent: s("child-output"), to: input.to };
      },
    });
    const refund = workflow({ name: unique("refund") }).v("1", {
      async handler() {
        throw new NonRetryableError(s("child-error"));
      },
    });
    const order = workflow({ name: unique("order") }).v("1", {
      events: { approved: event(z.object({ by: z.string() })) },
      retry: { type: "fixed", maxAttempts: 2, baseDelayMs: 1 },
      async handler(run, input: { email: string }) {
        const found = await lookup.start(run, input);
        const flakyResult = await flaky.start(run, null);
        const resumed = await resumable.start(run, null);
        const sent = await (await receipt.startAsChild(run, { to: s("child-input") })).waitForStatus("completed");
        const refused = await (await refund.startAsChild(run, null)).waitForStatus("completed");
        const approval = await run.events.approved.wait();
        if (run.attempt === 1) throw new Error(s("run-error"));
        return { found, flakyResult, resumed, sent, refused, approval, output: s("run-output") };
      },
    });
    const failing = workflow({ name: unique("failing") }).v("1", {
      async handler(_run, input: { card: string }) {
        throw new NonRetryableError(`card ${input.card} declined`);
      },
    });
    await env.spawn({ workflows: [order, receipt, refund, failing] }, withK1);

    const handle = await order.start(withK1, { email: s("input") }, { idempotencyKey: unique("order") });
    await handle.events.approved.send({ by: s("event") });
    const output = await handle.result({ timeout: 30_000 });
    const failed = await failing.start(withK1, { card: s("card") });
    const failure = await rejects(failed.result({ timeout: 15_000 }), Error);

    // The code and the client saw plaintext throughout.
    assert.deepEqual(output.found, { customer: s("task-result"), email: s("input") });
    assert.equal(output.flakyResult, s("flaky-result"));
    assert.deepEqual(output.resumed, { resumeFrom: s("heartbeat") });
    assert.deepEqual(output.sent, { success: true, state: { status: "completed", output: { sent: s("child-output"), to: s("child-input") } } });
    assert.equal(output.refused.success, false);
    assert.match((output.refused.state as { error: { message: string } }).error.message, new RegExp(s("child-error")));
    assert.deepEqual(output.approval, { timeout: false, data: { by: s("event") } });
    assert.equal(output.output, s("run-output"));
    assert.match(failure.message, new RegExp(`NonRetryableError: card ${s("card")} declined`));
    const read = await withK1.getRun(handle.id);
    assert.deepEqual(read.input, { email: s("input") });
    assert.equal(read.attempt, 2);

    // Postgres did not: no row of any payload table holds the marker.
    const rows = await storedText();
    assert.deepEqual(rows.filter((r) => r.row.includes(secret)), []);
    // And the rows checked are the ones that carry them.
    const [counts] = await env.sql`
      select (select count(*) from aiki.runs where input->>'$aiki' = 'enc:v1' and input->>'key' = 'k1'
                and (id in (${handle.id}::uuid, ${failed.id}::uuid) or parent_id = ${handle.id}::uuid))::int as inputs,
             (select count(*) from aiki.run_attempts where run_id = ${handle.id}::uuid and error->'data'->>'$aiki' = 'enc:v1')::int as attempts,
             (select count(*) from aiki.steps where run_id = ${handle.id}::uuid and errors is not null)::int as step_errors,
             (select count(*) from aiki.events where run_id = ${handle.id}::uuid and data->>'key' = 'k1')::int as events`;
    assert.deepEqual(counts, { inputs: 4, attempts: 1, step_errors: 2, events: 1 });
    // Error names and codes stay visible to operators; their messages say they are encrypted.
    const [stored] = await env.sql`select error from aiki.runs where id = ${failed.id}::uuid`;
    assert.equal(stored!.error.name, "NonRetryableError");
    assert.equal(stored!.error.code, "non_retryable");
    assert.equal(stored!.error.message, "encrypted (key k1)");
  });

  it("shows encrypted payloads as such in `aiki runs show`", async () => {
    const secret = `SECRET${randomBytes(4).toString("hex")}`;
    const echo = workflow({ name: unique("echo") }).v("1", {
      async handler(_run, input: { note: string }) {
        throw new Error(`cannot echo ${input.note}`);
      },
    });
    await env.spawn({ workflows: [echo] }, withK1);
    const handle = await echo.start(withK1, { note: secret });
    await untilStatus(env.aiki, handle.id, "failed");
    const cli = fileURLToPath(new URL("../cli.ts", import.meta.url));
    const stdout = await new Promise<string>((resolve, reject) => {
      execFile(process.execPath, ["--import", import.meta.resolve("tsx"), cli, "runs", "show", handle.id],
        { env: { ...process.env, DATABASE_URL: env.url } }, (error, out, err) => (error ? reject(new Error(err)) : resolve(out)));
    });
    assert.match(stdout, /input:\s+encrypted \(key k1\)/);
    assert.match(stdout, /error:\s+Error: encrypted \(key k1\)/);
    assert.ok(!stdout.includes(secret) && !stdout.includes("enc:v1"), stdout);
  });

  it("rotates keys: runs begun under the old key finish, and read back, after `current` changes", async () => {
    const before = withK1;
    const rotated = env.client({ codec: aesGcmCodec({ keys: { k1, k2 }, current: "k2" }) });
    const remember = task({ name: unique("remember"), handler: (input: { n: number }) => ({ remembered: input.n }) });
    const rotating = workflow({ name: unique("rotating") }).v("1", {
      events: { go: event<{ n: number }>() },
      async handler(run, input: { n: number }) {
        const remembered = await remember.start(run, input);
        const go = await run.events.go.wait();
        return { input, remembered, go };
      },
    });
    const first = await env.spawn({ workflows: [rotating] }, before);
    const done = await rotating.start(before, { n: 0 });
    await done.events.go.send({ n: 0 });
    const doneOutput = await done.result({ timeout: 15_000 });
    const inFlight = await rotating.start(before, { n: 1 });
    await untilStatus(env.aiki, inFlight.id, "waiting");
    await first.stop();

    await rotating.handle(rotated, inFlight.id).events.go.send({ n: 2 });
    await env.spawn({ workflows: [rotating] }, rotated);

    assert.deepEqual(await rotating.handle(rotated, inFlight.id).result({ timeout: 15_000 }),
      { input: { n: 1 }, remembered: { remembered: 1 }, go: { timeout: false, data: { n: 2 } } });
    assert.deepEqual(await rotating.handle(rotated, done.id).result(), doneOutput);
    const [keys] = await env.sql`
      select r.input->>'key' as input, r.output->>'key' as output,
             (select s.output->>'key' from aiki.steps s where s.run_id = r.id and s.kind = 'task') as task,
             (select e.data->>'key' from aiki.events e where e.run_id = r.id) as event
        from aiki.runs r where r.id = ${inFlight.id}::uuid`;
    assert.deepEqual(keys, { input: "k1", task: "k1", event: "k2", output: "k2" });
  });

  describe("a worker that cannot decode a run fails it once with a CodecError, and never runs its code", () => {
    const cases = [
      { title: "it lacks the key", codec: () => aesGcmCodec({ keys: { k2 }, current: "k2" }), code: "codec_key_missing",
        message: /encrypted with key k1, which this codec does not have \(it has k2\)/ },
      { title: "another key goes by the same id", codec: () => aesGcmCodec({ keys: { k1: k2 }, current: "k1" }), code: "codec_auth_failed",
        message: /fails authentication with key k1/ },
      { title: "it has no codec", codec: () => undefined, code: "codec_missing",
        message: /input of a run of workflow .* is encrypted \(key k1\) and this client has no codec/ },
    ];
    for (const c of cases) {
      it(`when ${c.title}; with the key deployed, a retry completes it`, async () => {
        const counts = new Counts();
        const guarded = workflow({ name: unique("guarded") }).v("1", {
          async handler(_run, input: { n: number }) {
            counts.bump("handler");
            return input.n + 1;
          },
        });
        const lacking = await env.spawn({ workflows: [guarded] }, env.client({ codec: c.codec() }));
        const handle = await guarded.start(withK1, { n: 41 });
        const run = await untilStatus(env.aiki, handle.id, "failed");
        await lacking.stop();

        assert.equal(counts.get("handler"), 0);
        assert.equal(run.attempt, 1, "failed for good, not retried");
        const error = run.error as { name: string; code: string; message: string };
        assert.equal(error.name, "CodecError");
        assert.equal(error.code, c.code);
        assert.match(error.message, c.message, "the error is stored readable: it holds no user data");
        const failure = await rejects(handle.result(), Error);
        assert.match(failure.message, /CodecError/);

        await engine.retryRun(env.sql, handle.id);
        await env.spawn({ workflows: [guarded] }, withK1);
        assert.equal(await guarded.handle(withK1, handle.id).result({ timeout: 15_000 }), 42);
      });
    }
  });

  describe("an event it cannot decode, there when the code waits, fails the run with a CodecError", () => {
    const cases = [
      { title: "sent under a key the worker lacks", worker: () => withK1,
        sender: () => env.client({ codec: aesGcmCodec({ keys: { k2 }, current: "k2" }) }), code: "codec_key_missing" },
      { title: "sent encrypted to a worker without a codec", worker: () => env.client(), sender: () => withK1, code: "codec_missing" },
    ];
    for (const c of cases) {
      it(c.title, async () => {
        const counts = new Counts();
        const paused = gate();
        const hold = task({ name: unique("hold"), handler: () => paused.wait() });
        const listening = workflow({ name: unique("listening") }).v("1", {
          events: { note: event<string>() },
          async handler(run) {
            await hold.start(run, null);
            const note = await run.events.note.wait();
            counts.bump("received");
            return note;
          },
        });
        await env.spawn({ workflows: [listening] }, c.worker());
        const handle = await listening.start(env.aiki, null);
        await untilStatus(env.aiki, handle.id, "running");
        await listening.handle(c.sender(), handle.id).events.note.send("hello");
        paused.open();
        const run = await untilStatus(env.aiki, handle.id, "failed");

        assert.equal(counts.get("received"), 0);
        const error = run.error as { name: string; code: string; message: string };
        assert.deepEqual([error.name, error.code], ["CodecError", c.code]);
        assert.match(error.message, /data of event note of run .* key k[12]/);
      });
    }
  });

  it("repeats an idempotent start with the same input, and refuses another input or version (AK004)", async () => {
    const name = unique("signup");
    const v1 = workflow({ name }).v("1", { async handler(_run, _input: unknown) {} });
    const v2 = workflow({ name }).v("2", { async handler(_run, _input: unknown) {} });
    const key = unique("key");
    const first = await v1.start(withK1, { email: "a@example.com", plan: { tier: 2, seats: [1, 2] } }, { idempotencyKey: key });
    const again = await v1.start(withK1, { plan: { seats: [1, 2], tier: 2.0 }, email: "a@example.com" }, { idempotencyKey: key });
    assert.equal(again.id, first.id);
    const rotated = env.client({ codec: aesGcmCodec({ keys: { k1, k2 }, current: "k2" }) });
    const afterRotation = await v1.start(rotated, { email: "a@example.com", plan: { tier: 2, seats: [1, 2] } }, { idempotencyKey: key });
    assert.equal(afterRotation.id, first.id);

    const conflict = await rejects(v1.start(withK1, { email: "b@example.com", plan: { tier: 2, seats: [1, 2] } }, { idempotencyKey: key }),
      IdempotencyConflictError);
    assert.equal(conflict.code, "AK004");
    await rejects(v2.start(withK1, { email: "a@example.com", plan: { tier: 2, seats: [1, 2] } }, { idempotencyKey: key }), IdempotencyConflictError);
    const [row] = await env.sql`select count(*)::int as n from aiki.runs where workflow = ${name}`;
    assert.equal(row!.n, 1);
  });

  it("takes any codec, also an asynchronous one: a run replayed after a sleep finds every recorded result", async () => {
    const inner = aesGcmCodec({ keys: { k1 }, current: "k1" });
    const later = () => new Promise((resolve) => setTimeout(resolve, 1));
    const calls = new Counts();
    const remote: Codec = {
      async encode(value, context) {
        calls.bump("encode");
        await later();
        return inner.encode(value, context);
      },
      async decode(value, context) {
        calls.bump("decode");
        await later();
        return inner.decode(value, context);
      },
    };
    const step = task({ name: unique("step"), handler: (n: number) => ({ n: n + 1 }) });
    const stepwise = workflow({ name: unique("stepwise") }).v("1", {
      async handler(run, input: { n: number }) {
        const a = await step.start(run, input.n);
        const [b, c] = await Promise.all([step.start(run, a.n), step.start(run, a.n + 10)]);
        await run.sleep("pause", 1);
        const d = await step.start(run, b.n + c.n);
        return { a, b, c, d };
      },
    });
    const viaRemote = env.client({ codec: remote });
    await env.spawn({ workflows: [stepwise] }, viaRemote);
    const handle = await stepwise.start(viaRemote, { n: 0 });
    assert.deepEqual(await handle.result({ timeout: 15_000 }), { a: { n: 1 }, b: { n: 2 }, c: { n: 12 }, d: { n: 15 } });
    // The first execution decodes the input, result() the output; the replay the input and three results.
    assert.ok(calls.get("decode") >= 6, `the replay after the sleep decoded the journal (${calls.get("decode")} decodes)`);
    const [journal] = await env.sql`
      select count(*) filter (where output->>'$aiki' = 'enc:v1')::int as sealed, count(*)::int as tasks
        from aiki.steps where run_id = ${handle.id}::uuid and kind = 'task'`;
    assert.deepEqual(journal, { sealed: 4, tasks: 4 });
  });

  it("checks the engine's size limit against the ciphertext", async () => {
    const big = workflow({ name: unique("big") }).v("1", { async handler(_run, _input: string) {} });
    const text = "x".repeat(900_000);
    await big.start(env.aiki, text);
    await rejects(big.start(withK1, text), PayloadTooLargeError);
  });

  it("reads runs decoded with the client's codec, and as stored without one", async () => {
    const plainly = workflow({ name: unique("plainly") }).v("1", { async handler(_run, input: { n: number }) { return input; } });
    await env.spawn({ workflows: [plainly] }, withK1);
    const handle = await plainly.start(withK1, { n: 7 });
    assert.deepEqual(await handle.result({ timeout: 15_000 }), { n: 7 });
    const stored = await env.aiki.getRun(handle.id);
    assert.equal((stored.input as { $aiki: string }).$aiki, "enc:v1");
    const error = await rejects(plainly.handle(env.aiki, handle.id).result(), CodecError);
    assert.equal(error.code, "codec_missing");
    assert.equal(error.keyId, "k1");
  });
});

describe("client({ codec }) and continue-as-new chains", () => {
  it("a parent waiting on a child that continued as new receives the chain's last output, decoded", async () => {
    const countdown = workflow({ name: unique("countdown") }).v("1", {
      async handler(run, n: number) {
        return n > 0 ? run.continueAsNew(n - 1) : { secret: "launched" };
      },
    });
    const launcher = workflow({ name: unique("launcher") }).v("1", {
      async handler(run) {
        return (await countdown.startAsChild(run, 2)).waitForStatus("completed");
      },
    });
    await env.spawn({ workflows: [countdown, launcher] }, withK1);
    const handle = await launcher.start(withK1, null);
    assert.deepEqual(await handle.result({ timeout: 15_000 }),
      { success: true, state: { status: "completed", output: { secret: "launched" } } });
  });

  /** A workflow whose first run continues (after `before`) and whose successor waits for `note`. */
  function relay(before: (run: WorkflowRun<any>) => Promise<unknown>) {
    return workflow({ name: unique("relay") }).v("1", {
      events: { note: event<{ text: string }>() },
      async handler(run, input: { successor: boolean }) {
        if (!input.successor) {
          await before(run);
          return run.continueAsNew({ successor: true });
        }
        return run.events.note.wait();
      },
    });
  }

  it("an event sent to the first run's handle after it continued reaches the successor", async () => {
    const relaying = relay(async () => {});
    await env.spawn({ workflows: [relaying] }, withK1);
    const handle = await relaying.start(withK1, { successor: false });
    await until("the successor waits", async () => {
      const first = await env.aiki.getRun(handle.id);
      if (first.latest_id === undefined || first.latest_id === first.id) return undefined;
      return (await env.aiki.getRun(first.latest_id)).status === "waiting" ? true : undefined;
    });
    await relaying.handle(withK1, handle.id).events.note.send({ text: "secret note" });
    assert.deepEqual(await handle.result({ timeout: 15_000 }), { timeout: false, data: { text: "secret note" } });
  });

  it("an event sent while the first run did something else moves to the successor, which receives it", async () => {
    const paused = gate();
    const hold = task({ name: unique("hold"), handler: () => paused.wait() });
    const relaying = relay(async (run) => hold.start(run, null));
    await env.spawn({ workflows: [relaying] }, withK1);
    const handle = await relaying.start(withK1, { successor: false });
    await untilStatus(env.aiki, handle.id, "running");
    await handle.events.note.send({ text: "early note" });
    paused.open();
    assert.deepEqual(await handle.result({ timeout: 15_000 }), { timeout: false, data: { text: "early note" } });
  });

  it("repeats an idempotent start after the run continued: compared with the first run's input, answered with its id", async () => {
    const stepping = workflow({ name: unique("stepping") }).v("1", {
      async handler(run, input: { n: number }) {
        return input.n < 2 ? run.continueAsNew({ n: input.n + 1 }) : input.n;
      },
    });
    await env.spawn({ workflows: [stepping] }, withK1);
    const key = unique("key");
    const first = await stepping.start(withK1, { n: 0 }, { idempotencyKey: key });
    assert.equal(await first.result({ timeout: 15_000 }), 2);
    const again = await stepping.start(withK1, { n: 0 }, { idempotencyKey: key });
    assert.equal(again.id, first.id);
    await rejects(stepping.start(withK1, { n: 2 }, { idempotencyKey: key }), IdempotencyConflictError);
  });
});

describe("schedules with a codec", () => {
  it("re-applies a schedule whose stored input is bound to another workflow, or to a key rotated out, by encoding it anew", async () => {
    const name = unique("nightly");
    const before = workflow({ name: unique("report") }).v("1", { async handler(_run, _input: { format: string }) {} });
    const now = workflow({ name: unique("summary") }).v("1", { async handler(_run, _input: { format: string }) {} });
    const input = { format: "pdf" };
    await schedule({ name, workflow: before, cron: "0 2 * * *", input }).apply(withK1);

    const moved = await schedule({ name, workflow: now, cron: "0 2 * * *", input }).apply(withK1);
    assert.equal(moved.workflow, now.name);
    const context = { kind: "workflow.input", workflow: now.name } as const;
    assert.deepEqual(aesGcmCodec({ keys: { k1 }, current: "k1" }).decode(moved.input, context), input);

    const onlyK2 = env.client({ codec: aesGcmCodec({ keys: { k2 }, current: "k2" }) });
    await env.spawn({ workflows: [now], schedules: [schedule({ name, workflow: now, cron: "0 2 * * *", input })] }, onlyK2);
    const there = await engine.getSchedule(env.sql, name);
    assert.equal((there.input as { key: string }).key, "k2");
    assert.deepEqual(aesGcmCodec({ keys: { k2 }, current: "k2" }).decode(there.input, context), input);
  });
});
