-- Schema 8 -> 9: child tasks.  A task an executor spawns keeps its parent (`parent_id`,
-- in history too).  A parent whose code returned while children were active is
-- `waiting` (a status schema 8 already allows); `finalizer` says what happens when its
-- last child ends: NULL — it ends at once, completed or failed (`child_failed`);
-- 'wanted' — it goes back to pending as 'due', and the scheduler that claims it runs the
-- task type's finalizer before it ends.
ALTER TABLE tasks ADD COLUMN parent_id INTEGER;
ALTER TABLE tasks ADD COLUMN finalizer TEXT CHECK (finalizer IN ('wanted', 'due'));
ALTER TABLE history ADD COLUMN parent_id INTEGER;

-- A parent's children, active and finished: the end of a child looks up its parent's
-- other active children, and a parent's verdict counts its finished ones.
CREATE INDEX tasks_parent ON tasks (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX history_parent ON history (parent_id) WHERE parent_id IS NOT NULL;
