-- aiki engine: operators — retry a failed run, and the reads the CLI and the dashboard show.
--
--   retry_run     a failed or cancelled run goes back to pending as a new attempt; a retrying one
--                 is made due now
--   search_runs   runs by filter, newest first, keyset-paged by an opaque cursor
--   count_runs    runs per status under the same filter (exact up to _count_cap() per status)
--   run_timeline  one run with its steps (attempts, errors, durations), inbox, children, parent
--   list_workers  the workers table with liveness and the runs each holds
--   list_queues   per queue: unfinished runs by status, oldest pending run, settings
--
-- The reads take no locks and may be called by every role. search_runs and count_runs build
-- their SQL from a validated filter (aiki._run_filter) with the values quoted in, so each call is
-- planned for its own values and the planner picks the index that fits: runs_status_created,
-- runs_by_workflow, runs_children, runs_idempotency(_key) or runs_created
-- (migration 0007; EXPLAIN checks in sql/test/explain.test.ts).

-- Counts per status stop at this many: an exact count of a million completed runs is an
-- index-only scan of a million entries on every dashboard refresh. A count equal to the cap
-- means "at least this many".
create or replace function aiki._count_cap() returns integer
language sql immutable parallel safe
as $$ select 100000 $$;

-- A run filter as a SQL condition on alias r, or AK003 naming the key that is wrong. Keys (all
-- optional): status (a status or an array of them; only when p_allow_status), workflow, version,
-- queue, created_after, created_before, idempotency_key, parent_id, unserved (boolean), search
-- (a run id or an idempotency key). Values are checked, then quoted into the text (format %L).
create or replace function aiki._run_filter(p_filter jsonb, p_allow_status boolean) returns text
language plpgsql stable
as $$
declare
  v_key text;
  v_value jsonb;
  v_text text;
  v_where text[] := array['true'];
  v_statuses text[];
  v_keys text[] := array['workflow', 'version', 'queue', 'created_after', 'created_before',
                         'idempotency_key', 'parent_id', 'unserved', 'search'];
begin
  if p_filter is null or p_filter = 'null'::jsonb then
    return 'true';
  end if;
  if jsonb_typeof(p_filter) <> 'object' then
    raise exception using errcode = 'AK003', message = 'invalid run filter: expected a JSON object';
  end if;
  for v_key, v_value in select key, value from jsonb_each(p_filter) loop
    continue when v_value = 'null'::jsonb;
    v_text := case when jsonb_typeof(v_value) = 'string' then v_value #>> '{}' end;
    if v_key = 'status' and p_allow_status then
      if jsonb_typeof(v_value) = 'array' then
        select array_agg(e #>> '{}') into v_statuses from jsonb_array_elements(v_value) e;
      else
        v_statuses := array[v_text];
      end if;
      if coalesce(cardinality(v_statuses), 0) = 0 or exists (
           select 1 from unnest(v_statuses) s
            where s is null or s not in (select unnest(enum_range(null::aiki.run_status))::text)) then
        raise exception using errcode = 'AK003',
          message = format('invalid run filter ''status'': bad value %s', left(v_value::text, 200)),
          hint = 'use a run status or an array of them: ' || array_to_string(enum_range(null::aiki.run_status), ', ');
      end if;
      -- One status as `=`: the index then returns the runs in (created_at, id) order, no sort.
      v_where := v_where || case when cardinality(v_statuses) = 1
                                 then format('r.status = %L::aiki.run_status', v_statuses[1])
                                 else format('r.status = any (%L::aiki.run_status[])', v_statuses) end;
      continue;
    end if;
    begin
      if v_key <> 'unserved' and v_text is null then
        raise exception using errcode = 'AK003', message = 'not a string';
      end if;
      case v_key
        when 'workflow' then
          v_where := v_where || format('r.workflow = %L', aiki._check_name('workflow name', v_text));
        when 'version' then
          v_where := v_where || format('r.version = %L', aiki._check_version(v_text));
        when 'queue' then
          v_where := v_where || format('r.queue = %L', aiki._check_name('queue name', v_text));
        when 'created_after' then
          v_where := v_where || format('r.created_at > %L::timestamptz', v_text::timestamptz);
        when 'created_before' then
          v_where := v_where || format('r.created_at < %L::timestamptz', v_text::timestamptz);
        when 'idempotency_key' then
          v_where := v_where || format('r.idempotency_key = %L', aiki._check_key('idempotency key', v_text));
        when 'parent_id' then
          v_where := v_where || format('r.parent_id = %L::uuid', v_text::uuid);
        when 'unserved' then
          if jsonb_typeof(v_value) <> 'boolean' then
            raise exception using errcode = 'AK003', message = 'not a boolean';
          end if;
          if v_value = 'true'::jsonb then
            v_where := v_where || 'r.status = ''pending'' and aiki._unserved(r.workflow, r.version, r.queue, r.status, aiki.now())'::text;
          end if;
        when 'search' then
          perform aiki._check_key('search', v_text);
          v_where := v_where || case when v_text ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                                     then format('(r.id = %L::uuid or r.idempotency_key = %L)', v_text, v_text)
                                     else format('r.idempotency_key = %L', v_text) end;
        else
          raise exception using errcode = 'AK003', message = 'unknown key';
      end case;
    exception when sqlstate 'AK003' or invalid_text_representation or invalid_datetime_format
                   or datetime_field_overflow or null_value_not_allowed then
      raise exception using errcode = 'AK003',
        message = format('invalid run filter %s: %s', quote_literal(left(v_key, 100)),
                         case when v_key = any (v_keys) then format('bad value %s', left(v_value::text, 200))
                              when v_key = 'status' then 'count_runs counts every status'
                              else 'unknown key' end),
        hint = 'filter keys: ' || case when p_allow_status then 'status, ' else '' end || array_to_string(v_keys, ', ');
    end;
  end loop;
  return array_to_string(v_where, ' and ');
end
$$;

-- The cursor search_runs hands out: the (created_at, id) of the last run listed, opaque.
create or replace function aiki._run_cursor(p_created_at timestamptz, p_id uuid) returns text
language sql immutable
as $$
  select translate(encode(convert_to(
    to_char(p_created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') || '/' || p_id::text, 'UTF8'), 'base64'), E'\n', '')
$$;

-- Retries run p_run_id now. A failed or cancelled run goes back to `pending` as attempt + 1: its
-- completed steps stay (the replay resumes where it failed); its failed and started steps, its
-- error and how the attempt ended move to aiki.run_attempts (_archive_attempt) and the task
-- steps' `errors` keep every failed attempt, so run_timeline still shows what failed before.
-- The lease-loss count starts again; the deadline (if any) stays. A `retrying` run (a task or the
-- run itself failed and waits for its next attempt) is made due now, its retrying steps too; it
-- keeps its attempt number. Returns 'pending'. AK002 when missing, AK005 for any other status.
--
-- A retried child whose parent waited for it: the parent's wait_child step already holds the
-- failure and its code may have acted on it, so it is not reopened (a replay must see what the
-- first run saw). The child runs again on its own; its new end is delivered to no one. To run a
-- failed parent again, retry the parent. Locks: the parent (if any), then the run (_lock_run),
-- as every finish does, because the retried run will finish again.
create or replace function aiki.retry_run(p_run_id uuid) returns aiki.run_status
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_run aiki.runs;
  v_now timestamptz := aiki.now();
  v_forgotten integer;
begin
  v_run := aiki._lock_run(p_run_id);
  if v_run.status in ('failed', 'cancelled') then
    v_forgotten := aiki._archive_attempt(v_run, v_run.status, v_run.error);
    update aiki.steps set wake_at = v_now
     where run_id = p_run_id and status = 'retrying' and wake_at > v_now;
    update aiki.runs
       set status = 'pending', available_at = v_now, updated_at = v_now, finished_at = null,
           output = null, attempt = attempt + 1, lease_expiries = 0,
           journal_steps = journal_steps - v_forgotten
     where id = p_run_id;
  elsif v_run.status = 'retrying' then
    update aiki.steps set wake_at = v_now
     where run_id = p_run_id and status = 'retrying' and wake_at > v_now;
    update aiki.runs set status = 'pending', available_at = v_now, updated_at = v_now where id = p_run_id;
  else
    raise exception using errcode = 'AK005',
      message = format('run %s is %s; only a failed, cancelled or retrying run can be retried', p_run_id, v_run.status),
      hint = case when v_run.status = 'paused' then 'resume a paused run'
                  else 'wait until the run fails, or cancel it first' end;
  end if;
  perform aiki._notify_queue(v_run.queue);
  perform aiki._notify_status(p_run_id, 'pending');
  return 'pending';
end
$$;

-- Runs matching p_filter (see _run_filter), newest first by (created_at, id), at most p_limit
-- (1-1000), after p_cursor (the next_cursor of the previous page). Returns {"runs": [...],
-- "next_cursor": text or null when this is the last page}. AK003 on a bad filter, limit or cursor.
create or replace function aiki.search_runs(
  p_filter jsonb default '{}', p_limit integer default 50, p_cursor text default null)
returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_where text := aiki._run_filter(p_filter, true);
  v_after_at timestamptz := 'infinity';
  v_after_id uuid := 'ffffffff-ffff-ffff-ffff-ffffffffffff';
  v_parts text[];
  v_rows jsonb[];
  v_last jsonb;
begin
  if p_limit is null or p_limit not between 1 and 1000 then
    raise exception using errcode = 'AK003',
      message = format('invalid limit %s', coalesce(p_limit::text, 'null')), hint = 'use 1-1000';
  end if;
  if p_cursor is not null then
    begin
      v_parts := string_to_array(convert_from(decode(p_cursor, 'base64'), 'UTF8'), '/');
      v_after_at := v_parts[1]::timestamptz;
      v_after_id := v_parts[2]::uuid;
      if cardinality(v_parts) <> 2 or v_after_at is null or v_after_id is null then
        raise exception using errcode = 'AK003', message = 'malformed';
      end if;
    exception when sqlstate 'AK003' or invalid_parameter_value or invalid_text_representation
                   or invalid_datetime_format or datetime_field_overflow or character_not_in_repertoire
                   or untranslatable_character then
      raise exception using errcode = 'AK003', message = format('invalid cursor %s', quote_literal(left(p_cursor, 200))),
        hint = 'pass the next_cursor of the previous page unchanged';
    end;
  end if;
  -- A created_before under the cursor becomes the scan's start: with two upper bounds on
  -- runs_created the backward scan starts at the row comparison's and filters its way down
  -- (24 ms instead of 2 to reach the first run of one day out of 1,000,000).
  if (p_filter->>'created_before')::timestamptz <= v_after_at then
    v_after_at := (p_filter->>'created_before')::timestamptz;
    v_after_id := '00000000-0000-0000-0000-000000000000';
  end if;
  execute format($q$
    select array_agg(jsonb_build_object(
             'id', r.id, 'workflow', r.workflow, 'version', r.version, 'status', r.status,
             'queue', r.queue, 'attempt', r.attempt, 'parent_id', r.parent_id,
             'idempotency_key', r.idempotency_key, 'created_at', r.created_at,
             'started_at', r.started_at, 'finished_at', r.finished_at, 'available_at', r.available_at,
             'unserved', aiki._unserved(r.workflow, r.version, r.queue, r.status, aiki.now()),
             'error_name', r.error->>'name') order by r.created_at desc, r.id desc)
    from (select * from aiki.runs r
          where %s and (r.created_at, r.id) < ($1, $2)
          order by r.created_at desc, r.id desc
          limit $3) r$q$, v_where)
  into v_rows using v_after_at, v_after_id, p_limit + 1;
  v_rows := coalesce(v_rows, '{}');
  if cardinality(v_rows) > p_limit then
    v_last := v_rows[p_limit];
    return jsonb_build_object('runs', to_jsonb(v_rows[1:p_limit]),
      'next_cursor', aiki._run_cursor((v_last->>'created_at')::timestamptz, (v_last->>'id')::uuid));
  end if;
  return jsonb_build_object('runs', to_jsonb(v_rows), 'next_cursor', null);
end
$$;

-- Runs matching p_filter (no `status` key) per status: {"scheduled": n, ..., "cancelled": n},
-- every status present. Each status is counted by its own bounded scan (runs_status_created,
-- index-only without other filters) and stops at aiki._count_cap(): a count equal to the cap
-- means at least that many. AK003 on a bad filter.
create or replace function aiki.count_runs(p_filter jsonb default '{}') returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_where text := aiki._run_filter(p_filter, false);
  v_status aiki.run_status;
  v_count bigint;
  v_counts jsonb := '{}';
begin
  foreach v_status in array enum_range(null::aiki.run_status) loop
    execute format('select count(*) from (select 1 from aiki.runs r where r.status = %L and %s limit %s) c',
                   v_status, v_where, aiki._count_cap())
      into v_count;
    v_counts := v_counts || jsonb_build_object(v_status::text, v_count);
  end loop;
  return v_counts;
end
$$;

-- One run as get_run returns it, without its `journal`, plus:
--   timeline        its steps in creation order, each {key, kind, name, status, attempts, output,
--                   error, errors (every failed attempt), created_at, completed_at, duration_ms,
--                   wake_at (sleep end, wait timeout, next retry or attempt deadline), child_id}
--   attempts_before earlier attempts of the run (aiki.run_attempts): {attempt, status, error,
--                   ended_at, failed_steps}
--   events          its inbox, oldest first: {id, name, data, idempotency_key, created_at,
--                   consumed_by, consumed_at} (the newest 1000)
--   children        {id, workflow, version, status, created_at, finished_at} (the first 1000)
--   parent          {id, workflow, version, status} or null
--   lease_owner     the worker holding it while running (never the lease token)
-- AK002 when there is no such run.
create or replace function aiki.run_timeline(p_run_id uuid) returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_run aiki.runs;
  v_parent jsonb;
begin
  select * into v_run from aiki.runs where id = aiki._check_run_id(p_run_id);
  if not found then
    raise exception using errcode = 'AK002', message = format('run %s not found', p_run_id);
  end if;
  if v_run.parent_id is not null then
    select jsonb_build_object('id', p.id, 'workflow', p.workflow, 'version', p.version, 'status', p.status)
      into v_parent from aiki.runs p where p.id = v_run.parent_id;
  end if;
  return aiki._run_json(v_run, false, false)
    || jsonb_build_object(
      'unserved', aiki._unserved(v_run.workflow, v_run.version, v_run.queue, v_run.status, aiki.now()),
      'lease_owner', v_run.lease_owner,
      'parent', v_parent,
      'timeline', coalesce((
        select jsonb_agg(jsonb_build_object(
                 'key', s.step_key, 'kind', s.kind, 'name', s.name, 'status', s.status,
                 'attempts', s.attempts, 'output', s.output, 'error', s.error,
                 'errors', coalesce(s.errors, '[]'::jsonb),
                 'created_at', s.created_at, 'completed_at', s.completed_at,
                 'duration_ms', floor(extract(epoch from s.completed_at - s.created_at) * 1000)::bigint,
                 'wake_at', s.wake_at, 'child_id', s.child_id)
               order by s.created_at, s.wait_seq nulls first, s.step_key)
          from aiki.steps s where s.run_id = v_run.id), '[]'::jsonb),
      'attempts_before', coalesce((
        select jsonb_agg(jsonb_build_object(
                 'attempt', a.attempt, 'status', a.status, 'error', a.error, 'ended_at', a.ended_at,
                 'failed_steps', a.failed_steps) order by a.attempt)
          from aiki.run_attempts a where a.run_id = v_run.id), '[]'::jsonb),
      'events', coalesce((
        select jsonb_agg(jsonb_build_object(
                 'id', e.id, 'name', e.name, 'data', e.data, 'idempotency_key', e.idempotency_key,
                 'created_at', e.created_at, 'consumed_by', e.consumed_by, 'consumed_at', e.consumed_at)
               order by e.id)
          from (select * from aiki.events where run_id = v_run.id order by id desc limit 1000) e), '[]'::jsonb),
      'children', coalesce((
        select jsonb_agg(jsonb_build_object(
                 'id', c.id, 'workflow', c.workflow, 'version', c.version, 'status', c.status,
                 'created_at', c.created_at, 'finished_at', c.finished_at)
               order by c.created_at, c.id)
          from (select * from aiki.runs where parent_id = v_run.id order by created_at, id limit 1000) c), '[]'::jsonb));
end
$$;

-- Every registered worker, most recently seen first: {id, workflows, queues, started_at,
-- last_seen, alive (seen within its stale_after_ms), runs_held (runs it leases now)}. A null
-- workflows or queues list serves any.
create or replace function aiki.list_workers() returns jsonb
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
  select coalesce(jsonb_agg(jsonb_build_object(
           'id', w.id, 'workflows', w.workflows, 'queues', w.queues, 'started_at', w.started_at,
           'last_seen', w.last_seen,
           'alive', w.last_seen + w.stale_after_ms * interval '1 millisecond' > aiki.now(),
           'runs_held', coalesce(h.n, 0))
         order by w.last_seen desc, w.id), '[]'::jsonb)
  from aiki.workers w
  left join (select lease_owner, count(*) as n from aiki.runs
              where status = 'running' group by lease_owner) h on h.lease_owner = w.id
$$;

-- Every queue that has unfinished runs or settings (aiki.queues), by name: {name, counts:
-- {pending, running, scheduled, sleeping, waiting, retrying, paused}, oldest_pending_at (the
-- available_at of its longest-claimable pending run), oldest_pending_age_ms, concurrency_limit
-- (null: none), key_concurrency_limit, rate_limit and rate_window_ms (null: none), rate_per_key,
-- paused}. A queue whose runs are all finished is not
-- listed unless it has settings. Reads unfinished runs only (runs_status_created).
create or replace function aiki.list_queues() returns jsonb
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
  with live as (
    select r.queue,
           count(*) filter (where r.status = 'pending') as pending,
           count(*) filter (where r.status = 'running') as running,
           count(*) filter (where r.status = 'scheduled') as scheduled,
           count(*) filter (where r.status = 'sleeping') as sleeping,
           count(*) filter (where r.status = 'waiting') as waiting,
           count(*) filter (where r.status = 'retrying') as retrying,
           count(*) filter (where r.status = 'paused') as paused,
           min(r.available_at) filter (where r.status = 'pending') as oldest_pending_at
    from aiki.runs r
    where r.status in ('pending', 'running', 'scheduled', 'sleeping', 'waiting', 'retrying', 'paused')
    group by r.queue)
  select coalesce(jsonb_agg(jsonb_build_object(
           'name', coalesce(l.queue, q.name),
           'counts', jsonb_build_object(
             'pending', coalesce(l.pending, 0), 'running', coalesce(l.running, 0),
             'scheduled', coalesce(l.scheduled, 0), 'sleeping', coalesce(l.sleeping, 0),
             'waiting', coalesce(l.waiting, 0), 'retrying', coalesce(l.retrying, 0),
             'paused', coalesce(l.paused, 0)),
           'oldest_pending_at', l.oldest_pending_at,
           'oldest_pending_age_ms', greatest(0, floor(extract(epoch from aiki.now() - l.oldest_pending_at) * 1000))::bigint,
           'concurrency_limit', q.concurrency_limit,
           'key_concurrency_limit', coalesce(q.key_concurrency_limit, 1),
           'rate_limit', q.rate_limit,
           'rate_window_ms', q.rate_window_ms,
           'rate_per_key', coalesce(q.rate_per_key, false),
           'paused', coalesce(q.paused, false))
         order by coalesce(l.queue, q.name)), '[]'::jsonb)
  from live l
  full join aiki.queues q on q.name = l.queue
$$;
