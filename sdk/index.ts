// Aiki on Postgres — the TypeScript SDK: definitions, client, worker, relay.
export { task, type Task, type TaskContext, type TaskOptions } from "./definitions/task.js";
export {
  workflow, WorkflowVersion, type Workflow, type WorkflowRun, type WorkflowVersionOptions,
  type StartOptions, type ChildStartOptions, type ChildRunHandle, type ContinueAsNew,
} from "./definitions/workflow.js";
export type { Logger } from "./logger.js";
export { event, type EventDefinition, type EventWaitResult } from "./definitions/event.js";
export { client, type Client, type ClientOptions, type QueueOptions, type ScheduleCalls } from "./client.js";
export {
  schedule, removedSchedule, Schedule, RemovedSchedule, type ScheduleOptions,
} from "./definitions/schedule.js";
export type { Codec, PayloadContext } from "./codec/codec.js";
export { aesGcmCodec, type AesGcmCodecOptions } from "./codec/aes-gcm.js";
export { RunHandle, type WaitResult } from "./handle.js";
export { worker, type WorkerOptions, type WorkerHandle, type WorkerDefinition } from "./worker/worker.js";
export { dashboard, type Dashboard, type DashboardOptions } from "./dashboard/server.js";
export { migrate, type MigrateOptions, type MigrateResult } from "./db/migrate.js";
export { relay, type RelayOptions, type RelayHandle, type RelayStats } from "./relay/relay.js";
export type { Duration } from "./duration.js";
export type { RetryPolicy } from "./retry.js";
export type { Schema } from "./schema.js";
export { replay, type ReplayOptions, type ReplayResult, type ReplayEnd } from "./replayer/replay.js";
export type {
  RunStatus, RunRecord, RunSummary, RunTimeline, StepRecord, ScheduleInfo, TriggerResult, OverlapPolicy,
} from "./engine.js";
export * from "./errors.js";
