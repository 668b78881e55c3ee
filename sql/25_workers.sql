-- aiki engine: workers — who is alive, and which workflow versions and queues they serve.
--
--   register_worker    a worker is alive and serves these workflow@versions on these queues
--   unregister_worker  a worker stopped
--
-- A run of a version no worker claims stays `pending` forever, and nothing else would say so:
-- get_run, find_run and list_runs mark such a run `unserved` (aiki._unserved). A worker counts as
-- alive for `stale_after_ms` after it was last seen (a registration or a heartbeat); the SDK
-- registers at start and on every heartbeat tick. Dead workers' rows are pruned by the next
-- registration of any worker, so the table holds the live fleet plus at most a few stragglers.

-- Whether a run of p_workflow@p_version on p_queue with status p_status is pending while no live
-- worker serves it. A worker with a null list serves any workflow (or queue).
create or replace function aiki._unserved(
  p_workflow text, p_version text, p_queue text, p_status aiki.run_status, p_now timestamptz)
returns boolean
language sql stable
as $$
  select p_status = 'pending' and not exists (
    select 1 from aiki.workers w
     where w.last_seen + w.stale_after_ms * interval '1 millisecond' > p_now
       and (w.workflows is null or p_workflow || '@' || p_version = any (w.workflows))
       and (w.queues is null or p_queue = any (w.queues)))
$$;

-- Records p_worker as alive (last_seen = now) serving p_workflows (`name@version` keys) on
-- p_queues, dead once not seen for p_stale_after_ms; p_info is free-form (host, pid, package).
-- Deletes the rows of workers dead by their own staleness, skipping rows another registration
-- is deleting. Idempotent. Locks the worker's row. Raises AK003 on bad input.
create or replace function aiki.register_worker(
  p_worker text, p_workflows text[], p_queues text[], p_stale_after_ms integer default 60000,
  p_info jsonb default null)
returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_now timestamptz := aiki.now();
begin
  perform aiki._check_key('worker id', p_worker);
  if p_stale_after_ms is null or p_stale_after_ms not between 1000 and 86400000 then
    raise exception using errcode = 'AK003',
      message = format('invalid worker staleness %s ms', coalesce(p_stale_after_ms::text, 'null')),
      hint = 'use 1 second to 1 day';
  end if;
  if coalesce(cardinality(p_workflows), 0) > 10000 or coalesce(cardinality(p_queues), 0) > 10000
     or array_position(p_workflows, null) is not null or array_position(p_queues, null) is not null then
    raise exception using errcode = 'AK003',
      message = 'invalid worker registration: workflows and queues take at most 10000 non-null names';
  end if;
  perform aiki._check_payload('worker info', p_info);
  insert into aiki.workers (id, started_at, last_seen, info, workflows, queues, stale_after_ms)
  values (p_worker, v_now, v_now, p_info, p_workflows, p_queues, p_stale_after_ms)
  on conflict (id) do update
    set last_seen = excluded.last_seen, info = excluded.info, workflows = excluded.workflows,
        queues = excluded.queues, stale_after_ms = excluded.stale_after_ms;
  delete from aiki.workers w
   where w.id in (select d.id from aiki.workers d
                   where d.id <> p_worker and d.last_seen + d.stale_after_ms * interval '1 millisecond' < v_now
                     for update skip locked);
end
$$;

-- Removes p_worker's row: it stopped, and serves nothing any more. Idempotent.
create or replace function aiki.unregister_worker(p_worker text) returns void
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
  delete from aiki.workers where id = p_worker
$$;
