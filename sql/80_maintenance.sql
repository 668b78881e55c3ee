-- aiki engine: maintenance — keeping the tables small.
--
--   purge_runs  delete finished runs (with their steps and events) older than a cutoff
--
-- Purging is batched so that each call holds few locks and writes a bounded amount of WAL;
-- call it in a loop until it returns 0. Runs still referenced by an unfinished parent are not
-- special: a child only reads its parent row when it finishes, and tolerates its absence.

create or replace function aiki.purge_runs(p_finished_before timestamptz, p_batch_size integer default 1000)
returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_ids uuid[];
begin
  if p_finished_before is null then
    raise exception using errcode = 'AK003', message = 'purge_runs needs a cutoff time';
  end if;
  if p_batch_size is null or p_batch_size not between 1 and 100000 then
    raise exception using errcode = 'AK003',
      message = format('invalid batch size %s', coalesce(p_batch_size::text, 'null')), hint = 'use 1-100000';
  end if;
  select array_agg(id) into v_ids from (
    select id from aiki.runs
    where finished_at < p_finished_before
    order by finished_at
    limit p_batch_size
    for update skip locked) doomed;
  if v_ids is null then
    return 0;
  end if;
  delete from aiki.steps where run_id = any(v_ids);
  delete from aiki.events where run_id = any(v_ids);
  delete from aiki.runs where id = any(v_ids);
  return cardinality(v_ids);
end
$$;
