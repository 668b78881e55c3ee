// The web dashboard, used as a person uses it: headless Chromium (Debian's `chromium`, driven by
// playwright-core) opens the pages of a dashboard served for a role granted only aiki_client,
// while real workers run the workflows. Every wait is for a selector or a text, with a deadline.
// With AIKI_SCREENSHOTS=1 the runs page and a run's timeline are saved as docs/dashboard-*.png
// (the README shows them); otherwise they go to a temporary directory.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { request as httpRequest } from "node:http";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import { aesGcmCodec, client, dashboard, event, task, workflow, type Client, type Dashboard } from "../index.js";
import { environment, untilStatus, type Env } from "./support.js";

const chromiumPath = "/usr/bin/chromium";
const wait = { timeout: 20_000 };
const suffix = randomBytes(4).toString("hex");
const roles = { client: `aiki_dash_client_${suffix}`, none: `aiki_dash_none_${suffix}` };
const shots = process.env.AIKI_SCREENSHOTS === "1" ? fileURLToPath(new URL("../../docs/", import.meta.url)) : undefined;

let env: Env;
let board: Dashboard;
let context: BrowserContext;
let page: Page;
let profile: string;
const boards: Dashboard[] = [];
const clients: Client[] = [];

// The payment gateway is down until a test brings it back, so checkouts fail until then.
let gatewayUp = false;
const reserve = task({ name: "reserve-stock", handler: (order: { items: number }) => ({ reserved: order.items }) });
const charge = task({
  name: "charge-card",
  retry: { type: "fixed", maxAttempts: 2, baseDelayMs: 10 },
  handler: (order: { total: number }) => {
    if (!gatewayUp) throw new Error("payment gateway unavailable (503)");
    return { charged: order.total };
  },
});
const receipt = workflow({ name: "send-receipt" }).v("1", {
  async handler(_run, input: { to: string }) {
    return { sent: input.to };
  },
});
const checkout = workflow({ name: "checkout" }).v("2", {
  async handler(run, order: { items: number; total: number; email: string }) {
    const reserved = await reserve.start(run, order);
    const paid = await charge.start(run, order);
    const child = await receipt.startAsChild(run, { to: order.email });
    await child.waitForStatus("completed");
    return { ...reserved, ...paid };
  },
});
const approval = workflow({ name: "approval" }).v("1", {
  events: { approved: event<{ by: string }>() },
  async handler(run, _input: { doc: string }) {
    await run.sleep("cool-off", 10);
    return run.events.approved.wait({ timeout: { seconds: 3600 } });
  },
});
const reminder = workflow({ name: "reminder" }).v("1", {
  async handler(run) {
    await run.sleep("until-tomorrow", { seconds: 86_400 });
  },
});
const greet = workflow({ name: "greet" }).v("1", {
  async handler(_run, name: string) {
    return `hello ${name}`;
  },
});

const tokenizeCard = task({ name: "tokenize-card", handler: (input: { card: string }) => ({ token: `tok-${input.card}` }) });
const tokenize = workflow({ name: "tokenize" }).v("1", {
  async handler(run, input: { card: string }) {
    return tokenizeCard.start(run, input);
  },
});

function urlAs(role: string): string {
  const url = new URL(env.url);
  url.username = role;
  url.password = `pw-${suffix}`;
  return url.toString();
}

async function serve(role: string, token?: string): Promise<Dashboard> {
  const c = client({ url: urlAs(role), max: 3, logger: false });
  clients.push(c);
  const d = await dashboard({ client: c, port: 0, token });
  boards.push(d);
  return d;
}

/** Waits until the first element matching `selector` has text matching `pattern`. */
async function waitText(selector: string, pattern: RegExp, on: Page = page): Promise<void> {
  await on.waitForFunction(([s, source, flags]) => {
    const element = document.querySelector(s!);
    return element !== null && new RegExp(source!, flags).test(element.textContent ?? "");
  }, [selector, pattern.source, pattern.flags], wait);
}

async function screenshot(name: string): Promise<void> {
  const dir = shots ?? profile;
  await page.screenshot({ path: join(dir, name), fullPage: true });
}

before(async () => {
  assert.ok(existsSync(chromiumPath), `${chromiumPath} is missing: apt-get install -y chromium (.ci/run does)`);
  env = await environment();
  await env.sql.unsafe(`create role ${roles.client} login password 'pw-${suffix}' in role aiki_client`);
  await env.sql.unsafe(`create role ${roles.none} login password 'pw-${suffix}'`);
  await env.spawn({ workflows: [checkout, receipt, approval, reminder, greet] });
  board = await serve(roles.client);
  profile = mkdtempSync(join(tmpdir(), "aiki-chromium-"));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: chromiumPath,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
    viewport: { width: 1280, height: 900 },
  });
  context.setDefaultTimeout(wait.timeout);
  page = context.pages()[0] ?? await context.newPage();
});

after(async () => {
  await context?.close();
  await Promise.all(boards.map((b) => b.close()));
  await Promise.all(clients.map((c) => c.close()));
  if (profile) rmSync(profile, { recursive: true, force: true });
  if (env) {
    await env.close();
    const admin = (await import("postgres")).default(process.env.AIKI_TEST_ADMIN_URL!, { max: 1, onnotice: () => {} });
    for (const role of Object.values(roles)) await admin.unsafe(`drop role if exists ${role}`);
    await admin.end();
  }
});

describe("dashboard", () => {
  const runs = { failed: "", waiting: "", greeted: [] as string[] };

  before(async () => {
    runs.failed = (await checkout.start(env.aiki, { items: 3, total: 4200, email: "ada@example.com" }, { idempotencyKey: "order-1001" })).id;
    runs.waiting = (await approval.start(env.aiki, { doc: "contract-7" }, { idempotencyKey: "doc-7" })).id;
    for (const name of ["ada", "grace", "linus"]) runs.greeted.push((await greet.start(env.aiki, name)).id);
    await untilStatus(env.aiki, runs.failed, "failed");
    await untilStatus(env.aiki, runs.waiting, "waiting");
    for (const id of runs.greeted) await untilStatus(env.aiki, id, "completed");
  });

  it("lists runs, filters them by status and workflow, and finds one by idempotency key", async () => {
    await page.goto(board.url);
    await page.locator(`tr[data-run="${runs.failed}"]`).waitFor(wait);
    assert.equal(await page.locator("tr[data-run]").count(), 5);
    await waitText('[data-count="failed"] b', /^1$/);

    await page.selectOption('select[name="status"]', "failed");
    await page.click('form.filters button[type="submit"]');
    await page.waitForURL(/status=failed/, wait);
    assert.deepEqual(await page.locator("tr[data-run]").evaluateAll((rows) => rows.map((r) => r.getAttribute("data-run"))), [runs.failed]);

    await page.goto(`${board.url}?workflow=greet&limit=2`);
    const ids = () => page.locator("tr[data-run]").evaluateAll((rows) => rows.map((r) => r.getAttribute("data-run")!));
    const newest = await ids();
    assert.equal(newest.length, 2);
    await page.click("#older");
    await page.waitForURL(/cursor=/, wait);
    const older = await ids();
    assert.equal(older.length, 1, "three greet runs: two, then one older");
    assert.deepEqual([...newest, ...older].sort(), [...runs.greeted].sort());
    assert.equal(await page.locator("#older").count(), 0, "no page after the oldest");

    await page.goto(board.url);
    await page.fill('input[name="search"]', "doc-7");
    await page.press('input[name="search"]', "Enter");
    await page.waitForURL(/search=doc-7/, wait);
    assert.deepEqual(await page.locator("tr[data-run]").evaluateAll((rows) => rows.map((r) => r.getAttribute("data-run"))), [runs.waiting]);
  });

  it("shows a run started elsewhere, and the new counts, without reloading", async () => {
    await page.goto(board.url);
    await waitText('[data-count="completed"] b', /^3$/);
    await page.evaluate(() => ((window as unknown as { loadedOnce: boolean }).loadedOnce = true));
    const id = (await greet.start(env.aiki, "margaret")).id;
    await page.locator(`tr[data-run="${id}"] [data-status="completed"]`).waitFor(wait);
    await waitText('[data-count="completed"] b', /^4$/);
    assert.equal(await page.evaluate(() => (window as unknown as { loadedOnce?: boolean }).loadedOnce), true, "the page was not reloaded");
    runs.greeted.push(id);
  });

  it("opens a failed run's timeline from the list and retries it by clicking; the run completes live", async () => {
    await page.goto(board.url);
    await page.click(`tr[data-run="${runs.failed}"] a`);
    await page.waitForURL(new RegExp(`/runs/${runs.failed}$`), wait);
    await page.locator('#run h1 [data-status="failed"]').waitFor(wait);
    await page.locator('tr[data-step="reserve-stock#1"] [data-status="completed"]').waitFor(wait);
    await waitText('tr[data-step="charge-card#1"]', /payment gateway unavailable \(503\)/);

    gatewayUp = true;
    await page.click('button[data-action="retry"]');
    await waitText("#flash", /Retried/);
    await page.locator('#run h1 [data-status="completed"]').waitFor(wait);
    await page.locator('tr[data-step="charge-card#1"] [data-status="completed"]').waitFor(wait);
    await waitText('tr[data-attempt="1"]', /failed.*payment gateway unavailable \(503\)/s);
    await waitText('tr[data-attempt="1"] [data-failed-step="charge-card#1"]', /task\s+failed\s+2 attempts/);
    await waitText("#run .io", /"charged": 4200/);

    const child = await page.locator('#run table:has(th:text("Workflow")) a.mono').first().getAttribute("title");
    assert.ok(child, "the child run is listed");
    await page.click(`a[href="/runs/${child}"]`);
    await waitText("#run dl.facts", /checkout@2/);
    await page.click(`#run dl.facts a[href="/runs/${runs.failed}"]`);
    await page.locator('#run h1 [data-status="completed"]').waitFor(wait);
    await page.locator('[data-failed-step="charge-card#1"] details:not(.stack)').evaluate((d) => ((d as HTMLDetailsElement).open = true));
    await screenshot("dashboard-run.png");
  });

  it("shows a sleep's and a wait's due times, pauses and resumes a sleeping run, and cancels a waiting one by clicking", async () => {
    const sleeper = (await reminder.start(env.aiki, null)).id;
    await untilStatus(env.aiki, sleeper, "sleeping");
    await page.goto(`${board.url}runs/${sleeper}`);
    await waitText('tr[data-step="until-tomorrow#1"]', /wakes at \d{4}-\d\d-\d\d \d\d:\d\d/);
    await waitText("#run dl.facts", /Due\s*\d{4}-\d\d-\d\d/);
    await page.click('button[data-action="pause"]');
    await page.locator('#run h1 [data-status="paused"]').waitFor(wait);
    await page.click('button[data-action="resume"]');
    await page.locator('#run h1 [data-status="sleeping"]').waitFor(wait);
    await waitText("#flash", /Resumed/);

    await page.goto(`${board.url}runs/${runs.waiting}`);
    await page.locator('#run h1 [data-status="waiting"]').waitFor(wait);
    await waitText('tr[data-step="cool-off#1"]', /woke at \d{4}-\d\d-\d\d/);
    await waitText('tr[data-step="approved#1"]', /times out at \d{4}-\d\d-\d\d/);
    await page.click('button[data-action="cancel"]');
    await page.locator('#run h1 [data-status="cancelled"]').waitFor(wait);
    await waitText("#flash", /Cancelled/);
    assert.equal((await env.aiki.getRun(runs.waiting)).status, "cancelled");
  });

  it("checks an event's JSON in the browser, sends it, and shows the database's refusal of a second one", async () => {
    const id = (await approval.start(env.aiki, { doc: "contract-8" })).id;
    await untilStatus(env.aiki, id, "waiting");
    await page.goto(`${board.url}runs/${id}`);
    await page.locator('#run h1 [data-status="waiting"]').waitFor(wait);
    await page.fill('#send input[name="name"]', "approved");
    await page.fill("#send textarea", '{"by": ');
    await waitText("#json-state", /invalid JSON/);
    assert.equal(await page.locator('#send button[type="submit"]').isDisabled(), true, "no send while the JSON is invalid");

    await page.fill("#send textarea", '{"by": "grace"}');
    await waitText("#json-state", /^valid JSON$/);
    await page.click('#send button[type="submit"]');
    await waitText("#flash", /Sent event approved/);
    await page.locator('#run h1 [data-status="completed"]').waitFor(wait);
    await waitText("#run table.events", /grace/);

    await page.click('#send button[type="submit"]');
    await waitText("#flash .error", /AK005/);
  });

  it("shows runs of many states, the worker and the queue", async () => {
    for (const n of [1002, 1003]) {
      const id = (await checkout.start(env.aiki, { items: 1, total: n, email: "bob@example.com" }, { idempotencyKey: `order-${n}` })).id;
      await untilStatus(env.aiki, id, "completed");
    }
    await page.goto(board.url);
    await waitText('[data-count="sleeping"] b', /^1$/);
    await waitText('[data-count="cancelled"] b', /^1$/);
    await waitText('[data-count="completed"] b', /^1[0-9]$/);
    await screenshot("dashboard-runs.png");

    await page.goto(`${board.url}workers`);
    await waitText("#workers tbody", /alive/);
    await waitText("#workers tbody", /checkout/);
    await page.goto(`${board.url}queues`);
    await waitText("#queues tbody", /default/);
  });

  it("escapes what it renders", async () => {
    const id = (await greet.start(env.aiki, "<img src=x onerror=alert(1)>", { idempotencyKey: "<b>bold</b>" })).id;
    await untilStatus(env.aiki, id, "completed");
    await page.goto(`${board.url}runs/${id}`);
    await waitText("#run .io", /<img src=x onerror=alert\(1\)>/);
    assert.equal(await page.locator("#run img, #run b:text('bold')").count(), 0);
  });

  it("shows encrypted payloads as such, never their ciphertext", async () => {
    const secret = `SECRET${randomBytes(4).toString("hex")}`;
    const sealed = client({ url: env.url, max: 2, logger: false, codec: aesGcmCodec({ keys: { k1: randomBytes(32) }, current: "k1" }) });
    clients.push(sealed);
    await env.spawn({ workflows: [tokenize] }, sealed);
    const id = (await tokenize.start(sealed, { card: secret })).id;
    await untilStatus(env.aiki, id, "completed");
    await page.goto(`${board.url}runs/${id}`);
    await waitText("#run .io", /Input\s*"encrypted \(key k1\)"/);
    await waitText("#run .io", /Output\s*"encrypted \(key k1\)"/);
    await waitText('tr[data-step="tokenize-card#1"]', /encrypted \(key k1\)/);
    const text = await page.locator("#run").textContent();
    assert.ok(!text!.includes(secret) && !text!.includes("enc:v1"), text!);
  });

  it("with a token, answers 401 without it, and keeps it in a cookie after ?token=", async () => {
    const guarded = await serve(roles.client, "s3cret-token");
    const bare = await fetch(guarded.url);
    assert.equal(bare.status, 401);
    assert.equal((await fetch(`${guarded.url}events`)).status, 401);
    assert.equal((await fetch(`${guarded.url}?token=wrong`)).status, 401);

    await context.clearCookies();
    await page.goto(`${guarded.url}?token=s3cret-token`);
    await page.locator(`tr[data-run="${runs.failed}"]`).waitFor(wait);
    assert.ok(!page.url().includes("token"), `the token left the address: ${page.url()}`);
    await page.goto(`${guarded.url}queues`);
    await waitText("#queues tbody", /default/);
    await context.clearCookies();
  });

  it("on 127.0.0.1, refuses another Host (DNS rebinding) and a POST from another origin", async () => {
    const { port } = new URL(board.url);
    const ask = (headers: Record<string, string>, method = "GET") => new Promise<number>((resolve, reject) => {
      const path = method === "POST" ? `/runs/${runs.waiting}/cancel` : "/queues";
      const request = httpRequest({ host: "127.0.0.1", port, path, method, headers }, (response) => {
        response.resume();
        resolve(response.statusCode!);
      });
      request.on("error", reject);
      request.end(method === "POST" ? "{}" : undefined);
    });
    assert.equal(await ask({ host: `evil.example:${port}` }), 421);
    assert.equal(await ask({ host: `localhost:${port}`, origin: "http://evil.example", "content-type": "application/json" }, "POST"), 403);
    assert.equal(await ask({ host: `localhost:${port}` }), 200, "a loopback Host is served");
  });

  it("shows the database's refusal when its role may not read runs", async () => {
    const refused = await serve(roles.none);
    const response = await page.goto(refused.url);
    assert.equal(response?.status(), 403);
    await waitText("#failure", /permission denied.*42501/);
  });
});

describe("aiki dashboard", () => {
  const cli = fileURLToPath(new URL("../cli.ts", import.meta.url));
  const tsx = import.meta.resolve("tsx");

  it("serves until SIGTERM, printing its address, and exits 0", async () => {
    const child = spawn(process.execPath, ["--import", tsx, cli, "dashboard", "--port", "0", "--url", urlAs(roles.client)],
      { env: { ...process.env, DATABASE_URL: undefined }, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.setEncoding("utf8");
    const address = await new Promise<string>((resolve, reject) => {
      child.stdout.on("data", (chunk: string) => {
        out += chunk;
        const found = /Aiki dashboard on (http:\/\/127\.0\.0\.1:\d+\/)/.exec(out);
        if (found) resolve(found[1]!);
      });
      child.once("exit", (code) => reject(new Error(`exited ${code} before serving: ${out}`)));
    });
    const response = await fetch(`${address}queues`);
    assert.equal(response.status, 200);
    assert.match(await response.text(), /<h1>Queues<\/h1>/);
    child.kill("SIGTERM");
    const [code] = await once(child, "exit");
    assert.equal(code, 0);
  });

  it("refuses a bad port with one line and exit code 2", async () => {
    const result = await new Promise<{ code: number; stderr: string }>((resolve) => {
      execFile(process.execPath, ["--import", tsx, cli, "dashboard", "--port", "http", "--url", env.url], (error, _stdout, stderr) =>
        resolve({ code: error ? Number(error.code) : 0, stderr }));
    });
    assert.equal(result.code, 2);
    assert.match(result.stderr, /^aiki dashboard: --port takes a port number/);
    assert.doesNotMatch(result.stderr, /^\s+at /m);
  });
});
