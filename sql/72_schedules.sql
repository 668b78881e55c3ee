-- aiki engine: schedules — cron and interval schedules, evaluated in Postgres, fired by claims.
--
--   create_schedule   define a schedule (idempotent: the same definition again returns it)
--   update_schedule   change some of its fields (null keeps a field)
--   delete_schedule   remove it; the runs it started stay
--   pause_schedule    stop firing; resume_schedule fires again from the next fire after now
--   trigger_schedule  fire now, under the schedule's overlap policy
--   get_schedule, list_schedules   read them
--   cron_fires        the next fire times of a cron expression in a zone (a preview)
--
-- No daemon. Every claim probes the earliest `due_at` of the unpaused schedules (one lookup of
-- the partial index schedules_due); when it has passed, the claim fires a bounded batch of due
-- schedules, locked FOR UPDATE SKIP LOCKED, before it leases runs, and its `next_due_at` includes
-- the next fire, so an idle worker sleeps until then. A claim fires the schedules of every queue,
-- as it promotes the timers of every queue: any live worker keeps every schedule on time, and the
-- run it starts wakes the workers of its queue (_insert_run notifies). Each fire starts its run
-- through _insert_run with the idempotency key `schedule:<name>:<fire time, UTC, ms>`, so a fire
-- never starts twice, whichever claims race for it.
--
-- Cron. Five fields (minute hour day-of-month month day-of-week) or six (seconds first); `*`,
-- values, names (JAN-DEC, SUN-SAT), ranges `a-b`, steps `*/n`, `a/n`, `a-b/n`, lists `a,b`;
-- day-of-week 0-7 (0 and 7 are Sunday). When both day fields are restricted (neither starts with
-- `*`), a day matches either (Vixie cron); otherwise both must. Macros @yearly (@annually),
-- @monthly, @weekly, @daily (@midnight), @hourly. `@every <n>s|m|h|d…` fires at fixed intervals
-- counted from the Unix epoch (so `@every 30s` fires at :00 and :30 of every minute), whatever
-- the zone.
--
-- Time zones. Fire times are local times of the schedule's IANA zone, converted with Postgres's
-- zone data. A local time a spring-forward gap skips fires once, at the first instant after the
-- gap (02:30 on a day Berlin jumps from 02:00 to 03:00 fires at 03:00 CEST; every skipped time
-- of that gap fires at that one instant, once). A local time a fall-back repeats fires once, at
-- its first occurrence (02:30 on a day Berlin goes back from 03:00 to 02:00 fires at 02:30 CEST,
-- not again at 02:30 CET).
--
-- Overlap: what a fire does while the previous run of the schedule is unfinished.
--   skip             nothing (the fire is counted as handled)
--   buffer_one       keeps the fire (only the first such one) and starts it when that run ends:
--                    aiki._finish marks the schedule due then, and the next claim starts it
--   allow            starts a run anyway
--   cancel_previous  cancels the previous run, then starts a run
-- Catch-up: a schedule whose fires were missed (no worker claimed) starts the most recent missed
-- fire only, unless its catch-up window lets the fires missed by at most that long start too, at
-- most 100 per claim (the next claim goes on). Fires that fall while a schedule is paused are
-- dropped: resume fires from the next fire after now.
--
-- Locks: a schedule's row, then its runs. Deciding buffer_one or cancel_previous needs the
-- previous run's lock, so the run cannot end unseen meanwhile; a claim takes it SKIP LOCKED and
-- leaves the schedule due for the next claim when the run is busy. _finish, holding a run, takes
-- its schedule's row SKIP LOCKED: it never waits while holding a run, so the two cannot deadlock,
-- and a schedule it skips is one a claim (or trigger_schedule) holds, which re-reads the run
-- under its lock. cancel_previous cancels through aiki.cancel, which locks the previous run's
-- unfinished descendants: a claim takes those SKIP LOCKED first and leaves the schedule due when
-- one is busy (held by its worker's write, or by another claim); trigger_schedule waits for them.
--
-- Continue-as-new: a schedule's run that continues as new hands the schedule to its successor.
-- last_run_id keeps naming the chain's first run (which holds the fire's key); the previous run
-- is the chain's newest (_chain_latest), and the chain's last run ending releases a buffered fire.

-- The UTC offset of the zone at an instant.
create or replace function aiki._tz_offset(p_tz text, p_at timestamptz) returns interval
language sql stable parallel safe
as $$ select (p_at at time zone p_tz) - (p_at at time zone 'UTC') $$;

-- The first instant in (p_lo, p_hi] at which the zone's offset differs from its offset at p_lo,
-- found by bisection over whole seconds (zone transitions fall on whole seconds). The caller
-- knows there is exactly one transition in the span.
create or replace function aiki._tz_next_change(p_tz text, p_lo timestamptz, p_hi timestamptz) returns timestamptz
language plpgsql stable
as $$
declare
  v_offset interval := aiki._tz_offset(p_tz, p_lo);
  v_lo bigint := floor(extract(epoch from p_lo))::bigint;
  v_hi bigint := ceil(extract(epoch from p_hi))::bigint;
  v_mid bigint;
begin
  while v_hi - v_lo > 1 loop
    v_mid := (v_lo + v_hi) / 2;
    if aiki._tz_offset(p_tz, to_timestamp(v_mid)) = v_offset then
      v_lo := v_mid;
    else
      v_hi := v_mid;
    end if;
  end loop;
  return to_timestamp(v_hi);
end
$$;

-- The instant a local time of the zone fires at: its first occurrence when a fall-back repeats
-- it, the first instant after the gap when a spring-forward skips it (see the header). Away from
-- a transition (the offsets a day before and after agree) one conversion decides.
create or replace function aiki._local_to_instant(p_local timestamp, p_tz text) returns timestamptz
language plpgsql stable
as $$
declare
  v_guess timestamptz := p_local at time zone p_tz;
  v_before interval := aiki._tz_offset(p_tz, v_guess - interval '1 day');
  v_after interval := aiki._tz_offset(p_tz, v_guess + interval '1 day');
  v_at timestamptz;
  v_first timestamptz;
begin
  if v_before = v_after then
    return (p_local - v_before) at time zone 'UTC';
  end if;
  foreach v_at in array array[(p_local - v_before) at time zone 'UTC', (p_local - v_after) at time zone 'UTC'] loop
    if (v_at at time zone p_tz) = p_local then
      v_first := least(v_first, v_at);
    end if;
  end loop;
  return coalesce(v_first, aiki._tz_next_change(p_tz, v_guess - interval '1 day', v_guess + interval '1 day'));
end
$$;

-- One cron field as its sorted values, or AK003 naming the field and its text.
create or replace function aiki._cron_field(
  p_cron text, p_field text, p_text text, p_min integer, p_max integer, p_names text[])
returns integer[]
language plpgsql immutable
as $$
declare
  v_item text;
  v_parts text[];
  v_bounds integer[];
  v_step integer;
  v_values integer[] := '{}';
  v_i integer;
begin
  foreach v_item in array string_to_array(p_text, ',') loop
    v_parts := regexp_match(v_item, '^(\*|\?|[A-Za-z0-9]{1,3})(?:-([A-Za-z0-9]{1,3}))?(?:/([0-9]{1,2}))?$');
    v_bounds := null;
    if v_parts is not null and not (v_parts[1] in ('*', '?') and v_parts[2] is not null) then
      v_bounds := array[p_min, p_max];
      if v_parts[1] not in ('*', '?') then
        for v_i in 1..2 loop
          continue when v_parts[v_i] is null;
          v_bounds[v_i] := case when v_parts[v_i] ~ '^[0-9]+$' then v_parts[v_i]::integer
                                else p_min - 1 + array_position(p_names, upper(v_parts[v_i])) end;
        end loop;
        if v_parts[2] is null and v_parts[3] is null then
          v_bounds[2] := v_bounds[1];
        end if;
      end if;
      v_step := coalesce(v_parts[3]::integer, 1);
      if v_bounds[1] is null or v_bounds[2] is null or v_bounds[1] < p_min or v_bounds[2] > p_max
         or v_bounds[1] > v_bounds[2] or v_step < 1 then
        v_bounds := null;
      end if;
    end if;
    if v_bounds is null then
      raise exception using errcode = 'AK003',
        message = format('invalid cron %s field %s in %s', p_field, quote_literal(p_text), quote_literal(p_cron)),
        hint = format('use %s-%s%s, * , lists a,b, ranges a-b and steps */n or a-b/n', p_min, p_max,
                      case when p_names is not null then format(' or %s-%s', p_names[1], p_names[cardinality(p_names)]) else '' end);
    end if;
    v_values := v_values || array(select generate_series(v_bounds[1], v_bounds[2], v_step));
  end loop;
  return array(select distinct v from unnest(v_values) v order by v);
end
$$;

-- A cron expression parsed: {"every": seconds} for @every, else the values of each field
-- {"s", "m", "h", "dom", "mon", "dow"} (Sunday 0) with "dom_star"/"dow_star" (the field starts
-- with `*` or `?`, for the day-matching rule). AK003 naming the field and value when malformed.
create or replace function aiki._cron_parse(p_cron text) returns jsonb
language plpgsql immutable
as $$
declare
  v_text text := lower(btrim(p_cron));
  v_fields text[];
  v_seconds bigint;
  v_i integer;
begin
  if p_cron is null or length(p_cron) > 200 or v_text = '' then
    raise exception using errcode = 'AK003',
      message = format('invalid cron expression %s', coalesce(quote_literal(left(p_cron, 200)), 'null')),
      hint = 'use five fields (minute hour day-of-month month day-of-week), six with seconds first, @daily or @every 5m';
  end if;
  if v_text ~ '^@every\s' then
    v_text := regexp_replace(v_text, '^@every\s+', '');
    if v_text ~ '^([0-9]{1,8}[smhd])+$' then
      select sum(m[1]::bigint * case m[2] when 's' then 1 when 'm' then 60 when 'h' then 3600 else 86400 end)
        into v_seconds from regexp_matches(v_text, '([0-9]+)([smhd])', 'g') m;
    end if;
    if v_seconds is null or v_seconds not between 1 and 31622400 then
      raise exception using errcode = 'AK003',
        message = format('invalid cron interval %s in %s', quote_literal(v_text), quote_literal(p_cron)),
        hint = 'use @every with whole seconds, minutes, hours or days from 1s to 366d, e.g. @every 30s or @every 1h30m';
    end if;
    return jsonb_build_object('every', v_seconds);
  end if;
  v_text := case v_text
    when '@yearly' then '0 0 1 1 *' when '@annually' then '0 0 1 1 *'
    when '@monthly' then '0 0 1 * *' when '@weekly' then '0 0 * * 0'
    when '@daily' then '0 0 * * *' when '@midnight' then '0 0 * * *'
    when '@hourly' then '0 * * * *' else btrim(p_cron) end;
  if v_text ~ '^@' then
    raise exception using errcode = 'AK003',
      message = format('invalid cron macro %s', quote_literal(left(p_cron, 200))),
      hint = 'use @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly or @every <interval>';
  end if;
  v_fields := regexp_split_to_array(v_text, '\s+');
  if cardinality(v_fields) not in (5, 6) then
    raise exception using errcode = 'AK003',
      message = format('invalid cron expression %s: %s fields', quote_literal(p_cron), cardinality(v_fields)),
      hint = 'use five fields (minute hour day-of-month month day-of-week) or six (seconds first)';
  end if;
  v_i := cardinality(v_fields) - 5;
  return jsonb_build_object(
    's', case when v_i = 1 then to_jsonb(aiki._cron_field(p_cron, 'second', v_fields[1], 0, 59, null)) else '[0]'::jsonb end,
    'm', aiki._cron_field(p_cron, 'minute', v_fields[v_i + 1], 0, 59, null),
    'h', aiki._cron_field(p_cron, 'hour', v_fields[v_i + 2], 0, 23, null),
    'dom', aiki._cron_field(p_cron, 'day-of-month', v_fields[v_i + 3], 1, 31, null),
    'mon', aiki._cron_field(p_cron, 'month', v_fields[v_i + 4], 1, 12,
                            array['JAN','FEB','MAR','APR','MAY','JUN','JUL','AUG','SEP','OCT','NOV','DEC']),
    'dow', (select jsonb_agg(distinct d % 7) from unnest(
              aiki._cron_field(p_cron, 'day-of-week', v_fields[v_i + 5], 0, 7, array['SUN','MON','TUE','WED','THU','FRI','SAT'])) d),
    'dom_star', v_fields[v_i + 3] ~ '^[*?]',
    'dow_star', v_fields[v_i + 5] ~ '^[*?]');
end
$$;

-- The smallest of the sorted p_values that is >= p_from, or null.
create or replace function aiki._cron_first(p_values integer[], p_from integer) returns integer
language plpgsql immutable
as $$
declare
  v integer;
begin
  foreach v in array p_values loop
    if v >= p_from then
      return v;
    end if;
  end loop;
  return null;
end
$$;

-- The first local time at or after p_from (a whole second) that the parsed cron matches, or
-- null within ten years (`0 0 30 2 *` never matches). Jumps to the next matching month, day,
-- hour, minute and second in turn, so a year of a daily schedule costs a few steps per fire.
create or replace function aiki._cron_match(p_spec jsonb, p_from timestamp) returns timestamp
language plpgsql stable
as $$
declare
  v_secs integer[] := array(select jsonb_array_elements_text(p_spec->'s')::integer);
  v_mins integer[] := array(select jsonb_array_elements_text(p_spec->'m')::integer);
  v_hours integer[] := array(select jsonb_array_elements_text(p_spec->'h')::integer);
  v_doms integer[] := array(select jsonb_array_elements_text(p_spec->'dom')::integer);
  v_months integer[] := array(select jsonb_array_elements_text(p_spec->'mon')::integer);
  v_dows integer[] := array(select jsonb_array_elements_text(p_spec->'dow')::integer);
  v_dom_star boolean := (p_spec->>'dom_star')::boolean;
  v_dow_star boolean := (p_spec->>'dow_star')::boolean;
  v_t timestamp := p_from;
  v_dom_ok boolean;
  v_dow_ok boolean;
  v_now integer;
  v_next integer;
begin
  while v_t < p_from + interval '10 years' loop
    v_now := extract(month from v_t)::integer;
    if not v_now = any(v_months) then
      v_next := aiki._cron_first(v_months, v_now);
      v_t := case when v_next is null then make_timestamp(extract(year from v_t)::integer + 1, v_months[1], 1, 0, 0, 0)
                  else make_timestamp(extract(year from v_t)::integer, v_next, 1, 0, 0, 0) end;
      continue;
    end if;
    v_dom_ok := extract(day from v_t)::integer = any(v_doms);
    v_dow_ok := extract(dow from v_t)::integer = any(v_dows);
    v_dom_ok := case when v_dom_star and v_dow_star then true
                     when v_dom_star then v_dow_ok
                     when v_dow_star then v_dom_ok
                     else v_dom_ok or v_dow_ok end;
    if not v_dom_ok then
      v_t := date_trunc('day', v_t) + interval '1 day';
      continue;
    end if;
    v_now := extract(hour from v_t)::integer;
    v_next := aiki._cron_first(v_hours, v_now);
    if v_next is null then
      v_t := date_trunc('day', v_t) + interval '1 day';
      continue;
    elsif v_next > v_now then
      v_t := date_trunc('day', v_t) + make_interval(hours => v_next);
    end if;
    v_now := extract(minute from v_t)::integer;
    v_next := aiki._cron_first(v_mins, v_now);
    if v_next is null then
      v_t := date_trunc('hour', v_t) + interval '1 hour';
      continue;
    elsif v_next > v_now then
      v_t := date_trunc('hour', v_t) + make_interval(mins => v_next);
    end if;
    v_now := floor(extract(second from v_t))::integer;
    v_next := aiki._cron_first(v_secs, v_now);
    if v_next is null then
      v_t := date_trunc('minute', v_t) + interval '1 minute';
      continue;
    end if;
    return date_trunc('minute', v_t) + make_interval(secs => v_next);
  end loop;
  return null;
end
$$;

-- The first fire strictly after p_after of a parsed cron in zone p_tz, or null (never again).
create or replace function aiki._cron_next(p_spec jsonb, p_tz text, p_after timestamptz) returns timestamptz
language plpgsql stable
as $$
declare
  v_every bigint := (p_spec->>'every')::bigint;
  v_start timestamp;
  v_local timestamp;
  v_at timestamptz;
begin
  if v_every is not null then
    return to_timestamp((floor(extract(epoch from p_after) / v_every)::bigint + 1) * v_every);
  end if;
  v_start := date_trunc('second', p_after at time zone p_tz) + interval '1 second';
  for i in 1..10 loop
    v_local := aiki._cron_match(p_spec, v_start);
    if v_local is null then
      return null;
    end if;
    v_at := aiki._local_to_instant(v_local, p_tz);
    if v_at > p_after then
      return v_at;
    end if;
    -- p_after lies in the second pass of a fall-back's repeated hour: every local time up to the
    -- hour's end fired at its first occurrence, before p_after. Go on from the hour's end: the
    -- local time of the transition, read in the offset before it.
    v_start := greatest(v_local + interval '1 second',
      date_trunc('second', (aiki._tz_next_change(p_tz, v_at, p_after) - interval '1 microsecond') at time zone p_tz)
        + interval '1 second');
  end loop;
  return null;
end
$$;

-- The latest fire at or before p_now of a schedule whose fire p_from (<= p_now) is due: looks
-- for a fire in windows ending at p_now ten times longer each, then walks to the last one, so a
-- week of missed per-second fires costs a few steps, not 600,000.
create or replace function aiki._cron_latest(p_spec jsonb, p_tz text, p_from timestamptz, p_now timestamptz)
returns timestamptz
language plpgsql stable
as $$
declare
  v_span interval := interval '1 second';
  v_at timestamptz;
  v_next timestamptz;
begin
  loop
    v_at := aiki._cron_next(p_spec, p_tz, greatest(p_now - v_span, p_from - interval '1 microsecond'));
    exit when v_at <= p_now or p_now - v_span < p_from;
    v_span := v_span * 10;
  end loop;
  loop
    v_next := aiki._cron_next(p_spec, p_tz, v_at);
    exit when v_next is null or v_next > p_now;
    v_at := v_next;
  end loop;
  return v_at;
end
$$;

-- A fire time as the idempotency key of its run: `schedule:<name>:<UTC, milliseconds>`.
create or replace function aiki._fire_key(p_name text, p_fire_at timestamptz) returns text
language sql immutable parallel safe
as $$ select 'schedule:' || p_name || ':' || to_char(p_fire_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') $$;

-- A schedule as JSON, with the status of the latest run it started.
create or replace function aiki._schedule_json(p_schedule aiki.schedules) returns jsonb
language sql stable
as $$
  select jsonb_build_object(
    'name', p_schedule.name, 'workflow', p_schedule.workflow, 'version', p_schedule.version,
    'cron', p_schedule.cron, 'timezone', p_schedule.timezone, 'input', p_schedule.input,
    'overlap', p_schedule.overlap, 'catchup_ms', p_schedule.catchup_ms,
    'queue', p_schedule.queue, 'priority', p_schedule.priority, 'retry', p_schedule.retry,
    'paused', p_schedule.paused,
    'next_fire_at', case when not p_schedule.paused then p_schedule.next_fire_at end,
    'last_fire_at', p_schedule.last_fire_at, 'last_run_id', p_schedule.last_run_id,
    'last_run_status', (select (aiki._chain_latest(r)).status from aiki.runs r where r.id = p_schedule.last_run_id),
    'buffered_at', p_schedule.buffered_at, 'last_error', p_schedule.last_error,
    'created_at', p_schedule.created_at, 'updated_at', p_schedule.updated_at)
$$;

-- Raises AK003 unless p_timezone names a zone of Postgres's zone data (pg_timezone_names, which lists
-- IANA names and aliases; abbreviations and POSIX offsets such as 'EST' or 'UTC+3' are refused).
-- Reads the zone directory: for writes of schedules, never on a claim.
create or replace function aiki._check_timezone(p_timezone text) returns text
language plpgsql stable
as $$
begin
  if p_timezone is null or not exists (select 1 from pg_timezone_names where name = p_timezone) then
    raise exception using errcode = 'AK003',
      message = format('invalid time zone %s', coalesce(quote_literal(left(p_timezone, 200)), 'null')),
      hint = 'use an IANA zone name from pg_timezone_names, e.g. Europe/Berlin or UTC';
  end if;
  return p_timezone;
end
$$;

-- Checks a schedule's fields (AK003 naming the field and value) and returns its parsed cron.
-- Also AK003 for a cron that never fires after p_now.
create or replace function aiki._check_schedule(
  p_name text, p_workflow text, p_version text, p_cron text, p_input jsonb, p_timezone text,
  p_overlap text, p_catchup_ms bigint, p_queue text, p_priority integer, p_now timestamptz)
returns jsonb
language plpgsql stable
as $$
declare
  v_spec jsonb;
begin
  perform aiki._check_name('schedule name', p_name);
  perform aiki._check_name('workflow name', p_workflow);
  perform aiki._check_version(p_version);
  perform aiki._check_name('queue name', p_queue);
  perform aiki._check_payload('schedule input', p_input);
  perform aiki._check_timezone(p_timezone);
  if p_overlap is null or p_overlap not in ('skip', 'buffer_one', 'allow', 'cancel_previous') then
    raise exception using errcode = 'AK003',
      message = format('invalid overlap policy %s', coalesce(quote_literal(left(p_overlap, 200)), 'null')),
      hint = 'use skip, buffer_one, allow or cancel_previous';
  end if;
  if p_catchup_ms is null or p_catchup_ms not between 0 and 31622400000 then
    raise exception using errcode = 'AK003',
      message = format('invalid catch-up window %s ms', coalesce(p_catchup_ms::text, 'null')),
      hint = 'use 0 (only the most recent missed fire) to 366 days, in milliseconds';
  end if;
  perform aiki._check_priority(p_priority);
  v_spec := aiki._cron_parse(p_cron);
  if aiki._cron_next(v_spec, p_timezone, p_now) is null then
    raise exception using errcode = 'AK003',
      message = format('invalid cron expression %s: it never fires', quote_literal(p_cron)),
      hint = 'check the day of month against the month';
  end if;
  return v_spec;
end
$$;

-- Handles what is due of one schedule, whose row the caller holds: the buffered fire whose
-- previous run ended, then the fires at or before p_now (catch-up rules in the header), or
-- with p_manual_at, that one fire alone (trigger_schedule; the cursor stays). Applies the
-- overlap policy to each fire and writes the schedule's row. Returns {"run_id": the latest run
-- started or null, "action": started | skipped | buffered of the last fire, or null when only a
-- buffered run was due}; null when the previous run (the newest of its continue-as-new chain),
-- or for cancel_previous one of its unfinished descendants, was locked and p_manual_at is null (a
-- claim must not wait): the schedule stays due for the next claim.
create or replace function aiki._fire_schedule(p_schedule aiki.schedules, p_now timestamptz, p_manual_at timestamptz)
returns jsonb
language plpgsql
as $$
declare
  v_s aiki.schedules := p_schedule;
  v_spec jsonb;
  v_fires timestamptz[] := '{}';
  v_fire timestamptz;
  v_latest timestamptz;
  v_cursor timestamptz := p_schedule.next_fire_at;
  v_open boolean := false;
  v_prev aiki.runs;
  v_locked boolean := false;
  v_descendants uuid[];
  v_action text;
  v_run_id uuid;
begin
  if p_manual_at is not null then
    v_fires := array[p_manual_at];
  elsif v_s.next_fire_at <= p_now then
    v_spec := aiki._cron_parse(v_s.cron);
    v_latest := aiki._cron_latest(v_spec, v_s.timezone, v_s.next_fire_at, p_now);
    v_cursor := null;
    if v_s.catchup_ms > 0 then
      v_fire := greatest(v_s.next_fire_at, p_now - v_s.catchup_ms * interval '1 millisecond');
      if v_fire > v_s.next_fire_at then
        v_fire := aiki._cron_next(v_spec, v_s.timezone, v_fire - interval '1 microsecond');
      end if;
      while v_fire < v_latest loop
        if cardinality(v_fires) = 100 then
          v_cursor := v_fire;
          exit;
        end if;
        v_fires := v_fires || v_fire;
        v_fire := aiki._cron_next(v_spec, v_s.timezone, v_fire);
      end loop;
    end if;
    if v_cursor is null then
      v_fires := v_fires || v_latest;
      v_cursor := coalesce(aiki._cron_next(v_spec, v_s.timezone, v_latest), 'infinity');
    end if;
  end if;

  -- The previous run is the newest of its continue-as-new chain (last_run_id names the chain's
  -- first run); a `continued` run whose successor is gone (purged) has ended.
  if v_s.last_run_id is not null then
    select * into v_prev from aiki.runs where id = v_s.last_run_id;
    if found then
      v_prev := aiki._chain_latest(v_prev);
      v_open := v_prev.status not in ('completed', 'failed', 'cancelled', 'continued');
    end if;
    -- A run that is open now may end (or continue) before this transaction commits; deciding to
    -- buffer or to cancel needs its lock (header). Ended is final: no lock needed. Locked, it may
    -- turn out to have continued meanwhile: then its successor is the previous run, locked next
    -- (a chain's runs oldest first, the engine's order).
    while v_open and (v_s.overlap = 'cancel_previous' or v_s.overlap = 'buffer_one') and not v_locked loop
      if p_manual_at is not null then
        select * into v_prev from aiki.runs where id = v_prev.id for update;
      else
        select * into v_prev from aiki.runs where id = v_prev.id for update skip locked;
        if not found then
          return null;
        end if;
      end if;
      v_locked := v_prev.status is distinct from 'continued';
      if not v_locked then
        v_prev := aiki._chain_latest(v_prev);
      end if;
      v_open := coalesce(v_prev.status not in ('completed', 'failed', 'cancelled', 'continued'), false);
    end loop;
    -- cancel_previous cancels the run's unfinished descendants too, through aiki.cancel, which
    -- waits for their locks. A claim must neither wait nor deadlock with another claim holding
    -- runs it promoted: it takes them first, parent before child (the engine's order), SKIP
    -- LOCKED, and when one is busy looks again a second later (due_at), rather than have every
    -- claim of the fleet retry at once against a fan-out that keeps some child busy. Under the
    -- locks it holds, no descendant can appear meanwhile.
    if v_open and v_s.overlap = 'cancel_previous' and p_manual_at is null then
      select coalesce(array_agg(q.id), '{}') into v_descendants from (
        with recursive tree (id, depth) as (
          select r.id, 1 from aiki.runs r where r.parent_id = v_prev.id
          union all
          select r.id, t.depth + 1 from aiki.runs r join tree t on r.parent_id = t.id
        )
        select r.id from aiki.runs r join tree t on t.id = r.id
         where r.status not in ('completed', 'failed', 'cancelled', 'continued')
         order by t.depth
         for update of r skip locked) q;
      if exists (
        with recursive tree (id) as (
          select r.id from aiki.runs r where r.parent_id = v_prev.id
          union all
          select r.id from aiki.runs r join tree t on r.parent_id = t.id
        )
        select 1 from aiki.runs r join tree t on t.id = r.id
         where r.status not in ('completed', 'failed', 'cancelled', 'continued')
           and r.id <> all (v_descendants)) then
        update aiki.schedules set due_at = p_now + interval '1 second' where name = v_s.name;
        return null;
      end if;
    end if;
  end if;

  if v_s.buffered_at is not null and not v_open then
    select r.run_id into v_s.last_run_id
      from aiki._insert_run(v_s.workflow, v_s.version, v_s.input, aiki._fire_key(v_s.name, v_s.buffered_at),
                            v_s.queue, v_s.priority, null, null, null, null, v_s.retry, 5, null, null) r;
    v_run_id := v_s.last_run_id;
    v_prev.id := v_run_id;
    v_s.buffered_at := null;
    v_open := true;
  end if;

  foreach v_fire in array v_fires loop
    if v_open and v_s.overlap = 'skip' then
      v_action := 'skipped';
    elsif v_open and v_s.overlap = 'buffer_one' then
      v_action := 'buffered';
      v_s.buffered_at := coalesce(v_s.buffered_at, v_fire);
    else
      if v_open and v_s.overlap = 'cancel_previous' then
        perform aiki.cancel(v_prev.id, format('cancelled by schedule %s, firing at %s', v_s.name, v_fire));
      end if;
      select r.run_id into v_s.last_run_id
        from aiki._insert_run(v_s.workflow, v_s.version, v_s.input, aiki._fire_key(v_s.name, v_fire),
                              v_s.queue, v_s.priority, null, null, null, null, v_s.retry, 5, null, null) r;
      v_run_id := v_s.last_run_id;
      v_prev.id := v_run_id;
      v_action := 'started';
      v_open := true;
    end if;
    v_s.last_fire_at := greatest(v_s.last_fire_at, v_fire);
  end loop;

  update aiki.schedules
     set next_fire_at = v_cursor, due_at = v_cursor, buffered_at = v_s.buffered_at,
         last_fire_at = v_s.last_fire_at, last_run_id = v_s.last_run_id, last_error = null,
         updated_at = p_now
   where name = v_s.name;
  return jsonb_build_object('run_id', v_run_id, 'action', v_action);
end
$$;

-- The claim's part (sql/20_claim.sql): fires up to 10 due schedules, each locked SKIP LOCKED, so
-- two claims never handle one schedule at once. A fire that fails (its run cannot be inserted)
-- is recorded in last_error and passed over, so one schedule never stops every claim. Returns
-- next_at, the earliest due time after p_now of the unpaused schedules, and left_due, whether
-- some are still due (locked by another claim, their previous run locked, or past the batch):
-- the claim reports that as `skipped`, and the worker looks again shortly.
create or replace function aiki._fire_schedules(p_now timestamptz, out next_at timestamptz, out left_due boolean)
language plpgsql
as $$
declare
  v_s aiki.schedules;
  v_next timestamptz;
  v_state text;
  v_message text;
begin
  for v_s in
    select * from aiki.schedules where not paused and due_at <= p_now
     order by due_at limit 10 for update skip locked
  loop
    begin
      perform aiki._fire_schedule(v_s, p_now, null);
    exception when others then
      get stacked diagnostics v_state = returned_sqlstate, v_message = message_text;
      begin
        v_next := aiki._cron_next(aiki._cron_parse(v_s.cron), v_s.timezone, p_now);
      exception when others then
        v_next := null;
      end;
      update aiki.schedules
         set next_fire_at = coalesce(v_next, 'infinity'), due_at = coalesce(v_next, 'infinity'),
             last_error = format('%s: %s', v_state, v_message), updated_at = p_now
       where name = v_s.name;
    end;
  end loop;
  left_due := exists (select 1 from aiki.schedules where not paused and due_at <= p_now);
  next_at := (select due_at from aiki.schedules where not paused and due_at > p_now order by due_at limit 1);
end
$$;

-- Called by _finish for a run a schedule started (a top-level run with a `schedule:` key) or the
-- last run of a top-level continue-as-new chain (whose first run may hold such a key): when the
-- schedule buffered a fire behind this run (buffer_one), marks it due now and wakes its
-- queue's workers, whose next claim starts the buffered run. Holding the run, it takes the
-- schedule SKIP LOCKED (header: a claim holding it re-reads the run under its lock).
create or replace function aiki._schedule_run_finished(p_run aiki.runs) returns void
language plpgsql
as $$
declare
  v_key text := p_run.idempotency_key;
  v_name text;
  v_queue text;
begin
  if p_run.chain_id is not null and p_run.chain_id <> p_run.id then
    select idempotency_key into v_key from aiki.runs where id = p_run.chain_id;
  end if;
  -- Any start may use such a key; only one a fire wrote names a schedule.
  v_name := substring(v_key from '^schedule:(.+):\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$');
  if v_name is null then
    return;
  end if;
  select queue into v_queue from aiki.schedules
   where name = v_name and last_run_id = coalesce(p_run.chain_id, p_run.id) and buffered_at is not null
     for update skip locked;
  if found then
    update aiki.schedules set due_at = least(due_at, aiki.now()), updated_at = aiki.now() where name = v_name;
    perform aiki._notify_queue(v_queue);
  end if;
end
$$;

-- Creates a schedule that starts p_workflow@p_version with p_input at each fire of p_cron in
-- p_timezone (an IANA name), on p_queue with p_priority and the run retry policy p_retry (as
-- start_workflow's; null: never). First fire: the next after now.
-- Idempotent: the same definition again returns the schedule unchanged; another definition under
-- the name raises AK004 (use update_schedule). AK003 on bad input, naming field and value.
-- Returns the schedule as JSON (get_schedule). Tells its queue's workers when it first fires.
create or replace function aiki.create_schedule(
  p_name text,
  p_workflow text,
  p_version text,
  p_cron text,
  p_input jsonb default 'null',
  p_timezone text default 'UTC',
  p_overlap text default 'skip',
  p_catchup_ms bigint default 0,
  p_queue text default 'default',
  p_priority integer default 0,
  p_retry jsonb default null)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_now timestamptz := aiki.now();
  v_spec jsonb := aiki._check_schedule(p_name, p_workflow, p_version, p_cron, p_input, p_timezone,
                                       p_overlap, p_catchup_ms, p_queue, p_priority, v_now);
  v_next timestamptz := aiki._cron_next(v_spec, p_timezone, v_now);
  v_retry jsonb := aiki._check_retry(p_retry);
  v_s aiki.schedules;
begin
  insert into aiki.schedules (name, next_fire_at, due_at, created_at, updated_at, catchup_ms, priority,
                              workflow, version, cron, timezone, overlap, queue, input, retry)
  values (p_name, v_next, v_next, v_now, v_now, p_catchup_ms, p_priority,
          p_workflow, p_version, p_cron, p_timezone, p_overlap, p_queue, p_input, v_retry)
  on conflict (name) do nothing
  returning * into v_s;
  if found then
    perform aiki._notify_due(p_queue, v_next);
    return aiki._schedule_json(v_s);
  end if;
  select * into v_s from aiki.schedules where name = p_name;
  if (v_s.workflow, v_s.version, v_s.cron, v_s.timezone, v_s.overlap, v_s.catchup_ms, v_s.queue, v_s.priority)
     is distinct from (p_workflow, p_version, p_cron, p_timezone, p_overlap, p_catchup_ms, p_queue, p_priority)
     or v_s.input is distinct from p_input or v_s.retry is distinct from v_retry then
    raise exception using errcode = 'AK004',
      message = format('schedule %s already exists with another definition', p_name),
      hint = 'use update_schedule to change it, or delete_schedule first';
  end if;
  return aiki._schedule_json(v_s);
end
$$;

-- The schedule named p_name, locked for update. AK003 on a malformed name, AK002 when there is
-- no such schedule.
create or replace function aiki._lock_schedule(p_name text) returns aiki.schedules
language plpgsql volatile
as $$
declare
  v_s aiki.schedules;
begin
  perform aiki._check_name('schedule name', p_name);
  select * into v_s from aiki.schedules where name = p_name for update;
  if not found then
    raise exception using errcode = 'AK002', message = format('schedule %s not found', p_name);
  end if;
  return v_s;
end
$$;

-- Changes the given fields of a schedule (null keeps one; p_input 'null'::jsonb sets JSON null,
-- p_retry '{"type": "never"}' removes a retry policy).
-- A new cron or zone moves the next fire to the first after now. AK002 when there is no such
-- schedule; AK003 on bad input, nothing written.
create or replace function aiki.update_schedule(
  p_name text,
  p_workflow text default null,
  p_version text default null,
  p_cron text default null,
  p_input jsonb default null,
  p_timezone text default null,
  p_overlap text default null,
  p_catchup_ms bigint default null,
  p_queue text default null,
  p_priority integer default null,
  p_retry jsonb default null)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_now timestamptz := aiki.now();
  v_s aiki.schedules;
  v_spec jsonb;
  v_next timestamptz;
begin
  v_s := aiki._lock_schedule(p_name);
  v_spec := aiki._check_schedule(p_name, coalesce(p_workflow, v_s.workflow), coalesce(p_version, v_s.version),
    coalesce(p_cron, v_s.cron), coalesce(p_input, v_s.input), coalesce(p_timezone, v_s.timezone),
    coalesce(p_overlap, v_s.overlap), coalesce(p_catchup_ms, v_s.catchup_ms), coalesce(p_queue, v_s.queue),
    coalesce(p_priority, v_s.priority), v_now);
  v_next := case when coalesce(p_cron, v_s.cron) = v_s.cron and coalesce(p_timezone, v_s.timezone) = v_s.timezone
                 then v_s.next_fire_at
                 else aiki._cron_next(v_spec, coalesce(p_timezone, v_s.timezone), v_now) end;
  update aiki.schedules
     set workflow = coalesce(p_workflow, workflow), version = coalesce(p_version, version),
         cron = coalesce(p_cron, cron), input = coalesce(p_input, input),
         timezone = coalesce(p_timezone, timezone), overlap = coalesce(p_overlap, overlap),
         catchup_ms = coalesce(p_catchup_ms, catchup_ms), queue = coalesce(p_queue, queue),
         priority = coalesce(p_priority, priority),
         retry = case when p_retry is null then retry else aiki._check_retry(p_retry) end,
         next_fire_at = v_next,
         -- a buffered run's wake (due before the cursor) is kept
         due_at = least(v_next, case when due_at < next_fire_at then due_at end),
         updated_at = v_now
   where name = p_name
  returning * into v_s;
  if not v_s.paused then
    perform aiki._notify_due(v_s.queue, v_s.due_at);
  end if;
  return aiki._schedule_json(v_s);
end
$$;

-- Removes a schedule; the runs it started stay. Returns whether there was one.
create or replace function aiki.delete_schedule(p_name text) returns boolean
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  perform aiki._check_name('schedule name', p_name);
  delete from aiki.schedules where name = p_name;
  return found;
end
$$;

-- Stops a schedule firing (claims pass over it; trigger_schedule still fires it). Idempotent.
-- AK002 when there is no such schedule.
create or replace function aiki.pause_schedule(p_name text) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_s aiki.schedules;
begin
  perform aiki._lock_schedule(p_name);
  update aiki.schedules set paused = true, updated_at = aiki.now() where name = p_name returning * into v_s;
  return aiki._schedule_json(v_s);
end
$$;

-- Lets a paused schedule fire again, from its first fire after now: fires missed while paused
-- never start. A buffered fire is looked at by the next claim. Idempotent on a running
-- schedule. AK002 when there is no such schedule.
create or replace function aiki.resume_schedule(p_name text) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_now timestamptz := aiki.now();
  v_s aiki.schedules;
  v_next timestamptz;
begin
  v_s := aiki._lock_schedule(p_name);
  if v_s.paused then
    v_next := coalesce(aiki._cron_next(aiki._cron_parse(v_s.cron), v_s.timezone, v_now), 'infinity');
    update aiki.schedules
       set paused = false, next_fire_at = v_next,
           due_at = case when buffered_at is not null then v_now else v_next end, updated_at = v_now
     where name = p_name
    returning * into v_s;
    perform aiki._notify_due(v_s.queue, v_s.due_at);
  end if;
  return aiki._schedule_json(v_s);
end
$$;

-- Fires a schedule now (paused or not), under its overlap policy; its regular fires go on as
-- before. Waits for the schedule's row and, for buffer_one and cancel_previous, its previous
-- run's. Returns {"fired_at", "action": started | skipped | buffered, "run_id": the run started
-- (null when skipped or buffered), "schedule"}. Two triggers at one instant start one run. AK002
-- when there is no such schedule.
create or replace function aiki.trigger_schedule(p_name text) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_now timestamptz := aiki.now();
  v_fire timestamptz := date_trunc('milliseconds', v_now);
  v_s aiki.schedules;
  v_result jsonb;
begin
  v_s := aiki._lock_schedule(p_name);
  v_result := aiki._fire_schedule(v_s, v_now, v_fire);
  select * into v_s from aiki.schedules where name = p_name;
  return jsonb_build_object('fired_at', v_fire, 'action', v_result->'action',
                            'run_id', case when v_result->>'action' = 'started' then v_result->'run_id' end,
                            'schedule', aiki._schedule_json(v_s));
end
$$;

-- One schedule as JSON. AK002 when there is no such schedule.
create or replace function aiki.get_schedule(p_name text) returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_s aiki.schedules;
begin
  select * into v_s from aiki.schedules where name = p_name;
  if not found then
    raise exception using errcode = 'AK002',
      message = format('schedule %s not found', coalesce(quote_literal(left(p_name, 200)), 'null'));
  end if;
  return aiki._schedule_json(v_s);
end
$$;

-- Every schedule as JSON (get_schedule's shape), by name.
create or replace function aiki.list_schedules() returns jsonb
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
  select coalesce(jsonb_agg(aiki._schedule_json(s) order by s.name), '[]'::jsonb) from aiki.schedules s
$$;

-- The next p_count (1-1000) fire times after p_after (default: now) of a cron expression in a
-- zone, as a schedule would fire them: a preview, and what the tests count. AK003 on a bad
-- expression, zone or count.
create or replace function aiki.cron_fires(
  p_cron text, p_timezone text default 'UTC', p_after timestamptz default null, p_count integer default 10)
returns setof timestamptz
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_spec jsonb := aiki._cron_parse(p_cron);
  v_at timestamptz := coalesce(p_after, aiki.now());
begin
  perform aiki._check_timezone(p_timezone);
  if p_count is null or p_count not between 1 and 1000 then
    raise exception using errcode = 'AK003',
      message = format('invalid count %s', coalesce(p_count::text, 'null')), hint = 'use 1-1000';
  end if;
  for i in 1..p_count loop
    v_at := aiki._cron_next(v_spec, p_timezone, v_at);
    exit when v_at is null;
    return next v_at;
  end loop;
end
$$;
