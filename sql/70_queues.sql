-- aiki engine: queues — optional per-queue settings, enforced by claim.
--
--   set_queue     concurrency limit (running runs in the queue), per-key limit, rate limit
--   pause_queue   claim skips the queue; runs keep arriving and wait
--   resume_queue  claim serves it again; wakes its workers
--
-- A queue needs no row to be used: without one it is unlimited, unpaused, and runs sharing a
-- concurrency key run one at a time.
--
-- Rate limits. At most rate_limit runs of the queue *start* per window of rate_window_ms; with
-- rate_per_key, at most that many per concurrency key (unkeyed runs share one allowance). A run
-- starts when it is leased for the first time (started_at is set): resuming after a sleep, a wait
-- or a retry, or a lease taken over from a crashed worker, is no new start; the successor of a
-- continue_as_new is a new run and starts anew. Windows are fixed and aligned to the Unix epoch
-- (a 60 s window runs from each minute's :00), so every claim agrees on them without state. The
-- claim enforces the limit (aiki._claim_limited): runs the window holds back go back to
-- `scheduled` until the window ends, so no worker polls for them.

-- Sets a queue's limits, replacing every limit the row held (a limit not given is removed); the
-- paused flag is kept. p_concurrency_limit: running runs of the queue at once (null: no limit).
-- p_key_concurrency_limit: running runs per concurrency key. p_rate_limit and p_rate_window_ms,
-- both or neither: at most p_rate_limit starts per window of p_rate_window_ms (1 ms - 366 days),
-- per concurrency key with p_rate_per_key. Notifies the queue (a raised limit may free runs).
-- AK003 on a bad name or limit, nothing written. Admin only.
drop function if exists aiki.set_queue(text, integer, integer);
create or replace function aiki.set_queue(
  p_name text, p_concurrency_limit integer default null, p_key_concurrency_limit integer default 1,
  p_rate_limit integer default null, p_rate_window_ms bigint default null, p_rate_per_key boolean default false)
returns aiki.queues
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_queue aiki.queues;
begin
  perform aiki._check_name('queue name', p_name);
  if p_concurrency_limit is not null and p_concurrency_limit not between 1 and 1000000 then
    raise exception using errcode = 'AK003',
      message = format('invalid concurrency limit %s', p_concurrency_limit), hint = 'use 1-1000000, or null for none';
  end if;
  if p_key_concurrency_limit is null or p_key_concurrency_limit not between 1 and 1000000 then
    raise exception using errcode = 'AK003',
      message = format('invalid key concurrency limit %s', coalesce(p_key_concurrency_limit::text, 'null')),
      hint = 'use 1-1000000';
  end if;
  if p_rate_limit is not null and p_rate_limit not between 1 and 1000000 then
    raise exception using errcode = 'AK003',
      message = format('invalid rate limit %s', p_rate_limit), hint = 'use 1-1000000 starts per window, or null for none';
  end if;
  if (p_rate_limit is null) <> (p_rate_window_ms is null)
     or p_rate_window_ms not between 1 and 31622400000 then
    raise exception using errcode = 'AK003',
      message = format('invalid rate window %s ms for rate limit %s',
                       coalesce(p_rate_window_ms::text, 'null'), coalesce(p_rate_limit::text, 'null')),
      hint = 'give a rate limit and a window of 1 ms to 366 days together, or neither';
  end if;
  if p_rate_per_key is null or (p_rate_per_key and p_rate_limit is null) then
    raise exception using errcode = 'AK003',
      message = format('invalid rate per key %s', coalesce(p_rate_per_key::text, 'null')),
      hint = 'rate per key needs a rate limit';
  end if;
  insert into aiki.queues (name, concurrency_limit, key_concurrency_limit, rate_limit, rate_window_ms, rate_per_key, updated_at)
  values (p_name, p_concurrency_limit, p_key_concurrency_limit, p_rate_limit, p_rate_window_ms, p_rate_per_key, aiki.now())
  on conflict (name) do update
    set concurrency_limit = excluded.concurrency_limit,
        key_concurrency_limit = excluded.key_concurrency_limit,
        rate_limit = excluded.rate_limit,
        rate_window_ms = excluded.rate_window_ms,
        rate_per_key = excluded.rate_per_key,
        updated_at = excluded.updated_at
  returning * into v_queue;
  perform aiki._notify_queue(p_name);
  return v_queue;
end
$$;

create or replace function aiki.pause_queue(p_name text) returns aiki.queues
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_queue aiki.queues;
begin
  perform aiki._check_name('queue name', p_name);
  insert into aiki.queues (name, paused, updated_at) values (p_name, true, aiki.now())
  on conflict (name) do update set paused = true, updated_at = excluded.updated_at
  returning * into v_queue;
  return v_queue;
end
$$;

create or replace function aiki.resume_queue(p_name text) returns aiki.queues
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_queue aiki.queues;
begin
  perform aiki._check_name('queue name', p_name);
  insert into aiki.queues (name, paused, updated_at) values (p_name, false, aiki.now())
  on conflict (name) do update set paused = false, updated_at = excluded.updated_at
  returning * into v_queue;
  perform aiki._notify_queue(p_name);
  return v_queue;
end
$$;
