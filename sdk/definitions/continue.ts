// Continue-as-new: what `run.continueAsNew(input)` returns. A handler returns it to end its run
// as `continued` and start the same workflow afresh with `input` and an empty journal (the
// engine's aiki.continue_as_new): a loop that would grow its journal without bound continues
// every so many iterations instead. The worker, not the handler, makes the call, after the
// run's last steps are recorded.
const MARK = Symbol("aiki.continueAsNew");

export class ContinueAsNew<I = unknown> {
  readonly [MARK] = true;

  constructor(
    readonly input: I,
    /** The version the successor runs; undefined: this run's version. */
    readonly version: string | undefined,
  ) {}
}
