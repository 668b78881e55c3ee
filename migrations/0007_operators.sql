-- 0007_operators: failure history for retries, and indexes for the operator reads (issue 11).
--
-- steps.errors: every failed attempt of a task, oldest first, as [{"attempt", "error",
-- "failed_at"}]. fail_step appends to it; `error` still holds the latest failure (what the code
-- sees). Null for a step that never failed, so tasks that succeed write nothing more.
--
-- run_attempts: one row per run attempt that was left behind, written only on failure paths:
-- by fail_run when the run's retry policy schedules another attempt (its failed and started
-- steps, which the next attempt runs again, are kept here as `failed_steps`), and by retry_run
-- when an operator retries a failed or cancelled run. purge_runs deletes them with their run.
--
-- Indexes for search_runs / count_runs / list_queues (sql/75_operators.sql), with the
-- (created_at, id) order they page by:
--   runs_status_created  a status filter, per-status counts (index-only), unfinished runs by
--                        queue; partial: completed runs, the bulk of the table, are listed
--                        through runs_created, where they come first anyway
--   runs_idempotency_key a search by idempotency key across workflows (runs_idempotency leads
--                        with the workflow); partial, so unkeyed starts pay nothing for it
-- Every update of a run that moves its status is a non-HOT update, which inserts an entry into
-- every index whose predicate the new row meets: a full index costs the hot path one entry per
-- transition. Measured (bench/profile.ts, 5,000 one-task runs): runs_status_created in full plus
-- a (queue, created_at, id) index cost 420 WAL bytes per run; so completing a run feeds no
-- operator index, and a queue filter reads runs_created (a queue's runs are recent and common;
-- a rare queue of a million-run table is the slow case, bounded by the page size it scans for).

alter table aiki.steps add column errors jsonb;

create table aiki.run_attempts (
  run_id        uuid not null,
  attempt       integer not null,
  ended_at      timestamptz not null,
  status        aiki.run_status not null,  -- retrying (fail_run), failed or cancelled (retry_run)
  error         jsonb,
  failed_steps  jsonb not null default '[]',
  constraint run_attempts_pkey primary key (run_id, attempt)
);

revoke all on aiki.run_attempts from public;

create index runs_status_created on aiki.runs (status, created_at, id)
  where status <> 'completed';

create index runs_idempotency_key on aiki.runs (idempotency_key)
  where idempotency_key is not null;
