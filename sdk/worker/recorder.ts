// Group commit for a worker's journal writes. Executions hand their task and value results and
// their runs' ends to one Recorder, which sends all writes made in the same turn of the event
// loop, or while earlier flushes were in flight, as one `record` call: one statement and one
// commit for many runs. Each caller's promise settles when its own write is durable, so a
// workflow still continues only after its step is recorded.
//
// Answers. `record` answers each write on its own (recorded, lease lost, or the error it raised),
// so each caller gets exactly its own outcome, as the SDK error class of its SQLSTATE, and one
// write's failure never delays or fails another's. A value that is not storable JSON is refused
// before it joins a batch. A batch the engine could not take at all (a deadlock between two
// batches) is sent again; other errors (connection trouble) reject every write of the batch, and
// each execution's write loop retries its own.
//
// Heartbeats. A `record` holds its runs' row locks while it runs, and the engine's heartbeat
// skips locked rows (it waits on none): a run whose writes follow each other back to back would
// have its lease skipped at every heartbeat, and lose it. `whileIdle` runs the heartbeat between
// flushes: new flushes wait until it is done, and it waits for the ones in flight, each wait
// bounded (a flush blocked on another transaction's lock must not hold back every lease, nor a
// stranded heartbeat every write).
import type { Sql } from "postgres";
import * as engine from "../engine.js";
import { AikiError, LeaseLostError, engineError } from "../errors.js";

export type StepWrite = NonNullable<engine.RecordWrite["steps"]>[number];

interface Pending {
  write: engine.RecordWrite;
  resolve(recorded: (engine.StepRecord | null)[]): void;
  reject(error: unknown): void;
}

export interface RecorderOptions {
  /** Flushes in flight at once. Default: 2. */
  maxInFlight?: number;
  /** Writes per flush. Default: 500. */
  maxBatch?: number;
}

export class Recorder {
  private queue: Pending[] = [];
  private inFlight = 0;
  private scheduled = false;
  /** Heartbeats running: flushes in flight may finish, none starts (see "Heartbeats"). */
  private holding = 0;
  private readonly drained = new Set<() => void>();
  private readonly maxInFlight: number;
  private readonly maxBatch: number;

  constructor(private readonly sql: Sql, options: RecorderOptions = {}) {
    this.maxInFlight = options.maxInFlight ?? 2;
    this.maxBatch = options.maxBatch ?? 500;
  }

  /** Records a task or value step; resolves with its first record (a replayed step's may differ). */
  async completeStep(
    runId: string, leaseToken: string, key: string, kind: "task" | "value", name: string, output: unknown,
  ): Promise<engine.StepRecord> {
    const step = { key, kind, name, output: engine.checkJson(`output of step ${key}`, output ?? null) };
    const [recorded] = await this.submit({ run_id: runId, lease_token: leaseToken, steps: [step] });
    return recorded ?? { ...step, status: "completed", attempts: 1, error: null, child_id: null, wake_at: null };
  }

  /** Records steps handed to the code before they were durable (see Execution), in one write. */
  async completeSteps(runId: string, leaseToken: string, steps: StepWrite[]): Promise<void> {
    for (const s of steps) engine.checkJson(`output of step ${s.key}`, s.output ?? null);
    await this.submit({ run_id: runId, lease_token: leaseToken, steps });
  }

  /** Records `steps` (if any), then completes the run with `output`, as complete_run does. */
  async completeRun(runId: string, leaseToken: string, output: unknown, steps: StepWrite[] = []): Promise<void> {
    for (const s of steps) engine.checkJson(`output of step ${s.key}`, s.output ?? null);
    engine.checkJson("workflow output", output ?? null);
    await this.submit({ run_id: runId, lease_token: leaseToken, steps, complete: true, output });
  }

  private submit(write: engine.RecordWrite): Promise<(engine.StepRecord | null)[]> {
    return new Promise((resolve, reject) => {
      this.queue.push({ write, resolve, reject });
      this.schedule();
    });
  }

  /**
   * Runs `act` (the heartbeat) once no flush is in flight, or after `maxWaitMs`; flushes wait
   * while it runs, for at most 2 × `maxWaitMs` in all (a heartbeat stranded on a dead connection
   * must not hold the journal writes back). See "Heartbeats".
   */
  async whileIdle<T>(act: () => Promise<T>, maxWaitMs: number): Promise<T> {
    this.holding++;
    let held = true;
    const release = () => {
      if (!held) return;
      held = false;
      this.holding--;
      this.schedule();
    };
    const cap = setTimeout(release, 2 * maxWaitMs);
    try {
      if (this.inFlight > 0) {
        let timer: NodeJS.Timeout | undefined;
        let done!: () => void;
        await new Promise<void>((resolve) => {
          done = resolve;
          this.drained.add(done);
          timer = setTimeout(resolve, maxWaitMs);
        });
        clearTimeout(timer);
        this.drained.delete(done);
      }
      return await act();
    } finally {
      clearTimeout(cap);
      release();
    }
  }

  private schedule(): void {
    if (this.holding > 0) {
      if (this.inFlight === 0) for (const done of this.drained) done();
      return;
    }
    if (this.scheduled || this.inFlight >= this.maxInFlight || this.queue.length === 0) return;
    this.scheduled = true;
    // setImmediate: every write made in this turn of the event loop joins the batch.
    setImmediate(() => {
      this.scheduled = false;
      if (this.holding > 0) return;
      void this.flush();
    });
  }

  private async flush(): Promise<void> {
    const batch = this.queue.splice(0, this.maxBatch);
    if (batch.length === 0) return;
    this.inFlight++;
    try {
      const answers = await engine.record(this.sql, batch.map((p) => p.write));
      for (const [i, p] of batch.entries()) {
        const answer = answers[i]!;
        if (answer.status === "recorded") p.resolve(answer.steps);
        else if (answer.status === "lease_lost") p.reject(new LeaseLostError("AK001", answer.message));
        else p.reject(engineError(answer.sqlstate, answer.message) ?? new AikiError(answer.sqlstate, answer.message));
      }
    } catch (error) {
      const code = (error as { code?: unknown } | null)?.code;
      if (code === "40P01" || code === "40001") this.queue.unshift(...batch);
      else for (const p of batch) p.reject(error);
    } finally {
      this.inFlight--;
      this.schedule();
    }
  }
}
