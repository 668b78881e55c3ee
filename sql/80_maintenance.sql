-- aiki engine: maintenance — keeping the tables small.
--
--   purge_runs  delete finished runs (with their steps, events and past attempts) older than a cutoff
--
-- Purging is batched so that each call holds few locks and writes a bounded amount of WAL:
-- one call deletes at most p_batch_size rows of each table (runs, steps, events, run_attempts), so a run with
-- 200,000 buffered events is purged over many calls instead of in one. Call it in a loop until
-- it returns 0. A run's journal and inbox go first and its row last, so a run half purged is
-- still found, finished, by the next call.
--
-- A finished child of an unfinished parent is kept: the parent may still wait for it, and
-- without the child's row its wait failed with `run … is not a child of run …`. Once the parent
-- is finished (or purged), the child goes with the rest. A child whose parent was purged still
-- runs, times out and can be cancelled: it reads its parent row only when it finishes, and
-- tolerates its absence.
--
-- A continued run (continue_as_new) is kept while its chain's newest run is unfinished or newer
-- than the cutoff: the chain's first run holds the idempotency key that finds the chain, and a
-- parent or handle names the chain by it.

-- Deletes up to p_batch_size runs finished before p_finished_before, and up to p_batch_size of
-- their steps, events and past attempts; returns how many rows it deleted (all four tables).
-- Locks the runs it picks (SKIP LOCKED: a run another transaction holds is left for later).
-- AK003 on a null cutoff or a batch size outside 1-100000. Admin only.
create or replace function aiki.purge_runs(p_finished_before timestamptz, p_batch_size integer default 1000)
returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_ids uuid[];
  v_events integer;
  v_steps integer;
  v_attempts integer;
  v_runs integer;
begin
  if p_finished_before is null then
    raise exception using errcode = 'AK003', message = 'purge_runs needs a cutoff time';
  end if;
  if p_batch_size is null or p_batch_size not between 1 and 100000 then
    raise exception using errcode = 'AK003',
      message = format('invalid batch size %s', coalesce(p_batch_size::text, 'null')), hint = 'use 1-100000';
  end if;
  select array_agg(id) into v_ids from (
    select r.id from aiki.runs r
    where r.finished_at < p_finished_before
      and not exists (select 1 from aiki.runs p where p.id = r.parent_id and p.finished_at is null)
      and not exists (select 1 from aiki.runs l
                      where r.continued_to is not null and l.chain_id = r.chain_id and l.continued_to is null
                        and (l.finished_at is null or l.finished_at >= p_finished_before))
    order by r.finished_at
    limit p_batch_size
    for update of r skip locked) doomed;
  if v_ids is null then
    return 0;
  end if;
  delete from aiki.events
   where id = any(array(select id from aiki.events where run_id = any(v_ids) limit p_batch_size));
  get diagnostics v_events = row_count;
  delete from aiki.steps s
   using (select run_id, step_key from aiki.steps where run_id = any(v_ids) limit p_batch_size) d
   where s.run_id = d.run_id and s.step_key = d.step_key;
  get diagnostics v_steps = row_count;
  delete from aiki.run_attempts a
   using (select run_id, attempt from aiki.run_attempts where run_id = any(v_ids) limit p_batch_size) d
   where a.run_id = d.run_id and a.attempt = d.attempt;
  get diagnostics v_attempts = row_count;
  delete from aiki.runs r
   where r.id = any(v_ids)
     and not exists (select 1 from aiki.steps s where s.run_id = r.id)
     and not exists (select 1 from aiki.events e where e.run_id = r.id)
     and not exists (select 1 from aiki.run_attempts a where a.run_id = r.id);
  get diagnostics v_runs = row_count;
  return v_events + v_steps + v_attempts + v_runs;
end
$$;
