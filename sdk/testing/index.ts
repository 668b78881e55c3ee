// `aiki/testing`: the test kit. A real Postgres database of its own per environment, the
// engine installed in it, and its one clock (aiki.now()) advanced on demand, so a workflow that
// waits 14 days is tested in milliseconds with the code that runs in production.
//
// This folder also holds the repository's own test runner, which is not part of the package and
// is never built: database.ts (per-file databases cloned from a template), redis.ts,
// run-tests.ts, schema.ts, update-schema.ts. The kit is this file, env.ts, clock.ts, errors.ts.
export { testEnv, type TestEnv, type TestEnvOptions } from "./env.js";
export { NotSettledError, RunNotFinishedError } from "./errors.js";
