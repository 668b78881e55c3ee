-- 0004_steps_started: a task attempt in flight, with its deadline, for task timeouts.
--
-- A task that declares a timeout (or a heartbeat timeout) records the start of each attempt as
-- a `started` step whose wake_at is the attempt's deadline (aiki.start_attempt); heartbeats push
-- it on. When the worker dies or hangs, the next worker that replays the run finds the attempt
-- past its deadline and counts it as failed by timeout instead of running the task again. Tasks
-- without a timeout never write a `started` step: they pay nothing.

alter type aiki.step_status add value if not exists 'started';
