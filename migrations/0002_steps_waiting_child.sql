-- 0002_steps_waiting_child: a child's end finds its parent's wait for it by index.
--
-- _deliver_to_parent looks up the parent's waiting `wait_child` step by (run_id, kind, child_id).
-- With steps_waiting on (run_id, kind) only, it scanned every open wait of the parent, once per
-- finishing child: quadratic in a fan-in (bench: 1,000 children took 81 µs per delivery, 0.1 s in
-- all, under the parent's lock). The wider index still serves every (run_id) and (run_id, kind)
-- lookup the old one did.

drop index aiki.steps_waiting;

create index steps_waiting on aiki.steps (run_id, kind, child_id)
  where status = 'waiting';
