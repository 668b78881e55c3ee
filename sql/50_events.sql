-- aiki engine: events — the per-run inbox.
--
--   send_event  deliver a named event to a run
--
-- An event goes to the oldest open wait for its name (waits in creation order); with none open
-- it is buffered and the next wait for that name takes it (per name, first sent, first
-- received). A run buffers at most _max_inbox_events events. An idempotency key makes a resend
-- a no-op, across a continue-as-new chain too (the key of an event any run of it received). Both send_event and every wait hold the run's lock, so an event sent
-- while the run suspends is either buffered before the wait looks or delivered after it opens.

-- Sends event p_event with p_data to run p_run_id; returns the event id (the first one's, for a
-- repeated idempotency key). Wakes the run when a wait took it. Sent to a run that continued as
-- new, the event goes to the chain's newest run. AK002 for a missing run, AK005 for a finished one, AK003/AK007 on bad input, AK009 when the event would be buffered in a
-- full inbox. Called by clients and workers.
create or replace function aiki.send_event(
  p_run_id uuid, p_event text, p_data jsonb default 'null', p_idempotency_key text default null)
returns bigint
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_run aiki.runs;
  v_now timestamptz := aiki.now();
  v_event_id bigint;
  v_step aiki.steps;
begin
  perform aiki._check_name('event name', p_event);
  perform aiki._check_payload('event data', p_data);
  if p_idempotency_key is not null then
    perform aiki._check_key('idempotency key', p_idempotency_key);
  end if;
  select * into v_run from aiki.runs where id = aiki._check_run_id(p_run_id) for update;
  if not found then
    raise exception using errcode = 'AK002', message = format('run %s not found', p_run_id);
  end if;
  -- A continued run passes the event on to its chain's newest run (see continue_as_new), which
  -- may itself continue while we wait for its lock.
  while v_run.status = 'continued' and (aiki._chain_latest(v_run)).id <> v_run.id loop
    select * into v_run from aiki.runs where id = (aiki._chain_latest(v_run)).id for update;
  end loop;
  p_run_id := v_run.id;
  -- Still `continued` here: the chain's newest run was purged, the chain ended.
  if v_run.status in ('completed', 'failed', 'cancelled', 'continued') then
    raise exception using errcode = 'AK005',
      message = format('run %s is %s and takes no more events', p_run_id, v_run.status);
  end if;

  -- A key names one event of the chain: continue_as_new moves only the events no wait took, so
  -- one taken by an earlier run of the chain is looked for there (runs_chain, every run of it).
  if p_idempotency_key is not null and v_run.chain_id is null then
    select id into v_event_id from aiki.events
     where run_id = p_run_id and name = p_event and idempotency_key = p_idempotency_key;
  elsif p_idempotency_key is not null then
    select id into v_event_id from aiki.events
     where run_id in (select id from aiki.runs where chain_id = v_run.chain_id)
       and name = p_event and idempotency_key = p_idempotency_key;
  end if;
  if v_event_id is not null then
    return v_event_id;
  end if;

  -- The oldest open wait for the name, in creation order (wait_seq; waits older than it have
  -- none and come first). By step key as text, `vote#10` was served before `vote#2`.
  select * into v_step from aiki.steps
   where run_id = p_run_id and kind = 'event' and status = 'waiting' and name = p_event
   order by wait_seq nulls first, created_at, step_key
   limit 1
   for update;

  -- Nobody waits: the event is buffered, unless the inbox is full. Counting reads the run's
  -- unconsumed events in events_unconsumed, at most _max_inbox_events of them: nothing for the
  -- usual inbox of a few events, a few ms for a full one.
  if v_step.step_key is null and (
       select count(*) from (select 1 from aiki.events
                              where run_id = p_run_id and consumed_by is null
                              limit aiki._max_inbox_events()) q) >= aiki._max_inbox_events() then
    raise exception using errcode = 'AK009',
      message = format('inbox of run %s is full: %s events wait for a wait to take them',
                       p_run_id, aiki._max_inbox_events()),
      hint = 'let the run consume its events before sending more';
  end if;

  insert into aiki.events (run_id, name, data, idempotency_key, created_at, consumed_by, consumed_at)
  values (p_run_id, p_event, p_data, p_idempotency_key, v_now, v_step.step_key,
          case when v_step.step_key is not null then v_now end)
  returning id into v_event_id;

  if v_step.step_key is not null then
    update aiki.steps
       set status = 'completed', output = jsonb_build_object('data', p_data), completed_at = v_now, wake_at = null
     where run_id = p_run_id and step_key = v_step.step_key;
    perform aiki._wake(p_run_id);
  end if;
  return v_event_id;
end
$$;
