-- aiki engine: the test clock — time that a test moves on demand (the `aiki/testing` kit).
--
--   advance_clock     move the clock of a test database forward, one due time at a time
--   test_clock_state  what the engine still has to do before the clock may move
--   (test_clock_now, the clock's time, is in 00_core.sql beside aiki.now)
--
-- The model. A database runs on a test clock when its database-level setting says so
-- (`alter database … set aiki.test_clock = on`, done by the test kit before anyone connects):
-- then aiki.now() is aiki.test_clock_now() in every session — the client's pool, the workers'
-- pools, their LISTEN connection — so one row moves the clock for all of them. The clock
-- flows at the wall clock's pace, `shift_us` from it, and advance_clock makes it jump. The shift
-- is negative when the clock stood at a due time while the wall clock passed the next target
-- (migration 0012: the clock flows on from that target, behind the wall clock). The
-- production path of aiki.now() never reads the table.
--
-- A jump must look to the engine as if the time had passed with everyone idle:
--   * no run is `running` while the clock moves, or its lease would expire under the worker
--     executing it and a second worker would execute it again; advance_clock locks the runs
--     table against writes (claims included) and moves nothing while a run is running;
--   * timers fire in order, each at its own time: a jump stops at the first due time on its way
--     and holds the clock there (`frozen_at`), so a run woken then sets its next timer from that
--     very time, not from the jump's end, nor a few milliseconds after it; the caller settles
--     the engine and calls again, and the jump that reaches its target lets the clock flow on;
--   * the live workers stay alive: their last_seen moves with the clock, else every worker would
--     look dead (its runs `unserved`) until its next heartbeat;
--   * whoever has runs due is woken: the queues of runs due at the new time are notified on
--     `aiki_wake`, as every function that makes a run claimable does.
-- The clock never goes back. Only a superuser or aiki_admin may move it (90_security.sql), and
-- only in a database on a test clock.

-- Whether this database runs on a test clock by its own setting (pg_db_role_setting), not by a
-- session's: a session may set aiki.test_clock anywhere, but only the database owner can make
-- every session of the database start with it.
create or replace function aiki._on_test_clock() returns boolean
language sql stable
as $$
  select exists (
    select 1 from pg_catalog.pg_db_role_setting s
      join pg_catalog.pg_database d on d.oid = s.setdatabase
     where d.datname = current_database() and s.setrole = 0
       and 'aiki.test_clock=on' = any (s.setconfig))
$$;

-- Moves the test clock forward toward p_to: to p_to, or to the first time before it at which a
-- run falls due (a scheduled start, a sleep, a wait's timeout, a retry) or a schedule fires, so
-- that timers fire in order. Returns {"moved": true, "now", "reached"}: the new time, and whether it is p_to. Not
-- reached, the clock stands at the due time (let the woken runs settle, then call again);
-- reached, it flows on from p_to. A p_to not after the clock's time leaves the time as it is
-- (flowing again, if it stood), with reached true. While a run is running nothing moves:
-- {"moved": false, "now", "running": n} (wait for the workers, then call again). Notifies the
-- queues of the runs and schedules due at the new time.
-- Locks aiki.runs in share row exclusive mode (waits for transactions writing runs, blocks
-- claims and starts until commit; two advances queue up), then the clock's row.
-- Raises AK005 in a database not on a test clock, AK003 on a null p_to. Admin only.
create or replace function aiki.advance_clock(p_to timestamptz)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_from timestamptz;
  v_to timestamptz;
  v_running integer;
begin
  if not aiki._on_test_clock() then
    raise exception using errcode = 'AK005',
      message = format('database %s does not run on a test clock', current_database()),
      hint = format('alter database %I set aiki.test_clock = on (the test kit does), then reconnect', current_database());
  end if;
  if p_to is null then
    raise exception using errcode = 'AK003', message = 'invalid clock target null: give a time';
  end if;
  lock table aiki.runs in share row exclusive mode;
  perform 1 from aiki.test_clock for update;
  v_from := aiki.test_clock_now();
  select count(*) into v_running from aiki.runs where status = 'running';
  if v_running > 0 then
    return jsonb_build_object('moved', false, 'now', v_from, 'running', v_running);
  end if;
  -- Schedules' fires are due times too: a claim fires them (sql/72_schedules.sql).
  v_to := least(p_to,
                (select min(available_at) from aiki.runs
                  where status in ('pending', 'scheduled', 'sleeping', 'waiting', 'retrying') and available_at > v_from),
                (select min(due_at) from aiki.schedules where not paused and due_at > v_from));
  v_to := greatest(v_to, v_from);
  -- Reached: flow on from v_to (the shift is v_to less the transaction time). Short of it: stand.
  update aiki.test_clock
     set shift_us = case when v_to >= p_to
                         then ((extract(epoch from v_to) - extract(epoch from now())) * 1000000)::bigint
                         else shift_us end,
         frozen_at = case when v_to >= p_to then null else v_to end;
  update aiki.workers
     set last_seen = last_seen + (extract(epoch from v_to) - extract(epoch from v_from)) * interval '1 second'
   where last_seen + stale_after_ms * interval '1 millisecond' > v_from;
  perform aiki._notify_queue(q.queue) from (
    select queue from aiki.runs
     where status in ('pending', 'scheduled', 'sleeping', 'waiting', 'retrying') and available_at <= v_to
    union
    select queue from aiki.schedules where not paused and due_at <= v_to
    -- Any claim fires every due schedule (72_schedules.sql), so a due one wakes every live
    -- worker's queues too: a worker of another queue sleeps on timers the jump made stale.
    union
    select unnest(w.queues) from aiki.workers w
     where w.last_seen + w.stale_after_ms * interval '1 millisecond' > v_to
       and exists (select 1 from aiki.schedules s where not s.paused and s.due_at <= v_to)) q;
  return jsonb_build_object('moved', true, 'now', v_to, 'reached', v_to >= p_to);
end
$$;

-- What keeps the engine of a test database busy at the test clock's time: {"now", "busy":
-- [{"id", "workflow", "version", "queue", "status"}, … up to 20], "next_due_at"}. Busy runs are
-- running ones and ones claimable now (pending, or a timer due) that a live worker serves on an
-- unpaused queue, and, while any worker lives, unpaused schedules due now (id `schedule:<name>`,
-- status `due`): the engine is settled when there are none. next_due_at is the earliest time a
-- run or a schedule falls due later (null: none). Reads only. Admin only.
create or replace function aiki.test_clock_state()
returns jsonb
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
  with clock as (select aiki.test_clock_now() as now)
  select jsonb_build_object(
    'now', clock.now,
    'busy', coalesce((
      select jsonb_agg(jsonb_build_object('id', b.id, 'workflow', b.workflow, 'version', b.version,
                                          'queue', b.queue, 'status', b.status))
        from (select r.id::text as id, r.workflow, r.version, r.queue, r.status::text as status from aiki.runs r
               where r.status = 'running'
                  or (r.status in ('pending', 'scheduled', 'sleeping', 'waiting', 'retrying')
                      and r.available_at <= clock.now
                      and not aiki._unserved(r.workflow, r.version, r.queue, 'pending', clock.now)
                      and not exists (select 1 from aiki.queues q where q.name = r.queue and q.paused))
               union all
              -- A due schedule, while any worker lives: its next claim fires it.
              select 'schedule:' || s.name, s.workflow, s.version, s.queue, 'due' from aiki.schedules s
               where not s.paused and s.due_at <= clock.now
                 and exists (select 1 from aiki.workers w
                              where w.last_seen + w.stale_after_ms * interval '1 millisecond' > clock.now)
               order by 1 limit 20) b), '[]'),
    'next_due_at', least((select min(r.available_at) from aiki.runs r
                           where r.status in ('pending', 'scheduled', 'sleeping', 'waiting', 'retrying')
                             and r.available_at > clock.now),
                         (select min(s.due_at) from aiki.schedules s where not s.paused and s.due_at > clock.now)))
  from clock
$$;
