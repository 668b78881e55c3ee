// Replay (sdk/worker/replay.ts): the replay bookkeeping of one execution — step keys, journal
// look-ups, what the code has not reached, and divergence — unit-tested without a database.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import type { StepRecord } from "../engine.js";
import { Replay } from "../worker/replay.js";

const run = "0190aaaa-0000-7000-8000-000000000001";
const entry = (key: string, kind: StepRecord["kind"], status: StepRecord["status"] = "completed"): StepRecord => ({
  key, kind, name: key.replace(/#\d+$/, ""), status, attempts: 1, output: key, error: null, child_id: null, wake_at: null,
});

describe("Replay", () => {
  it("numbers each name's calls from 1, independently per name", () => {
    const replay = new Replay(run, []);
    assert.deepEqual(["a", "b", "a", "a/wait", "a"].map((n) => replay.nextKey(n)), ["a#1", "b#1", "a#2", "a/wait#1", "a#3"]);
  });

  it("answers a key from the journal and marks it reached", () => {
    const replay = new Replay(run, [entry("charge#1", "task"), entry("now#1", "value")]);
    assert.equal(replay.caughtUp, false);
    assert.deepEqual(replay.lookup("charge#1", "task", "charge"), { step: entry("charge#1", "task") });
    assert.equal(replay.caughtUp, false);
    assert.deepEqual(replay.lookup("now#1", "value", "now"), { step: entry("now#1", "value") });
    assert.equal(replay.caughtUp, true);
    assert.deepEqual(replay.lookup("charge#2", "task", "charge"), { step: undefined });
  });

  it("reports a key recorded with another kind or name as a mismatch", () => {
    const replay = new Replay(run, [entry("charge#1", "task")]);
    assert.deepEqual(replay.lookup("charge#1", "value", "charge"), {
      mismatch: `non-determinism at step 'charge#1' of run ${run}: the journal recorded task 'charge', the code now calls value 'charge'. ` +
        "Deploy changed workflow code as a new version.",
    });
    const renamed = new Replay(run, [entry("charge#1", "task")]);
    assert.match((renamed.lookup("charge#1", "task", "bill") as { mismatch: string }).mismatch, /recorded task 'charge', the code now calls task 'bill'/);
  });

  it("diverges when the code moves on with journal entries unreached, naming the first one missed", () => {
    const replay = new Replay(run, [entry("a#1", "task"), entry("b#1", "task"), entry("c#1", "sleep", "waiting")]);
    replay.lookup("a#1", "task", "a");
    assert.equal(replay.divergence({ key: "x#1", kind: "task", name: "x" }),
      `non-determinism at step 'b#1' of run ${run}: the journal recorded task 'b', the code now calls task 'x' (step 'x#1') instead. ` +
      "Deploy changed workflow code as a new version.");
    assert.match(replay.divergence(undefined)!, /recorded task 'b', the code returned without reaching it/);
    replay.lookup("b#1", "task", "b");
    assert.match(replay.divergence(undefined)!, /^non-determinism at step 'c#1'/, "entries of any status count");
    replay.lookup("c#1", "sleep", "c");
    assert.equal(replay.divergence(undefined), undefined);
  });

  it("is replaying until every completed entry is reached (the run's logger is quiet till then)", () => {
    const replay = new Replay(run, [entry("a#1", "task"), entry("w#1", "event", "waiting"), entry("b#1", "task")]);
    assert.equal(replay.replaying, true);
    replay.lookup("a#1", "task", "a");
    replay.lookup("w#1", "event", "w");
    assert.equal(replay.replaying, true, "a waiting entry is not a replayed result");
    replay.lookup("b#1", "task", "b");
    assert.equal(replay.replaying, false);
    assert.equal(new Replay(run, []).replaying, false);
  });

  it("learns steps the engine resolved meanwhile", () => {
    const replay = new Replay(run, []);
    assert.equal(replay.has("w#1"), false);
    replay.learn(entry("w#1", "event"));
    assert.equal(replay.has("w#1"), true);
    assert.equal(replay.caughtUp, true, "a learnt step was reached already");
  });
});
