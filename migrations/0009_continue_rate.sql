-- 0009_continue_rate: continue-as-new chains and queue rate limits (issue 12 §2, §3).
--
-- runs.continued_from / continued_to / chain_id: continue_as_new (sql/10_runs.sql) ends a run
-- with the terminal status `continued` and starts its successor with an empty journal. The two
-- are linked both ways (continued_to on the predecessor, continued_from on the successor), and
-- every run of a chain carries chain_id, the id of the chain's first run (the one a parent, a
-- handle or an idempotency key names). Null on runs that never continued, so ordinary runs pay
-- only their null bitmap.
--
-- runs_chain_latest: the newest run of each chain (the one not continued yet), found by chain id
-- in one index probe: find_run by idempotency key, a parent's wait on a chain, cancel and
-- send_event on a continued run all need it. At most one entry per chain.
--
-- The `continued` status is terminal, so runs_terminal_has_finished_at gains it. A value added
-- to an enum cannot be used in the transaction that adds it (55P04, unsafe use of new value),
-- and the migrator runs every migration and function file in one transaction: the constraint
-- compares the status as text, and the functions name the value only in PL/pgSQL bodies, which
-- are parsed when first run.
--
-- queues.rate_limit / rate_window_ms / rate_per_key and aiki.queue_rates: at most rate_limit
-- runs of the queue (per concurrency key with rate_per_key) start per window of rate_window_ms,
-- windows aligned to the Unix epoch. queue_rates counts the starts of the current window, one
-- row per queue and bucket (the concurrency key, '' for the whole queue or unkeyed runs); the
-- claim resets a row when its window has passed. See aiki._claim_limited (sql/20_claim.sql).

alter type aiki.run_status add value if not exists 'continued';

alter table aiki.runs
  add column continued_from uuid,
  add column continued_to uuid,
  add column chain_id uuid;

alter table aiki.runs drop constraint runs_terminal_has_finished_at;
alter table aiki.runs add constraint runs_terminal_has_finished_at
  check ((status::text in ('completed', 'failed', 'cancelled', 'continued')) = (finished_at is not null));

create index runs_chain_latest on aiki.runs (chain_id)
  where chain_id is not null and continued_to is null;

alter table aiki.queues
  add column rate_limit integer,
  add column rate_window_ms bigint,
  add column rate_per_key boolean not null default false,
  add constraint queues_rate_limit_whole
    check ((rate_limit is null) = (rate_window_ms is null) and coalesce(rate_limit, 1) > 0 and coalesce(rate_window_ms, 1) > 0);

create table aiki.queue_rates (
  window_end  timestamptz not null,  -- when the counted window ends and its starts stop counting
  started     integer not null,
  queue       text not null,
  bucket      text not null,         -- the concurrency key with rate_per_key, else ''
  constraint queue_rates_pkey primary key (queue, bucket)
);

revoke all on aiki.queue_rates from public;
