-- aiki engine: steps — the journal writes a worker makes under its lease, and the run's end.
--
--   complete_step  record a task result or a deterministic value (now, random, uuid)
--   fail_step      record a task failure; the retry policy decides: retry inline, suspend, or fail
--   complete_run   the handler returned
--   fail_run       the handler threw; the run's retry policy decides: retry or fail
--   record         complete_step and complete_run for many runs in one statement (group commit)
--
-- Every write is fenced by (run id, lease token): a worker that lost its lease gets AK001 and
-- writes nothing, so a stale worker can never overwrite what a newer lease holder wrote.
-- A completed step is never written again: recording it twice returns the first record.

-- JSON view of one step, the same shape as a journal entry.
create or replace function aiki._step_json(p_step aiki.steps) returns jsonb
language sql immutable
as $$
  select jsonb_build_object(
    'key', p_step.step_key, 'kind', p_step.kind, 'name', p_step.name, 'status', p_step.status,
    'attempts', p_step.attempts, 'output', p_step.output, 'error', p_step.error,
    'child_id', p_step.child_id, 'wake_at', p_step.wake_at)
$$;

-- Makes room in run p_run_id's journal for p_new_steps more steps and p_new_bytes more bytes of
-- step outputs and errors, or raises AK008 when that would pass _max_journal_steps or
-- _max_journal_bytes. Counts them on the run's row (journal_steps, journal_bytes: one row
-- update instead of a scan of the journal). Called by every journal write of a worker:
-- complete_step, fail_step, suspend, start_children and record. Bytes are JSONB sizes before
-- compression, as written (a retried task's errors count once per attempt); data that waits
-- receive (events, child outcomes) is not counted, as each is bounded by its payload limit and
-- its wait by the step limit. Caller holds the run's lock and writes the steps in the same
-- statement or transaction, so a refused write leaves the counters as they were.
create or replace function aiki._check_journal_room(p_run_id uuid, p_new_steps integer, p_new_bytes bigint)
returns void
language plpgsql
as $$
declare
  v_steps integer;
  v_bytes bigint;
begin
  if p_new_steps = 0 and p_new_bytes = 0 then
    return;  -- a replay that wrote nothing new: no row update
  end if;
  update aiki.runs
     set journal_steps = journal_steps + p_new_steps, journal_bytes = journal_bytes + p_new_bytes
   where id = p_run_id
  returning journal_steps, journal_bytes into v_steps, v_bytes;
  if v_steps > aiki._max_journal_steps() or v_bytes > aiki._max_journal_bytes() then
    raise exception using errcode = 'AK008',
      message = format('journal of run %s is full: %s more step(s) and %s bytes would make it %s steps and %s bytes, '
                       'over the limit of %s steps and %s bytes',
                       p_run_id, p_new_steps, p_new_bytes, v_steps, v_bytes,
                       aiki._max_journal_steps(), aiki._max_journal_bytes()),
      hint = 'keep large data outside the journal (store it elsewhere and record a reference), '
             'or continue the work in a new run';
  end if;
end
$$;

-- Raises AK006 when the journal holds p_step_key with another kind or name than the code asks.
create or replace function aiki._check_determinism(p_step aiki.steps, p_kind aiki.step_kind, p_name text)
returns void
language plpgsql immutable
as $$
begin
  if p_step.kind <> p_kind or p_step.name <> p_name then
    raise exception using errcode = 'AK006',
      message = format('non-determinism at step %s: the journal recorded %s %s, the code now calls %s %s',
                       quote_literal(p_step.step_key), p_step.kind, quote_literal(p_step.name),
                       p_kind, quote_literal(p_name)),
      hint = 'workflow code must make the same durable calls in the same order on every replay; '
             'deploy changed code as a new workflow version';
  end if;
end
$$;

-- Locks the step row if it exists (after the run's lock), checking it against the code.
create or replace function aiki._lock_step(p_run_id uuid, p_step_key text, p_kind aiki.step_kind, p_name text)
returns aiki.steps
language plpgsql
as $$
declare
  v_step aiki.steps;
begin
  select * into v_step from aiki.steps where run_id = p_run_id and step_key = p_step_key for update;
  if found then
    perform aiki._check_determinism(v_step, p_kind, p_name);
  end if;
  return v_step;
end
$$;

-- Records that a task (p_kind 'task') or a deterministic value (p_kind 'value') produced
-- p_output. Idempotent: a completed step returns its first record untouched. AK001 on a lost
-- lease, AK003 on bad input, AK005 on a permanently failed step, AK006 on a kind or name clash.
create or replace function aiki.complete_step(
  p_run_id uuid, p_lease_token uuid, p_step_key text, p_kind text, p_name text, p_output jsonb)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_step aiki.steps;
  v_now timestamptz := aiki.now();
begin
  if p_kind is null or p_kind not in ('task', 'value') then
    raise exception using errcode = 'AK003',
      message = format('invalid step kind %s for complete_step', coalesce(quote_literal(left(p_kind, 100)), 'null')),
      hint = 'complete_step records task and value steps; waits are written by suspend';
  end if;
  perform aiki._check_key('step key', p_step_key);
  perform aiki._check_name('step name', p_name);
  perform aiki._check_payload('step output', p_output);
  perform aiki._lock_lease(p_run_id, p_lease_token, false);

  v_step := aiki._lock_step(p_run_id, p_step_key, p_kind::aiki.step_kind, p_name);
  if v_step.status = 'completed' then
    return aiki._step_json(v_step);
  elsif v_step.status = 'failed' then
    raise exception using errcode = 'AK005',
      message = format('step %s of run %s already failed for good and cannot be completed', quote_literal(p_step_key), p_run_id);
  end if;
  perform aiki._check_journal_room(p_run_id, (v_step.status is null)::integer, pg_column_size(p_output));
  if v_step.status = 'retrying' then
    update aiki.steps
       set status = 'completed', output = p_output, error = null, wake_at = null,
           attempts = attempts + 1, completed_at = v_now
     where run_id = p_run_id and step_key = p_step_key
    returning * into v_step;
  else
    insert into aiki.steps (run_id, step_key, kind, status, name, attempts, output, created_at, completed_at)
    values (p_run_id, p_step_key, p_kind::aiki.step_kind, 'completed', p_name, 1, p_output, v_now, v_now)
    returning * into v_step;
  end if;
  return aiki._step_json(v_step);
end
$$;

-- Records a failed task attempt. The task's retry policy (see _check_retry) decides:
--   {"status": "retrying", "attempts", "retry_at", "delay_ms", "suspended": false}
--       the delay is at most p_inline_max_ms: the worker keeps its lease, waits, and retries;
--   {"status": "retrying", ..., "suspended": true}
--       the run is released until retry_at (status `retrying`); the worker drops it;
--   {"status": "failed", "attempts"}
--       attempts exhausted or p_non_retryable: the error is journalled for the code to see.
-- p_attempt, the attempt that failed as the worker counts it (1 for the first), makes the call
-- idempotent: when the journal already counts that attempt, the first call committed and its
-- answer was lost, and the repeated call answers as the first one did instead of spending a
-- retry the task never used (found by sdk/test/faults.test.ts). Null counts every call.
-- AK001 on a lost lease, AK003 on bad input, AK005 on a completed step, AK006 on a clash.
drop function if exists aiki.fail_step(uuid, uuid, text, text, jsonb, jsonb, boolean, bigint);
create or replace function aiki.fail_step(
  p_run_id uuid, p_lease_token uuid, p_step_key text, p_name text, p_error jsonb,
  p_retry jsonb default null, p_non_retryable boolean default false, p_inline_max_ms bigint default 0,
  p_attempt integer default null)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_run aiki.runs;
  v_step aiki.steps;
  v_now timestamptz := aiki.now();
  v_attempts integer;
  v_delay interval;
  v_suspend boolean;
begin
  perform aiki._check_key('step key', p_step_key);
  perform aiki._check_name('step name', p_name);
  perform aiki._check_payload('step error', p_error);
  perform aiki._check_duration('inline retry limit', p_inline_max_ms);
  if p_attempt is not null and p_attempt < 1 then
    raise exception using errcode = 'AK003', message = format('invalid attempt %s', p_attempt), hint = 'attempts count from 1';
  end if;
  v_run := aiki._lock_lease(p_run_id, p_lease_token, false);

  v_step := aiki._lock_step(p_run_id, p_step_key, 'task', p_name);
  if v_step.status = 'completed' then
    raise exception using errcode = 'AK005',
      message = format('step %s of run %s already completed and cannot fail', quote_literal(p_step_key), p_run_id);
  elsif v_step.status = 'failed' then
    return aiki._step_json(v_step) || jsonb_build_object('status', 'failed');
  elsif v_step.status = 'retrying' and v_step.attempts >= p_attempt then
    -- The repeat of a call that committed. Had it suspended the run, _lock_lease would have
    -- refused this one (AK001): the worker kept its lease and waits in-process.
    return jsonb_build_object(
      'status', 'retrying', 'attempts', v_step.attempts, 'retry_at', v_step.wake_at,
      'delay_ms', greatest(0, floor(extract(epoch from v_step.wake_at - v_now) * 1000))::bigint,
      'suspended', false);
  end if;

  perform aiki._check_journal_room(p_run_id, (v_step.status is null)::integer, pg_column_size(p_error));
  v_attempts := coalesce(v_step.attempts, 0) + 1;
  v_delay := case when not coalesce(p_non_retryable, false)
                  then aiki._retry_delay(aiki._check_retry(p_retry), v_attempts) end;

  insert into aiki.steps (run_id, step_key, kind, status, name, attempts, error, wake_at, created_at, completed_at)
  values (p_run_id, p_step_key, 'task',
          case when v_delay is null then 'failed' else 'retrying' end::aiki.step_status,
          p_name, v_attempts, p_error, v_now + v_delay, v_now,
          case when v_delay is null then v_now end)
  on conflict (run_id, step_key) do update
    set status = excluded.status, attempts = excluded.attempts, error = excluded.error,
        wake_at = excluded.wake_at, completed_at = excluded.completed_at;

  if v_delay is null then
    return jsonb_build_object('status', 'failed', 'attempts', v_attempts);
  end if;

  v_suspend := v_delay > p_inline_max_ms * interval '1 millisecond';
  if v_suspend then
    perform aiki._leave_running(v_run, 'retrying', least(v_now + v_delay, coalesce(v_run.deadline_at, 'infinity')));
  end if;
  return jsonb_build_object(
    'status', 'retrying', 'attempts', v_attempts, 'retry_at', v_now + v_delay,
    'delay_ms', floor(extract(epoch from v_delay) * 1000)::bigint, 'suspended', v_suspend);
end
$$;

-- The handler returned p_output: the run completes, and a parent waiting for it wakes.
-- AK001 on a lost lease (including a run cancelled meanwhile), AK007 on an oversized output.
create or replace function aiki.complete_run(p_run_id uuid, p_lease_token uuid, p_output jsonb default 'null')
returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_run aiki.runs;
begin
  perform aiki._check_payload('workflow output', p_output);
  v_run := aiki._lock_lease(p_run_id, p_lease_token, true);
  perform aiki._finish(v_run, 'completed', p_output, null);
end
$$;

-- The handler threw p_error. Unless p_non_retryable, the run's retry policy (given at start)
-- may schedule another attempt: the run then waits as `retrying`, keeps its completed steps,
-- and forgets its failed ones so they run again. Returns {"status": "retrying", "attempt",
-- "retry_at"} or {"status": "failed"}. AK001 on a lost lease.
create or replace function aiki.fail_run(
  p_run_id uuid, p_lease_token uuid, p_error jsonb, p_non_retryable boolean default false)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_run aiki.runs;
  v_delay interval;
  v_now timestamptz := aiki.now();
  v_forgotten integer;
begin
  perform aiki._check_payload('workflow error', p_error);
  v_run := aiki._lock_lease(p_run_id, p_lease_token, true);
  v_delay := case when not coalesce(p_non_retryable, false)
                  then aiki._retry_delay(coalesce(v_run.retry, aiki._check_retry(null)), v_run.attempt) end;
  if v_delay is null then
    perform aiki._finish(v_run, 'failed', null, p_error);
    return jsonb_build_object('status', 'failed', 'attempt', v_run.attempt);
  end if;

  delete from aiki.steps where run_id = p_run_id and status = 'failed';
  get diagnostics v_forgotten = row_count;
  update aiki.runs set attempt = attempt + 1, journal_steps = journal_steps - v_forgotten where id = p_run_id;
  perform aiki._leave_running(v_run,
    case when v_delay > interval '0' then 'retrying' else 'pending' end::aiki.run_status,
    least(v_now + v_delay, coalesce(v_run.deadline_at, 'infinity')), null, p_error);
  return jsonb_build_object('status', 'retrying', 'attempt', v_run.attempt + 1, 'retry_at', v_now + v_delay);
end
$$;

-- The worker's group commit: the complete_step and complete_run calls of many runs in one
-- statement and one commit. p_writes is a JSON array of
--   {"run_id", "lease_token", "steps": [{"key", "kind": "task" | "value", "name", "output"}]?,
--    "complete": true?, "output"?}
-- Every write's steps are recorded as complete_step records them; then every write with
-- "complete" completes its run as complete_run does (a run's steps always precede its end).
-- Returns one entry per step, in the order given: null when the step was recorded as given, or
-- the journal's first record of a step recorded before (replays, retried tasks), as complete_step
-- returns it.
-- All or nothing: any error (AK001 lease lost, AK002, AK003, AK005, AK006, AK007, AK008) aborts the
-- whole batch, and the caller retries the writes one by one to learn which of them failed (the
-- SDK does). Locks, with no wait in between: the parents of completing runs and the runs, in id
-- order (a parent's UUIDv7 precedes its children's, so this is the parent-before-child order),
-- then the steps. Measured (bench/RESULTS.md): one call per flush instead of two per run took
-- one-task workflows from 3.4 commits per run to well under one.
create or replace function aiki.record(p_writes jsonb) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_now timestamptz := aiki.now();
  v_run_ids uuid[];
  v_tokens uuid[];
  v_bad record;
  v_step record;
  v_done record;
  v_existing jsonb := '{}';
  v_result jsonb;
  -- One entry per step inserted: its run and bytes, counted into the journals after the loop.
  v_new_runs uuid[] := '{}';
  v_new_bytes bigint[] := '{}';
begin
  if jsonb_typeof(p_writes) is distinct from 'array' or jsonb_array_length(p_writes) not between 1 and 10000 then
    raise exception using errcode = 'AK003', message = 'record needs a JSON array of 1-10000 writes';
  end if;
  select array_agg((w->>'run_id')::uuid order by i), array_agg((w->>'lease_token')::uuid order by i)
    into v_run_ids, v_tokens
    from jsonb_array_elements(p_writes) with ordinality e(w, i);
  perform 1 from aiki.runs
   where id = any(v_run_ids || array(select parent_id from aiki.runs where id = any(v_run_ids) and parent_id is not null))
   order by id
   for update;

  select x.run_id, r.status, r.lease_owner, r.lease_expires_at into v_bad
    from unnest(v_run_ids, v_tokens) x(run_id, lease_token) left join aiki.runs r on r.id = x.run_id
   where r.id is null or r.status <> 'running' or r.lease_token is distinct from x.lease_token
      or r.lease_expires_at <= v_now
   limit 1;
  if found then
    if v_bad.status is null then
      raise exception using errcode = 'AK002', message = format('run %s not found', v_bad.run_id);
    end if;
    raise exception using errcode = 'AK001',
      message = format('lease lost: run %s is %s%s', v_bad.run_id, v_bad.status,
                       case when v_bad.status = 'running' then ', leased by ' || v_bad.lease_owner || ' until ' || v_bad.lease_expires_at end);
  end if;

  -- Steps: validated, then inserted; a key already in the journal goes through complete_step,
  -- which returns its first record or raises as the journal demands.
  for v_step in
    select (w->>'run_id')::uuid as run_id, (w->>'lease_token')::uuid as lease_token,
           s->>'key' as key, s->>'kind' as kind, s->>'name' as name, coalesce(s->'output', 'null') as output
      from jsonb_array_elements(p_writes) w, jsonb_array_elements(coalesce(w->'steps', '[]')) s
  loop
    if v_step.kind is null or v_step.kind not in ('task', 'value') then
      raise exception using errcode = 'AK003',
        message = format('invalid step kind %s for record', coalesce(quote_literal(left(v_step.kind, 100)), 'null'));
    end if;
    perform aiki._check_key('step key', v_step.key), aiki._check_name('step name', v_step.name),
            aiki._check_payload('step output', v_step.output);
    insert into aiki.steps (run_id, step_key, kind, status, name, attempts, output, created_at, completed_at)
    values (v_step.run_id, v_step.key, v_step.kind::aiki.step_kind, 'completed', v_step.name, 1, v_step.output, v_now, v_now)
    on conflict (run_id, step_key) do nothing;
    if found then
      v_new_runs := v_new_runs || v_step.run_id;
      v_new_bytes := v_new_bytes || pg_column_size(v_step.output)::bigint;
    else
      v_existing := v_existing || jsonb_build_object(v_step.run_id || ' ' || v_step.key,
        aiki.complete_step(v_step.run_id, v_step.lease_token, v_step.key, v_step.kind, v_step.name, v_step.output));
    end if;
  end loop;
  perform aiki._check_journal_room(n.run_id, count(*)::integer, sum(n.bytes)::bigint)
     from unnest(v_new_runs, v_new_bytes) n(run_id, bytes)
    group by n.run_id;

  for v_done in
    select r as run, coalesce(w->'output', 'null') as output
      from jsonb_array_elements(p_writes) w join aiki.runs r on r.id = (w->>'run_id')::uuid
     where (w->'complete') = 'true'
     order by r.id
  loop
    perform aiki._finish(v_done.run, 'completed', aiki._check_payload('workflow output', v_done.output), null);
  end loop;

  select coalesce(jsonb_agg(v_existing->((w->>'run_id') || ' ' || (s->>'key')) order by wi, si), '[]') into v_result
    from jsonb_array_elements(p_writes) with ordinality a(w, wi),
         jsonb_array_elements(coalesce(w->'steps', '[]')) with ordinality b(s, si);
  return v_result;
end
$$;
