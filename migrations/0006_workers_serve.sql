-- Workers say what they serve, so that a pending run no live worker serves can be named instead
-- of waiting in silence (aiki._unserved, read by get_run, find_run and list_runs).
--
--   workflows       the `name@version` keys the worker claims; null: any (a SQL caller that
--                   claims with a null list, or a worker known only from its heartbeat)
--   queues          the queues it claims from; null: any
--   stale_after_ms  how long after last_seen the worker counts as dead (and is pruned)
alter table aiki.workers
  add column workflows      text[],
  add column queues         text[],
  add column stale_after_ms integer not null default 60000,
  add constraint workers_stale_after_positive check (stale_after_ms > 0);

-- list_runs gains an `unserved` column; a function's result type cannot be changed in place.
drop function if exists aiki.list_runs(text, aiki.run_status, timestamptz, timestamptz, integer, uuid);
