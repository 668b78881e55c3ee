import { InvalidInputError } from "./errors.js";

/** A duration as milliseconds, or as an object of units that are added together. */
export type Duration =
  | number
  | { days?: number; hours?: number; minutes?: number; seconds?: number; milliseconds?: number };

const unitMs = { days: 86_400_000, hours: 3_600_000, minutes: 60_000, seconds: 1_000, milliseconds: 1 } as const;

/** Whole milliseconds of a duration; the engine rejects negative and absurd values itself. */
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
  if (!Number.isFinite(ms) || ms < 0) throw new InvalidInputError("AK003", `invalid duration ${JSON.stringify(duration)}: must be a finite, non-negative time`);
  return Math.round(ms);
}
