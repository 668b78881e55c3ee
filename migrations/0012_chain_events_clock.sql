-- 0012_chain_events_clock: event keys across a continue-as-new chain; a test clock behind the wall.
--
-- runs_chain: every run of a continue-as-new chain by chain id. send_event looks an event's
-- idempotency key up across the chain (sql/50_events.sql): continue_as_new moves only the events
-- no wait took, so a key taken by an earlier run stays on that run. runs_chain_latest (0009)
-- holds only each chain's newest run. Runs outside a chain (chain_id null) are not indexed.
--
-- test_clock: the shift may be negative. A clock that stood at a due time (frozen_at) while the
-- wall clock went on past the target of the next advance flows on from that target, behind the
-- wall clock. The clock itself still never goes back: advance_clock moves it to a time not
-- before its own (sql/85_test_clock.sql).

create index runs_chain on aiki.runs (chain_id) where chain_id is not null;

alter table aiki.test_clock drop constraint test_clock_forward;
