-- aiki engine: steps — the journal writes a worker makes under its lease, and the run's end.
--
--   complete_step  record a task result or a deterministic value (now, random, uuid)
--   start_attempt  record a timed task attempt's deadline (start, heartbeat); fail it once overdue
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
-- complete_step, fail_step, suspend and start_children; record counts the same in one
-- statement for its whole batch (and a completing run's in _finish). Bytes are JSONB sizes before
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
  if v_step.status in ('retrying', 'started') then
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

-- Records that the next attempt of task step p_step_key runs until p_deadline_ms from now: at the
-- attempt's start, and again at each task heartbeat, which pushes the deadline on and may leave
-- p_details (progress the next attempt can resume from) in the step's output until it completes.
-- Only tasks that declare a timeout or a heartbeat timeout call it (untimed tasks pay nothing).
-- If the journal holds an attempt still `started` whose deadline has passed — its worker died or
-- hung — that attempt failed by timeout: it is counted as fail_step counts a failure, with a
-- TaskTimeoutError, and fail_step's answer is returned with "timed_out": true and the "error"
-- (the retry policy decides what follows; the task does not simply run again). Otherwise returns
-- {"status": "started", "attempt", "deadline_at", "details"}: the attempt's number (1 for the
-- first), its deadline, and the details of the last heartbeat journalled (null if none). AK001
-- on a lost lease, AK003 on bad input, AK005 on a completed step, AK006 on a clash, AK007 on
-- oversized details, AK008 when the journal is full. Locks: the run, then the step.
create or replace function aiki.start_attempt(
  p_run_id uuid, p_lease_token uuid, p_step_key text, p_name text, p_deadline_ms bigint,
  p_retry jsonb default null, p_inline_max_ms bigint default 0, p_details jsonb default null)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_step aiki.steps;
  v_now timestamptz := aiki.now();
  v_deadline timestamptz;
  v_error jsonb;
begin
  perform aiki._check_key('step key', p_step_key);
  perform aiki._check_name('step name', p_name);
  v_deadline := v_now + aiki._check_duration('attempt deadline', p_deadline_ms);
  perform aiki._check_duration('inline retry limit', p_inline_max_ms);
  perform aiki._check_payload('heartbeat details', p_details);
  perform aiki._lock_lease(p_run_id, p_lease_token, false);

  v_step := aiki._lock_step(p_run_id, p_step_key, 'task', p_name);
  if v_step.status = 'completed' then
    raise exception using errcode = 'AK005',
      message = format('step %s of run %s already completed and cannot start another attempt', quote_literal(p_step_key), p_run_id);
  elsif v_step.status = 'failed' then
    return jsonb_build_object('status', 'failed', 'attempts', v_step.attempts, 'error', v_step.error);
  elsif v_step.status = 'started' and v_step.wake_at <= v_now then
    v_error := jsonb_build_object('name', 'TaskTimeoutError', 'code', 'task_timeout',
      'message', format('task %s (step %s) timed out: attempt %s passed its deadline %s',
                        p_name, p_step_key, v_step.attempts + 1, v_step.wake_at));
    return aiki.fail_step(p_run_id, p_lease_token, p_step_key, p_name, v_error, p_retry, false,
                          p_inline_max_ms, v_step.attempts + 1)
           || jsonb_build_object('timed_out', true, 'error', v_error);
  end if;

  perform aiki._check_journal_room(p_run_id, (v_step.status is null)::integer, coalesce(pg_column_size(p_details), 0));
  insert into aiki.steps (run_id, step_key, kind, status, name, attempts, output, wake_at, created_at)
  values (p_run_id, p_step_key, 'task', 'started', p_name, 0, p_details, v_deadline, v_now)
  on conflict (run_id, step_key) do update
    set status = 'started', wake_at = excluded.wake_at, output = coalesce(excluded.output, aiki.steps.output)
  returning * into v_step;
  return jsonb_build_object('status', 'started', 'attempt', v_step.attempts + 1, 'deadline_at', v_step.wake_at,
                            'details', v_step.output);
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

  -- `error` is the latest failure (what the code sees); `errors` keeps every one, for operators.
  insert into aiki.steps (run_id, step_key, kind, status, name, attempts, error, errors, wake_at, created_at, completed_at)
  values (p_run_id, p_step_key, 'task',
          case when v_delay is null then 'failed' else 'retrying' end::aiki.step_status,
          p_name, v_attempts, p_error,
          jsonb_build_array(jsonb_build_object('attempt', v_attempts, 'error', p_error, 'failed_at', v_now)),
          v_now + v_delay, v_now,
          case when v_delay is null then v_now end)
  on conflict (run_id, step_key) do update
    set status = excluded.status, attempts = excluded.attempts, error = excluded.error,
        errors = coalesce(aiki.steps.errors, '[]'::jsonb) || excluded.errors,
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

-- Leaves run p_run's current attempt behind in aiki.run_attempts, with p_status (retrying,
-- failed or cancelled) and p_error, and takes its failed and started steps out of the journal
-- into it, so the next attempt runs them again while operators can still read what failed.
-- Returns how many steps it took out (the caller adjusts journal_steps). Only failure paths and
-- retry_run call it. Caller holds the run's lock.
create or replace function aiki._archive_attempt(p_run aiki.runs, p_status aiki.run_status, p_error jsonb)
returns integer
language plpgsql
as $$
declare
  v_steps jsonb;
  v_count integer;
begin
  with gone as (
    delete from aiki.steps where run_id = p_run.id and status in ('failed', 'started')
    returning *)
  select coalesce(jsonb_agg(jsonb_build_object(
           'key', g.step_key, 'kind', g.kind, 'name', g.name, 'status', g.status, 'attempts', g.attempts,
           'error', g.error, 'errors', g.errors, 'created_at', g.created_at, 'completed_at', g.completed_at)
         order by g.created_at, g.step_key), '[]'::jsonb), count(*)
    into v_steps, v_count
    from gone g;
  insert into aiki.run_attempts (run_id, attempt, ended_at, status, error, failed_steps)
  values (p_run.id, p_run.attempt, aiki.now(), p_status, p_error, v_steps)
  on conflict (run_id, attempt) do update
    set ended_at = excluded.ended_at, status = excluded.status, error = excluded.error,
        failed_steps = aiki.run_attempts.failed_steps || excluded.failed_steps;
  return v_count;
end
$$;

-- The handler threw p_error. Unless p_non_retryable, the run's retry policy (given at start)
-- may schedule another attempt: the run then waits as `retrying`, keeps its completed steps,
-- and takes its failed (and started) ones out of the journal so they run again; they and the
-- error are kept in aiki.run_attempts (aiki._archive_attempt), the history run_timeline shows.
-- Returns {"status": "retrying", "attempt", "retry_at"} or {"status": "failed"}. AK001 on a lost lease.
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

  v_forgotten := aiki._archive_attempt(v_run, 'retrying', p_error);
  update aiki.runs set attempt = attempt + 1, journal_steps = journal_steps - v_forgotten where id = p_run_id;
  perform aiki._leave_running(v_run,
    case when v_delay > interval '0' then 'retrying' else 'pending' end::aiki.run_status,
    least(v_now + v_delay, coalesce(v_run.deadline_at, 'infinity')), null, p_error);
  return jsonb_build_object('status', 'retrying', 'attempt', v_run.attempt + 1, 'retry_at', v_now + v_delay);
end
$$;

-- The first thing wrong with one write of a `record` batch, found without raising (a raise
-- would abort the whole batch, or cost a subtransaction per write to catch): null when its shape
-- is good, else {"status": "error", "sqlstate": "AK003" | "AK007", "message"}. The messages are
-- the ones complete_step and complete_run would raise. In three parts, checked in this order by
-- record: the write (_record_write_error), each of its steps (_record_step_error), its output.
-- Each is one SQL expression, which the planner inlines into record's statement: as PL/pgSQL
-- they cost a query per write and, once per transaction, the set-up of each expression. Stable,
-- not immutable: format() is stable, and an immutable SQL function is inlined only if its
-- expression is immutable too.
drop function if exists aiki._record_shape_error(jsonb);
create or replace function aiki._record_write_error(p_write jsonb) returns jsonb
language sql stable
as $$
  select case
    when jsonb_typeof(p_write) is distinct from 'object' then jsonb_build_object('status', 'error', 'sqlstate', 'AK003',
      'message', format('invalid write %s: expected a JSON object', left(p_write::text, 200)))
    when jsonb_typeof(p_write->'run_id') is distinct from 'string'
         or p_write->>'run_id' !~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
      then jsonb_build_object('status', 'error', 'sqlstate', 'AK003',
      'message', format('invalid run id %s: expected a UUID', left((p_write->'run_id')::text, 200)))
    when jsonb_typeof(p_write->'lease_token') is distinct from 'string'
         or p_write->>'lease_token' !~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
      then jsonb_build_object('status', 'error', 'sqlstate', 'AK003',
      'message', format('invalid lease token %s of run %s: expected a UUID', left((p_write->'lease_token')::text, 200), p_write->>'run_id'))
    when coalesce(jsonb_typeof(p_write->'steps'), 'null') not in ('array', 'null') then jsonb_build_object('status', 'error', 'sqlstate', 'AK003',
      'message', format('invalid steps of run %s: expected a JSON array', p_write->>'run_id'))
    when coalesce(jsonb_typeof(p_write->'complete'), 'null') not in ('boolean', 'null') then jsonb_build_object('status', 'error', 'sqlstate', 'AK003',
      'message', format('invalid complete %s of run %s: expected true or false', left((p_write->'complete')::text, 100), p_write->>'run_id'))
  end
$$;

-- See _record_write_error: one step p_step of a write to run p_run_id.
create or replace function aiki._record_step_error(p_step jsonb, p_run_id text) returns jsonb
language sql stable
as $$
  select case
    when jsonb_typeof(p_step) is distinct from 'object' then jsonb_build_object('status', 'error', 'sqlstate', 'AK003',
      'message', format('invalid step %s of run %s: expected a JSON object', left(p_step::text, 200), p_run_id))
    when coalesce(p_step->>'kind', '') not in ('task', 'value') then jsonb_build_object('status', 'error', 'sqlstate', 'AK003',
      'message', format('invalid step kind %s for record', coalesce(quote_literal(left(p_step->>'kind', 100)), 'null')))
    when jsonb_typeof(p_step->'key') is distinct from 'string' or length(p_step->>'key') not between 1 and 256
         or p_step->>'key' ~ '[[:cntrl:]]' then jsonb_build_object('status', 'error', 'sqlstate', 'AK003',
      'message', format('invalid step key %s', coalesce(quote_literal(left(p_step->>'key', 200)), 'null')))
    when jsonb_typeof(p_step->'name') is distinct from 'string' or p_step->>'name' !~ '^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$'
      then jsonb_build_object('status', 'error', 'sqlstate', 'AK003',
      'message', format('invalid step name %s', coalesce(quote_literal(left(p_step->>'name', 200)), 'null')))
    when pg_column_size(p_step->'output') > aiki._max_payload_bytes() then jsonb_build_object('status', 'error', 'sqlstate', 'AK007',
      'message', format('step output is %s bytes, over the limit of %s bytes', pg_column_size(p_step->'output'), aiki._max_payload_bytes()))
  end
$$;

-- One write of a `record` batch on its own, raising as complete_step and complete_run do: the
-- slow path, taken only when the batch's set-based path raised. Returns the write's step answers.
create or replace function aiki._record_write(p_write jsonb) returns jsonb
language plpgsql volatile
as $$
declare
  v_run_id uuid := (p_write->>'run_id')::uuid;
  v_token uuid := (p_write->>'lease_token')::uuid;
  v_step jsonb;
  v_answers jsonb := '[]';
  v_before boolean;
  v_recorded jsonb;
begin
  for v_step in select * from jsonb_array_elements(coalesce(p_write->'steps', '[]')) loop
    v_before := exists (select 1 from aiki.steps where run_id = v_run_id and step_key = v_step->>'key' and status = 'completed');
    v_recorded := aiki.complete_step(v_run_id, v_token, v_step->>'key', v_step->>'kind', v_step->>'name',
                                     coalesce(v_step->'output', 'null'));
    v_answers := v_answers || jsonb_build_array(case when v_before then v_recorded end);
  end loop;
  if (p_write->'complete') = 'true' then
    perform aiki.complete_run(v_run_id, v_token, coalesce(p_write->'output', 'null'));
  end if;
  return v_answers;
end
$$;

-- The worker's group commit: the complete_step and complete_run calls of many runs in one
-- statement and one commit. p_writes is a JSON array of 1-10000 writes
--   {"run_id", "lease_token", "steps": [{"key", "kind": "task" | "value", "name", "output"}]?,
--    "complete": true?, "output"?}
-- Each write's steps are recorded as complete_step records them; then, with "complete", its run
-- completes as complete_run does. Returns one answer per write, in the order given:
--   {"status": "recorded", "steps": [null | first record, ...]}  per step: null when recorded as
--       given, else the journal's first record of a step recorded before (replays, retries);
--   {"status": "lease_lost", "message"}                           what AK001 would say;
--   {"status": "error", "sqlstate", "message"}                    AK002, AK003, AK005, AK006,
--       AK007, AK008, or any other SQLSTATE the write raised; nothing of it was written.
-- A write is all or nothing; one write's failure never fails another's. Raises (AK003) only when
-- p_writes itself is malformed.
--
-- How. Every check that needs no raise marks its write up front (shape, lease, journal clash),
-- then the valid writes go in set-based, with no subtransaction per write: a subtransaction per
-- write would overflow the 64-subxid cache of a 500-write batch and slow every reader. Only when
-- that path raises anyway (a data error the checks cannot see) is the error caught, once, and the
-- valid writes redone one by one, each in its own exception block, to find each one's outcome.
-- Locks, with no wait in between, before anything is written: the parents of the batch's runs
-- and the runs, in id order (a parent's UUIDv7 precedes its children's, so this is the
-- parent-before-child order), then the steps. Measured (bench/RESULTS.md): one call per flush
-- instead of two per run took one-task workflows from 3.4 commits per run to well under one.
-- Plans: every statement walks the batch with unnest (a subscript of an array of varlena
-- elements, or of one with nulls, walks it from its start: O(N²) per batch) and looks each row of
-- aiki.runs and aiki.steps up by key, which the settings below make the only plan. The session
-- keeps a generic plan, made for a batch of unknown size while the tables may still be small: a
-- hash join over a scan of aiki.steps, planned at 31 steps, scanned all 3,000 a few seconds later.
-- No statement joins two in-memory sets (that would be a nested loop too): each groups one set.
create or replace function aiki.record(p_writes jsonb) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set enable_seqscan = off
set enable_hashjoin = off
set enable_mergejoin = off
as $$
declare
  v_now timestamptz := aiki.now();
  v_writes jsonb[];
  v_out jsonb[];
  v_ids uuid[];
  v_tokens uuid[];
  v_answers jsonb[];
  v_full boolean;
  v_ends uuid[];
  v_end_outputs jsonb[];
  v_end_steps integer[];
  v_end_bytes bigint[];
  v_done record;
  v_i bigint;
  v_state text;
  v_message text;
begin
  if jsonb_typeof(p_writes) is distinct from 'array' or jsonb_array_length(p_writes) not between 1 and 10000 then
    raise exception using errcode = 'AK003', message = 'record needs a JSON array of 1-10000 writes';
  end if;

  -- Shape (the write, then its steps in order, then its output), and a run completed by more
  -- than one write (which output would win?); the ids of the well-formed writes (null for the
  -- others: CASE casts only those). Materialized: the checks run once per write, not once per
  -- reference.
  with y as materialized (
    select w, i, coalesce(aiki._record_write_error(w),
             (select e from (select aiki._record_step_error(s, w->>'run_id') as e, si
                               from jsonb_array_elements(case when jsonb_typeof(w->'steps') = 'array' then w->'steps' end)
                                    with ordinality b(s, si)) t
               where e is not null order by si limit 1),
             case when pg_column_size(w->'output') > aiki._max_payload_bytes()
                  then jsonb_build_object('status', 'error', 'sqlstate', 'AK007', 'message',
                         format('workflow output is %s bytes, over the limit of %s bytes', pg_column_size(w->'output'), aiki._max_payload_bytes())) end,
             case when completes > 1 and (w->'complete') = 'true'
                  then jsonb_build_object('status', 'error', 'sqlstate', 'AK003', 'message',
                         format('run %s is completed by more than one write of one record call', w->>'run_id')) end) as bad
      from (select w, i, count(*) filter (where (w->'complete') = 'true') over (partition by w->>'run_id') as completes
              from jsonb_array_elements(p_writes) with ordinality e(w, i)) x)
  select array_agg(w order by i), array_agg(bad order by i),
         array_agg(case when bad is null then (w->>'run_id')::uuid end order by i),
         array_agg(case when bad is null then (w->>'lease_token')::uuid end order by i)
    into v_writes, v_out, v_ids, v_tokens
    from y;

  -- Locks: parents, then runs, in id order.
  perform 1 from aiki.runs
   where id = any(v_ids || array(select parent_id from aiki.runs where id = any(v_ids) and parent_id is not null))
   order by id
   for update;

  -- Leases, then the journal: a key recorded with another kind or name (AK006), or failed (AK005).
  select array_agg(coalesce(x.out,
           case
             when r.id is null then jsonb_build_object('status', 'error', 'sqlstate', 'AK002',
                                      'message', format('run %s not found', x.w->>'run_id'))
             when r.status <> 'running' then jsonb_build_object('status', 'lease_lost',
                                      'message', format('lease lost: run %s is %s', r.id, r.status))
             when r.lease_token is distinct from x.token then jsonb_build_object('status', 'lease_lost',
                                      'message', format('lease lost: run %s was claimed again by %s', r.id, r.lease_owner))
             when r.lease_expires_at <= v_now then jsonb_build_object('status', 'lease_lost',
                                      'message', format('lease lost: the lease on run %s expired at %s', r.id, r.lease_expires_at))
           end,
           (select case
                     when st.kind::text <> s->>'kind' or st.name <> s->>'name' then jsonb_build_object('status', 'error', 'sqlstate', 'AK006',
                       'message', format('non-determinism at step %s: the journal recorded %s %s, the code now calls %s %s',
                                         quote_literal(st.step_key), st.kind, quote_literal(st.name), s->>'kind', quote_literal(s->>'name')))
                     else jsonb_build_object('status', 'error', 'sqlstate', 'AK005',
                       'message', format('step %s of run %s already failed for good and cannot be completed', quote_literal(st.step_key), r.id))
                   end
              from jsonb_array_elements(coalesce(x.w->'steps', '[]')) s
              join aiki.steps st on st.run_id = r.id and st.step_key = s->>'key'
             where st.kind::text <> s->>'kind' or st.name <> s->>'name' or st.status = 'failed'
             limit 1))
         order by x.i)
    into v_out
    from unnest(v_writes, v_out, v_ids, v_tokens) with ordinality x(w, out, run_id, token, i)
    left join aiki.runs r on r.id = x.run_id;

  begin
    -- One statement writes the journal of every valid write and answers every write. s: each
    -- write, with each of its steps (if any) and the journal's row for the step's key. A step
    -- recorded before (completed) answers with its first record; a retrying or started one
    -- completes; a new one inserts. No ON CONFLICT: under the run's lock only this batch writes
    -- the run's journal, so a conflict is a key given twice in the batch, and the slow path sorts
    -- that out. Each journal counts its new steps and the bytes of every step written: in one
    -- update of the run rows, or, for a run the batch completes, in _finish's update of its row
    -- (a second update of a row in one transaction costs a row version, WAL and index entries).
    -- A run over a limit raises AK008 below, which sends the batch down the one-by-one path,
    -- where only that run's writes fail.
    -- (The journal's row comes from a subquery: as a join, the generic plan probed steps_pkey
    -- by step key alone and filtered the run id, reading the whole index per step.)
    with j as materialized (
      select x.i, x.out, x.run_id, coalesce((x.w->'complete') = 'true', false) as completes, coalesce(x.w->'output', 'null') as run_output,
             b.si, b.s->>'key' as key, b.s->>'kind' as kind, b.s->>'name' as name, coalesce(b.s->'output', 'null') as output,
             (select st from aiki.steps st where st.run_id = x.run_id and st.step_key = b.s->>'key') as old
        from unnest(v_writes, v_out, v_ids) with ordinality x(w, out, run_id, i)
        left join lateral jsonb_array_elements(case when x.out is null then x.w->'steps' end) with ordinality b(s, si) on true
    ), s as (
      select i, out, run_id, completes, run_output, si, key, kind, name, output, (old).status,
             case when (old).status = 'completed' then aiki._step_json(old) end as first_record
        from j
    ), completed as (
      update aiki.steps st
         set status = 'completed', output = s.output, error = null, wake_at = null,
             attempts = st.attempts + 1, completed_at = v_now
        from s
       where st.run_id = s.run_id and st.step_key = s.key and s.status in ('retrying', 'started')
    ), inserted as (
      insert into aiki.steps (run_id, step_key, kind, status, name, attempts, output, created_at, completed_at)
      select run_id, key, kind::aiki.step_kind, 'completed', name, 1, output, v_now, v_now
        from s where key is not null and status is null
    ), grown as (
      select run_id, bool_or(completes) as ends,
             (array_agg(run_output) filter (where completes))[1] as run_output,
             count(*) filter (where key is not null and status is null)::integer as new_steps,
             coalesce(sum(pg_column_size(output)) filter (where key is not null and status is distinct from 'completed'), 0)::bigint as new_bytes
        from s where out is null group by run_id
    ), counted as (
      update aiki.runs r
         set journal_steps = r.journal_steps + g.new_steps, journal_bytes = r.journal_bytes + g.new_bytes
        from grown g
       where r.id = g.run_id and not g.ends and g.new_bytes > 0
      returning r.journal_steps > aiki._max_journal_steps() or r.journal_bytes > aiki._max_journal_bytes() as over_limit
    ), ending as (
      select g.run_id, g.run_output, g.new_steps, g.new_bytes,
             r.journal_steps + g.new_steps > aiki._max_journal_steps()
               or r.journal_bytes + g.new_bytes > aiki._max_journal_bytes() as over_limit
        from grown g join aiki.runs r on r.id = g.run_id
       where g.ends
    ), answered as (
      select i, coalesce((array_agg(out))[1],
               jsonb_build_object('status', 'recorded', 'steps',
                 coalesce(jsonb_agg(first_record order by si) filter (where key is not null), '[]'))) as answer
        from s group by i
    )
    select (select array_agg(answer order by i) from answered),
           coalesce((select bool_or(over_limit) from counted), false) or coalesce((select bool_or(over_limit) from ending), false),
           array_agg(run_id order by run_id), array_agg(run_output order by run_id),
           array_agg(new_steps order by run_id), array_agg(new_bytes order by run_id)
      into v_answers, v_full, v_ends, v_end_outputs, v_end_steps, v_end_bytes
      from ending;
    if v_full then
      raise exception using errcode = 'AK008', message = 'a journal of the batch is full';
    end if;

    for v_done in
      select r as run, e.output, e.new_steps, e.new_bytes
        from unnest(v_ends, v_end_outputs, v_end_steps, v_end_bytes) e(run_id, output, new_steps, new_bytes)
        join aiki.runs r on r.id = e.run_id
       order by r.id
    loop
      perform aiki._finish(v_done.run, 'completed', v_done.output, null, v_done.new_steps, v_done.new_bytes);
    end loop;
    v_out := v_answers;
  exception when others then
    -- Caught once per batch: redo the valid writes one by one to find each one's outcome.
    for v_i in select i from unnest(v_out) with ordinality x(out, i) where out is null order by i loop
      begin
        v_out[v_i] := jsonb_build_object('status', 'recorded', 'steps', aiki._record_write(p_writes->(v_i::int - 1)));
      exception when others then
        get stacked diagnostics v_state = returned_sqlstate, v_message = message_text;
        v_out[v_i] := case when v_state = 'AK001' then jsonb_build_object('status', 'lease_lost', 'message', v_message)
                           else jsonb_build_object('status', 'error', 'sqlstate', v_state, 'message', v_message) end;
      end;
    end loop;
  end;
  return to_jsonb(v_out);
end
$$;
