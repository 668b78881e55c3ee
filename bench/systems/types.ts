// What every benchmarked system offers the workloads. One instance serves one workload in one
// fresh database, then stops.

/** A job's or run's input. `t0` / `at` are epoch milliseconds with sub-millisecond precision. */
export interface Payload {
  i: number;
  t0?: number;
  at?: number;
}

/** `one`: a single task. `three`: three tasks in sequence (a chain of three jobs for queues). */
export type Kind = "one" | "three";

export interface Hooks {
  /** Called inside the task body, with the task's position (1-3) in its run or chain. */
  onTask(payload: Payload, step: number): void;
}

export interface StartOptions {
  /** Wake on LISTEN/NOTIFY (default) or find work by polling only. */
  listen?: boolean;
}

export interface System {
  readonly name: string;
  readonly version: string;
  /** Settings worth printing beside the figures. */
  readonly settings: string;
  install(url: string): Promise<void>;
  /** Pre-starts `count` runs / jobs in bulk, before any worker runs. */
  enqueue(kind: Kind, count: number): Promise<void>;
  start(hooks: Hooks, options?: StartOptions): Promise<void>;
  /** Starts one run / adds one job through the normal client API; `runAt` delays it. */
  add(kind: Kind, payload: Payload, runAt?: Date): Promise<void>;
  /** Runs / jobs not yet finished in the database. */
  remaining(): Promise<number>;
  stop(): Promise<void>;
}

/** Epoch milliseconds with sub-millisecond precision, comparable across the process. */
export const epochMs = () => performance.timeOrigin + performance.now();
