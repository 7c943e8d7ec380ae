-- Schema 9 (as the SQLite store's migration 009): child tasks — each task's parent
-- (`parent_id`, in history too) and, for a `waiting` parent, what happens when its last
-- child ends (`finalizer`: NULL ends it at once; 'wanted' sends it back to pending as
-- 'due', for the scheduler that claims it to run the finalizer).
ALTER TABLE taskmill.tasks ADD COLUMN parent_id bigint;
ALTER TABLE taskmill.tasks ADD COLUMN finalizer text CHECK (finalizer IN ('wanted', 'due'));
ALTER TABLE taskmill.history ADD COLUMN parent_id bigint;

CREATE INDEX tasks_parent ON taskmill.tasks (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX history_parent ON taskmill.history (parent_id) WHERE parent_id IS NOT NULL;
