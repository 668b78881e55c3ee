// Group commit for a worker's journal writes. Executions hand their task and value results and
// their runs' ends to one Recorder, which sends all writes made in the same turn of the event
// loop, or while earlier flushes were in flight, as one `record` call: one statement and one
// commit for many runs. Each caller's promise settles when its own write is durable, so a
// workflow still continues only after its step is recorded.
//
// Errors. `record` is all or nothing; when it raises an engine error (a lost lease, a journal
// clash, a deadlock between two batches), every write of the batch is retried on its own with
// complete_step / complete_run, so each caller gets exactly its own outcome. Other errors
// (connection trouble) reject every write of the batch; the execution's write loop retries.
import type { Sql } from "postgres";
import * as engine from "../engine.js";
import { AikiError } from "../errors.js";

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
    const step = { key, kind, name, output };
    const [recorded] = await this.submit({ run_id: runId, lease_token: leaseToken, steps: [step] });
    return recorded ?? { ...step, status: "completed", attempts: 1, error: null, child_id: null, wake_at: null };
  }

  /** Records steps handed to the code before they were durable (see Execution), in one write. */
  async completeSteps(runId: string, leaseToken: string, steps: StepWrite[]): Promise<void> {
    await this.submit({ run_id: runId, lease_token: leaseToken, steps });
  }

  /** Records `steps` (if any), then completes the run with `output`, as complete_run does. */
  async completeRun(runId: string, leaseToken: string, output: unknown, steps: StepWrite[] = []): Promise<void> {
    await this.submit({ run_id: runId, lease_token: leaseToken, steps, complete: true, output });
  }

  private submit(write: engine.RecordWrite): Promise<(engine.StepRecord | null)[]> {
    return new Promise((resolve, reject) => {
      this.queue.push({ write, resolve, reject });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled || this.inFlight >= this.maxInFlight || this.queue.length === 0) return;
    this.scheduled = true;
    // setImmediate: every write made in this turn of the event loop joins the batch.
    setImmediate(() => {
      this.scheduled = false;
      void this.flush();
    });
  }

  private async flush(): Promise<void> {
    const batch = this.queue.splice(0, this.maxBatch);
    if (batch.length === 0) return;
    this.inFlight++;
    try {
      const recorded = await engine.record(this.sql, batch.map((p) => p.write));
      let at = 0;
      for (const p of batch) {
        const count = p.write.steps?.length ?? 0;
        p.resolve(recorded.slice(at, at + count));
        at += count;
      }
    } catch (error) {
      const code = (error as { code?: unknown } | null)?.code;
      if (error instanceof AikiError || code === "40P01" || code === "40001") {
        await Promise.all(batch.map((p) => this.one(p)));
      } else {
        for (const p of batch) p.reject(error);
      }
    } finally {
      this.inFlight--;
      this.schedule();
    }
  }

  /** One write on its own, after its batch failed: its own outcome, error included. */
  private async one(p: Pending): Promise<void> {
    const { run_id: runId, lease_token: leaseToken, steps = [], complete, output } = p.write;
    try {
      const recorded: engine.StepRecord[] = [];
      for (const s of steps) {
        recorded.push(await engine.completeStep(this.sql, runId, leaseToken, s.key, s.kind, s.name, s.output));
      }
      if (complete) await engine.completeRun(this.sql, runId, leaseToken, output);
      p.resolve(recorded);
    } catch (error) {
      p.reject(error);
    }
  }
}
