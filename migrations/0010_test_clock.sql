-- 0010_test_clock: the clock of a test database (the `aiki/testing` kit, issue 13).
--
-- A database created by the test kit runs on a test clock: `alter database … set
-- aiki.test_clock = on` makes every session of it (client pools, worker pools, the LISTEN
-- connection) read aiki.now() from this table's one row, which only aiki.advance_clock moves
-- (sql/85_test_clock.sql). Created here with no shift; in a database that never runs on a test
-- clock it stays so and nothing reads it.
--
--   shift_us   how far the test clock runs ahead of the transaction time, in microseconds (an
--              integer, not an interval, so that adding it never goes through calendar days
--              and the session's time zone)
--   frozen_at  while an advance steps through due times, the clock stands at this time, so
--              that what the woken runs do happens at their due time exactly; null: it flows
create table aiki.test_clock (
  one        boolean not null default true,
  shift_us   bigint not null default 0,
  frozen_at  timestamptz,
  constraint test_clock_pkey primary key (one),
  constraint test_clock_one_row check (one),
  constraint test_clock_forward check (shift_us >= 0)
);

insert into aiki.test_clock default values;

revoke all on aiki.test_clock from public;
