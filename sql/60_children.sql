-- aiki engine: children — runs started by a workflow step.
--
--   start_children  start many children from one parent in one call (fan-out)
--   start_child     the one-child form
--
-- A child start is a journal step of kind `child` whose output names the child, written in the
-- same transaction as the child's row, so a replay finds the child instead of starting another.
-- The child's terminal status reaches the parent through _deliver_to_parent (runs.sql), and a
-- parent waits for it with a `wait_child` wait (waits.sql).

-- Starts children of p_run_id, a JSON array of
--   {"key", "workflow", "version", "input"?, "queue"?, "priority"?, "concurrency_key"?,
--    "timeout_ms"?, "retry"?, "trace_context"?}
-- and returns their ids in the same order. A child without a trace context inherits the
-- parent's, so it joins the parent's trace even when the worker traced nothing. Keys already in the journal return the child they
-- started (AK006 if that child is of another workflow). AK001 lease lost, AK003 bad input.
create or replace function aiki.start_children(p_run_id uuid, p_lease_token uuid, p_children jsonb)
returns uuid[]
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_run aiki.runs;
  v_now timestamptz := aiki.now();
  v_child jsonb;
  v_key text;
  v_step aiki.steps;
  v_child_id uuid;
  v_priority bigint;
  v_ids uuid[] := '{}';
  v_known jsonb;
  v_new integer := 0;
begin
  if jsonb_typeof(p_children) is distinct from 'array' or jsonb_array_length(p_children) not between 1 and 10000 then
    raise exception using errcode = 'AK003', message = 'start_children needs a JSON array of 1-10000 children';
  end if;
  perform aiki._check_unique_keys('start_children', p_children);
  v_run := aiki._lock_lease(p_run_id, p_lease_token, false);
  -- Keys already in the journal (a replay) are checked and locked one by one; new keys need no
  -- row lock, as the run's lock orders its journal writes (saves a lookup per child: 20 µs).
  select coalesce(jsonb_object_agg(step_key, true), '{}') into v_known
    from aiki.steps
   where run_id = p_run_id and step_key = any(array(select c->>'key' from jsonb_array_elements(p_children) c));

  for v_child in select value from jsonb_array_elements(p_children) loop
    if jsonb_typeof(v_child) is distinct from 'object' then
      raise exception using errcode = 'AK003', message = format('invalid child %s: expected an object', left(v_child::text, 200));
    end if;
    v_key := aiki._check_key('step key', v_child->>'key');
    if v_known ? v_key then
      v_step := aiki._lock_step(p_run_id, v_key, 'child', aiki._check_name('workflow name', v_child->>'workflow'));
    else
      v_step := null;
      perform aiki._check_name('workflow name', v_child->>'workflow');
    end if;
    if v_step.child_id is not null then
      v_ids := v_ids || v_step.child_id;
      continue;
    end if;
    -- Range-check before the cast to integer: a huge priority is AK003, not 22003 (out of range).
    v_priority := case when v_child ? 'priority' then aiki._json_whole('priority', v_child->'priority') else v_run.priority end;
    if v_priority not between -1000000 and 1000000 then
      raise exception using errcode = 'AK003', message = format('invalid priority %s', v_priority),
        hint = 'use an integer between -1000000 and 1000000; higher runs first';
    end if;
    select r.run_id into v_child_id
      from aiki._insert_run(
        v_child->>'workflow', v_child->>'version', coalesce(v_child->'input', 'null'), null,
        coalesce(v_child->>'queue', v_run.queue), v_priority::integer,
        null, null, v_child->>'concurrency_key',
        case when coalesce(v_child->'timeout_ms', 'null') <> 'null' then aiki._json_whole('child timeout', v_child->'timeout_ms') end,
        v_child->'retry', 5, p_run_id, v_key,
        coalesce(aiki._check_trace_context(v_child->'trace_context'), v_run.trace_context)) r;
    insert into aiki.steps (run_id, step_key, kind, status, name, attempts, child_id, output, created_at, completed_at)
    values (p_run_id, v_key, 'child', 'completed', v_child->>'workflow', 1, v_child_id,
            jsonb_build_object('child_id', v_child_id), v_now, v_now);
    v_ids := v_ids || v_child_id;
    v_new := v_new + 1;
  end loop;
  perform aiki._check_journal_room(p_run_id, v_new, 0);
  return v_ids;
end
$$;

-- Starts one child; returns its id. See start_children.
create or replace function aiki.start_child(
  p_run_id uuid, p_lease_token uuid, p_step_key text, p_workflow text, p_version text,
  p_input jsonb default 'null', p_options jsonb default '{}')
returns uuid
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
  select (aiki.start_children(p_run_id, p_lease_token, jsonb_build_array(
    coalesce(p_options, '{}') || jsonb_build_object(
      'key', p_step_key, 'workflow', p_workflow, 'version', p_version, 'input', p_input))))[1]
$$;
