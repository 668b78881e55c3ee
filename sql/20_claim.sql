-- aiki engine: claim — how workers take runs, keep them, and give them back.
--
--   claim      promote due timers, then lease up to N pending runs (SKIP LOCKED), with journals
--   heartbeat  renew the leases a worker holds and names by token, in one statement, never waiting
--   release    give a leased run back unharmed (graceful shutdown)
--   next_due   when the next timer falls due, for a relay that hints workers (reads only)
--
-- Timers need no daemon: every claim first promotes a bounded batch of runs whose
-- available_at has passed (scheduled starts, sleeps, wait timeouts, retries, expired leases),
-- so any live worker keeps every queue's timers moving, and the claim's `next_due_at` tells an
-- idle worker exactly when to look again.
--
-- Lost wake-ups. SKIP LOCKED passes over rows another transaction holds: a send_event on a
-- pending run, a child's end holding its parent, a worker's write. Their holder may commit
-- without a notification (an event buffered for a pending run wakes nobody), so a claim that
-- passed over a run it would have taken says so (`skipped`), and the worker looks again shortly.
-- A claim that leaves runs behind because a concurrency limit holds them says so too (`held`):
-- those wake when a slot frees (_slot_freed notifies), and the worker knows the notification
-- that brought it was no false alarm.
--
-- Concurrency and rate limits. A queue without a concurrency or rate limit claims its unkeyed
-- runs on the fast path: one SKIP LOCKED statement and no other coordination. Runs with a
-- concurrency key, and every run of a queue with a limit, are claimed on the slow path under a
-- per-queue advisory lock, because "how many are running" and "how many started in this window"
-- must not change between counting and leasing.

-- Promotes up to p_limit due timers to pending and returns their ids; the caller notifies the
-- queues of those it does not lease itself. Runs past their deadline, and expired leases that
-- reached max_lease_expiries (a crash loop), fail instead. Failing a child needs its parent's
-- lock, which we hold no right to wait for while holding the child's (lock order): such a run is
-- taken with SKIP LOCKED on the parent or left for the next claim.
drop function if exists aiki._promote_due(timestamptz, integer);
create or replace function aiki._promote_due(p_now timestamptz, p_limit integer) returns uuid[]
language plpgsql
as $$
declare
  v_ids uuid[];
  v_skip uuid[] := '{}';
  v_run aiki.runs;
  v_promoted uuid[];
begin
  select array_agg(id) into v_ids from (
    select id from aiki.runs
    where status in ('scheduled', 'sleeping', 'waiting', 'retrying', 'running')
      and available_at <= p_now
    order by available_at
    limit p_limit
    for update skip locked) due;
  if v_ids is null then
    return '{}';
  end if;

  for v_run in
    select * from aiki.runs
    where id = any(v_ids)
      and (deadline_at <= p_now or (status = 'running' and lease_expiries + 1 >= max_lease_expiries))
  loop
    if v_run.parent_id is not null then
      perform 1 from aiki.runs where id = v_run.parent_id for update skip locked;
      if not found and exists (select 1 from aiki.runs where id = v_run.parent_id) then
        v_skip := v_skip || v_run.id;
        continue;
      end if;
    end if;
    if v_run.deadline_at <= p_now then
      perform aiki._finish(v_run, 'failed', null, jsonb_build_object(
        'name', 'DeadlineExceeded',
        'message', format('run passed its deadline %s', v_run.deadline_at)));
    else
      perform aiki._finish(v_run, 'failed', null, jsonb_build_object(
        'name', 'CrashLoop',
        'message', format('run lost its lease %s times; its workers keep dying', v_run.lease_expiries + 1)));
    end if;
  end loop;

  -- Timed-out waits and finished sleeps of the suspended runs become journal entries.
  update aiki.steps s
     set status = 'completed', completed_at = p_now, wake_at = null,
         output = case when s.kind = 'event' then '{"timeout": true}'::jsonb end
    from aiki.runs r
   where r.id = any(v_ids) and r.status in ('sleeping', 'waiting')
     and s.run_id = r.id and s.status = 'waiting' and s.wake_at <= p_now;

  with promoted as (
    update aiki.runs
       set status = 'pending', updated_at = p_now,
           lease_expiries = lease_expiries + (status = 'running')::integer,
           lease_owner = null, lease_token = null, lease_expires_at = null
     where id = any(v_ids) and not (id = any(v_skip))
       and status in ('scheduled', 'sleeping', 'waiting', 'retrying', 'running')
    returning id
  )
  select coalesce(array_agg(id), '{}') into v_promoted from promoted;
  return v_promoted;
end
$$;

-- The slow path of claim for one queue, under the queue's advisory lock: picks up to p_want
-- pending runs in claim order such that the queue's concurrency limit and, per concurrency key,
-- the queue's key limit hold, and then its rate limit. With p_keyed_only, unkeyed runs are left
-- to the fast path. Scans every pending run of the queue (the window needs them all):
-- O(backlog), which is why unlimited queues keep unkeyed runs off this path. `skipped`: a chosen
-- run was locked by another transaction and passed over; `held`: pending runs remain that the
-- concurrency limits keep back.
--
-- Rate limits (see sql/70_queues.sql) count first leases only: runs never started are ranked
-- per bucket (the concurrency key with rate_per_key, else the queue) after the concurrency
-- limits have filtered them, and a bucket gives at most rate_limit less what its window already
-- started. The counter lives in aiki.queue_rates, one row per bucket, updated here under the
-- advisory lock that also serializes the counting, so two claims never exceed the limit. When a
-- bucket's window is full, its never-started pending runs go back to `scheduled` with
-- available_at at the window's end (SKIP LOCKED: a run another transaction holds stays pending
-- and is pushed by a later claim): they are timers then, so the claim's next_due_at and the
-- relay's next_due name the window's end and no worker claims in vain before it.
-- Why fixed windows, not a sliding log of start times: the counter is one row per bucket, read
-- and written once per claim whatever the limit, where a log holds up to rate_limit rows per
-- bucket to count and prune; a window's end is a pure function of the clock, so held runs know
-- when to come back. The price: starts may bunch at a window's edge (up to 2 x rate_limit within
-- less than one window across it). Exact per window, which the tests assert.
drop function if exists aiki._claim_limited(text, text[], integer, timestamptz, boolean);
create or replace function aiki._claim_limited(
  p_queue text, p_workflows text[], p_want integer, p_now timestamptz, p_keyed_only boolean,
  out ids uuid[], out skipped boolean, out held boolean)
language plpgsql
as $$
declare
  v_queue aiki.queues;
  v_want integer := p_want;
  v_chosen uuid[];
  v_window_end timestamptz;
  v_pushed integer;
begin
  perform pg_advisory_xact_lock(hashtextextended('aiki.claim:' || p_queue, 0));
  select * into v_queue from aiki.queues where name = p_queue;
  if v_queue.concurrency_limit is not null then
    v_want := least(v_want, v_queue.concurrency_limit
                            - (select count(*) from aiki.runs where status = 'running' and queue = p_queue));
  end if;
  if v_queue.rate_limit is not null then
    v_window_end := date_bin(v_queue.rate_window_ms * interval '1 millisecond', p_now, timestamptz 'epoch')
                    + v_queue.rate_window_ms * interval '1 millisecond';
  end if;
  -- Under a rate limit every run the concurrency limits let through is a candidate (limit null
  -- is no limit), and the rate filter below takes the first p_want the window allows.
  v_chosen := case when v_want <= 0 then '{}' else array(
      select c.id from (
        select p.id, p.priority, p.available_at, p.concurrency_key,
               row_number() over (partition by p.concurrency_key
                                  order by p.priority desc, p.available_at) as key_rank
        from aiki.runs p
        where p.status = 'pending' and p.queue = p_queue and p.available_at <= p_now
          and (not p_keyed_only or p.concurrency_key is not null)
          and (p_workflows is null or p.workflow || '@' || p.version = any(p_workflows))
      ) c
      where c.concurrency_key is null
         or c.key_rank + (select count(*) from aiki.runs x
                          where x.status = 'running' and x.queue = p_queue
                            and x.concurrency_key = c.concurrency_key)
            <= coalesce(v_queue.key_concurrency_limit, 1)
      order by c.priority desc, c.available_at
      limit case when v_queue.rate_limit is null then v_want end) end;
  if v_queue.rate_limit is not null and cardinality(v_chosen) > 0 then
    v_chosen := array(
      select d.id from (
        select u.id, u.ord, r.started_at, b.bucket,
               row_number() over (partition by b.bucket, r.started_at is null order by u.ord) as rate_rank
        from unnest(v_chosen) with ordinality u(id, ord)
        join aiki.runs r on r.id = u.id
        cross join lateral (select case when v_queue.rate_per_key then coalesce(r.concurrency_key, '') else '' end) b(bucket)
      ) d
      where d.started_at is not null
         or d.rate_rank + coalesce((select q.started from aiki.queue_rates q
                                     where q.queue = p_queue and q.bucket = d.bucket
                                       and q.window_end = v_window_end), 0)
            <= v_queue.rate_limit
      order by d.ord
      limit v_want);
  end if;
  ids := array(
    select r.id from aiki.runs r
    where r.id = any(v_chosen) and r.status = 'pending'
    for update skip locked);
  skipped := cardinality(ids) < cardinality(v_chosen);

  if v_queue.rate_limit is not null then
    -- Count this claim's first leases; a row of a past window starts over.
    insert into aiki.queue_rates as q (queue, bucket, window_end, started)
    select p_queue, case when v_queue.rate_per_key then coalesce(r.concurrency_key, '') else '' end,
           v_window_end, count(*)
      from aiki.runs r where r.id = any(ids) and r.started_at is null
     group by 2
    on conflict (queue, bucket) do update
      set started = case when q.window_end = excluded.window_end then q.started + excluded.started
                         else excluded.started end,
          window_end = excluded.window_end;
    -- Push back what a full window holds, so nobody claims it before the window ends.
    with doomed as (
      select p.id from aiki.runs p
      where p.status = 'pending' and p.queue = p_queue and p.available_at <= p_now
        and p.started_at is null and not (p.id = any(ids))
        and (case when v_queue.rate_per_key then coalesce(p.concurrency_key, '') else '' end) in (
              select q.bucket from aiki.queue_rates q
               where q.queue = p_queue and q.window_end = v_window_end and q.started >= v_queue.rate_limit)
      for update skip locked)
    update aiki.runs r
       set status = 'scheduled', available_at = v_window_end, updated_at = p_now
      from doomed where r.id = doomed.id;
    get diagnostics v_pushed = row_count;
    if v_pushed > 0 then
      perform aiki._notify_due(p_queue, v_window_end);
    end if;
  end if;

  held := cardinality(v_chosen) < p_want and exists (
    select 1 from aiki.runs p
    where p.status = 'pending' and p.queue = p_queue and p.available_at <= p_now
      and (not p_keyed_only or p.concurrency_key is not null)
      and (p_workflows is null or p.workflow || '@' || p.version = any(p_workflows))
      and not (p.id = any(v_chosen)));
end
$$;

-- The claim's answer, built run by run after building it at once failed (see claim): the JSON
-- of each run of p_ids (in answer order), each built in a block that writes nothing. A run
-- whose own JSON cannot be built (its journal is over what one jsonb value holds) is failed
-- with JournalTooLarge, so it never stops its queue again; its parent is locked first, SKIP
-- LOCKED (lock order: the caller holds the run), and a run whose parent is busy goes back to
-- pending for a later claim. Runs that would take the answer past _max_claim_bytes go back to
-- pending for the next claim; a run over it on its own fails. So every claim progresses.
-- Caller holds the runs' locks. The error path only: a subtransaction per run.
create or replace function aiki._claim_answer_by_run(p_ids uuid[], p_now timestamptz) returns jsonb
language plpgsql
as $$
declare
  v_id uuid;
  v_run aiki.runs;
  v_json jsonb;
  v_runs jsonb[] := '{}';
  v_bytes bigint := 0;
  v_reason text;
begin
  foreach v_id in array p_ids loop
    select * into v_run from aiki.runs where id = v_id;
    v_json := null;
    begin
      v_json := aiki._run_json(v_run, true, true);
    exception when program_limit_exceeded or out_of_memory then
      get stacked diagnostics v_reason = message_text;
    end;
    if pg_column_size(v_json) > aiki._max_claim_bytes() then
      v_reason := format('%s bytes of JSON, over the %s a claim can hand out', pg_column_size(v_json), aiki._max_claim_bytes());
      v_json := null;
    end if;
    if v_json is null then
      if v_run.parent_id is not null then
        perform 1 from aiki.runs where id = v_run.parent_id for update skip locked;
        if not found and exists (select 1 from aiki.runs where id = v_run.parent_id) then
          perform aiki._leave_running(v_run, 'pending', p_now);
          continue;
        end if;
      end if;
      perform aiki._finish(v_run, 'failed', null, jsonb_build_object(
        'name', 'JournalTooLarge', 'code', 'AK008',
        'message', format('run %s cannot be handed to a worker: its journal of %s steps is too large (%s)',
                          v_run.id, (select count(*) from aiki.steps where run_id = v_run.id), v_reason)));
    elsif v_bytes + pg_column_size(v_json) > aiki._max_claim_bytes() then
      perform aiki._leave_running(v_run, 'pending', p_now);
    else
      v_runs := v_runs || v_json;
      v_bytes := v_bytes + pg_column_size(v_json);
    end if;
  end loop;
  return to_jsonb(v_runs);
end
$$;

-- What one claim's answer may hold: a jsonb value's limit (2^28 - 1 bytes), less 1 MiB for
-- the answer's envelope and the array's own headers. Tests lower it with the session setting
-- `aiki.max_claim_bytes`, to take claim's error path without building 256 MiB of JSON; like
-- aiki.fake_now, only a superuser or a member of aiki_admin may (a worker that could lower it
-- would fail every run it claims). Unset, the role check is never evaluated.
create or replace function aiki._max_claim_bytes() returns bigint
language sql stable parallel safe
as $$
  select case when current_setting('aiki.max_claim_bytes', true) <> ''
               and pg_has_role(session_user, 'aiki_admin', 'member')
              then current_setting('aiki.max_claim_bytes', true)::bigint
              else 268435455::bigint - 1048576 end
$$;

-- Leases up to p_limit runs for p_worker from p_queues (in that order), restricted to the
-- `workflow@version` pairs in p_workflows (null: any), highest priority first, then oldest due.
-- Returns {"now", "runs": [run with "journal" and "lease_token"], "next_due_at": ts | null,
--          "skipped": bool, "held": bool}:
-- next_due_at is the earliest future timer of any queue, so an idle worker can sleep until then
-- (now is the database's clock, so the worker needs no clock of its own); it is null when the
-- claim is full, as a full claim is followed by another at once. A short claim also tells
-- `skipped`: it passed over a pending run or a due timer that another transaction holds locked
-- (look again shortly: the holder may commit without notifying), and `held`: runs of its
-- queues are pending but a concurrency limit keeps them back (a freed slot notifies).
-- Notifies the queues of promoted timers it left pending.
-- Locks: due timers (SKIP LOCKED), then claimed runs (SKIP LOCKED); on the slow path, the
-- queue's advisory lock first. Never blocks on a row lock. Raises AK003 on bad arguments.
create or replace function aiki.claim(
  p_worker text,
  p_workflows text[] default null,
  p_queues text[] default array['default'],
  p_limit integer default 1,
  p_lease_ms integer default 30000)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
-- Generic plans: with a backlog, the planner guesses `available_at <= $now` matches a third of
-- the table, judges the generic plan dear and re-plans these statements on every call (about
-- 0.3 ms). The chosen indexes serve every parameter value (bench: claim latency with a backlog
-- of 100,000 sleeping and finished runs went from 1.6x to 1.0x of an empty table's).
set plan_cache_mode = force_generic_plan
as $$
declare
  v_now timestamptz := aiki.now();
  v_lease interval;
  v_ids uuid[] := '{}';
  v_queue text;
  v_settings aiki.queues;
  v_want integer;
  v_result jsonb;
  v_leased uuid[];
  v_runs jsonb;
  v_overdue boolean;
  v_again boolean := false;
  v_count integer;
  v_got uuid[];
  v_skipped boolean := false;
  v_held boolean := false;
  v_next timestamptz;
  v_promoted uuid[] := '{}';
  v_fire_due timestamptz;
  v_fire_left boolean := false;
begin
  perform aiki._check_key('worker id', p_worker);
  if p_limit is null or p_limit not between 1 and 1000 then
    raise exception using errcode = 'AK003',
      message = format('invalid claim limit %s', coalesce(p_limit::text, 'null')), hint = 'use 1-1000';
  end if;
  if p_lease_ms is null or p_lease_ms not between 100 and 86400000 then
    raise exception using errcode = 'AK003',
      message = format('invalid lease %s ms', coalesce(p_lease_ms::text, 'null')),
      hint = 'use 100 ms to 1 day';
  end if;
  if p_queues is null or cardinality(p_queues) = 0 then
    raise exception using errcode = 'AK003', message = 'claim needs at least one queue';
  end if;
  foreach v_queue in array p_queues loop
    perform aiki._check_name('queue name', v_queue);
  end loop;
  if array_position(p_workflows, null) is not null then
    raise exception using errcode = 'AK003', message = 'invalid workflow null in the claim''s workflow list',
      hint = 'list workflow@version pairs, or pass null for any';
  end if;
  v_lease := p_lease_ms * interval '1 millisecond';

  -- The probe first: most claims find nothing due, and the call alone costs more (bench). The
  -- earliest timer, in index order: an `exists` here was planned as a table scan expecting an
  -- early match, and read a whole backlog of future timers (13 ms with 100,000 runs).
  if (select available_at from aiki.runs
      where status in ('scheduled', 'sleeping', 'waiting', 'retrying', 'running') and available_at is not null
      order by available_at limit 1) <= v_now then
    v_promoted := aiki._promote_due(v_now, greatest(p_limit, 100));
  end if;
  -- Schedules (sql/72_schedules.sql): the earliest due one, one probe of schedules_due. Due ones
  -- start their runs here, before the leasing, so this claim may take them.
  v_fire_due := (select due_at from aiki.schedules where not paused order by due_at limit 1);
  if v_fire_due <= v_now then
    select f.next_at, f.left_due into v_fire_due, v_fire_left from aiki._fire_schedules(v_now) f;
  end if;

  foreach v_queue in array p_queues loop
    v_want := p_limit - cardinality(v_ids);
    exit when v_want <= 0;
    select * into v_settings from aiki.queues where name = v_queue;
    continue when v_settings.paused;
    if v_settings.concurrency_limit is null and v_settings.rate_limit is null then
      v_got := array(
        select id from aiki.runs
        where status = 'pending' and queue = v_queue and available_at <= v_now
          and concurrency_key is null
          and (p_workflows is null or workflow || '@' || version = any(p_workflows))
        order by priority desc, available_at
        limit v_want
        for update skip locked);
      v_ids := v_ids || v_got;
      -- Short: did SKIP LOCKED pass over a run another transaction holds (see the header)? Only
      -- short claims ask, and the rows it reads are the ones the selection just read.
      if cardinality(v_got) < v_want and not v_skipped then
        v_skipped := exists (
          select 1 from aiki.runs
          where status = 'pending' and queue = v_queue and available_at <= v_now
            and concurrency_key is null
            and (p_workflows is null or workflow || '@' || version = any(p_workflows))
            and not (id = any(v_got)));
      end if;
      v_want := p_limit - cardinality(v_ids);
      continue when v_want <= 0 or not exists (
        select 1 from aiki.runs where status = 'pending' and queue = v_queue and concurrency_key is not null);
    end if;
    select v_ids || l.ids, v_skipped or l.skipped, v_held or l.held into v_ids, v_skipped, v_held
      from aiki._claim_limited(v_queue, p_workflows, v_want, v_now,
                                v_settings.concurrency_limit is null and v_settings.rate_limit is null) l;
  end loop;

  -- A lease never outlives the run's deadline, so the deadline is enforced by lease expiry.
  -- A run whose deadline passed while it was pending gets a lease that is expired at once: a
  -- worker could record nothing for it (AK001), yet would run its tasks' side effects. It is
  -- not handed out; the promotion below fails it with DeadlineExceeded.
  with leased as (
    update aiki.runs
       set status = 'running', lease_owner = p_worker, lease_token = gen_random_uuid(),
           lease_expires_at = least(v_now + v_lease, greatest(coalesce(deadline_at, 'infinity'), v_now)),
           available_at = least(v_now + v_lease, greatest(coalesce(deadline_at, 'infinity'), v_now)),
           started_at = coalesce(started_at, v_now), updated_at = v_now
     where id = any(v_ids)
    returning id, priority, created_at, lease_expires_at
  )
  select coalesce(array_agg(id order by priority desc, created_at) filter (where lease_expires_at > v_now), '{}'),
         coalesce(bool_or(lease_expires_at <= v_now), false),
         count(*),
         -- Only a short claim needs the next due time: after a full one the worker claims again
         -- at once. Skipping it spares a scan over the lease expiries of just-finished runs under
         -- load (bench). The earliest timer of all, due or not (see below); read in this
         -- statement's snapshot, where the runs just leased are not yet timers.
         case when count(*) < p_limit then
           (select available_at from aiki.runs
             where status in ('scheduled', 'sleeping', 'waiting', 'retrying', 'running') and available_at is not null
             order by available_at limit 1) end
    into v_leased, v_overdue, v_count, v_next
    from leased;

  -- The answer is built apart from the leasing, in a block that writes nothing (so its
  -- subtransaction takes no transaction id): building it fails (54000) when a journal, or all
  -- the journals together, pass what one jsonb value holds (256 MiB; _max_claim_bytes). That
  -- error must not undo the leases and promotions or stop the queue behind one run: the answer
  -- is then built run by run, and the runs it cannot hold are failed or left for the next claim.
  begin
    select coalesce(jsonb_agg(aiki._run_json(r, true, true) order by r.priority desc, r.created_at), '[]')
      into v_runs
      from aiki.runs r where r.id = any(v_leased);
    if pg_column_size(v_runs) > aiki._max_claim_bytes() then
      raise exception using errcode = 'program_limit_exceeded',
        message = format('the claim''s answer is %s bytes, over %s', pg_column_size(v_runs), aiki._max_claim_bytes());
    end if;
  exception when program_limit_exceeded or out_of_memory then
    v_runs := aiki._claim_answer_by_run(v_leased, v_now);
    v_again := true;
  end;
  v_result := jsonb_build_object('now', v_now, 'runs', v_runs);
  if v_overdue then
    v_promoted := v_promoted || aiki._promote_due(v_now, greatest(p_limit, 100));
  end if;
  -- Promoted runs this claim did not lease wake their queues' workers. The ones it leased need no
  -- notification: it would only cost this worker an empty claim per timer.
  if cardinality(v_promoted) > 0 then
    perform aiki._notify_queue(q.queue)
       from (select distinct queue from aiki.runs where id = any(v_promoted) and status = 'pending') q;
  end if;
  if v_overdue or v_again then
    -- Withheld overdue runs took slots that pending runs may still fill, and an answer built
    -- run by run may have left runs behind: claim again now.
    return v_result || jsonb_build_object('next_due_at', v_now, 'skipped', false, 'held', false);
  end if;
  if v_count = p_limit then
    return v_result || jsonb_build_object('next_due_at', null, 'skipped', false, 'held', false);
  end if;
  -- A timer still due after the promotion was locked by another transaction (or beyond the
  -- promotion's batch): a skip like any other. Then the next future one, the runs just leased
  -- left out (their lease is this worker's own business).
  if v_next <= v_now then
    v_skipped := true;
    select min(available_at) into v_next from aiki.runs
     where status in ('scheduled', 'sleeping', 'waiting', 'retrying', 'running') and available_at > v_now
       and not (id = any(v_ids));
  end if;
  -- The next fire of a schedule counts as a timer; one left due is a skip (_fire_schedules).
  return v_result || jsonb_build_object('next_due_at', least(v_next, v_fire_due),
                                        'skipped', v_skipped or v_fire_left, 'held', v_held);
end
$$;

-- Renews the leases p_worker holds and presents (never past a run's deadline) and records the
-- worker as alive. Returns one row per lease it still holds: renewed, or skipped (below); a run
-- the worker thinks it holds but that is missing here was lost (expired and reclaimed,
-- cancelled or paused) and must be abandoned quietly.
--
-- Only leases whose tokens are in p_lease_tokens are renewed: a worker id proves nothing (any
-- worker role could name another worker and keep its runs `running` for a day), and a claim
-- whose answer never reached the worker (the connection died after the commit) leased runs the
-- worker never executes, which must expire (found by the chaos suite). Null or empty renews no
-- lease and only records the worker as alive.
--
-- Never waits for a row lock (SKIP LOCKED): a run another transaction holds (the worker's own
-- group commit, an operator's cancel) is skipped, not waited for; one held row made a heartbeat
-- wait 4.5 s while the worker's other leases ran out. A skipped lease that is still valid is
-- returned with its current expiry, unrenewed, so the worker keeps the run and knows how long
-- it may; the next heartbeat renews it. Never waiting, it cannot deadlock with aiki.record.
--
-- A worker's first heartbeat also forgets up to 100 workers not seen for a day (aiki.workers
-- is for operators; a worker without leases does not beat, and reappears when it does).
drop function if exists aiki.heartbeat(text, integer);
create or replace function aiki.heartbeat(
  p_worker text, p_lease_ms integer default 30000, p_lease_tokens uuid[] default null)
returns table (run_id uuid, lease_token uuid, lease_expires_at timestamptz)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_now timestamptz := aiki.now();
  v_new boolean;
begin
  perform aiki._check_key('worker id', p_worker);
  if p_lease_ms is null or p_lease_ms not between 100 and 86400000 then
    raise exception using errcode = 'AK003',
      message = format('invalid lease %s ms', coalesce(p_lease_ms::text, 'null')), hint = 'use 100 ms to 1 day';
  end if;
  insert into aiki.workers as w (id, started_at, last_seen) values (p_worker, v_now, v_now)
  on conflict (id) do update set last_seen = excluded.last_seen
  returning w.xmax = 0 into v_new;
  if v_new then
    delete from aiki.workers
     where id in (select id from aiki.workers where last_seen < v_now - interval '1 day'
                  limit 100 for update skip locked);
  end if;
  return query
    with held as (
      select h.id from aiki.runs h
       where h.lease_token = any(p_lease_tokens) and h.status = 'running' and h.lease_owner = p_worker
         and h.lease_expires_at > v_now
         for update skip locked),
    renewed as (
      update aiki.runs r
         set lease_expires_at = least(v_now + p_lease_ms * interval '1 millisecond', greatest(coalesce(r.deadline_at, 'infinity'), v_now)),
             available_at = least(v_now + p_lease_ms * interval '1 millisecond', greatest(coalesce(r.deadline_at, 'infinity'), v_now)),
             updated_at = v_now
        from held
       where r.id = held.id
      returning r.id, r.lease_token, r.lease_expires_at)
    select renewed.id, renewed.lease_token, renewed.lease_expires_at from renewed
    union all
    select s.id, s.lease_token, s.lease_expires_at from aiki.runs s
     where s.lease_token = any(p_lease_tokens) and s.status = 'running' and s.lease_owner = p_worker
       and s.lease_expires_at > v_now
       and s.id not in (select renewed.id from renewed);
end
$$;

-- Locks a run the caller leases, for a journal write: raises AK002 when there is no such run and
-- AK001 when the lease token is not the current one, the lease expired, or the run left
-- `running` (cancelled, paused, finished). With p_lock_parent, locks the parent first, for
-- writes that may finish the run (lock order).
create or replace function aiki._lock_lease(p_run_id uuid, p_lease_token uuid, p_lock_parent boolean)
returns aiki.runs
language plpgsql
as $$
declare
  v_run aiki.runs;
  v_parent_id uuid;
begin
  perform aiki._check_run_id(p_run_id);
  if p_lock_parent then
    select parent_id into v_parent_id from aiki.runs where id = p_run_id;
    if v_parent_id is not null then
      perform 1 from aiki.runs where id = v_parent_id for update;
    end if;
  end if;
  select * into v_run from aiki.runs where id = p_run_id for update;
  if not found then
    raise exception using errcode = 'AK002', message = format('run %s not found', p_run_id);
  end if;
  if v_run.status <> 'running' then
    raise exception using errcode = 'AK001',
      message = format('lease lost: run %s is %s', p_run_id, v_run.status);
  end if;
  if v_run.lease_token is distinct from p_lease_token then
    raise exception using errcode = 'AK001',
      message = format('lease lost: run %s was claimed again by %s', p_run_id, v_run.lease_owner);
  end if;
  if v_run.lease_expires_at <= aiki.now() then
    raise exception using errcode = 'AK001',
      message = format('lease lost: the lease on run %s expired at %s', p_run_id, v_run.lease_expires_at);
  end if;
  return v_run;
end
$$;

-- Gives a leased run back to be claimed at once, without counting a lease expiry.
-- Used by workers that stop before a run is done. AK001 when the lease is already lost.
create or replace function aiki.release(p_run_id uuid, p_lease_token uuid) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_run aiki.runs;
begin
  v_run := aiki._lock_lease(p_run_id, p_lease_token, false);
  perform aiki._leave_running(v_run, 'pending', aiki.now());
end
$$;

-- The earliest timer after p_after (null: any, overdue ones included) among runs of p_queues
-- (null: every queue) that wait for one: a scheduled start, a sleep, a wait's timeout, a retry.
-- Returns {"now", "queue", "due_at"}, queue and due_at null when no such timer exists. Reads
-- only and changes nothing: the Redis relay (sdk/relay) calls it to hint workers when a timer
-- falls due, and passes the last due_at it hinted as p_after. Lease expiries are left out: they
-- move with every heartbeat, and the workers' own claims report them. One index-ordered scan of
-- runs_timers from p_after. Raises AK003 on an empty queue list.
create or replace function aiki.next_due(p_queues text[] default null, p_after timestamptz default null)
returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_queue text;
  v_due_at timestamptz;
begin
  if p_queues is not null and cardinality(p_queues) = 0 then
    raise exception using errcode = 'AK003', message = 'next_due needs at least one queue, or null for all';
  end if;
  select r.queue, r.available_at into v_queue, v_due_at
    from aiki.runs r
   where r.status in ('scheduled', 'sleeping', 'waiting', 'retrying')
     and r.available_at is not null and r.available_at > coalesce(p_after, '-infinity')
     and (p_queues is null or r.queue = any(p_queues))
   order by r.available_at
   limit 1;
  return jsonb_build_object('now', aiki.now(), 'queue', v_queue, 'due_at', v_due_at);
end
$$;
