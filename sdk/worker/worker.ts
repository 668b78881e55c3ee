// The worker: claims runs of the workflow versions it registers and executes them.
//
// Loop. Claim as many runs as there are free slots (one statement, journals included). A full
// claim claims again at once. When the claim comes back short, wait for the next reason to look
// (see alarm.ts): a slot freeing up, a due time (the claim's next_due_at, or one the worker's own
// suspends and retries learnt from the engine), a claim that skipped locked runs, a notification
// for one of our queues, or the slow safety poll. No runnable run waits for the poll while the
// worker is idle; the poll is there for notifications lost with a connection.
//
// Leases. One heartbeat statement renews every lease this worker holds, named by its tokens. A
// run whose row another transaction holds comes back unrenewed, with its current expiry, and is
// kept; the heartbeat runs between the recorder's flushes, so the worker's own journal writes do
// not hold its runs' rows then (recorder.ts, "Heartbeats"). A run missing from the heartbeat's
// answer was lost (expired and reclaimed, cancelled, paused): its execution ends quietly and its
// tasks' abort signals fire. Executions are kept by lease token, not run id: a claim that hands
// back a run this worker still executes (its lease expired meanwhile) ends the older execution
// first, so one worker never holds two executions of a run, and the older one's end cannot take
// the newer one's bookkeeping with it. Lease times are judged on the monotonic clock
// (performance.now) plus the database clock's offset taken at the claim, so moving the wall
// clock loses no lease.
//
// Stop. Stop claiming, let in-flight executions finish up to a timeout, then release the rest
// back to the queue so another worker resumes them at once rather than after lease expiry.
//
// Registration. The worker records the workflow versions and queues it serves in aiki.workers
// at spawn and on every heartbeat tick, and removes itself on stop, so the engine can mark a
// pending run no live worker serves (get_run's `unserved`). It reports through the client's
// logger: start, stop, losing the database and getting it back, task and run failures.
import { hostname } from "node:os";
import { randomBytes } from "node:crypto";
import type { Client } from "../client.js";
import type { WorkflowVersion } from "../definitions/workflow.js";
import type { RemovedSchedule, Schedule } from "../definitions/schedule.js";
import * as engine from "../engine.js";
import { isConnectionError } from "../db/pool.js";
import { AikiError, DefinitionError, InvalidInputError, serializeError } from "../errors.js";
import { check, workerRules } from "../options.js";
import { sleep } from "../sleep.js";
import { Alarm, type Cause } from "./alarm.js";
import { Execution, type ExecutionEnd } from "./execution.js";
import { Recorder } from "./recorder.js";
import { Notifications } from "../listener.js";
import { RelayHints, type HintsOptions } from "../relay/hints.js";

export interface WorkerOptions {
  workflows: WorkflowVersion<any, any, any>[];
  /** Queues to claim from, in order. Default: ["default"]. */
  queues?: string[];
  /** Runs executed at once. Default: 10. */
  concurrency?: number;
  /** Lease length. Default: 30 s. */
  leaseMs?: number;
  /** Heartbeat interval. Default: a third of the lease. */
  heartbeatMs?: number;
  /**
   * Safety poll: the longest an idle worker goes without a claim. Due timers, notifications and
   * the engine's answers wake it on time without it; the poll only bounds what a notification
   * lost with a dropped LISTEN connection can cost. Default: 30 s; 5 s with `listen: false`,
   * where the poll is how new runs are found.
   */
  pollMs?: number;
  /**
   * Wake on LISTEN/NOTIFY. Default: true. With false the worker finds work by polling every
   * `pollMs` only (e.g. behind a pooler in transaction mode, where LISTEN does not work).
   */
  listen?: boolean;
  /**
   * Read wake-ups from a relay's Redis Streams (see sdk/relay) instead of a LISTEN connection
   * of its own. While Redis or every relay is away, the worker LISTENs (unless `listen: false`)
   * until the relay is back. Needs the `redis` package. Default: none.
   */
  relay?: HintsOptions;
  /** Task retries due within this wait in-process; longer ones suspend the run. Default: 2 s. */
  inlineRetryMaxMs?: number;
  /** How long stop() lets in-flight runs finish before releasing them. Default: 10 s. */
  shutdownTimeoutMs?: number;
  /** Worker id recorded as lease owner. Default: host-pid-random. */
  id?: string;
  /**
   * Schedules to make the database match at start-up, in order: each schedule(…) is created or
   * updated; a removedSchedule(name) is deleted. Schedules not listed are left alone. A bad one
   * fails the spawn (AK003). Default: none.
   */
  schedules?: (Schedule | RemovedSchedule)[];
}

export interface WorkerStats {
  /** Runs claimed. */
  claimed: number;
  /** Claim statements made, full, short and empty. */
  claims: number;
  ended: Record<ExecutionEnd, number>;
}

export interface WorkerHandle {
  readonly id: string;
  readonly stats: WorkerStats;
  /** Ids of runs executing now. */
  active(): string[];
  stop(options?: { timeoutMs?: number }): Promise<void>;
}

export interface WorkerDefinition {
  readonly options: WorkerOptions;
  spawn(client: Client): Promise<WorkerHandle>;
}

export function worker(options: WorkerOptions): WorkerDefinition {
  check("worker option", options, workerRules);
  const registered = new Map<string, WorkflowVersion>();
  for (const definition of options.workflows) {
    if (registered.has(definition.key)) {
      throw new DefinitionError("definition", `workflow ${definition.key} is registered twice; a worker runs one handler per version`);
    }
    registered.set(definition.key, definition);
  }
  if (registered.size === 0) throw new DefinitionError("definition", "a worker needs at least one workflow version");
  const concurrency = options.concurrency ?? 10;
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 1000) {
    throw new InvalidInputError("AK003", `invalid worker concurrency ${concurrency}: use 1-1000`);
  }
  return {
    options,
    spawn: (client) => Worker.spawn(client, options, registered, concurrency),
  };
}

class Worker implements WorkerHandle {
  readonly id: string;
  readonly stats: WorkerStats = {
    claimed: 0,
    claims: 0,
    ended: { completed: 0, continued: 0, failed: 0, retrying: 0, suspended: 0, lost: 0, abandoned: 0 },
  };
  /** By lease token. */
  private readonly executions = new Map<string, { execution: Execution; claimSeq: number }>();
  /** The lease token of each run executing now. */
  private readonly leases = new Map<string, string>();
  private readonly queues: string[];
  private readonly keys: string[];
  private readonly leaseMs: number;
  private readonly pollMs: number;
  private stopping = false;
  private claimSeq = 0;
  private readonly alarm: Alarm;
  private hints: RelayHints | undefined;
  private fallback: Notifications | undefined;
  /**
   * The database clock minus this process's monotonic clock (performance.now), at the last
   * claim: turns due times into local ones that moving the wall clock does not disturb.
   */
  private clockOffsetMs = 0;
  private loop: Promise<void> = Promise.resolve();
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private unsubscribe: Array<() => void> = [];
  private readonly recorder: Recorder;
  /** Executions whose handler has not settled yet: the ones that hold a slot. */
  private running = 0;
  /**
   * Whether the last look may have left claimable runs behind (the claim was full, or no slot
   * was free): only then does a freed slot claim at once. After a short claim, new work comes
   * with a notification, a due timer or the poll; claiming on every run's end would only add
   * empty claims (three per run, measured, in a serial start-to-task test).
   */
  private leftBehind = true;
  /** What failed while the database was out of reach (logged once per outage), or undefined. */
  private trouble: string | undefined;
  /** Whether the last registration failed other than by a lost connection (logged once). */
  private unregistered = false;
  /** The `schedules` not applied yet (the database was out of reach at spawn). */
  private readonly unapplied: (Schedule | RemovedSchedule)[];

  private constructor(
    private readonly client: Client,
    private readonly options: WorkerOptions,
    private readonly registered: Map<string, WorkflowVersion>,
    private readonly concurrency: number,
  ) {
    this.id = options.id ?? `${hostname()}-${process.pid}-${randomBytes(3).toString("hex")}`;
    this.queues = options.queues ?? ["default"];
    this.keys = [...registered.keys()];
    this.leaseMs = options.leaseMs ?? 30_000;
    this.pollMs = options.pollMs ?? ((options.listen ?? true) ? 30_000 : 5_000);
    this.alarm = new Alarm(this.pollMs);
    this.recorder = new Recorder(client.sql);
    this.unapplied = [...(options.schedules ?? [])];
  }

  static async spawn(client: Client, options: WorkerOptions, registered: Map<string, WorkflowVersion>, concurrency: number) {
    const w = new Worker(client, options, registered, concurrency);
    // An engine that is missing, older or newer fails the spawn with SchemaVersionError. A
    // database out of reach does not: the worker starts and claims once it is back.
    try {
      await client.ready();
      await w.register();
      await w.applySchedules();
    } catch (error) {
      if (!isConnectionError(error)) throw error;
      w.troubled("cannot reach the database", error);
    }
    if (options.relay) {
      w.hints = new RelayHints(options.relay, w.id, w.queues, {
        hint: () => w.alarm.notified(),
        health: (up) => void w.relayHealth(up),
        log: (line) => client.logger.warn(line),
      });
      w.hints.start();
    } else if (options.listen ?? true) {
      await w.listen();
    }
    w.heartbeatTimer = setInterval(() => void w.heartbeat(), w.heartbeatMs);
    w.loop = w.run();
    client.logger.info(`worker ${w.id} started: ${w.keys.join(", ")} on queue${w.queues.length === 1 ? "" : "s"} ` +
      `${w.queues.join(", ")}, concurrency ${concurrency}`);
    return w;
  }

  private get heartbeatMs(): number {
    return this.options.heartbeatMs ?? Math.floor(this.leaseMs / 3);
  }

  /** Records this worker as alive and what it serves; dead after three missed heartbeat ticks. */
  private register(): Promise<void> {
    const staleAfterMs = Math.min(86_400_000, Math.max(1_000, 3 * this.heartbeatMs));
    return engine.registerWorker(this.client.sql, this.id, this.keys, this.queues, staleAfterMs,
      { host: hostname(), pid: process.pid, concurrency: this.concurrency });
  }

  /**
   * Makes the database's schedules match the worker's `schedules`, once: a spawn that could not
   * reach the database does it on a later heartbeat tick.
   */
  private async applySchedules(): Promise<void> {
    while (this.unapplied.length > 0) {
      await this.unapplied[0]!.apply(this.client);
      this.unapplied.shift();
    }
  }

  /** Logs the first failure of an outage; the rest of it stays quiet until `recovered`. */
  private troubled(what: string, error: unknown): void {
    if (this.trouble !== undefined) return;
    this.trouble = what;
    const { name, message } = serializeError(error);
    this.client.logger[error instanceof AikiError ? "error" : "warn"](`worker ${this.id}: ${what}: ${name}: ${message}; retrying`);
  }

  private recovered(): void {
    if (this.trouble === undefined) return;
    this.trouble = undefined;
    this.client.logger.info(`worker ${this.id}: the database answers again; claiming`);
  }

  /** LISTENs for the wake-ups of the worker's queues (until `unlisten`). */
  private async listen(notifications: Notifications = this.client.notifications()): Promise<void> {
    const queues = new Set(this.queues);
    // "<queue>": runs are claimable now; "<queue> <time>": a run falls due then.
    this.unsubscribe.push(await notifications.listen("aiki_wake", (payload) => {
      const [queue, due] = payload.split(" ", 2);
      if (!queues.has(queue!)) return;
      if (due === undefined) return this.alarm.notified();
      const dueMs = Date.parse(due);
      if (Number.isFinite(dueMs)) this.alarm.dueAt(this.toLocalMs(dueMs), false);
    }));
    this.unsubscribe.push(notifications.onReconnect(() => this.alarm.wake()));
  }

  private unlisten(): void {
    for (const unsubscribe of this.unsubscribe.splice(0)) unsubscribe();
  }

  /**
   * The relay came (back) or went. Gone (Redis away, or no relay alive): LISTEN, as a worker
   * without a relay does. Back: stop listening. Either way claim once, for hints and
   * notifications lost in the switch.
   */
  private async relayHealth(up: boolean): Promise<void> {
    if (up) {
      this.unlisten();
      const fallback = this.fallback;
      this.fallback = undefined;
      await fallback?.close();
    } else if ((this.options.listen ?? true) && !this.fallback) {
      // A LISTEN connection of its own, closed when the relay is back: a fleet on a healthy relay
      // holds one LISTEN connection (the relay's), not one per worker.
      this.fallback = new Notifications(this.client.url, this.client.logger);
      await this.listen(this.fallback);
    }
    if (up) this.client.logger.info(`worker ${this.id}: reading wake-ups from the relay`);
    else this.client.logger.warn(`worker ${this.id}: relay unavailable: listening to Postgres`);
    this.alarm.wake();
  }

  active(): string[] {
    return [...this.leases.keys()];
  }

  /** A database time (epoch ms) on this process's clock. */
  private toLocalMs(databaseMs: number): number {
    return databaseMs - this.clockOffsetMs;
  }

  /** A due time an execution learnt from the engine (its suspend, its retry): wake then. */
  private dueAt(at: string): void {
    this.alarm.dueAt(this.toLocalMs(Date.parse(at)), true);
  }

  private async run(): Promise<void> {
    let cause: Cause = "wake";
    while (!this.stopping) {
      // A run whose handler has settled holds no slot while its last write is on its way; at
      // most `concurrency` such runs wait for theirs.
      const free = Math.min(this.concurrency - this.running, 2 * this.concurrency - this.executions.size);
      this.leftBehind = free <= 0;
      if (free <= 0) {
        cause = await this.alarm.wait(true);
        continue;
      }
      this.alarm.claiming();
      const hinted = this.hints?.take();
      try {
        // Taken before the claim: a process frozen while the answer was on its way must not read
        // the freeze as clock skew and think its (long expired) leases still valid.
        const sentAt = performance.now();
        const claimed = await engine.claim(this.client.sql, this.id, this.keys, this.queues, free, this.leaseMs);
        this.stats.claims++;
        this.recovered();
        // Hints that came before the claim are acted upon; a claim that failed leaves them
        // unacknowledged, for XAUTOCLAIM.
        if (hinted) this.hints!.ack(hinted);
        this.leftBehind = claimed.runs.length === free;
        this.clockOffsetMs = Date.parse(claimed.now) - sentAt;
        for (const record of claimed.runs) this.execute(record, this.clockOffsetMs);
        this.alarm.claimed({
          found: claimed.runs.length > 0,
          skipped: claimed.skipped,
          held: claimed.held,
          nextDueMs: claimed.next_due_at ? this.toLocalMs(Date.parse(claimed.next_due_at)) : undefined,
        }, cause);
        if (claimed.runs.length === free) {
          // A full claim may have left runs behind: claim again at once.
          cause = "wake";
          continue;
        }
      } catch (error) {
        this.troubled("claim failed", error);
        this.alarm.failed(1_000);
      }
      if (this.stopping) break;
      cause = await this.alarm.wait();
    }
  }

  private execute(record: engine.ClaimedRun, clockOffsetMs: number): void {
    this.stats.claimed++;
    const definition = this.registered.get(`${record.workflow}@${record.version}`)!;
    let holdsSlot = true;
    const releaseSlot = () => {
      if (!holdsSlot) return;
      holdsSlot = false;
      this.running--;
      if (this.leftBehind) this.alarm.wake();
    };
    const execution = new Execution(record, definition, {
      sql: this.client.sql,
      logger: this.client.logger,
      inlineRetryMaxMs: this.options.inlineRetryMaxMs ?? 2_000,
      clockOffsetMs,
      recorder: this.recorder,
      onSettled: releaseSlot,
      onDue: (at) => this.dueAt(at),
      tracing: true,
      codec: this.client.codec,
    });
    const older = this.leases.get(record.id);
    if (older !== undefined) this.executions.get(older)?.execution.end("lost");
    this.running++;
    this.executions.set(record.lease_token, { execution, claimSeq: ++this.claimSeq });
    this.leases.set(record.id, record.lease_token);
    void execution.start().then((end) => {
      this.stats.ended[end]++;
      this.executions.delete(record.lease_token);
      if (this.leases.get(record.id) === record.lease_token) this.leases.delete(record.id);
      releaseSlot();
      if (this.leftBehind) this.alarm.wake();
    });
  }

  private async heartbeat(): Promise<void> {
    // Beside the lease renewal, not before it: a slow registration must not delay the leases.
    if (this.unapplied.length > 0) void this.applySchedules().catch((error: unknown) => this.troubled("applying schedules failed", error));
    void this.register().then(() => (this.unregistered = false), (error: unknown) => {
      if (this.unregistered || isConnectionError(error)) return;
      this.unregistered = true;
      const { name, message } = serializeError(error);
      this.client.logger.warn(`worker ${this.id}: registration failed: ${name}: ${message}; its runs may show as unserved`);
    });
    if (this.executions.size === 0) return;
    const seq = this.claimSeq;
    // Only the leases this worker knows of: one whose claim answer was lost must expire.
    const tokens = [...this.executions.values()].map(({ execution }) => execution.leaseToken);
    let renewed: { run_id: string; lease_token: string; lease_expires_at: string }[];
    try {
      // Between the recorder's flushes: a record in flight locks its runs, and the heartbeat
      // would skip their leases (see Recorder, "Heartbeats").
      renewed = await this.recorder.whileIdle(() => engine.heartbeat(this.client.sql, this.id, this.leaseMs, tokens), Math.min(this.leaseMs / 10, 1_000));
    } catch (error) {
      this.troubled("heartbeat failed", error);
      return;
    }
    const held = new Set(renewed.map((r) => r.lease_token));
    for (const r of renewed) this.executions.get(r.lease_token)?.execution.renewed(r.lease_expires_at);
    for (const { execution, claimSeq } of this.executions.values()) {
      // Runs claimed after the heartbeat was sent cannot be in its answer.
      if (claimSeq <= seq && !held.has(execution.leaseToken)) execution.end("lost");
    }
  }

  async stop(options: { timeoutMs?: number } = {}): Promise<void> {
    this.stopping = true;
    this.alarm.wake();
    await this.loop;
    const timeoutMs = options.timeoutMs ?? this.options.shutdownTimeoutMs ?? 10_000;
    const drained = Promise.all([...this.executions.values()].map((e) => e.execution.done));
    const drainTimer = new AbortController();
    await Promise.race([drained, sleep(timeoutMs, drainTimer.signal)]);
    drainTimer.abort();
    clearInterval(this.heartbeatTimer);
    await Promise.all([...this.executions.values()].map(async ({ execution }) => {
      execution.end("abandoned");
      await engine.release(this.client.sql, execution.id, execution.leaseToken).catch(() => undefined);
    }));
    await this.hints?.stop();
    this.unlisten();
    await this.fallback?.close();
    await engine.unregisterWorker(this.client.sql, this.id).catch(() => undefined);
    this.client.logger.info(`worker ${this.id} stopped`);
  }
}
