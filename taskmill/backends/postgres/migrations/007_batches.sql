-- Schema 7 (as the SQLite store's migration 007): batches as units of work, and each
-- task's `batch_id`, active and in history.

-- include: batches.sql

ALTER TABLE taskmill.tasks ADD COLUMN batch_id bigint;
ALTER TABLE taskmill.history ADD COLUMN batch_id bigint;
CREATE INDEX tasks_batch ON taskmill.tasks (batch_id) WHERE batch_id IS NOT NULL;
CREATE INDEX history_batch ON taskmill.history (batch_id) WHERE batch_id IS NOT NULL;
