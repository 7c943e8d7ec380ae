-- Schema 11 (as the SQLite store's migration 011): preemption — when a running task was
-- paused to make room for more urgent work (`preempted_at`; NULL for a task paused by
-- hand).
ALTER TABLE taskmill.tasks ADD COLUMN preempted_at double precision;

CREATE INDEX tasks_preempted ON taskmill.tasks (preempted_at) WHERE preempted_at IS NOT NULL;
