-- aiki engine: runs — start, read, list, continue as new, and the operator verbs cancel, pause
-- and resume.
--
-- start_workflow is the only way a top-level run comes to exist (children: children.sql;
-- successors: continue_as_new).
-- Every terminal transition goes through _finish, which also delivers the outcome to a parent
-- that waits for it. Every way out of `running` goes through _leave_running. Readers get a run as
-- JSON from _run_json, the same shape claim returns, without the lease token (only the worker
-- that claimed the run gets it: with it, any worker role could write the run's journal).
--
-- Continue-as-new chains. continue_as_new ends a run as `continued` (terminal) and starts its
-- successor with a new input and an empty journal, so a loop that runs for months keeps each
-- journal small. The runs of a chain link both ways (continued_to, continued_from) and share
-- chain_id, the first run's id. The first run stands for the chain: its idempotency key finds
-- the chain's newest run (find_run), a parent waiting on it is woken when the chain's last run
-- ends, with that run's outcome, and its status notifications (aiki_status) name the chain's end
-- too. Events, cancel, pause and resume sent to a continued run act on the chain's newest run.

-- JSON view of one run; with p_journal, its steps by creation time, then key (steps written in
-- one transaction share a time; the SDK looks steps up by key, so the order is for readers);
-- with p_lease, its lease token (claim only).
-- PL/pgSQL, not SQL: a SQL function with a subquery is not inlined, and PostgreSQL (up to 17)
-- plans its body anew for every statement that calls it, 0.15 ms per claim (bench); PL/pgSQL
-- keeps the plan for the session.
drop function if exists aiki._run_json(aiki.runs, boolean);
create or replace function aiki._run_json(p_run aiki.runs, p_journal boolean, p_lease boolean) returns jsonb
language plpgsql stable
as $$
begin
  return jsonb_build_object(
    'id', p_run.id,
    'workflow', p_run.workflow,
    'version', p_run.version,
    'status', p_run.status,
    'queue', p_run.queue,
    'priority', p_run.priority,
    'attempt', p_run.attempt,
    'input', p_run.input,
    'output', p_run.output,
    'error', p_run.error,
    'parent_id', p_run.parent_id,
    'parent_step_key', p_run.parent_step_key,
    'trace_context', p_run.trace_context,
    'idempotency_key', p_run.idempotency_key,
    'concurrency_key', p_run.concurrency_key,
    'lease_expires_at', p_run.lease_expires_at,
    'available_at', p_run.available_at,
    'deadline_at', p_run.deadline_at,
    'created_at', p_run.created_at,
    'started_at', p_run.started_at,
    'finished_at', p_run.finished_at)
  || case when p_lease then jsonb_build_object('lease_token', p_run.lease_token) else '{}'::jsonb end
  -- The chain's first run, once the run is in a continue-as-new chain; absent otherwise (the
  -- chain is the run itself). A codec binds event data to it: an event moves along the chain.
  || case when p_run.chain_id is not null then jsonb_build_object('chain_id', p_run.chain_id) else '{}'::jsonb end
  || case when p_journal then jsonb_build_object('journal', coalesce((
       select jsonb_agg(jsonb_build_object(
                'key', s.step_key, 'kind', s.kind, 'name', s.name, 'status', s.status,
                'attempts', s.attempts, 'output', s.output, 'error', s.error,
                'child_id', s.child_id, 'wake_at', s.wake_at)
              order by s.created_at, s.step_key)
       from aiki.steps s where s.run_id = p_run.id), '[]'::jsonb))
     else '{}'::jsonb end;
end
$$;

-- Inserts a run, or finds the one its idempotency key names. Shared by start_workflow and
-- start_children. Raises AK003 on bad input, AK004 when the key names a different start.
-- p_trace_context is stored as given (callers check it with _check_trace_context); a start that
-- finds the key's run keeps that run's context, as it keeps its trace.
drop function if exists aiki._insert_run(text, text, jsonb, text, text, integer, timestamptz, bigint, text,
                                         bigint, jsonb, integer, uuid, text);
create or replace function aiki._insert_run(
  p_workflow text, p_version text, p_input jsonb, p_idempotency_key text, p_queue text,
  p_priority integer, p_start_at timestamptz, p_delay_ms bigint, p_concurrency_key text,
  p_timeout_ms bigint, p_retry jsonb, p_max_lease_expiries integer,
  p_parent_id uuid, p_parent_step_key text, p_trace_context jsonb default null,
  out run_id uuid, out created boolean)
language plpgsql
as $$
declare
  v_now timestamptz := aiki.now();
  v_start timestamptz;
  v_existing aiki.runs;
begin
  perform aiki._check_name('workflow name', p_workflow);
  perform aiki._check_version(p_version);
  perform aiki._check_name('queue name', p_queue);
  perform aiki._check_payload('workflow input', p_input);
  if p_idempotency_key is not null then
    perform aiki._check_key('idempotency key', p_idempotency_key);
  end if;
  if p_concurrency_key is not null then
    perform aiki._check_key('concurrency key', p_concurrency_key);
  end if;
  perform aiki._check_priority(p_priority);
  if p_max_lease_expiries is null or p_max_lease_expiries not between 1 and 1000 then
    raise exception using errcode = 'AK003',
      message = format('invalid max lease expiries %s', coalesce(p_max_lease_expiries::text, 'null'));
  end if;
  if p_start_at is not null and p_delay_ms is not null then
    raise exception using errcode = 'AK003', message = 'give either a start time or a delay, not both';
  end if;
  -- Within 100 years, like every timer (_check_duration): a later time overflowed the deadline
  -- arithmetic (22008 for a start in year 294276).
  if p_start_at is not null and (not isfinite(p_start_at) or p_start_at > v_now + interval '100 years') then
    raise exception using errcode = 'AK003', message = format('invalid start time %s', p_start_at),
      hint = 'use a time at most 100 years from now';
  end if;
  v_start := coalesce(p_start_at, v_now + aiki._check_duration('start delay', coalesce(p_delay_ms, 0)));

  insert into aiki.runs (
    id, parent_id, available_at, deadline_at, created_at, updated_at, priority,
    max_lease_expiries, status, workflow, version, queue, concurrency_key, idempotency_key,
    parent_step_key, retry, input, trace_context)
  values (
    aiki._uuidv7(), p_parent_id, v_start,
    case when p_timeout_ms is not null then v_start + aiki._check_duration('run timeout', p_timeout_ms) end,
    v_now, v_now, p_priority, p_max_lease_expiries,
    case when v_start > v_now then 'scheduled' else 'pending' end::aiki.run_status,
    p_workflow, p_version, p_queue, p_concurrency_key, p_idempotency_key,
    p_parent_step_key, aiki._check_retry(p_retry), p_input, p_trace_context)
  on conflict (workflow, idempotency_key) where idempotency_key is not null do nothing
  returning id into run_id;

  if run_id is not null then
    created := true;
    if v_start <= v_now then
      perform aiki._notify_queue(p_queue);
    else
      perform aiki._notify_due(p_queue, v_start);
    end if;
    return;
  end if;

  -- The key is taken. A concurrent insert of the same key has committed by now (the insert
  -- above waited for it), so this statement's fresh snapshot sees it.
  select * into v_existing from aiki.runs r
  where r.workflow = p_workflow and r.idempotency_key = p_idempotency_key;
  if v_existing.version <> p_version or v_existing.input is distinct from p_input then
    raise exception using errcode = 'AK004',
      message = format('idempotency key %s of workflow %s already started run %s with another %s',
                       quote_literal(p_idempotency_key), p_workflow, v_existing.id,
                       case when v_existing.version <> p_version then 'version' else 'input' end),
      hint = 'use a new idempotency key, or repeat the original start exactly';
  end if;
  run_id := v_existing.id;
  created := false;
end
$$;

-- Starts a workflow run. Idempotent on (workflow, idempotency key): the same start returns the
-- existing run with created = false; a different version or input under the key raises AK004.
-- Notifies the queue when the run is claimable now. Called by clients and workers.
-- p_trace_context: the W3C trace context the run's executions continue (_check_trace_context).
drop function if exists aiki.start_workflow(text, text, jsonb, text, text, integer, timestamptz, bigint, text,
                                            bigint, jsonb, integer);
create or replace function aiki.start_workflow(
  p_workflow text,
  p_version text,
  p_input jsonb default 'null',
  p_idempotency_key text default null,
  p_queue text default 'default',
  p_priority integer default 0,
  p_start_at timestamptz default null,
  p_delay_ms bigint default null,
  p_concurrency_key text default null,
  p_timeout_ms bigint default null,
  p_retry jsonb default null,
  p_max_lease_expiries integer default 5,
  p_trace_context jsonb default null)
returns table (run_id uuid, created boolean)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  -- PL/pgSQL keeps this statement's plan for the session; as a SQL function it was planned
  -- on every call (see _run_json).
  return query
    select r.run_id, r.created
    from aiki._insert_run(p_workflow, p_version, p_input, p_idempotency_key, p_queue, p_priority,
                          p_start_at, p_delay_ms, p_concurrency_key, p_timeout_ms, p_retry,
                          p_max_lease_expiries, null, null, aiki._check_trace_context(p_trace_context)) r;
end
$$;

-- The newest run of p_run's continue-as-new chain: p_run itself unless it was continued. One
-- probe of runs_chain_latest, which holds one run per chain.
create or replace function aiki._chain_latest(p_run aiki.runs) returns aiki.runs
language plpgsql stable
as $$
declare
  v_latest aiki.runs;
begin
  if p_run.continued_to is null then
    return p_run;
  end if;
  select * into v_latest from aiki.runs where chain_id = p_run.chain_id and continued_to is null;
  if not found then
    return p_run;
  end if;
  return v_latest;
end
$$;

-- A run as get_run and find_run answer: _run_json with the journal, `unserved`, and its chain
-- links: continued_from, continued_to (null outside a chain), latest_id (the chain's newest run;
-- the run's own id outside a chain).
create or replace function aiki._run_view(p_run aiki.runs) returns jsonb
language plpgsql stable
as $$
begin
  return aiki._run_json(p_run, true, false)
         || jsonb_build_object(
              'unserved', aiki._unserved(p_run.workflow, p_run.version, p_run.queue, p_run.status, aiki.now()),
              'continued_from', p_run.continued_from,
              'continued_to', p_run.continued_to,
              'latest_id', (aiki._chain_latest(p_run)).id);
end
$$;

-- One run with its journal, and `unserved`: true while it is pending and no live worker serves
-- its workflow version and queue (aiki._unserved); continued_from, continued_to and latest_id
-- link it to its continue-as-new chain (_run_view). A continued run is read as it ended, not
-- followed. Raises AK002 when there is no such run.
create or replace function aiki.get_run(p_run_id uuid) returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_run aiki.runs;
begin
  select * into v_run from aiki.runs where id = aiki._check_run_id(p_run_id);
  if not found then
    raise exception using errcode = 'AK002', message = format('run %s not found', p_run_id);
  end if;
  return aiki._run_view(v_run);
end
$$;

-- The run a workflow's idempotency key names, as get_run returns it: for a chain of runs
-- continued as new, its newest run (the first one holds the key). Raises AK002 when none.
create or replace function aiki.find_run(p_workflow text, p_idempotency_key text) returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_run aiki.runs;
begin
  select * into v_run from aiki.runs where workflow = p_workflow and idempotency_key = p_idempotency_key;
  if not found then
    raise exception using errcode = 'AK002',
      message = format('no run of workflow %s has idempotency key %s',
                       coalesce(quote_literal(p_workflow), 'null'), coalesce(quote_literal(p_idempotency_key), 'null'));
  end if;
  return aiki._run_view(aiki._chain_latest(v_run));
end
$$;

-- Runs newest first by (created_at, id), filtered by workflow, status and creation time; a null
-- bound is no bound. Page with p_before_id, the last run of the previous page: the next page
-- starts after it in the same order. created_at (aiki.now() of the starting transaction) decides
-- the order, the clock every filter uses; the id, a UUIDv7 of the wall clock at insert, only
-- breaks ties (ordering by id listed a newer run second when two transactions overlapped).
-- `unserved` as in get_run. AK003 on a bad limit, AK002 when p_before_id names no run.
create or replace function aiki.list_runs(
  p_workflow text default null,
  p_status aiki.run_status default null,
  p_created_after timestamptz default '-infinity',
  p_created_before timestamptz default 'infinity',
  p_limit integer default 100,
  p_before_id uuid default null)
returns table (id uuid, workflow text, version text, status aiki.run_status, queue text,
               parent_id uuid, attempt integer, created_at timestamptz, finished_at timestamptz,
               unserved boolean)
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_before_at timestamptz := 'infinity';
  v_before_id uuid := 'ffffffff-ffff-ffff-ffff-ffffffffffff';
begin
  if p_limit is null or p_limit not between 1 and 10000 then
    raise exception using errcode = 'AK003',
      message = format('invalid limit %s', coalesce(p_limit::text, 'null')), hint = 'use 1-10000';
  end if;
  if p_before_id is not null then
    select r.created_at, r.id into v_before_at, v_before_id from aiki.runs r where r.id = p_before_id;
    if not found then
      raise exception using errcode = 'AK002', message = format('run %s not found', p_before_id),
        hint = 'page with the id of a run the previous page listed';
    end if;
  end if;
  return query
    select r.id, r.workflow, r.version, r.status, r.queue, r.parent_id, r.attempt, r.created_at, r.finished_at,
           aiki._unserved(r.workflow, r.version, r.queue, r.status, aiki.now())
    from aiki.runs r
    where (p_workflow is null or r.workflow = p_workflow)
      and (p_status is null or r.status = p_status)
      and r.created_at > coalesce(p_created_after, '-infinity')
      and r.created_at < coalesce(p_created_before, 'infinity')
      and (r.created_at, r.id) < (v_before_at, v_before_id)
    order by r.created_at desc, r.id desc
    limit p_limit;
end
$$;

-- Makes a suspended run claimable now. Caller holds the run's lock.
create or replace function aiki._wake(p_run_id uuid) returns void
language plpgsql
as $$
declare
  v_queue text;
begin
  update aiki.runs
     set status = 'pending', available_at = aiki.now(), updated_at = aiki.now()
   where id = p_run_id and status in ('sleeping', 'waiting')
  returning queue into v_queue;
  if found then
    perform aiki._notify_queue(v_queue);
  end if;
end
$$;

-- The outcome a wait for child p_child_id receives: {status, output, error}, and run_id, the run
-- that ended, when the child continued as new (p_run_id, the chain's last run, is not
-- p_child_id). A codec binds the output and error to the run that wrote them, so the SDK decodes
-- them with run_id, falling back to the step's child_id.
create or replace function aiki._child_outcome(
  p_child_id uuid, p_run_id uuid, p_status aiki.run_status, p_output jsonb, p_error jsonb)
returns jsonb
language sql immutable
as $$
  select jsonb_build_object('status', p_status, 'output', p_output, 'error', p_error)
         || case when p_run_id <> p_child_id then jsonb_build_object('run_id', p_run_id) else '{}'::jsonb end
$$;

-- Hands a finished child's outcome to the parent's waits for it. The parent wakes once the
-- last child it waits for has finished, so a fan-in over many children wakes it once. (The
-- engine cannot see Promise.race: a parent racing two child waits sleeps until both finish,
-- unless a timer or event it also waits for wakes it first.) Caller holds the parent's lock,
-- then the child's. p_child_id is the run the waits name (a chain's first run); p_run_id the run
-- that ended, named in the outcome as run_id when it differs (see _child_outcome).
drop function if exists aiki._deliver_to_parent(uuid, uuid, aiki.run_status, jsonb, jsonb);
create or replace function aiki._deliver_to_parent(
  p_parent_id uuid, p_child_id uuid, p_run_id uuid, p_status aiki.run_status, p_output jsonb, p_error jsonb)
returns void
language plpgsql
as $$
begin
  update aiki.steps
     set status = 'completed', completed_at = aiki.now(), wake_at = null,
         output = aiki._child_outcome(p_child_id, p_run_id, p_status, p_output, p_error)
   where run_id = p_parent_id and kind = 'wait_child' and status = 'waiting' and child_id = p_child_id;
  if found and not exists (
       select 1 from aiki.steps
        where run_id = p_parent_id and kind = 'wait_child' and status = 'waiting') then
    perform aiki._wake(p_parent_id);
  end if;
end
$$;

-- Moves p_run to p_status and clears its lease: the one way a run leaves `running`, whether it
-- suspends (suspend, fail_step), retries (fail_run), is given back (release), held (pause) or
-- ends (_finish: completion, failure, cancellation, descendants included). A run that held a
-- slot of a keyed or limited queue frees it (_slot_freed), and a run made claimable now wakes
-- its queue. A terminal p_status sets output, error (p_output, p_error) and finished_at;
-- otherwise p_error, when given, records the failed attempt's error. p_journal_steps and
-- p_journal_bytes add the journal growth of a write that ends the run to its counters in the same
-- row update (record, which checked the room: a second update of the row in one transaction
-- costs a row version, WAL and index entries). The operator acts use it for runs in any status;
-- then it only moves the status. Caller holds the run's lock (for a terminal status, its
-- parent's first). One exception, on the claim's hot path: _promote_due turns expired leases
-- back to pending in one set-based statement and wakes their queues itself.
drop function if exists aiki._leave_running(aiki.runs, aiki.run_status, timestamptz, jsonb, jsonb);
create or replace function aiki._leave_running(
  p_run aiki.runs, p_status aiki.run_status, p_available_at timestamptz,
  p_output jsonb default null, p_error jsonb default null,
  p_journal_steps integer default 0, p_journal_bytes bigint default 0)
returns void
language plpgsql
as $$
declare
  v_now timestamptz := aiki.now();
  v_terminal boolean := p_status in ('completed', 'failed', 'cancelled', 'continued');
begin
  update aiki.runs
     set status = p_status, available_at = p_available_at, updated_at = v_now,
         output = case when v_terminal then p_output end,
         error = case when v_terminal then p_error else coalesce(p_error, error) end,
         finished_at = case when v_terminal then v_now end,
         lease_owner = null, lease_token = null, lease_expires_at = null,
         journal_steps = journal_steps + p_journal_steps, journal_bytes = journal_bytes + p_journal_bytes
   where id = p_run.id;
  perform aiki._slot_freed(p_run);
  if p_status = 'pending' and p_available_at <= v_now then
    perform aiki._notify_queue(p_run.queue);
  end if;
end
$$;

-- Moves a run to a terminal status. Caller holds the parent's lock (if any), then the run's.
-- p_journal_steps, p_journal_bytes: as _leave_running. The last run of a continue-as-new chain
-- ends the chain: its parent's wait names the chain's first run (chain_id), and so do the status
-- waiters that hold the first run's handle.
drop function if exists aiki._finish(aiki.runs, aiki.run_status, jsonb, jsonb);
create or replace function aiki._finish(
  p_run aiki.runs, p_status aiki.run_status, p_output jsonb, p_error jsonb,
  p_journal_steps integer default 0, p_journal_bytes bigint default 0)
returns void
language plpgsql
as $$
begin
  perform aiki._leave_running(p_run, p_status, null, p_output, p_error, p_journal_steps, p_journal_bytes);
  perform aiki._notify_status(p_run.id, p_status);
  if p_run.chain_id is not null and p_run.chain_id <> p_run.id then
    perform aiki._notify_status(p_run.chain_id, p_status);
  end if;
  if p_run.parent_id is not null then
    perform aiki._deliver_to_parent(p_run.parent_id, coalesce(p_run.chain_id, p_run.id), p_run.id, p_status, p_output, p_error);
  elsif p_run.idempotency_key like 'schedule:%' or p_run.chain_id is not null then
    -- A schedule's run, or the last of a chain whose first run may be one: a buffer_one fire may
    -- wait for it (sql/72_schedules.sql). Other runs pay no query for it.
    perform aiki._schedule_run_finished(p_run);
  end if;
end
$$;

-- Locks a run for an operator act: the parent first (lock order), then the run.
-- Raises AK002 when the run does not exist.
create or replace function aiki._lock_run(p_run_id uuid) returns aiki.runs
language plpgsql
as $$
declare
  v_run aiki.runs;
  v_parent_id uuid;
begin
  select parent_id into v_parent_id from aiki.runs where id = aiki._check_run_id(p_run_id);
  if not found then
    raise exception using errcode = 'AK002', message = format('run %s not found', p_run_id);
  end if;
  if v_parent_id is not null then
    perform 1 from aiki.runs where id = v_parent_id for update;
  end if;
  select * into v_run from aiki.runs where id = p_run_id for update;
  return v_run;
end
$$;

-- Locks run p_run_id for an operator act, or, when it continued as new, the chain's newest run
-- (which may itself continue while we wait for its lock). Lock order: each run of a chain has
-- the same parent, locked first by _lock_run; a chain's runs are locked oldest first, as
-- continue_as_new holds the predecessor while it creates the successor. AK002 when missing.
create or replace function aiki._lock_run_latest(p_run_id uuid) returns aiki.runs
language plpgsql
as $$
declare
  v_run aiki.runs;
  v_latest aiki.runs;
begin
  v_run := aiki._lock_run(p_run_id);
  while v_run.status = 'continued' loop
    v_latest := aiki._chain_latest(v_run);
    exit when v_latest.id = v_run.id;
    v_run := aiki._lock_run(v_latest.id);
  end loop;
  return v_run;
end
$$;

-- Cancels the unfinished descendants of run p_run_id with p_error, top-down. Each leaves through
-- _leave_running, so a running one frees its queue's slot. Caller holds the run's lock.
create or replace function aiki._cancel_descendants(p_run_id uuid, p_error jsonb) returns void
language plpgsql
as $$
declare
  v_descendant aiki.runs;
begin
  -- Locked parent-before-child (ordered by depth) to keep the global lock order.
  for v_descendant in
    with recursive tree (id, depth) as (
      select r.id, 1 from aiki.runs r where r.parent_id = p_run_id
      union all
      select r.id, t.depth + 1 from aiki.runs r join tree t on r.parent_id = t.id
    )
    select r.* from aiki.runs r join tree t on t.id = r.id
    where r.status not in ('completed', 'failed', 'cancelled', 'continued')
    order by t.depth
    for update of r
  loop
    perform aiki._leave_running(v_descendant, 'cancelled', null, null, p_error);
    perform aiki._notify_status(v_descendant.id, 'cancelled');
  end loop;
end
$$;

-- Cancels a run and, top-down, all its unfinished descendants. A continued run (continue_as_new)
-- stands for its chain: the chain's newest run is cancelled. A worker running one of them
-- learns it on its next write (AK001). A parent waiting for the run is woken with status
-- `cancelled`. Every cancelled run that was running frees its slot (_slot_freed), so runs its
-- concurrency key or queue limit kept back are claimable at once. Idempotent on a cancelled run;
-- AK005 on a completed or failed one, and on a chain whose newest run was purged.
create or replace function aiki.cancel(p_run_id uuid, p_reason text default null)
returns aiki.run_status
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_run aiki.runs;
  v_error jsonb := jsonb_build_object('name', 'Cancelled', 'message', coalesce(left(p_reason, 2000), 'cancelled'));
begin
  v_run := aiki._lock_run_latest(p_run_id);
  if v_run.status = 'cancelled' then
    return v_run.status;
  end if;
  -- Still `continued` after _lock_run_latest: the chain's newest run was purged, the chain ended.
  if v_run.status in ('completed', 'failed', 'continued') then
    raise exception using errcode = 'AK005',
      message = format('run %s is already %s and cannot be cancelled', v_run.id, v_run.status);
  end if;
  perform aiki._cancel_descendants(v_run.id, v_error);
  perform aiki._finish(v_run, 'cancelled', null, v_error);
  return 'cancelled';
end
$$;

-- Holds a run: nothing but resume moves it again. A running worker learns it on its next write.
-- Waits keep collecting events and child outcomes meanwhile. Idempotent; AK005 when finished.
-- A scheduled start or a run retry's delay is in no journal step, so a replay could not wait for
-- it again: a paused `scheduled` or `retrying` run keeps its available_at for resume (paused runs
-- are no timers, so nothing promotes it meanwhile). A paused running run frees its slot: runs its
-- concurrency key or queue limit kept back are woken (_slot_freed). A continued run stands for
-- its chain: the chain's newest run is paused.
create or replace function aiki.pause(p_run_id uuid) returns aiki.run_status
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_run aiki.runs;
begin
  v_run := aiki._lock_run_latest(p_run_id);
  -- Still `continued` after _lock_run_latest: the chain's newest run was purged, the chain ended.
  if v_run.status in ('completed', 'failed', 'cancelled', 'continued') then
    raise exception using errcode = 'AK005',
      message = format('run %s is already %s and cannot be paused', v_run.id, v_run.status);
  end if;
  if v_run.status <> 'paused' then
    perform aiki._leave_running(v_run, 'paused',
      case when v_run.status in ('scheduled', 'retrying') then v_run.available_at end);
    perform aiki._notify_status(v_run.id, 'paused');
  end if;
  return 'paused';
end
$$;

-- Releases a paused run to be claimed now. Its replay re-suspends on waits still open, so
-- resume need not know what the run waited for. A run paused before its scheduled start or
-- retry time (see pause) goes back to `scheduled`/`retrying` until then instead of starting
-- early, and tells the workers when (_notify_due). Returns the new status. A continued run stands
-- for its chain: the chain's newest run is resumed. AK005 unless the run is paused.
create or replace function aiki.resume(p_run_id uuid) returns aiki.run_status
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_run aiki.runs;
  v_status aiki.run_status;
begin
  v_run := aiki._lock_run_latest(p_run_id);
  p_run_id := v_run.id;
  if v_run.status <> 'paused' then
    raise exception using errcode = 'AK005',
      message = format('run %s is %s, not paused; only a paused run can be resumed', p_run_id, v_run.status);
  end if;
  if v_run.available_at > aiki.now() then
    v_status := case when v_run.started_at is null then 'scheduled' else 'retrying' end;
  else
    v_status := 'pending';
  end if;
  update aiki.runs
     set status = v_status, updated_at = aiki.now(),
         available_at = case when v_status = 'pending' then aiki.now() else v_run.available_at end
   where id = p_run_id;
  if v_status = 'pending' then
    perform aiki._notify_queue(v_run.queue);
  else
    perform aiki._notify_due(v_run.queue, v_run.available_at);
  end if;
  perform aiki._notify_status(p_run_id, v_status);
  return v_status;
end
$$;

-- Ends run p_run_id, leased by the caller, as `continued` and starts its successor in the same
-- transaction: the same workflow (at p_version, or the run's version when null), queue, priority,
-- concurrency key, retry policy, lease-expiry bound, deadline (a run timeout bounds the whole
-- chain) and parent link, with input p_input, attempt 1 and an empty journal, pending at once
-- (its queue is notified, as for a start). Returns the successor's id. The two are linked both
-- ways (continued_to, continued_from) and share chain_id (see the header): the first run's
-- idempotency key finds the successor, a parent waiting on the chain is woken only when its last
-- run ends. Events the run received but no wait took yet move to the successor, in order. The
-- run's unfinished descendants are cancelled, as when it is cancelled: nothing could wait for
-- them any more. The successor keeps the run's trace context, so a chain stays one trace.
-- Locks the parent (if any), then the run (_lock_lease).
-- AK001 on a lost lease, AK003 on a bad version, AK007 on an oversized input.
create or replace function aiki.continue_as_new(
  p_run_id uuid, p_lease_token uuid, p_input jsonb default 'null', p_version text default null)
returns uuid
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_run aiki.runs;
  v_now timestamptz := aiki.now();
  v_next uuid := aiki._uuidv7();
  v_chain uuid;
begin
  perform aiki._check_payload('workflow input', p_input);
  if p_version is not null then
    perform aiki._check_version(p_version);
  end if;
  v_run := aiki._lock_lease(p_run_id, p_lease_token, true);
  v_chain := coalesce(v_run.chain_id, v_run.id);
  perform aiki._cancel_descendants(v_run.id, jsonb_build_object(
    'name', 'Cancelled', 'message', format('parent run %s continued as new run %s', v_run.id, v_next)));

  insert into aiki.runs (
    id, parent_id, available_at, deadline_at, created_at, updated_at, priority, max_lease_expiries,
    status, workflow, version, queue, concurrency_key, parent_step_key, retry, input,
    continued_from, chain_id, trace_context)
  values (
    v_next, v_run.parent_id, v_now, v_run.deadline_at, v_now, v_now, v_run.priority, v_run.max_lease_expiries,
    'pending', v_run.workflow, coalesce(p_version, v_run.version), v_run.queue, v_run.concurrency_key,
    v_run.parent_step_key, v_run.retry, coalesce(p_input, 'null'), v_run.id, v_chain, v_run.trace_context);
  update aiki.events set run_id = v_next where run_id = v_run.id and consumed_by is null;

  perform aiki._leave_running(v_run, 'continued', null);
  update aiki.runs set continued_to = v_next, chain_id = v_chain where id = v_run.id;
  perform aiki._notify_status(v_run.id, 'continued');
  perform aiki._notify_queue(v_run.queue);
  return v_next;
end
$$;
