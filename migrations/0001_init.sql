-- 0001_init: the aiki schema, its tables, indexes and roles.
--
-- Tables are private: only the security-definer functions in sql/ write them.
-- Migrations are append-only; functions live in sql/ and are re-applied on every migrate.

create schema if not exists aiki;

-- Roles are cluster-wide, so a second database on the same server finds them already there.
-- Look before creating: `create role` checks CREATEROLE before it checks for a duplicate, so a
-- database owner without CREATEROLE could not install even when the roles exist. Two databases
-- installing at once can still race to create a role: the loser sees duplicate_object, or
-- unique_violation when it had already passed the catalog check.
do $$
declare
  v_role text;
begin
  foreach v_role in array array['aiki_client', 'aiki_worker', 'aiki_admin'] loop
    continue when exists (select 1 from pg_catalog.pg_roles where rolname = v_role);
    begin
      execute format('create role %I nologin', v_role);
    exception when duplicate_object or unique_violation then
      null;
    end;
  end loop;
end
$$;

create type aiki.run_status as enum (
  'scheduled',  -- start is in the future (available_at)
  'pending',    -- claimable now
  'running',    -- leased by a worker until lease_expires_at (mirrored in available_at)
  'sleeping',   -- suspended on sleeps only; wakes at available_at
  'waiting',    -- suspended on events or children; wakes on delivery or at available_at (timeout)
  'retrying',   -- a task or the run failed; next attempt at available_at
  'paused',     -- held by an operator; nothing wakes it but resume
  'completed',
  'failed',
  'cancelled'
);

create type aiki.step_kind as enum (
  'task',        -- user code with side effects; retried by policy
  'sleep',       -- durable timer
  'event',       -- wait for a named event, optionally with a timeout
  'child',       -- start of a child run (output holds the child id)
  'wait_child',  -- wait for a child's terminal status
  'value'        -- a recorded deterministic value: now(), random(), uuid()
);

create type aiki.step_status as enum ('waiting', 'retrying', 'completed', 'failed');

-- Columns ordered widest first so rows pack without alignment padding.
create table aiki.runs (
  id                  uuid not null,
  parent_id           uuid,
  lease_token         uuid,
  -- The one time column that drives claiming: when a scheduled start, sleep, wait timeout,
  -- retry or lease expiry falls due. Null while nothing but an outside act can move the run.
  available_at        timestamptz,
  lease_expires_at    timestamptz,
  deadline_at         timestamptz,
  created_at          timestamptz not null,
  updated_at          timestamptz not null,
  started_at          timestamptz,
  finished_at         timestamptz,
  priority            integer not null default 0,
  attempt             integer not null default 1,
  lease_expiries      smallint not null default 0,
  max_lease_expiries  smallint not null default 5,
  status              aiki.run_status not null,
  workflow            text not null,
  version             text not null,
  queue               text not null,
  concurrency_key     text,
  idempotency_key     text,
  parent_step_key     text,
  lease_owner         text,
  retry               jsonb,
  input               jsonb,
  output              jsonb,
  error               jsonb,
  constraint runs_pkey primary key (id),
  constraint runs_lease_only_while_running
    check ((status = 'running') = (lease_token is not null)),
  constraint runs_terminal_has_finished_at
    check ((status in ('completed', 'failed', 'cancelled')) = (finished_at is not null)),
  constraint runs_child_has_step_key
    check ((parent_id is null) = (parent_step_key is null))
) with (fillfactor = 85, autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);

-- The claim path: only rows claimable now, in claim order.
create index runs_pending on aiki.runs (queue, priority desc, available_at)
  where status = 'pending';

-- Keyed pending runs take the serialized slow path of the claim; this answers "any?" cheaply.
create index runs_pending_keyed on aiki.runs (queue)
  where status = 'pending' and concurrency_key is not null;

-- Timers: everything that becomes claimable when available_at passes (including expired leases).
create index runs_timers on aiki.runs (available_at)
  where status in ('scheduled', 'sleeping', 'waiting', 'retrying', 'running');

-- Concurrency accounting for queues with limits and keyed runs.
create index runs_running on aiki.runs (queue, concurrency_key)
  where status = 'running';

create unique index runs_idempotency on aiki.runs (workflow, idempotency_key)
  where idempotency_key is not null;

create index runs_children on aiki.runs (parent_id)
  where parent_id is not null;

create index runs_by_workflow on aiki.runs (workflow, created_at);

create index runs_finished on aiki.runs (finished_at)
  where finished_at is not null;

-- The journal. A completed step is never written again.
create table aiki.steps (
  run_id        uuid not null,
  child_id      uuid,
  wake_at       timestamptz,  -- waiting: sleep end or wait timeout; retrying: next attempt
  created_at    timestamptz not null,
  completed_at  timestamptz,
  attempts      smallint not null default 0,
  kind          aiki.step_kind not null,
  status        aiki.step_status not null,
  step_key      text not null,
  name          text not null,
  output        jsonb,
  error         jsonb,
  constraint steps_pkey primary key (run_id, step_key),
  constraint steps_completed_has_time
    check ((status in ('completed', 'failed')) = (completed_at is not null)),
  constraint steps_child_names_child
    check ((kind in ('child', 'wait_child')) = (child_id is not null))
) with (fillfactor = 90);

create index steps_waiting on aiki.steps (run_id, kind)
  where status = 'waiting';

-- Per-run inbox. Events sent before a wait stay here, unconsumed, until a wait takes them.
create table aiki.events (
  id               bigint generated always as identity,
  run_id           uuid not null,
  created_at       timestamptz not null,
  consumed_at      timestamptz,
  name             text not null,
  idempotency_key  text,
  consumed_by      text,  -- step key of the wait that received it
  data             jsonb,
  constraint events_pkey primary key (id),
  constraint events_consumed_together
    check ((consumed_at is null) = (consumed_by is null))
);

create index events_unconsumed on aiki.events (run_id, name, id)
  where consumed_by is null;

create unique index events_idempotency on aiki.events (run_id, name, idempotency_key)
  where idempotency_key is not null;

create index events_by_run on aiki.events (run_id);

create table aiki.queues (
  name                   text not null,
  concurrency_limit      integer,  -- null: unlimited
  key_concurrency_limit  integer not null default 1,
  paused                 boolean not null default false,
  updated_at             timestamptz not null,
  constraint queues_pkey primary key (name),
  constraint queues_limits_positive
    check (coalesce(concurrency_limit, 1) > 0 and key_concurrency_limit > 0)
);

create table aiki.workers (
  id          text not null,
  started_at  timestamptz not null,
  last_seen   timestamptz not null,
  info        jsonb,
  constraint workers_pkey primary key (id)
);

revoke all on schema aiki from public;
revoke all on all tables in schema aiki from public;
