-- aiki engine: shared core — the clock, ids, validation, retry arithmetic and wake-ups.
--
-- The model, in one page
-- ----------------------
-- A *run* is one execution of a workflow version. Its fate is decided only by the functions in
-- this folder, each taking the run's row lock before it moves the run between states:
--
--   scheduled ─┐
--              ├─> pending ─> running ─┬─> completed | failed | cancelled | continued
--   retrying ──┘      ^                ├─> sleeping ─┐
--                     │                ├─> waiting  ─┤  (timer, event, child, resume)
--                     └────────────────┴─> paused   ─┘
--
-- Workers claim pending runs (claim.sql), replay the handler against the run's journal
-- (steps), append to the journal under their lease token (steps.sql), and suspend the run when
-- the code waits (waits.sql). `continued` ends a run that handed its work to a successor run
-- (continue_as_new, runs.sql). `available_at` is the single time column that drives claiming;
-- timers are promoted to pending by whichever worker claims next, so no daemon is needed.
--
-- Lock order, everywhere: a parent run before its children, a run before its steps and events.
-- Functions that finish a child therefore read the (immutable) parent_id first and lock the
-- parent, then the child. Nothing waits for a lock while holding a child's lock.
--
-- SQLSTATE catalogue (mapped one-for-one to error classes in sdk/errors.ts)
--   AK001 lease_lost          the caller's lease token is stale, expired, or the run left `running`
--   AK002 not_found           no run with that id / idempotency key, no schedule with that name
--   AK003 invalid_input       a name, version, duration, option or payload is malformed
--   AK004 idempotency_conflict same idempotency key, different workflow version or input
--   AK005 invalid_transition  the run's status does not allow this act (e.g. send to a finished run)
--   AK006 non_determinism     a step key is recorded with another kind or name than the code asks
--   AK007 payload_too_large   a JSON payload exceeds aiki._max_payload_bytes()
--   AK008 journal_too_large   a journal write would take a run past aiki._max_journal_steps() or
--                             aiki._max_journal_bytes(); the worker fails the run with it
--   AK009 inbox_full          a run holds aiki._max_inbox_events() events no wait has taken yet

-- The test clock's time in this transaction (aiki.test_clock, sql/85_test_clock.sql): where an
-- advance holds it, else the transaction time plus its shift; in a database no test kit made,
-- the transaction time. aiki.now() reads it only in a session on a test clock. Security
-- definer: a client or worker reads the clock, never the table. Callable by all three roles, as
-- aiki.now() is (the executor checks the right to call every function of an inlined
-- expression, whichever CASE branch runs).
create or replace function aiki.test_clock_now() returns timestamptz
language sql stable parallel safe security definer
set search_path = pg_catalog, pg_temp
as $$
  select coalesce((select coalesce(frozen_at, now() + shift_us * interval '1 microsecond') from aiki.test_clock), now())
$$;

-- The one clock. Tests set `aiki.fake_now` per session to move time; production reads the
-- transaction timestamp, so every statement of a transaction agrees on "now".
-- Only a superuser or a member of aiki_admin may move it (session_user: security-definer callers
-- run as the owner): a client or worker with its own clock could wake sleeps early, expire other
-- workers' leases and fail runs past fake deadlines. Unset, the role check is never evaluated.
-- A database the test kit made runs on a test clock (`alter database … set aiki.test_clock =
-- on`, so every session of it, pooled or not, has the setting from its start): the time of
-- aiki.test_clock_now(), which only aiki.advance_clock moves (an admin's verb). A session that
-- turns the setting on elsewhere reads the transaction timestamp, as nothing moves it there.
-- Kept a single CASE expression without a subquery, so the planner inlines it into the claim's
-- `available_at <= aiki.now()`; the production path costs two setting look-ups.
create or replace function aiki.now() returns timestamptz
language sql stable parallel safe
as $$
  select case when current_setting('aiki.fake_now', true) <> ''
               and pg_has_role(session_user, 'aiki_admin', 'member')
              then current_setting('aiki.fake_now', true)::timestamptz
              when current_setting('aiki.test_clock', true) = 'on'
              then aiki.test_clock_now()
              else now() end
$$;

-- Time-ordered UUIDv7 (RFC 9562): 48-bit Unix milliseconds, version and variant bits, random rest.
-- Uses the wall clock, not aiki.now(): ids order inserts, they never decide a run's fate.
create or replace function aiki._uuidv7() returns uuid
language sql volatile parallel safe
as $$
  select encode(
    -- gen_random_uuid() is v4 (version bits 0100, variant 10); setting bits 52 and 53 (set_bit
    -- counts from each byte's low bit) turns the version into 0111.
    set_bit(set_bit(
      overlay(uuid_send(gen_random_uuid())
              placing substring(int8send(floor(extract(epoch from clock_timestamp()) * 1000)::bigint) from 3)
              from 1 for 6),
      52, 1), 53, 1),
    'hex')::uuid
$$;

create or replace function aiki._max_payload_bytes() returns integer
language sql immutable parallel safe
as $$ select 1048576 $$;

-- One run's journal: at most this many steps, and this many bytes of step outputs and errors
-- as its worker wrote them (JSONB size before compression). Checked on every journal write by
-- _check_journal_room. Sized for the claim, which hands a run to a worker as one jsonb value
-- (at most 256 MiB, with every other run of the claim): a journal past these would make that
-- value unbuildable. Temporal's comparable limits are 51,200 events and 50 MB per history.
create or replace function aiki._max_journal_steps() returns integer
language sql immutable parallel safe
as $$ select 50000 $$;

create or replace function aiki._max_journal_bytes() returns bigint
language sql immutable parallel safe
as $$ select 67108864::bigint $$;

-- Unconsumed events one run may hold (its inbox); send_event refuses more with AK009.
create or replace function aiki._max_inbox_events() returns integer
language sql immutable parallel safe
as $$ select 10000 $$;

-- Raises AK003 unless p_priority is an integer in -1,000,000..1,000,000 (higher runs first).
create or replace function aiki._check_priority(p_priority integer) returns integer
language plpgsql immutable
as $$
begin
  if p_priority is null or p_priority not between -1000000 and 1000000 then
    raise exception using errcode = 'AK003',
      message = format('invalid priority %s', coalesce(p_priority::text, 'null')),
      hint = 'use an integer between -1000000 and 1000000; higher runs first';
  end if;
  return p_priority;
end
$$;

-- Raises AK003 for a null run id: `run  not found` named no run and hid the caller's mistake.
create or replace function aiki._check_run_id(p_run_id uuid) returns uuid
language plpgsql immutable
as $$
begin
  if p_run_id is null then
    raise exception using errcode = 'AK003', message = 'run id is required', hint = 'pass the id of a run';
  end if;
  return p_run_id;
end
$$;

-- Raises AK003 unless p_value is a name: 1-128 chars of letters, digits and `_ . : / -`,
-- starting with a letter or digit. `@` is reserved as the workflow@version separator.
create or replace function aiki._check_name(p_what text, p_value text) returns text
language plpgsql immutable
as $$
begin
  if p_value is null or p_value !~ '^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$' then
    raise exception using errcode = 'AK003',
      message = format('invalid %s %s', p_what, coalesce(quote_literal(left(p_value, 200)), 'null')),
      hint = 'use 1-128 letters, digits or _ . : / - starting with a letter or digit';
  end if;
  return p_value;
end
$$;

create or replace function aiki._check_version(p_value text) returns text
language plpgsql immutable
as $$
begin
  if p_value is null or p_value !~ '^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$' then
    raise exception using errcode = 'AK003',
      message = format('invalid version %s', coalesce(quote_literal(left(p_value, 200)), 'null')),
      hint = 'use 1-64 letters, digits or _ . + - starting with a letter or digit, e.g. 1.0.0';
  end if;
  return p_value;
end
$$;

-- Step keys come from the SDK (`charge-card#1`), idempotency and concurrency keys from users:
-- any printable text up to 256 characters.
create or replace function aiki._check_key(p_what text, p_value text) returns text
language plpgsql immutable
as $$
begin
  if p_value is null or length(p_value) = 0 or length(p_value) > 256 or p_value ~ '[[:cntrl:]]' then
    raise exception using errcode = 'AK003',
      message = format('invalid %s %s', p_what, coalesce(quote_literal(left(p_value, 200)), 'null')),
      hint = 'use 1-256 printable characters';
  end if;
  return p_value;
end
$$;

create or replace function aiki._check_payload(p_what text, p_value jsonb) returns jsonb
language plpgsql immutable
as $$
begin
  if pg_column_size(p_value) > aiki._max_payload_bytes() then
    raise exception using errcode = 'AK007',
      message = format('%s is %s bytes, over the limit of %s bytes',
                       p_what, pg_column_size(p_value), aiki._max_payload_bytes());
  end if;
  return p_value;
end
$$;

-- A W3C trace context (https://www.w3.org/TR/trace-context/) as a run carries it (runs.trace_context):
-- {"traceparent": "<version>-<32 hex trace id>-<16 hex span id>-<2 hex flags>", "tracestate"?:
-- "<printable ASCII, at most 512 characters>"}, nothing else. SQL null and JSON null mean none
-- (null). Raises AK003 for anything else, all-zero ids and version ff included (the spec's
-- invalid values), so a worker never parses a context the engine stored.
create or replace function aiki._check_trace_context(p_value jsonb) returns jsonb
language plpgsql immutable
as $$
declare
  v_valid boolean := false;
begin
  if p_value is null or p_value = 'null'::jsonb then
    return null;
  end if;
  -- Nested, not one boolean expression: Postgres does not promise to evaluate OR left to right,
  -- and jsonb_object_keys raises on a non-object.
  if jsonb_typeof(p_value) = 'object' and jsonb_typeof(p_value->'traceparent') = 'string' then
    v_valid := p_value->>'traceparent' ~ '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$'
      and p_value->>'traceparent' !~ '^ff|-0{32}-|-0{16}-'
      and (not p_value ? 'tracestate'
           or (jsonb_typeof(p_value->'tracestate') = 'string' and length(p_value->>'tracestate') <= 512
               and p_value->>'tracestate' !~ '[^ -~]'))
      and not exists (select 1 from jsonb_object_keys(p_value) k where k not in ('traceparent', 'tracestate'));
  end if;
  if not v_valid then
    raise exception using errcode = 'AK003',
      message = format('invalid trace context %s', left(p_value::text, 200)),
      hint = 'use {"traceparent": "00-<32 hex trace id>-<16 hex span id>-<2 hex flags>", "tracestate": "…"} (W3C Trace Context; tracestate optional, at most 512 printable characters)';
  end if;
  return p_value;
end
$$;

create or replace function aiki._check_duration(p_what text, p_ms bigint) returns interval
language plpgsql immutable
as $$
begin
  -- 100 years bounds every timer so timestamp arithmetic cannot overflow.
  if p_ms is null or p_ms < 0 or p_ms > 3153600000000 then
    raise exception using errcode = 'AK003',
      message = format('invalid %s %s ms', p_what, coalesce(p_ms::text, 'null')),
      hint = 'use a duration between 0 and 100 years, in milliseconds';
  end if;
  return p_ms * interval '1 millisecond';
end
$$;

-- Validates a retry policy and returns it normalised:
--   {"type": "never" | "fixed" | "exponential" | "jittered",
--    "maxAttempts": n >= 1, "baseDelayMs": ms, "maxDelayMs": ms, "factor": f >= 1}
-- maxAttempts counts every attempt, the first included.
create or replace function aiki._check_retry(p_policy jsonb) returns jsonb
language plpgsql immutable
as $$
declare
  v_type text;
  v_policy jsonb;
begin
  if p_policy is null or p_policy = 'null'::jsonb then
    return '{"type": "never", "maxAttempts": 1}'::jsonb;
  end if;
  if jsonb_typeof(p_policy) <> 'object' then
    raise exception using errcode = 'AK003', message = 'invalid retry policy: expected a JSON object';
  end if;
  v_type := coalesce(p_policy->>'type', 'exponential');
  if v_type not in ('never', 'fixed', 'exponential', 'jittered') then
    raise exception using errcode = 'AK003',
      message = format('invalid retry policy type %s', quote_literal(left(v_type, 100))),
      hint = 'use never, fixed, exponential or jittered';
  end if;
  begin
    v_policy := jsonb_build_object(
      'type', v_type,
      'maxAttempts', case when v_type = 'never' then 1 else coalesce((p_policy->>'maxAttempts')::integer, 3) end,
      'baseDelayMs', coalesce((p_policy->>'baseDelayMs')::bigint, 1000),
      'maxDelayMs', coalesce((p_policy->>'maxDelayMs')::bigint, 3600000),
      'factor', coalesce((p_policy->>'factor')::numeric, 2));
  exception when invalid_text_representation or numeric_value_out_of_range then
    raise exception using errcode = 'AK003',
      message = format('invalid retry policy %s: numbers expected', left(p_policy::text, 200));
  end;
  if (v_policy->>'maxAttempts')::integer not between 1 and 10000
     or (v_policy->>'baseDelayMs')::bigint < 0
     or (v_policy->>'maxDelayMs')::bigint not between 0 and 3153600000000
     or (v_policy->>'factor')::numeric not between 1 and 100 then
    raise exception using errcode = 'AK003',
      message = format('invalid retry policy %s', left(p_policy::text, 200)),
      hint = 'maxAttempts 1-10000, delays 0 to 100 years, factor 1-100';
  end if;
  return v_policy;
end
$$;

-- Delay before attempt p_failed_attempts + 1, or null when the policy allows no more attempts.
create or replace function aiki._retry_delay(p_policy jsonb, p_failed_attempts integer) returns interval
language plpgsql volatile
as $$
declare
  v_base numeric := (p_policy->>'baseDelayMs')::numeric;
  v_max numeric := (p_policy->>'maxDelayMs')::numeric;
  v_ms numeric;
begin
  if p_failed_attempts >= (p_policy->>'maxAttempts')::integer then
    return null;
  end if;
  v_ms := case p_policy->>'type'
    when 'fixed' then v_base
    -- least() before power() overflow: cap the exponent, the result is capped by maxDelayMs anyway.
    when 'exponential' then v_base * power((p_policy->>'factor')::numeric, least(p_failed_attempts - 1, 60))
    when 'jittered' then random()::numeric * v_base * power((p_policy->>'factor')::numeric, least(p_failed_attempts - 1, 60))
  end;
  return least(v_ms, v_max) * interval '1 millisecond';
end
$$;

-- Wake workers of a queue. Postgres folds identical notifications of one transaction into one,
-- so a batch that readies many runs of a queue signals it once.
create or replace function aiki._notify_queue(p_queue text) returns void
language sql volatile
as $$
  select pg_notify('aiki_wake', p_queue)
$$;

-- Tell a queue's workers that a run falls due at p_at (payload "<queue> <time>", the time in
-- UTC, rounded up to the millisecond so a timer armed on it never fires early). For timers no
-- worker set itself: a start in the future, a resume until a retry or start time. A worker
-- arms its wake timer instead of claiming, so the run starts on time, not at the safety poll.
create or replace function aiki._notify_due(p_queue text, p_at timestamptz) returns void
language sql volatile
as $$
  select pg_notify('aiki_wake', p_queue || ' ' ||
    to_char((p_at + interval '999 microseconds') at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))
$$;

-- A running run gave up its slot (finished or suspended). Runs kept back by a concurrency key
-- or a queue limit may now be claimable, and no other event would tell the workers: wake them.
-- Unlimited, unkeyed runs (the common case) send nothing.
create or replace function aiki._slot_freed(p_run aiki.runs) returns void
language plpgsql volatile
as $$
begin
  if p_run.status = 'running' and (p_run.concurrency_key is not null
      or exists (select 1 from aiki.queues where name = p_run.queue and concurrency_limit is not null)) then
    perform aiki._notify_queue(p_run.queue);
  end if;
end
$$;

-- Tell clients that wait for a run's status (SDK waitForStatus) to look again.
create or replace function aiki._notify_status(p_run_id uuid, p_status aiki.run_status) returns void
language sql volatile
as $$
  select pg_notify('aiki_status', p_run_id::text || ' ' || p_status::text)
$$;

-- The version of the installed engine: the number of its newest migration. Every release that
-- changes the SQL interface adds a migration, so the SDK compares this with the newest migration
-- it ships (sdk/db/version.ts) and `migrate` refuses to replace a newer engine's functions with
-- older ones. Callable by all three roles.
create or replace function aiki.schema_version() returns integer
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
  select coalesce(max(substring(name from '^[0-9]+')::integer), 0) from aiki.migrations
$$;
