// Replay bookkeeping of one execution, with no database and no timers: which step key each
// durable call gets, what the journal says for it, and whether the code still follows the
// journal. Execution (execution.ts) asks; this module only keeps count and judges.
//
// Keys. Every durable call gets its name plus an occurrence counter (`charge-card#1`,
// `charge-card#2`), so the same code reaches the same keys on every replay.
// Judgements. A key recorded with another kind or name than the code asks is a mismatch. Code
// that goes somewhere new while journal entries remain that it has not reached has diverged;
// the caller decides when to ask (once the handler is idle, when replay reached all it can).
import type { StepKind, StepRecord } from "../engine.js";

export interface DurableCall {
  key: string;
  kind: string;
  name: string;
}

export type Lookup =
  | { step: StepRecord | undefined }
  | { mismatch: string };

export class Replay {
  private readonly journal: Map<string, StepRecord>;
  private readonly counters = new Map<string, number>();
  /** Journal keys (any status) the code has not reached yet, in journal order. */
  private readonly unreached: Set<string>;
  /** Completed journal entries the code has not reached yet. */
  private unreplayed: number;

  constructor(private readonly runId: string, journal: readonly StepRecord[]) {
    this.journal = new Map(journal.map((step) => [step.key, step]));
    this.unreplayed = journal.filter((step) => step.status === "completed").length;
    this.unreached = new Set(journal.map((step) => step.key));
  }

  /** The key of the next call named `name`. */
  nextKey(name: string): string {
    const n = (this.counters.get(name) ?? 0) + 1;
    this.counters.set(name, n);
    return `${name}#${n}`;
  }

  /** The journal entry for `key`, checked against the call the code makes now; marks it reached. */
  lookup(key: string, kind: StepKind, name: string): Lookup {
    const step = this.journal.get(key);
    if (step?.status === "completed" && this.unreplayed > 0) this.unreplayed--;
    this.unreached.delete(key);
    if (step && (step.kind !== kind || step.name !== name)) {
      return {
        mismatch: `non-determinism at step '${key}' of run ${this.runId}: the journal recorded ${step.kind} '${step.name}', ` +
          `the code now calls ${kind} '${name}'. Deploy changed workflow code as a new version.`,
      };
    }
    return { step };
  }

  /** Whether the journal holds `key` (in any status). */
  has(key: string): boolean {
    return this.journal.has(key);
  }

  /** A step the engine resolved meanwhile (a wait answered at suspend) joins the journal. */
  learn(step: StepRecord): void {
    this.journal.set(step.key, step);
  }

  /** True while completed entries remain unreplayed: the run's logger stays quiet. */
  get replaying(): boolean {
    return this.unreplayed > 0;
  }

  /** True once the code has reached every journal entry. */
  get caughtUp(): boolean {
    return this.unreached.size === 0;
  }

  /**
   * Whether the code, about to make `call` (or to return, without one), has reached every journal
   * entry: undefined if so, else the non-determinism message naming the first entry missed.
   */
  divergence(call: DurableCall | undefined): string | undefined {
    const missed = this.firstUnreached();
    if (!missed) return undefined;
    const now = call ? `the code now calls ${call.kind} '${call.name}' (step '${call.key}') instead` : "the code returned without reaching it";
    return `non-determinism at step '${missed.key}' of run ${this.runId}: the journal recorded ${missed.kind} '${missed.name}', ` +
      `${now}. Deploy changed workflow code as a new version.`;
  }

  /** The first journal entry (in journal order) the code has not reached, if any. */
  firstUnreached(): StepRecord | undefined {
    return this.journal.get(this.unreached.values().next().value ?? "");
  }
}
