// A real Redis for the relay tests: REDIS_URL when set (then it cannot be killed and restarted),
// otherwise a `redis-server` of our own on a free port, with persistence off, that the tests may
// kill and start again on the same port. Never the machine's Redis on 6379.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createServer, connect } from "node:net";

export interface TestRedis {
  url: string;
  /** Whether this Redis is ours to kill and restart. */
  owned: boolean;
  /** SIGKILLs the server (all data is gone: persistence is off). */
  kill(): Promise<void>;
  /** Starts it again on the same port. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

export const hasRedisServer = (): boolean => spawnSync("redis-server", ["--version"]).status === 0;

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

async function reachable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.end();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/** REDIS_URL, or a fresh redis-server; undefined when there is neither. */
export async function testRedis(): Promise<TestRedis | undefined> {
  if (process.env.REDIS_URL) {
    const url = process.env.REDIS_URL;
    const refuse = async () => {
      throw new Error("REDIS_URL is not ours to kill");
    };
    return { url, owned: false, kill: refuse, restart: refuse, stop: async () => undefined };
  }
  if (!hasRedisServer()) return undefined;
  const port = await freePort();
  let child: ChildProcess | undefined;
  const start = async () => {
    child = spawn("redis-server", ["--save", "", "--appendonly", "no", "--port", String(port), "--bind", "127.0.0.1"], { stdio: "ignore" });
    const deadline = Date.now() + 10_000;
    while (!(await reachable(port))) {
      if (Date.now() > deadline) throw new Error(`redis-server did not start on port ${port}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  };
  const kill = async () => {
    const c = child;
    child = undefined;
    if (!c || c.exitCode !== null) return;
    const exited = new Promise((resolve) => c.once("exit", resolve));
    c.kill("SIGKILL");
    await exited;
  };
  await start();
  return { url: `redis://127.0.0.1:${port}`, owned: true, kill, restart: start, stop: kill };
}
