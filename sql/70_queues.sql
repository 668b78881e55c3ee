-- aiki engine: queues — optional per-queue settings, enforced by claim.
--
--   set_queue     concurrency limit (running runs in the queue) and per-key limit
--   pause_queue   claim skips the queue; runs keep arriving and wait
--   resume_queue  claim serves it again; wakes its workers
--
-- A queue needs no row to be used: without one it is unlimited, unpaused, and runs sharing a
-- concurrency key run one at a time.

create or replace function aiki.set_queue(
  p_name text, p_concurrency_limit integer default null, p_key_concurrency_limit integer default 1)
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
  insert into aiki.queues (name, concurrency_limit, key_concurrency_limit, updated_at)
  values (p_name, p_concurrency_limit, p_key_concurrency_limit, aiki.now())
  on conflict (name) do update
    set concurrency_limit = excluded.concurrency_limit,
        key_concurrency_limit = excluded.key_concurrency_limit,
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
