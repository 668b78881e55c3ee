// `aiki dashboard`: parses its options, connects, serves until SIGINT or SIGTERM. Returns the
// exit code (0 stopped by a signal, 1 the database or the port refused, 2 bad options) and
// reports every mistake a user can fix as one line.
import { parseArgs } from "node:util";
import { client } from "../client.js";
import { dashboard } from "./server.js";

export const dashboardHelp = `aiki dashboard [--url URL] [--port 9851] [--host 127.0.0.1] [--token TOKEN]
  A web dashboard: runs (filters, live counts, search by id or idempotency key), one run's
  timeline, events and children, workers and queues; cancel, pause, resume, retry and send
  events. It acts only through the engine's SQL functions, with the role of its URL.
    --url <url>       Postgres connection URL (default: the DATABASE_URL environment variable)
    --port <n>        Port to listen on (default: 9851)
    --host <host>     Address to bind (default: 127.0.0.1, this machine only)
    --token <token>   Require this token on every request (default: AIKI_DASHBOARD_TOKEN, if set);
                      open the printed address once, a cookie keeps it afterwards
`;

export async function runDashboard(args: string[]): Promise<number> {
  if (args.includes("--help") || args.includes("-h")) {
    process.stdout.write(`Usage: ${dashboardHelp}`);
    return 0;
  }
  const fail = (message: string, code: number) => {
    console.error(`aiki dashboard: ${message}`);
    return code;
  };
  let values;
  try {
    values = parseArgs({
      args, strict: true, allowPositionals: false,
      options: { url: { type: "string" }, port: { type: "string" }, host: { type: "string" }, token: { type: "string" } },
    }).values;
  } catch (error) {
    return fail(`${(error as Error).message}\nRun \`aiki dashboard --help\` for usage.`, 2);
  }
  const url = values.url ?? process.env.DATABASE_URL;
  if (!url) return fail("no database given: set DATABASE_URL or pass --url postgres://…", 2);
  const port = Number(values.port ?? 9851);
  if (!Number.isInteger(port) || port < 0 || port > 65535) return fail("--port takes a port number, 0 to 65535", 2);
  const token = values.token ?? process.env.AIKI_DASHBOARD_TOKEN;
  if (token === "") return fail("--token must not be empty", 2);

  let aiki;
  try {
    aiki = client({ url, max: 5 });
  } catch (error) {
    return fail((error as Error).message, 2);
  }
  try {
    await aiki.ready();
    const board = await dashboard({ client: aiki, port, host: values.host, token });
    console.log(`Aiki dashboard on ${board.url}${token ? `?token=${encodeURIComponent(token)}` : ""}`);
    await new Promise<void>((resolve) => {
      process.once("SIGINT", resolve);
      process.once("SIGTERM", resolve);
    });
    await board.close();
    return 0;
  } catch (error) {
    return fail((error as Error).message, 1);
  } finally {
    await aiki.close();
  }
}
