-- 0003_journal_limits: a run's journal size as counters, wait creation order, and run listing
-- by creation time.
--
-- journal_steps / journal_bytes: how many steps a run's journal holds and how many bytes of
-- step outputs and errors its worker wrote, kept by aiki._check_journal_room on every journal
-- write so the limits (aiki._max_journal_steps, aiki._max_journal_bytes) cost one row update,
-- not a scan of the journal. Counted here once for the runs that are not finished (their bytes
-- estimated by the JSON text length, which stored, possibly compressed, values allow cheaply).
--
-- steps.wait_seq: the order waits were created in, from one sequence. send_event hands a live
-- event to the oldest open wait for its name; waits created by one suspend share created_at, and
-- breaking the tie by step key as text delivered `vote#10` before `vote#2`. Null for steps that
-- are not waits and for waits created before this migration (which are older than any other).
--
-- runs_created: list_runs orders and pages by (created_at, id), the creation time every filter
-- uses (a run's UUIDv7 comes from the wall clock at insert, created_at from aiki.now()).

alter table aiki.runs
  add column journal_steps integer not null default 0,
  add column journal_bytes bigint not null default 0;

update aiki.runs r
   set journal_steps = j.steps, journal_bytes = j.bytes
  from (select run_id, count(*)::integer as steps,
               sum(coalesce(octet_length(output::text), 0) + coalesce(octet_length(error::text), 0))::bigint as bytes
          from aiki.steps group by run_id) j
 where r.id = j.run_id and r.finished_at is null;

create sequence aiki.steps_wait_seq as bigint;

alter table aiki.steps add column wait_seq bigint;

create index runs_created on aiki.runs (created_at, id);
