// The chaos event sender process: delivers each event-waiting run its `go` event through the
// SDK (zod-validated), with an idempotency key so a resend after a dropped connection is a no-op.
// The controller lists the runs to serve in chaos_runs; the sender marks them sent. Configured by
// CHAOS_DATABASE_URL and CHAOS_LOG (JSON lines: one per send, ok or the error code).
import { appendFileSync } from "node:fs";
import { client } from "../../index.js";
import { definitions, goData } from "./workload.js";

const url = process.env.CHAOS_DATABASE_URL!;
const logFile = process.env.CHAOS_LOG!;
const record = (line: Record<string, unknown>) => appendFileSync(logFile, JSON.stringify(line) + "\n");

const aiki = client({ url, max: 4 });
const { onEvent } = definitions();
let stopping = false;
process.on("SIGTERM", () => (stopping = true));

while (!stopping) {
  let due: { run_id: string; i: number }[] = [];
  try {
    due = await aiki.sql<{ run_id: string; i: number }[]>`
      select run_id, i from chaos_runs where needs_event and not event_sent order by i limit 200`;
  } catch (error) {
    record({ ev: "list-failed", t: Date.now(), error: String(error) });
  }
  for (const run of due) {
    if (stopping) break;
    try {
      // Event names and schemas are the same for chaos-event and chaos-event-timeout.
      await onEvent.handle(aiki, run.run_id).events.go.send(goData(run.i), { idempotencyKey: "go" });
      await aiki.sql`update chaos_runs set event_sent = true where run_id = ${run.run_id}::uuid`;
      record({ ev: "sent", run: run.run_id, t: Date.now() });
    } catch (error) {
      record({ ev: "send-failed", run: run.run_id, t: Date.now(), code: (error as { code?: string }).code ?? String(error) });
    }
  }
  await new Promise((resolve) => setTimeout(resolve, due.length > 0 ? 20 : 100));
}
await aiki.close();
process.exit(0);
