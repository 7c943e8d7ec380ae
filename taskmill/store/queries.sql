-- Named queries of the task store, parsed once by taskmill.store.sql.
-- Parameters are always bound (`?` or `:name`); no SQL is built from data.

-- name: find_active
SELECT id, status, priority, queue_pos
FROM tasks
WHERE task_type = ? AND dedup_key = ?;

-- name: next_id
SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'tasks'), 0);

-- name: insert_task
INSERT INTO tasks (
    id, task_type, dedup_key, group_name, priority, queue_pos, payload, label,
    expected_read_bytes, expected_write_bytes, expected_net_rx_bytes, expected_net_tx_bytes,
    max_retries, created_at
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: upgrade_priority
UPDATE tasks SET priority = ? WHERE id = ? AND status = 'pending' AND priority > ?;

-- name: finish_to_history
-- Move active tasks (ids as a JSON array) to history with a final status.
INSERT INTO history (
    id, task_type, dedup_key, group_name, priority, payload, label,
    expected_read_bytes, expected_write_bytes, expected_net_rx_bytes, expected_net_tx_bytes,
    max_retries, status, attempts, last_error, replaced_by, created_at, started_at, finished_at
)
SELECT id, task_type, dedup_key, group_name, priority, payload, label,
       expected_read_bytes, expected_write_bytes, expected_net_rx_bytes, expected_net_tx_bytes,
       max_retries, :status, attempts, COALESCE(:error, last_error), :replaced_by,
       created_at, started_at, :now
FROM tasks
WHERE id IN (SELECT value FROM json_each(:ids));

-- name: delete_tasks
DELETE FROM tasks WHERE id IN (SELECT value FROM json_each(?));

-- name: claim_candidates
-- Next dispatchable tasks in order, skipping groups that are full.
SELECT id, task_type, dedup_key, group_name, priority, payload, label, attempts, max_retries
FROM tasks
WHERE status = 'pending'
  AND task_type IN (SELECT value FROM json_each(:types))
  AND (run_after IS NULL OR run_after <= :now)
  AND (group_name IS NULL OR group_name NOT IN (SELECT value FROM json_each(:full_groups)))
ORDER BY priority, queue_pos
LIMIT :limit;

-- name: mark_running
UPDATE tasks
SET status = 'running', attempts = attempts + 1, started_at = :now, owner = :owner,
    run_after = NULL
WHERE id IN (SELECT value FROM json_each(:ids)) AND status = 'pending';

-- name: retry_later
UPDATE tasks
SET status = 'pending', owner = NULL, last_error = :error, run_after = :run_after
WHERE id = :id AND status = 'running' AND owner = :owner;

-- name: release_running
-- Give running attempts back to the queue without counting them as tries.
UPDATE tasks
SET status = 'pending', owner = NULL, attempts = MAX(attempts - 1, 0), started_at = NULL
WHERE id IN (SELECT value FROM json_each(:ids)) AND status = 'running' AND owner = :owner;

-- name: running_owners
SELECT DISTINCT owner FROM tasks WHERE status = 'running';

-- name: release_owner
UPDATE tasks
SET status = 'pending', owner = NULL, attempts = MAX(attempts - 1, 0), started_at = NULL
WHERE status = 'running' AND owner IS ?;

-- name: owned_running
SELECT id FROM tasks
WHERE id IN (SELECT value FROM json_each(:ids)) AND status = 'running' AND owner = :owner;

-- name: history_status
SELECT id, status, replaced_by FROM history WHERE id IN (SELECT value FROM json_each(?));

-- name: active_counts
SELECT status, COUNT(*) FROM tasks GROUP BY status;

-- name: history_counts
SELECT status, COUNT(*) FROM history GROUP BY status;

-- name: pending_count_for_types
SELECT COUNT(*) FROM tasks
WHERE status IN ('pending', 'running') AND task_type IN (SELECT value FROM json_each(?));

-- name: next_run_after
SELECT MIN(run_after) FROM tasks
WHERE status = 'pending' AND run_after IS NOT NULL
  AND task_type IN (SELECT value FROM json_each(?));

-- name: get_active
SELECT id, status FROM tasks WHERE id = ?;

-- name: set_status
UPDATE tasks SET status = :to WHERE id = :id AND status = :from;
