-- Schema 7 -> 8: dependencies.  A task may wait for others: `blocked`, active (it holds
-- its key), never dispatched; what it waits for is kept as edges in task_deps, each one
-- removed once its dependency completed.  SQLite cannot change a CHECK constraint, so
-- tasks is rebuilt with the new statuses (`blocked`; `waiting`, for a parent whose
-- children run) and the column `on_dependency_failure`: its rows copied as they are, its
-- id sequence kept (ids are never handed out twice).
ALTER TABLE tasks RENAME TO tasks_v7;
DROP INDEX tasks_active_key;
DROP INDEX tasks_queue;
DROP INDEX tasks_retry;
DROP INDEX tasks_expiry;
DROP INDEX tasks_batch;
-- include: tasks.sql
INSERT INTO tasks (
    id, task_type, dedup_key, group_name, priority, queue_pos, status, payload, label,
    expected_read_bytes, expected_write_bytes, expected_net_rx_bytes, expected_net_tx_bytes,
    max_retries, attempts, last_error, run_after, owner, created_at, started_at, key_hash,
    expires_at, batch_id
)
SELECT id, task_type, dedup_key, group_name, priority, queue_pos, status, payload, label,
       expected_read_bytes, expected_write_bytes, expected_net_rx_bytes,
       expected_net_tx_bytes, max_retries, attempts, last_error, run_after, owner,
       created_at, started_at, key_hash, expires_at, batch_id
FROM tasks_v7;
DELETE FROM sqlite_sequence WHERE name = 'tasks';
INSERT INTO sqlite_sequence (name, seq) SELECT 'tasks', seq FROM sqlite_sequence WHERE name = 'tasks_v7';
DROP TABLE tasks_v7;

-- The triggers of attempts.sql on tasks went with the old table: the same again (that
-- part is released and stays as it was, so a fresh store gets them from it).
-- An attempt that ends with its task still active: failed and waiting out its backoff
-- (the try counted, its error recorded), or given back uncounted (released).
CREATE TRIGGER attempt_ended AFTER UPDATE OF status ON tasks
WHEN OLD.status = 'running' AND NEW.status <> 'running'
BEGIN
    INSERT INTO attempts (task_id, attempt, worker, started_at, finished_at, outcome, error)
    VALUES (
        OLD.id, OLD.attempts, OLD.owner, OLD.started_at,
        max(COALESCE(OLD.started_at, 0), (julianday('now') - 2440587.5) * 86400.0),
        CASE WHEN NEW.attempts < OLD.attempts THEN 'released'
             WHEN NEW.status = 'pending' THEN 'failed'
             ELSE NEW.status END,
        CASE WHEN NEW.status = 'pending' AND NEW.attempts >= OLD.attempts
             THEN NEW.last_error END
    );
END;

-- An attempt whose task ended: history holds the task by now (every way to finish
-- inserts it there first), with the end's status, time and error.
CREATE TRIGGER attempt_finished AFTER DELETE ON tasks
WHEN OLD.status = 'running'
BEGIN
    INSERT INTO attempts (task_id, attempt, worker, started_at, finished_at, outcome, error)
    SELECT OLD.id, OLD.attempts, OLD.owner, OLD.started_at,
           max(COALESCE(OLD.started_at, 0), h.finished_at), h.status,
           CASE WHEN h.status = 'failed' THEN h.last_error END
    FROM history AS h
    WHERE h.id = OLD.id;
END;

-- include: task_deps.sql
