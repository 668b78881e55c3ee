import { InvalidInputError } from "./errors.js";

/** A duration as milliseconds, or as an object of units that are added together. */
export type Duration =
  | number
  | { days?: number; hours?: number; minutes?: number; seconds?: number; milliseconds?: number };

const unitMs = { days: 86_400_000, hours: 3_600_000, minutes: 60_000, seconds: 1_000, milliseconds: 1 } as const;

/** Whole milliseconds of a duration; AK003 unless finite, non-negative and a safe integer. */
export function toMilliseconds(duration: Duration): number {
  let ms: number;
  if (typeof duration === "number") {
    ms = duration;
  } else if (duration && typeof duration === "object") {
    ms = 0;
    for (const [unit, value] of Object.entries(duration)) {
      if (!(unit in unitMs)) throw new InvalidInputError("AK003", `invalid duration unit ${JSON.stringify(unit)}`);
      if (typeof value !== "number") throw new InvalidInputError("AK003", `invalid duration ${unit}: ${String(value)}`);
      ms += value * unitMs[unit as keyof typeof unitMs];
    }
  } else {
    throw new InvalidInputError("AK003", `invalid duration ${String(duration)}`);
  }
  // Beyond 2^53 ms a number is no exact integer, and Postgres would see `1e+300`: refuse it here.
  // (The engine bounds every timer at 100 years.)
  if (!(ms >= 0 && ms <= Number.MAX_SAFE_INTEGER)) {
    const shown = typeof duration === "number" ? String(duration) : JSON.stringify(duration);
    throw new InvalidInputError("AK003", `invalid duration ${shown}: must be a finite, non-negative time (at most 2^53 ms)`);
  }
  return Math.round(ms);
}
