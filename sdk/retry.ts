/**
 * Retry policy, evaluated by the engine (sql/00_core.sql, _retry_delay). `maxAttempts` counts
 * every attempt, the first included; delays grow from `baseDelayMs` by `factor` up to
 * `maxDelayMs`; `jittered` picks uniformly between 0 and the exponential delay.
 */
export type RetryPolicy =
  | { type: "never" }
  | { type: "fixed" | "exponential" | "jittered"; maxAttempts: number; baseDelayMs?: number; maxDelayMs?: number; factor?: number };
