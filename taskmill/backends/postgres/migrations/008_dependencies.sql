-- Schema 8 (as the SQLite store's migration 008): dependencies.  The statuses `blocked`
-- (waits for its dependencies) and `waiting` (a parent whose children run), each task's
-- `on_dependency_failure`, and the edges of what blocked tasks wait for.
ALTER TABLE taskmill.tasks DROP CONSTRAINT tasks_status_check;
ALTER TABLE taskmill.tasks ADD CONSTRAINT tasks_status_check
    CHECK (status IN ('pending', 'running', 'paused', 'blocked', 'waiting'));
ALTER TABLE taskmill.tasks ADD COLUMN on_dependency_failure text;

-- include: task_deps.sql
