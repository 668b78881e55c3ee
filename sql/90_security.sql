-- aiki engine: security — who may call what.
--
-- Tables are private to the schema owner. Every public function is `security definer` with a
-- pinned search_path, so callers act only through them. Helpers prefixed `_` are callable by
-- no role. Grant a login role one of these to use the engine:
--
--   aiki_client  start_workflow, send_event, cancel, pause, resume, retry_run, get_run, find_run,
--                list_runs, search_runs, count_runs, run_timeline, list_workers, list_queues,
--                now, test_clock_now, schema_version, get_schedule, list_schedules, cron_fires,
--                and the schedule acts a client may take on runs too: pause_schedule,
--                resume_schedule, trigger_schedule (a fire starts a run, as start_workflow does)
--   aiki_worker  everything a client may, plus register_worker, unregister_worker, claim,
--                heartbeat, release, complete_step, start_attempt,
--                fail_step, suspend, sleep, wait_event, wait_child, start_child(ren),
--                complete_run, continue_as_new, fail_run, record, next_due, and create_schedule,
--                update_schedule, delete_schedule: worker({ schedules }) makes the database
--                match its code at start-up, and a worker may start any run anyway
--   aiki_admin   everything a worker may, plus set_queue, pause_queue, resume_queue,
--                purge_runs, advance_clock, test_clock_state, and reading the tables directly

revoke all on all functions in schema aiki from public;
grant usage on schema aiki to aiki_client, aiki_worker, aiki_admin;
grant usage on type aiki.run_status, aiki.step_kind, aiki.step_status to aiki_client, aiki_worker, aiki_admin;

grant execute on function
  aiki.now(),
  aiki.test_clock_now(),
  aiki.schema_version(),
  aiki.start_workflow(text, text, jsonb, text, text, integer, timestamptz, bigint, text, bigint, jsonb, integer, jsonb),
  aiki.send_event(uuid, text, jsonb, text),
  aiki.cancel(uuid, text),
  aiki.pause(uuid),
  aiki.resume(uuid),
  aiki.get_run(uuid),
  aiki.find_run(text, text),
  aiki.list_runs(text, aiki.run_status, timestamptz, timestamptz, integer, uuid),
  aiki.retry_run(uuid),
  aiki.search_runs(jsonb, integer, text),
  aiki.count_runs(jsonb),
  aiki.run_timeline(uuid),
  aiki.list_workers(),
  aiki.list_queues(),
  aiki.get_schedule(text),
  aiki.list_schedules(),
  aiki.cron_fires(text, text, timestamptz, integer),
  aiki.pause_schedule(text),
  aiki.resume_schedule(text),
  aiki.trigger_schedule(text)
to aiki_client, aiki_worker, aiki_admin;

grant execute on function
  aiki.register_worker(text, text[], text[], integer, jsonb),
  aiki.unregister_worker(text),
  aiki.claim(text, text[], text[], integer, integer),
  aiki.heartbeat(text, integer, uuid[]),
  aiki.release(uuid, uuid),
  aiki.complete_step(uuid, uuid, text, text, text, jsonb),
  aiki.start_attempt(uuid, uuid, text, text, bigint, jsonb, bigint, jsonb),
  aiki.fail_step(uuid, uuid, text, text, jsonb, jsonb, boolean, bigint, integer),
  aiki.suspend(uuid, uuid, jsonb),
  aiki.sleep(uuid, uuid, text, text, bigint),
  aiki.wait_event(uuid, uuid, text, text, bigint),
  aiki.wait_child(uuid, uuid, text, uuid),
  aiki.start_children(uuid, uuid, jsonb),
  aiki.start_child(uuid, uuid, text, text, text, jsonb, jsonb),
  aiki.complete_run(uuid, uuid, jsonb),
  aiki.continue_as_new(uuid, uuid, jsonb, text),
  aiki.record(jsonb),
  aiki.fail_run(uuid, uuid, jsonb, boolean),
  aiki.next_due(text[], timestamptz),
  aiki.create_schedule(text, text, text, text, jsonb, text, text, bigint, text, integer, jsonb),
  aiki.update_schedule(text, text, text, text, jsonb, text, text, bigint, text, integer, jsonb),
  aiki.delete_schedule(text)
to aiki_worker, aiki_admin;

grant execute on function
  aiki.set_queue(text, integer, integer, integer, bigint, boolean),
  aiki.pause_queue(text),
  aiki.resume_queue(text),
  aiki.purge_runs(timestamptz, integer),
  aiki.advance_clock(timestamptz),
  aiki.test_clock_state()
to aiki_admin;

grant select on all tables in schema aiki to aiki_admin;
