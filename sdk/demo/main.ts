// `npm start`: the two examples from the Aiki README, run for real on Postgres — the embedded
// server unless DATABASE_URL is set. Prints progress as it happens and the final states.
import postgres from "postgres";
import { client, migrate, worker } from "../index.js";
import { startEmbeddedPostgres, type EmbeddedServer } from "../db/embedded.js";
import { orderV1, deliveryV1 } from "./restaurant.js";
import { subscriptionV1, progress } from "./subscription.js";
import { minutes } from "./clock.js";

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const ms = (d: ReturnType<typeof minutes>) => (typeof d === "number" ? d : d.milliseconds ?? 0);

let embedded: EmbeddedServer | undefined;
let url = process.env.DATABASE_URL;
if (!url) {
  console.log("Starting an embedded Postgres (set DATABASE_URL to use your own)…");
  embedded = await startEmbeddedPostgres();
  url = embedded.url;
}
const admin = postgres(url, { max: 1, onnotice: () => {} });
const { applied } = await migrate(admin);
await admin.end();
console.log(`Engine installed (${applied.length ? `migrations ${applied.join(", ")}` : "up to date"}).\n`);

const aiki = client({ url, logger: { info: () => {}, warn: progress, error: progress } });
const handle = await worker({ workflows: [subscriptionV1, orderV1, deliveryV1], concurrency: 20, pollMs: 1000 }).spawn(aiki);
const runTag = Date.now().toString(36);

console.log("Subscription trials: alice pays on day 2, bob never pays.");
const alice = await subscriptionV1.start(aiki, { userId: "alice" }, { idempotencyKey: `alice-${runTag}` });
const bob = await subscriptionV1.start(aiki, { userId: "bob" }, { idempotencyKey: `bob-${runTag}` });

console.log("Restaurant orders: o-1 is accepted in time, o-2 is never accepted.\n");
const o1 = await orderV1.start(aiki, { orderId: "o-1" }, { idempotencyKey: `o-1-${runTag}` });
const o2 = await orderV1.start(aiki, { orderId: "o-2" }, { idempotencyKey: `o-2-${runTag}` });

await delay(ms(minutes(1)));
await o1.events.accepted.send({ eta: 25 });
progress("o-1: restaurant accepted the order (event sent)");
await delay(ms(minutes(1)));
await alice.events.paid.send({ plan: "pro" });
progress("alice: payment received (event sent)");

const runs = { "alice (trial)": alice, "bob (trial)": bob, "o-1 (order)": o1, "o-2 (order)": o2 };
const outcomes = await Promise.all(Object.values(runs).map((run) => run.waitForStatus("completed", { timeout: 60_000 })));
await handle.stop();

console.log("\nFinal states:");
let ok = true;
Object.keys(runs).forEach((name, i) => {
  const outcome = outcomes[i]!;
  ok &&= outcome.success;
  const shown = outcome.success ? JSON.stringify(outcome.state.output) : outcome.cause;
  console.log(`  ${name.padEnd(14)} ${outcome.success ? "completed" : "NOT completed"}  ${shown}`);
});
await aiki.close();
await embedded?.stop();
process.exit(ok ? 0 : 1);
