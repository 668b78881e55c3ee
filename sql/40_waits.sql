-- aiki engine: waits — durable sleeps, event waits with timeouts, and waits for children.
--
--   suspend     register the waits the code is blocked on; resolve what can be resolved now;
--               otherwise release the run until a wait resolves
--   sleep, wait_event, wait_child   one-wait forms of suspend, for callers from SQL
--
-- A wait is a journal step with status `waiting` and, for sleeps and timeouts, a wake_at.
-- It resolves in exactly one place per cause: the claim's promotion (time), send_event (an
-- event), _deliver_to_parent (a child finished), or here, when the cause already happened
-- before the code asked. All four hold the waiting run's lock, so a cause arriving while the
-- run suspends is never lost: whichever transaction comes second sees the first one's write.
--
-- Wake rule: a suspended run wakes when any sleep or event wait resolves, or when the last
-- child it waits for finishes. So a fan-in over many children wakes the parent once.

-- Raises AK003 when two items of p_items, a JSON array of objects, share a "key": one call
-- cannot make two journal steps of one key (it raised 23505 from the primary key, or answered
-- a later wait with the first one's step). p_call names the function in the message.
create or replace function aiki._check_unique_keys(p_call text, p_items jsonb) returns void
language plpgsql immutable
as $$
declare
  v_key text;
begin
  select i->>'key' into v_key
    from jsonb_array_elements(p_items) i
   where i->>'key' is not null
   group by i->>'key'
  having count(*) > 1
   limit 1;
  if found then
    raise exception using errcode = 'AK003',
      message = format('duplicate step key %s in one %s call', quote_literal(left(v_key, 200)), p_call),
      hint = 'give every item of the call its own key';
  end if;
end
$$;

-- A whole number from JSON (a duration in ms, a priority), or AK003.
create or replace function aiki._json_whole(p_what text, p_value jsonb) returns bigint
language plpgsql immutable
as $$
begin
  if jsonb_typeof(p_value) is not distinct from 'number' then
    if p_value::numeric = trunc(p_value::numeric) and abs(p_value::numeric) <= 9e15 then
      return p_value::bigint;
    end if;
  end if;
  raise exception using errcode = 'AK003',
    message = format('invalid %s %s', p_what, coalesce(left(p_value::text, 100), 'null')),
    hint = 'use a whole number';
end
$$;

-- Resolves a waiting step if its cause has already happened; returns the updated step, or null
-- while it must keep waiting. Caller holds the run's lock.
create or replace function aiki._try_resolve(p_step aiki.steps, p_now timestamptz) returns aiki.steps
language plpgsql
as $$
declare
  v_output jsonb;
  v_event aiki.events;
  v_child aiki.runs;
  v_step aiki.steps;
begin
  if p_step.kind = 'event' then
    update aiki.events
       set consumed_by = p_step.step_key, consumed_at = p_now
     where id = (select id from aiki.events
                 where run_id = p_step.run_id and name = p_step.name and consumed_by is null
                 order by id limit 1)
    returning * into v_event;
    if found then
      v_output := jsonb_build_object('data', v_event.data);
    elsif p_step.wake_at <= p_now then
      v_output := '{"timeout": true}';
    end if;
  elsif p_step.kind = 'sleep' then
    if p_step.wake_at <= p_now then
      v_output := 'null';
    end if;
  elsif p_step.kind = 'wait_child' then
    -- A child that continued as new is waited for until its chain's newest run ends.
    select * into v_child from aiki.runs where id = p_step.child_id;
    v_child := aiki._chain_latest(v_child);
    if v_child.status in ('completed', 'failed', 'cancelled') then
      v_output := aiki._child_outcome(p_step.child_id, v_child.id, v_child.status, v_child.output, v_child.error);
    end if;
  end if;
  if v_output is null then
    return null;
  end if;
  update aiki.steps
     set status = 'completed', output = nullif(v_output, 'null'), completed_at = p_now, wake_at = null
   where run_id = p_step.run_id and step_key = p_step.step_key
  returning * into v_step;
  return v_step;
end
$$;

-- Registers p_waits, a JSON array of
--   {"key", "kind": "sleep",      "name", "duration_ms"}          a durable timer
--   {"key", "kind": "event",      "name", "timeout_ms"?}          the next event of that name
--   {"key", "kind": "wait_child", "name", "child_id"}             a child run's terminal status
-- Waits already in the journal keep their original deadline (replay-safe). Returns
--   {"suspended": false, "resolved": [steps]}  a sleep or event wait resolved at once, or every
--                                              child wait did: the worker goes on;
--   {"suspended": true, "available_at": ts}    the run is released as `sleeping` (only sleeps
--                                              outstanding) or `waiting`, until a wait resolves.
-- The answer follows the wake rule (see the header): child waits that resolved while others
-- stay open are journalled and the run is released, to wake when the last child finishes.
-- Answering "go on" for them instead made a fan-in re-suspend once per batch of finished
-- children, each time over all open waits and under the parent's lock (bench: 1,000 children
-- took 1.5 s instead of 0.5 s whenever the children began finishing before the first suspend).
-- AK001 lease lost, AK003 malformed wait or a child of another run, AK006 step clash.
create or replace function aiki.suspend(p_run_id uuid, p_lease_token uuid, p_waits jsonb)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_run aiki.runs;
  v_now timestamptz := aiki.now();
  v_wait jsonb;
  v_kind text;
  v_key text;
  v_name text;
  v_child_id uuid;
  v_wake_at timestamptz;
  v_step aiki.steps;
  -- An array, turned into JSON once: appending to a jsonb array copies it, quadratic in the
  -- number of waits resolved at once (a fan-in whose children finished first).
  v_resolved jsonb[] := '{}';
  v_available_at timestamptz;
  v_status aiki.run_status;
  v_known jsonb;
  v_children integer := 0;
  v_children_done integer := 0;
  v_others_done integer := 0;
  v_new integer := 0;
begin
  if jsonb_typeof(p_waits) is distinct from 'array' or jsonb_array_length(p_waits) not between 1 and 10000 then
    raise exception using errcode = 'AK003',
      message = 'suspend needs a JSON array of 1-10000 waits';
  end if;
  perform aiki._check_unique_keys('suspend', p_waits);
  v_run := aiki._lock_lease(p_run_id, p_lease_token, false);
  -- Keys already in the journal are checked and locked one by one; new ones need no row lock,
  -- as the run's lock orders its journal writes (a lookup less per wait).
  select coalesce(jsonb_object_agg(step_key, true), '{}') into v_known
    from aiki.steps
   where run_id = p_run_id and step_key = any(array(select w->>'key' from jsonb_array_elements(p_waits) w));

  for v_wait in select value from jsonb_array_elements(p_waits) loop
    if jsonb_typeof(v_wait) is distinct from 'object' then
      raise exception using errcode = 'AK003', message = format('invalid wait %s: expected an object', left(v_wait::text, 200));
    end if;
    v_kind := v_wait->>'kind';
    v_key := aiki._check_key('step key', v_wait->>'key');
    v_child_id := null;
    v_wake_at := null;
    if v_kind = 'sleep' then
      v_wake_at := v_now + aiki._check_duration('sleep duration', aiki._json_whole('sleep duration', v_wait->'duration_ms'));
    elsif v_kind = 'event' then
      if coalesce(v_wait->'timeout_ms', 'null') <> 'null' then
        v_wake_at := v_now + aiki._check_duration('event timeout', aiki._json_whole('event timeout', v_wait->'timeout_ms'));
      end if;
    elsif v_kind = 'wait_child' then
      if coalesce(v_wait->>'child_id', '') !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
        raise exception using errcode = 'AK003',
          message = format('invalid child id %s', coalesce(left(v_wait->>'child_id', 100), 'null'));
      end if;
      v_child_id := (v_wait->>'child_id')::uuid;
      -- By primary key: matched on (id, parent_id), the planner may walk runs_children, all of
      -- the parent's children for each wait (a 1,000-child fan-in: 46 µs a wait, bench).
      if (select parent_id from aiki.runs where id = v_child_id) is distinct from p_run_id then
        raise exception using errcode = 'AK003',
          message = format('run %s is not a child of run %s', coalesce(v_child_id::text, 'null'), p_run_id);
      end if;
    else
      raise exception using errcode = 'AK003',
        message = format('invalid wait kind %s', coalesce(quote_literal(left(v_kind, 100)), 'null')),
        hint = 'use sleep, event or wait_child';
    end if;
    -- The name is checked after the kind's own fields: wait_child passes the child's workflow
    -- as the name, null for a missing child, which must read "not a child", not "invalid name".
    v_name := aiki._check_name(v_kind || ' name', v_wait->>'name');

    v_step := case when v_known ? v_key then aiki._lock_step(p_run_id, v_key, v_kind::aiki.step_kind, v_name) end;
    if v_step.status is null then
      insert into aiki.steps (run_id, step_key, kind, status, name, wake_at, child_id, created_at, wait_seq)
      values (p_run_id, v_key, v_kind::aiki.step_kind, 'waiting', v_name, v_wake_at, v_child_id, v_now,
              nextval('aiki.steps_wait_seq'))
      returning * into v_step;
      v_new := v_new + 1;
    end if;
    if v_step.status = 'waiting' then
      v_step := aiki._try_resolve(v_step, v_now);
    end if;
    if v_step.status is not null then
      v_resolved := v_resolved || aiki._step_json(v_step);
    end if;
    if v_kind = 'wait_child' then
      v_children := v_children + 1;
      v_children_done := v_children_done + (v_step.status is not null)::integer;
    else
      v_others_done := v_others_done + (v_step.status is not null)::integer;
    end if;
  end loop;
  perform aiki._check_journal_room(p_run_id, v_new, 0);

  if v_others_done > 0 or (v_children > 0 and v_children_done = v_children) then
    return jsonb_build_object('suspended', false, 'resolved', to_jsonb(v_resolved));
  end if;

  select min(wake_at),
         case when bool_and(kind = 'sleep') then 'sleeping' else 'waiting' end::aiki.run_status
    into v_available_at, v_status
    from aiki.steps where run_id = p_run_id and status = 'waiting';
  v_available_at := least(v_available_at, v_run.deadline_at);
  perform aiki._leave_running(v_run, v_status, v_available_at);
  return jsonb_build_object('suspended', true, 'available_at', v_available_at);
end
$$;

-- Sleeps until p_duration_ms after the first call; returns suspend's answer.
create or replace function aiki.sleep(
  p_run_id uuid, p_lease_token uuid, p_step_key text, p_name text, p_duration_ms bigint)
returns jsonb
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
  select aiki.suspend(p_run_id, p_lease_token, jsonb_build_array(jsonb_build_object(
    'key', p_step_key, 'kind', 'sleep', 'name', p_name, 'duration_ms', p_duration_ms)))
$$;

-- Waits for the next event named p_event, or p_timeout_ms (null: forever).
create or replace function aiki.wait_event(
  p_run_id uuid, p_lease_token uuid, p_step_key text, p_event text, p_timeout_ms bigint default null)
returns jsonb
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
  select aiki.suspend(p_run_id, p_lease_token, jsonb_build_array(jsonb_build_object(
    'key', p_step_key, 'kind', 'event', 'name', p_event, 'timeout_ms', p_timeout_ms)))
$$;

-- Waits for child p_child_id to finish, whatever its terminal status.
create or replace function aiki.wait_child(
  p_run_id uuid, p_lease_token uuid, p_step_key text, p_child_id uuid)
returns jsonb
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
  select aiki.suspend(p_run_id, p_lease_token, jsonb_build_array(jsonb_build_object(
    'key', p_step_key, 'kind', 'wait_child', 'child_id', p_child_id,
    'name', (select workflow from aiki.runs where id = p_child_id))))
$$;
