-- Schema 6 -> 7: batches as units of work.  Every submit_batch that inserts a task records
-- its batch, and each task keeps the batch that inserted it (`batch_id`, NULL for a single
-- submit), in history too.  A batch is sealed once its submission ended; the first
-- scheduler that finds it sealed with no active task sets `finished_at` and freezes its
-- counts.

-- include: batches.sql

ALTER TABLE tasks ADD COLUMN batch_id INTEGER;
ALTER TABLE history ADD COLUMN batch_id INTEGER;
CREATE INDEX tasks_batch ON tasks (batch_id) WHERE batch_id IS NOT NULL;
CREATE INDEX history_batch ON history (batch_id) WHERE batch_id IS NOT NULL;
