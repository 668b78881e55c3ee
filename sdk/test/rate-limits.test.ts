// client.setQueue with a rate limit: a real worker starts at most N runs per window, and the
// runs a full window holds back start in the following windows, without busy claiming.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { DefinitionError, InvalidInputError, workflow } from "../index.js";
import { environment, rejects, unique, type Env } from "./support.js";

let env: Env;
before(async () => {
  env = await environment();
});
after(() => env.close());

describe("client.setQueue", () => {
  it("sets and shows a rate limit, and replaces it on the next call", async () => {
    const queue = unique("q");
    const shown = await env.aiki.setQueue(queue, { concurrencyLimit: 5, rateLimit: { limit: 10, per: { minutes: 1 }, perKey: true } });
    assert.deepEqual([shown.concurrency_limit, shown.rate_limit, shown.rate_window_ms, shown.rate_per_key], [5, 10, 60_000, true]);
    const cleared = await env.aiki.setQueue(queue);
    assert.deepEqual([cleared.concurrency_limit, cleared.rate_limit, cleared.rate_window_ms, cleared.rate_per_key], [null, null, null, false]);
  });

  it("refuses a bad limit with AK003 and a misspelt option with DefinitionError", async () => {
    const error = await rejects(env.aiki.setQueue("q", { rateLimit: { limit: 0, per: 1000 } }), InvalidInputError);
    assert.match(error.message, /invalid rate limit 0/);
    await rejects(env.aiki.setQueue("q", { rateLimit: { limit: 1.5, per: 1000 } }), InvalidInputError);
    await rejects(env.aiki.setQueue("q", { rateLimit: { max: 1, per: 1000 } } as never), DefinitionError);
  });

  it("a worker starts at most 2 runs per 1 s window: 6 runs start over 3 windows", async () => {
    const queue = unique("rated");
    await env.aiki.setQueue(queue, { rateLimit: { limit: 2, per: 1000 } });
    const job = workflow({ name: unique("job") }).v("1", { queue, async handler(_run, n: number) { return n; } });
    await env.spawn({ workflows: [job], queues: [queue], concurrency: 10 });
    const handles = [];
    for (let n = 0; n < 6; n++) handles.push(await job.start(env.aiki, n));
    for (const h of handles) await h.result({ timeout: 30_000 });
    const windows = await env.sql`
      select date_bin('1 second', started_at, timestamptz 'epoch') as w, count(*)::int as n
        from aiki.runs where workflow = ${job.name} group by 1 order by 1`;
    assert.ok(windows.length >= 3, `6 starts in ${windows.length} windows`);
    for (const w of windows) assert.ok(w.n <= 2, `${w.n} starts in the window of ${w.w.toISOString()}`);
    const [claims] = await env.sql`select count(*)::int as n from aiki.runs where workflow = ${job.name} and attempt = 1`;
    assert.equal(claims!.n, 6);
  });
});
