-- Schema 10 -> 11: preemption.  A running task paused to make room for more urgent work
-- (Scheduler(preempt_priority=...)) keeps when that happened in `preempted_at`; a
-- scheduler puts such tasks back to pending once no urgent task waits.  A task paused by
-- hand has none.
ALTER TABLE tasks ADD COLUMN preempted_at REAL;

CREATE INDEX tasks_preempted ON tasks (preempted_at) WHERE preempted_at IS NOT NULL;
