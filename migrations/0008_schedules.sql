-- 0008_schedules: cron and interval schedules, fired by the workers' claims (sql/72_schedules.sql).
--
-- One row per schedule. `next_fire_at` is the schedule's cursor: its next cron fire not yet
-- handled. `due_at` is when a claim must look at the schedule: the next fire, or earlier, the
-- moment the run a `buffer_one` schedule waits for finished (aiki._finish sets it then). The
-- claim's probe reads the earliest `due_at` of the unpaused schedules: one lookup of
-- schedules_due, the partial index below, so the claim pays one index probe for any number of
-- schedules that are not due. A paused schedule keeps its row and leaves the index.
--
--   overlap          skip | buffer_one | allow | cancel_previous (when the previous run of the
--                    schedule is unfinished at a fire)
--   catchup_ms       after downtime, fires missed by at most this long start too; the most
--                    recent missed fire always starts (0: only that one)
--   buffered_at      buffer_one: the fire that waits for the previous run to finish
--   last_fire_at     the latest fire handled (started, skipped or buffered); last_run_id the
--                    latest run a fire started
--   last_error       why the latest fire could not start its run (the claim goes on)
--   retry            the run retry policy of the runs it starts (aiki._check_retry's form)

create table aiki.schedules (
  name          text not null,
  next_fire_at  timestamptz not null,
  due_at        timestamptz not null,
  buffered_at   timestamptz,
  last_fire_at  timestamptz,
  last_run_id   uuid,
  created_at    timestamptz not null,
  updated_at    timestamptz not null,
  catchup_ms    bigint not null default 0,
  priority      integer not null default 0,
  paused        boolean not null default false,
  workflow      text not null,
  version       text not null,
  cron          text not null,
  timezone      text not null,
  overlap       text not null,
  queue         text not null,
  last_error    text,
  input         jsonb,
  retry         jsonb not null,
  constraint schedules_pkey primary key (name),
  constraint schedules_overlap check (overlap in ('skip', 'buffer_one', 'allow', 'cancel_previous'))
);

revoke all on aiki.schedules from public;

create index schedules_due on aiki.schedules (due_at) where not paused;
