// Demo durations. The examples speak in minutes and days; with --fast (what `npm start` passes)
// a minute lasts 200 ms and a day 400 ms, so the whole demo finishes in seconds while every
// timeout still races the events that beat it or lose to it.
import type { Duration } from "../duration.js";

const fast = process.argv.includes("--fast");

export const minutes = (n: number): Duration => ({ milliseconds: n * (fast ? 200 : 60_000) });
export const days = (n: number): Duration => ({ milliseconds: n * (fast ? 400 : 86_400_000) });
export const scaled = (realMs: number, fastMs: number): number => (fast ? fastMs : realMs);
