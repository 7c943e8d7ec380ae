-- Schema 3: the active-key index holds a 64-bit hash of (task_type, dedup_key) instead
-- of the two text columns; history loses its unused key index.  Needs the SQL function
-- taskmill_key_hash (taskmill/store/keys.py), which the store registers before upgrading.
ALTER TABLE tasks ADD COLUMN key_hash INTEGER;
UPDATE tasks SET key_hash = taskmill_key_hash(task_type, dedup_key)
WHERE dedup_key IS NOT NULL;
DROP INDEX tasks_active_key;
CREATE UNIQUE INDEX tasks_active_key ON tasks (key_hash) WHERE key_hash IS NOT NULL;
DROP INDEX history_key;
