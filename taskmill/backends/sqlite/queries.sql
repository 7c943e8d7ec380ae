-- Named queries of the task store, parsed once by taskmill.store.sql.
-- Parameters are always bound (`?` or `:name`); no SQL is built from data.
-- `+status` keeps the planner on the primary key where a statement names its ids
-- (the status index would scan every pending task).

-- name: find_active
-- The active task holding a key hash, with its text (a different text is a collision),
-- when it expires, and its parent (a task superseding it takes that parent on).
SELECT id, status, priority, queue_pos, task_type, dedup_key, expires_at, parent_id
FROM tasks
WHERE key_hash = ?;

-- name: expired_ids
-- Tasks not started by their expiry time (pending, waiting out a retry, or paused).
-- Through the expiry index, which only a plain `IS NOT NULL` lets the planner use (it has
-- no statistics); `+status` keeps it off the queue index, and ORDER BY off a rowid scan —
-- either would read every task on every batch merge.
SELECT id FROM tasks
WHERE expires_at IS NOT NULL AND expires_at <= :now AND +status IN ('pending', 'paused', 'blocked')
ORDER BY id;

-- name: take_write_lock
-- A no-op write: makes a deferred transaction take the store's write lock now.
UPDATE taskmill_meta SET value = value WHERE key = 'application';

-- name: next_id
SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'tasks'), 0);

-- name: insert_task
INSERT INTO tasks (
    id, task_type, dedup_key, group_name, priority, queue_pos, payload, label,
    expected_read_bytes, expected_write_bytes, expected_net_rx_bytes, expected_net_tx_bytes,
    max_retries, created_at, key_hash, run_after, expires_at, batch_id, on_dependency_failure,
    parent_id, status
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, 'pending');

-- name: upgrade_priority
UPDATE tasks SET priority = ? WHERE id = ? AND status = 'pending' AND priority > ?;

-- name: finish_to_history
-- Move active tasks (ids as a JSON array) to history with a final status.
INSERT INTO history (
    id, task_type, dedup_key, group_name, priority, payload, label,
    expected_read_bytes, expected_write_bytes, expected_net_rx_bytes, expected_net_tx_bytes,
    max_retries, status, attempts, last_error, replaced_by, created_at, started_at, finished_at,
    batch_id, parent_id
)
SELECT id, task_type, dedup_key, group_name, priority, payload, label,
       expected_read_bytes, expected_write_bytes, expected_net_rx_bytes, expected_net_tx_bytes,
       max_retries, :status, attempts, COALESCE(:error, last_error), :replaced_by,
       created_at, started_at, :now, batch_id, parent_id
FROM tasks
WHERE id IN (SELECT value FROM json_each(:ids));

-- name: delete_tasks
DELETE FROM tasks WHERE id IN (SELECT value FROM json_each(?)) RETURNING id, parent_id;

-- name: claim_candidates
-- Next dispatchable tasks in order, skipping held groups (full, over their budget, out of
-- tokens, paused) and held task types, with each task's four expected figures (summed in
-- Python: SQLite's integers are 64 bits, and a sum past them would turn into a float).
SELECT id, task_type, dedup_key, group_name, priority, payload, label, attempts, max_retries,
       finalizer, queue_pos, created_at, expected_read_bytes, expected_write_bytes,
       expected_net_rx_bytes, expected_net_tx_bytes
FROM tasks
WHERE status = 'pending'
  AND task_type IN (SELECT value FROM json_each(:types))
  AND (run_after IS NULL OR run_after <= :now)
  AND (expires_at IS NULL OR expires_at > :now)
  AND (group_name IS NULL OR group_name NOT IN (SELECT value FROM json_each(:full_groups)))
  AND (group_name IS NULL OR group_name NOT IN (
      SELECT group_name FROM group_pauses WHERE until IS NULL OR until > :now))
ORDER BY priority, queue_pos
LIMIT :limit;

-- name: pending_levels
-- The priorities of the pending tasks, most urgent first: one probe of tasks_queue per
-- level (aging claims the first tasks of each level and orders them by their age).
WITH RECURSIVE level (p) AS (
    SELECT (SELECT min(priority) FROM tasks WHERE status = 'pending')
    UNION ALL
    SELECT (SELECT min(priority) FROM tasks WHERE status = 'pending' AND priority > level.p)
    FROM level
    WHERE level.p IS NOT NULL
)
SELECT p FROM level WHERE p IS NOT NULL;

-- name: mark_running
UPDATE tasks
SET status = 'running', attempts = attempts + 1, started_at = :now, owner = :owner,
    run_after = NULL, progress = NULL, progress_message = NULL
WHERE id IN (SELECT value FROM json_each(:ids)) AND +status = 'pending';

-- name: store_progress
-- What running attempts last reported (ctx.progress): :rows as [id, attempt, fraction,
-- message], for attempts still running for :owner.
UPDATE tasks
SET progress = json_extract(r.value, '$[2]'), progress_message = json_extract(r.value, '$[3]')
FROM json_each(:rows) AS r
WHERE tasks.id = json_extract(r.value, '$[0]') AND +tasks.status = 'running'
  AND tasks.owner = :owner AND tasks.attempts = json_extract(r.value, '$[1]');

-- name: retry_later
UPDATE tasks
SET status = 'pending', owner = NULL, last_error = :error, run_after = :run_after
WHERE id = :id AND +status = 'running' AND owner = :owner;

-- name: release_running
-- Give running attempts back to the queue without counting them as tries.
UPDATE tasks
SET status = 'pending', owner = NULL, attempts = MAX(attempts - 1, 0), started_at = NULL
WHERE id IN (SELECT value FROM json_each(:ids)) AND +status = 'running' AND owner = :owner;

-- name: preempt_running
-- Pause running attempts to make room for more urgent work: not counted as tries, kept
-- in their queue place, marked preempted at :now.
UPDATE tasks
SET status = 'paused', owner = NULL, attempts = MAX(attempts - 1, 0), started_at = NULL,
    preempted_at = :now
WHERE id IN (SELECT value FROM json_each(:ids)) AND +status = 'running' AND owner = :owner;

-- name: urgent_waiting
-- How many tasks of :types at :priority or more urgent wait to start (at most :limit).
SELECT count(*) FROM (
    SELECT 1 FROM tasks
    WHERE status = 'pending' AND priority <= :priority
      AND task_type IN (SELECT value FROM json_each(:types))
      AND (run_after IS NULL OR run_after <= :now)
    LIMIT :limit
);

-- name: any_preempted
SELECT EXISTS (SELECT 1 FROM tasks WHERE preempted_at IS NOT NULL);

-- name: resume_preempted
-- Tasks paused by preemption go back to pending, in their queue place, when no task of
-- :types at :priority or more urgent waits to start.
UPDATE tasks SET status = 'pending', preempted_at = NULL
WHERE preempted_at IS NOT NULL AND +status = 'paused'
  AND NOT EXISTS (
      SELECT 1 FROM tasks AS u
      WHERE u.status = 'pending' AND u.priority <= :priority
        AND u.task_type IN (SELECT value FROM json_each(:types))
        AND (u.run_after IS NULL OR u.run_after <= :now));

-- name: running_per_group
-- Running tasks per group and their expected bytes, whoever runs them: group limits and
-- byte budgets hold across workers.  SQLite's integers are 64 bits and SUM() fails past
-- them, so the bytes come as two exact sums, of the high and the low 32 bits of each
-- figure (each fits unless 2^30 tasks run at once): bytes = high * 2^32 + low.
SELECT group_name, COUNT(*),
       SUM((expected_read_bytes >> 32) + (expected_write_bytes >> 32)
           + (expected_net_rx_bytes >> 32) + (expected_net_tx_bytes >> 32)),
       SUM((expected_read_bytes & 4294967295) + (expected_write_bytes & 4294967295)
           + (expected_net_rx_bytes & 4294967295) + (expected_net_tx_bytes & 4294967295))
FROM tasks
WHERE status = 'running' AND group_name IS NOT NULL
GROUP BY group_name;

-- name: rate_buckets
-- The stored token buckets of the given rate-limit keys (a JSON array).
SELECT key, tokens, updated_at FROM rate_buckets
WHERE key IN (SELECT value FROM json_each(:keys));

-- name: store_rate_bucket
INSERT INTO rate_buckets (key, tokens, updated_at) VALUES (:key, :tokens, :at)
ON CONFLICT (key) DO UPDATE SET tokens = excluded.tokens, updated_at = excluded.updated_at;

-- name: store_clock
-- The store's clock, in seconds since the epoch: every lease is judged by it.  A SQLite
-- store lives on one host, so this is the host's clock as SQLite reads it (a process's
-- own idea of the time never enters a lease).
SELECT (julianday('now') - 2440587.5) * 86400.0;

-- name: running_owner_leases
-- Each owner of running tasks: whether its lease ran out by :now (the store's clock when
-- NULL; NULL: it holds no lease), and the host, boot and PID namespace it runs in.
SELECT r.owner, w.heartbeat_at + w.lease_timeout < COALESCE(:now, (julianday('now') - 2440587.5) * 86400.0), w.scope
FROM (SELECT DISTINCT owner FROM tasks WHERE status = 'running') AS r
LEFT JOIN workers AS w ON w.owner = r.owner;

-- name: expired_workers
SELECT owner FROM workers WHERE heartbeat_at + lease_timeout < COALESCE(:now, (julianday('now') - 2440587.5) * 86400.0);

-- name: workers_held
-- What held groups back at the last claim of each worker whose lease runs at :now (the
-- store's clock when NULL), as it wrote it (schema 14), by owner.
SELECT held FROM workers
WHERE held IS NOT NULL AND heartbeat_at + lease_timeout >= COALESCE(:now, (julianday('now') - 2440587.5) * 86400.0)
ORDER BY owner;

-- name: register_worker
-- A lease starts by the store's clock, as every renewal does.
INSERT INTO workers (owner, host, pid, lease_timeout, heartbeat_at, started_at, scope)
VALUES (:owner, :host, :pid, :lease, (julianday('now') - 2440587.5) * 86400.0, (julianday('now') - 2440587.5) * 86400.0, :scope)
ON CONFLICT (owner) DO UPDATE
SET lease_timeout = excluded.lease_timeout, heartbeat_at = excluded.heartbeat_at,
    scope = excluded.scope
RETURNING heartbeat_at;

-- name: renew_worker
-- The store's time of the renewal (no row: the lease was taken away).  :held, what held
-- the worker's groups back (schema 14): NULL keeps what it wrote last, '' clears it.
UPDATE workers SET heartbeat_at = (julianday('now') - 2440587.5) * 86400.0,
    held = NULLIF(COALESCE(:held, held), '')
WHERE owner = :owner
RETURNING heartbeat_at;

-- name: renew_workers
-- A batch transaction renews the leases of this process's live workers last: while it
-- held the write lock no other process could renew or recover anything.
UPDATE workers SET heartbeat_at = (julianday('now') - 2440587.5) * 86400.0
WHERE owner IN (SELECT value FROM json_each(:owners));

-- name: forget_worker
DELETE FROM workers WHERE owner = ?;

-- name: forget_expired_worker
DELETE FROM workers
WHERE owner = :owner AND heartbeat_at + lease_timeout < COALESCE(:now, (julianday('now') - 2440587.5) * 86400.0);

-- name: release_expired_owner
-- An owner whose lease ran out: its tasks are pending again (unless it renewed meanwhile).
UPDATE tasks
SET status = 'pending', owner = NULL, attempts = MAX(attempts - 1, 0), started_at = NULL
WHERE status = 'running' AND owner = :owner
  AND NOT EXISTS (
      SELECT 1 FROM workers
      WHERE workers.owner = :owner
        AND heartbeat_at + lease_timeout >= COALESCE(:now, (julianday('now') - 2440587.5) * 86400.0)
  );

-- name: worker_list
-- Every registered worker with the tasks running for it now, by host and pid.
SELECT w.owner, w.host, w.pid, w.started_at, w.heartbeat_at, w.lease_timeout,
       COALESCE(r.running, 0)
FROM workers AS w
LEFT JOIN (
    SELECT owner, count(*) AS running FROM tasks WHERE status = 'running' GROUP BY owner
) AS r ON r.owner = w.owner
ORDER BY w.host, w.pid, w.owner;

-- name: owned_by
SELECT id FROM tasks WHERE status = 'running' AND owner = ?;

-- name: release_owner
UPDATE tasks
SET status = 'pending', owner = NULL, attempts = MAX(attempts - 1, 0), started_at = NULL
WHERE status = 'running' AND owner IS ?;

-- name: owned_running
-- :pairs is a JSON array of [id, attempt]; a null attempt matches any.
SELECT t.id
FROM json_each(:pairs) AS j
CROSS JOIN tasks AS t ON t.id = json_extract(j.value, '$[0]')
WHERE t.status = 'running' AND t.owner = :owner
  AND (json_extract(j.value, '$[1]') IS NULL OR t.attempts = json_extract(j.value, '$[1]'));

-- name: active_status
SELECT id, status FROM tasks WHERE id IN (SELECT value FROM json_each(?));

-- name: history_status
SELECT id, status, replaced_by FROM history WHERE id IN (SELECT value FROM json_each(?));

-- name: active_counts
SELECT status, COUNT(*) FROM tasks GROUP BY status;

-- name: history_counts
SELECT status, COUNT(*) FROM history GROUP BY status;

-- name: active_group_counts
-- Active tasks per group and status (never history): a metrics scrape's one read.
SELECT group_name, status, COUNT(*) FROM tasks GROUP BY group_name, status;

-- name: has_work_for_types
-- Pending or running, or paused by preemption (resumed by itself): each its own index.
SELECT EXISTS (
    SELECT 1 FROM tasks
    WHERE status IN ('pending', 'running') AND task_type IN (SELECT value FROM json_each(:types))
) OR EXISTS (
    SELECT 1 FROM tasks
    WHERE preempted_at IS NOT NULL AND task_type IN (SELECT value FROM json_each(:types))
);

-- name: next_run_after
-- The earliest time a waiting task may start: a start time or a retry coming due, or a
-- group's pause ending (any task type: an early wake-up costs one poll).
SELECT MIN(t) FROM (
    SELECT MIN(run_after) AS t FROM tasks WHERE run_after IS NOT NULL
    UNION ALL
    SELECT MIN(until) FROM group_pauses WHERE until > :now
);

-- name: pause_group
INSERT INTO group_pauses (group_name, until, paused_at) VALUES (:group, :until, :now)
ON CONFLICT (group_name) DO UPDATE SET until = excluded.until, paused_at = excluded.paused_at;

-- name: resume_group
DELETE FROM group_pauses WHERE group_name = :group;

-- name: waiting_for_start
-- Pending tasks per group that wait for a start time (or a retry's backoff) after :now.
SELECT group_name, COUNT(*) FROM tasks
WHERE status = 'pending' AND run_after > :now
GROUP BY group_name;

-- name: waiting_for_retry
-- Of those, the ones waiting out a retry's backoff: they were tried (a start time set at
-- submission is cleared when the task is first claimed, so attempts > 0 tells them apart).
SELECT group_name, COUNT(*) FROM tasks
WHERE status = 'pending' AND run_after > :now AND attempts > 0
GROUP BY group_name;

-- name: paused_groups
SELECT group_name, until FROM group_pauses WHERE until IS NULL OR until > :now
ORDER BY group_name;

-- name: get_active
SELECT id, status FROM tasks WHERE id = ?;

-- name: set_status
UPDATE tasks SET status = :to, preempted_at = NULL WHERE id = :id AND status = :from;

-- ------------------------------------------------------------------ batches
-- A batch part is bulk-copied by DuckDB into a separate staging SQLite file
-- (attached here as `taskmill_stage`), then merged set-based.

-- name: staging_schema
CREATE TABLE s (
    ord                   INTEGER PRIMARY KEY,   -- the input row index
    pos                   INTEGER NOT NULL,      -- 1, 2, … over the staged rows, in ord order
    task_type             TEXT    NOT NULL,
    dedup_key             TEXT,
    group_name            TEXT,
    priority              INTEGER NOT NULL,
    payload               BLOB,
    label                 TEXT,
    expected_read_bytes   INTEGER NOT NULL,
    expected_write_bytes  INTEGER NOT NULL,
    expected_net_rx_bytes INTEGER NOT NULL,
    expected_net_tx_bytes INTEGER NOT NULL,
    max_retries           INTEGER,
    strategy              TEXT    NOT NULL,
    run_after             REAL,
    expires_at            REAL,
    on_dependency_failure TEXT,
    key_hash              INTEGER                -- filled by DuckDB (taskmill/store/keys.py)
);

-- name: batch_match_create
CREATE TEMP TABLE IF NOT EXISTS batch_match (
    ord          INTEGER PRIMARY KEY,
    strategy     TEXT    NOT NULL,
    new_priority INTEGER NOT NULL,
    old_id       INTEGER NOT NULL,
    old_status   TEXT    NOT NULL,
    old_priority INTEGER NOT NULL,
    old_pos      INTEGER NOT NULL,
    same         INTEGER NOT NULL                -- 0: a key hash collision, not a duplicate
);

-- name: batch_match_clear
DELETE FROM temp.batch_match;

-- name: batch_match_fill
-- The one indexed join: every staged row probes the active-key index.  A task expired by
-- :now is left out (a merge has moved those to history already; a plan must not count
-- them, as the submit would expire them first).
INSERT INTO temp.batch_match
SELECT s.ord, s.strategy, s.priority, t.id, t.status, t.priority, t.queue_pos,
       t.task_type = s.task_type AND t.dedup_key = s.dedup_key
FROM taskmill_stage.s AS s
CROSS JOIN main.tasks AS t ON t.key_hash = s.key_hash
WHERE s.key_hash IS NOT NULL
  AND (t.expires_at IS NULL OR t.expires_at > :now OR t.status = 'running');

-- name: batch_match_retried
-- For retry_failed (:pairs, a JSON array of [ord, failure id]: the keyed staged rows with
-- no active match and the history row each one retries): a row whose key has a history
-- record newer than its failure — the failure was retried meanwhile, by another call,
-- and that retry has finished, or the key went through otherwise — is matched with the
-- newest such record, so it is deduplicated, never inserted.  Run in the merge, under the
-- write lock: no other retry of the failure commits between this check and the insert.
-- One scan of history from the oldest failure (:floor) probing an index on the rows.
WITH retried AS MATERIALIZED (
    SELECT s.ord, s.strategy, s.priority, s.task_type, s.dedup_key,
           json_extract(p.value, '$[1]') AS failed_id
    FROM json_each(:pairs) AS p
    JOIN taskmill_stage.s AS s ON s.ord = json_extract(p.value, '$[0]')
)
INSERT OR IGNORE INTO temp.batch_match
SELECT r.ord, r.strategy, r.priority, max(later.id), later.status, later.priority, 0, 1
FROM main.history AS later
CROSS JOIN retried AS r
    ON r.task_type = later.task_type AND r.dedup_key = later.dedup_key
   AND later.id > r.failed_id
WHERE later.id > :floor
GROUP BY r.ord;

-- name: batch_match_read
SELECT ord, old_id, old_status, old_priority, old_pos, same FROM temp.batch_match ORDER BY ord;

-- name: batch_supersede_to_history
-- :pairs is a JSON array of [old_id, new_id].
INSERT INTO history (
    id, task_type, dedup_key, group_name, priority, payload, label,
    expected_read_bytes, expected_write_bytes, expected_net_rx_bytes, expected_net_tx_bytes,
    max_retries, status, attempts, last_error, replaced_by, created_at, started_at, finished_at,
    batch_id, parent_id
)
SELECT t.id, t.task_type, t.dedup_key, t.group_name, t.priority, t.payload, t.label,
       t.expected_read_bytes, t.expected_write_bytes, t.expected_net_rx_bytes,
       t.expected_net_tx_bytes, t.max_retries, 'superseded', t.attempts, t.last_error,
       json_extract(j.value, '$[1]'), t.created_at, t.started_at, :now, t.batch_id, t.parent_id
FROM json_each(:pairs) AS j
JOIN main.tasks AS t ON t.id = json_extract(j.value, '$[0]');

-- name: batch_delete_superseded
DELETE FROM main.tasks
WHERE id IN (SELECT json_extract(value, '$[0]') FROM json_each(:pairs))
RETURNING id, parent_id;

-- name: batch_upgrade
UPDATE main.tasks SET priority = m.new_priority
FROM temp.batch_match AS m
WHERE tasks.id = m.old_id AND tasks.status = 'pending'
  AND m.strategy = 'skip' AND m.same AND m.new_priority < m.old_priority;

-- name: batch_insert
-- New ids follow input order; a task superseding a pending one takes its queue place.
-- This form is for parts where every staged row is inserted (none was skipped or
-- rejected against the store): the n-th staged row gets id :base + n.
INSERT INTO main.tasks (
    id, task_type, dedup_key, group_name, priority, queue_pos, payload, label,
    expected_read_bytes, expected_write_bytes, expected_net_rx_bytes, expected_net_tx_bytes,
    max_retries, created_at, key_hash, run_after, expires_at, batch_id, on_dependency_failure,
    parent_id, status
)
SELECT :base + s.pos, s.task_type, s.dedup_key, s.group_name, s.priority,
       CASE WHEN m.old_status = 'pending' THEN m.old_pos ELSE :base + s.pos END,
       s.payload, s.label, s.expected_read_bytes, s.expected_write_bytes,
       s.expected_net_rx_bytes, s.expected_net_tx_bytes, s.max_retries, :now, s.key_hash,
       s.run_after, s.expires_at, :batch_id, s.on_dependency_failure, :parent_id,
       CASE WHEN s.ord IN (SELECT value FROM json_each(:blocked)) THEN 'blocked'
            ELSE 'pending' END
FROM taskmill_stage.s AS s
LEFT JOIN temp.batch_match AS m ON m.ord = s.ord;

-- name: batch_insert_ranked
-- The same when some staged rows are not inserted: ids are ranked over the inserted rows.
INSERT INTO main.tasks (
    id, task_type, dedup_key, group_name, priority, queue_pos, payload, label,
    expected_read_bytes, expected_write_bytes, expected_net_rx_bytes, expected_net_tx_bytes,
    max_retries, created_at, key_hash, run_after, expires_at, batch_id, on_dependency_failure,
    parent_id, status
)
SELECT :base + ROW_NUMBER() OVER w, s.task_type, s.dedup_key, s.group_name, s.priority,
       CASE WHEN m.old_status = 'pending' THEN m.old_pos ELSE :base + ROW_NUMBER() OVER w END,
       s.payload, s.label, s.expected_read_bytes, s.expected_write_bytes,
       s.expected_net_rx_bytes, s.expected_net_tx_bytes, s.max_retries, :now, s.key_hash,
       s.run_after, s.expires_at, :batch_id, s.on_dependency_failure, :parent_id,
       CASE WHEN s.ord IN (SELECT value FROM json_each(:blocked)) THEN 'blocked'
            ELSE 'pending' END
FROM taskmill_stage.s AS s
LEFT JOIN temp.batch_match AS m ON m.ord = s.ord
WHERE m.ord IS NULL OR (m.strategy = 'supersede' AND m.same)
WINDOW w AS (ORDER BY s.ord);

-- ------------------------------------------------------------------ dependencies (schema 8)
-- Edges of blocked tasks (task_deps), written by a batch's transactions and settled by
-- every way of ending a task (taskmill/backends/depends.py).  Arguments are JSON arrays.

-- name: deps_insert
-- Edges as [task_id, depends_on, on_row] triples of batch :batch_id.
INSERT INTO task_deps (task_id, depends_on, batch_id, on_row)
SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),
       CASE WHEN json_extract(value, '$[1]') IS NULL THEN :batch_id END,
       json_extract(value, '$[2]')
FROM json_each(:edges);

-- name: deps_rows_create
CREATE TEMP TABLE IF NOT EXISTS dep_rows (row INTEGER PRIMARY KEY, task_id INTEGER NOT NULL);

-- name: deps_rows_fill
-- Rows of a batch merged now, as [row, task_id] pairs (the temp table emptied first).
INSERT INTO temp.dep_rows (row, task_id)
SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(:pairs);

-- name: deps_rows_clear
DELETE FROM temp.dep_rows;

-- name: deps_resolve_rows
-- The edges of earlier transactions of batch :batch_id that named rows merged now (in
-- temp.dep_rows) name their tasks.
UPDATE task_deps
SET depends_on = (SELECT r.task_id FROM temp.dep_rows AS r WHERE r.row = task_deps.on_row),
    batch_id = NULL, on_row = NULL
WHERE depends_on IS NULL AND batch_id = :batch_id
  AND on_row IN (SELECT row FROM temp.dep_rows);

-- name: deps_unmerged
-- The edges of batch :batch_id still on rows it never merged, with each dependent's
-- policy (the batch stopped before merging them).
SELECT d.task_id, t.on_dependency_failure
FROM task_deps AS d
JOIN tasks AS t ON t.id = d.task_id
WHERE d.depends_on IS NULL AND d.batch_id = :batch_id
ORDER BY d.task_id;

-- name: deps_unmerged_drop
DELETE FROM task_deps WHERE depends_on IS NULL AND batch_id = :batch_id;

-- name: deps_dependents
-- The edges on :ids, with each dependent's policy.
SELECT d.task_id, d.depends_on, t.on_dependency_failure
FROM task_deps AS d
JOIN tasks AS t ON t.id = d.task_id
WHERE d.depends_on IN (SELECT value FROM json_each(:ids))
ORDER BY d.task_id;

-- name: deps_drop
-- Edges :pairs ([task_id, depends_on]) go.
DELETE FROM task_deps
WHERE depends_on IN (SELECT json_extract(value, '$[1]') FROM json_each(:pairs))
  AND (task_id, depends_on) IN (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]')
                                FROM json_each(:pairs));

-- name: deps_forget
-- The edges of tasks :ids (they ended).
DELETE FROM task_deps WHERE task_id IN (SELECT value FROM json_each(:ids));

-- name: deps_retarget
-- Edges on a superseded task name its successor: :pairs as [old, new].
UPDATE task_deps
SET depends_on = p.new
FROM (SELECT json_extract(value, '$[0]') AS old, json_extract(value, '$[1]') AS new
      FROM json_each(:pairs)) AS p
WHERE task_deps.depends_on = p.old;

-- name: deps_release
-- Tasks :ids still blocked with no edge left: pending again, in their queue place.
UPDATE tasks SET status = 'pending'
WHERE id IN (SELECT value FROM json_each(:ids)) AND +status = 'blocked'
  AND NOT EXISTS (SELECT 1 FROM task_deps AS d WHERE d.task_id = tasks.id);

-- name: deps_task_states
-- The tasks :ids wherever they are: [id, NULL, NULL] while active, [id, status,
-- replaced_by] once in history.
SELECT id, NULL, NULL FROM tasks WHERE id IN (SELECT value FROM json_each(:ids))
UNION ALL
SELECT id, status, replaced_by FROM history WHERE id IN (SELECT value FROM json_each(:ids));

-- name: deps_by_key
-- The active tasks of the [key_hash, task_type, dedup_key] triples :triples.
SELECT t.id, t.dedup_key
FROM json_each(:triples) AS j
JOIN tasks AS t ON t.key_hash = json_extract(j.value, '$[0]')
WHERE t.task_type = json_extract(j.value, '$[1]')
  AND t.dedup_key = json_extract(j.value, '$[2]');

-- name: deps_awaited
-- What the tasks :ids still wait for, as [task_id, depends_on] (in order).
SELECT task_id, depends_on FROM task_deps
WHERE task_id IN (SELECT value FROM json_each(:ids)) AND depends_on IS NOT NULL
ORDER BY task_id, depends_on;

-- ------------------------------------------------------------------ child tasks (schema 9)
-- Parents and children, settled by every way of ending a task (taskmill/backends/family.py).
-- Arguments are JSON arrays.

-- name: family_children
-- The active children of the tasks :ids, as [child, parent].
SELECT id, parent_id FROM tasks
WHERE parent_id IN (SELECT value FROM json_each(:ids))
ORDER BY id;

-- name: family_adopt
-- Each [task, parent] of :pairs: the task (a superseded child's successor) becomes the
-- parent's child, unless it has a parent of its own.
UPDATE tasks
SET parent_id = p.parent
FROM (SELECT json_extract(value, '$[0]') AS task, json_extract(value, '$[1]') AS parent
      FROM json_each(:pairs)) AS p
WHERE tasks.id = p.task AND tasks.parent_id IS NULL;

-- name: family_parents
-- The active tasks :ids with their status and finalizer (a single writer: nothing to lock).
SELECT id, status, finalizer FROM tasks
WHERE id IN (SELECT value FROM json_each(:ids))
ORDER BY id;

-- name: family_busy
-- Which of the tasks :ids have an active child.
SELECT DISTINCT parent_id FROM tasks WHERE parent_id IN (SELECT value FROM json_each(:ids));

-- name: family_tallies
-- The finished children of the tasks :ids, as [parent, status, count].
SELECT parent_id, status, COUNT(*) FROM history
WHERE parent_id IN (SELECT value FROM json_each(:ids))
GROUP BY parent_id, status;

-- name: family_counts
-- The children of the tasks :ids, active and finished, as [parent, status, count].
SELECT parent_id, status, COUNT(*) FROM tasks
WHERE parent_id IN (SELECT value FROM json_each(:ids))
GROUP BY parent_id, status
UNION ALL
SELECT parent_id, status, COUNT(*) FROM history
WHERE parent_id IN (SELECT value FROM json_each(:ids))
GROUP BY parent_id, status;

-- name: family_due
-- Waiting parents :ids whose children all ended: pending again, in their queue place, for
-- the claim to run their finalizer (a task that started never expires).
UPDATE tasks SET status = 'pending', finalizer = 'due', expires_at = NULL
WHERE id IN (SELECT value FROM json_each(:ids)) AND +status = 'waiting';

-- name: family_wait
-- The running task :id waits for its children, holding no slot.
UPDATE tasks SET status = 'waiting', finalizer = :finalizer, owner = NULL
WHERE id = :id AND status = 'running';

-- name: family_running
-- Whether task :id runs (a batch spawning its children checks it first).
SELECT 1 FROM tasks WHERE id = :id AND status = 'running';

-- ------------------------------------------------------------------ schedules (schema 10)
-- A schedule's row, whole, is these columns in this order (taskmill/backends/schedules.py
-- reads it by position).  An occurrence is claimed by the transaction that submits its
-- task: it reads the row while `next_at` is still the occurrence it saw due
-- (schedule_claim) and moves `next_at` on (schedule_fired); SQLite's write lock, held by
-- every write, keeps any other scheduler out until it commits.

-- name: schedule_get
SELECT name, task_type, submission, payload, every_us, cron, timezone, start_at, anchor,
       next_at, last_at, last_task_id, skipped, missed, paused, created_at, updated_at
FROM schedules WHERE name = :name;

-- name: schedule_claim
-- Schedule :name while its next occurrence is still :seen and it is not paused (none:
-- another scheduler fired it first, or it was paused, replaced or removed meanwhile).
SELECT name, task_type, submission, payload, every_us, cron, timezone, start_at, anchor,
       next_at, last_at, last_task_id, skipped, missed, paused, created_at, updated_at
FROM schedules WHERE name = :name AND next_at = :seen AND paused = 0;

-- name: schedule_rows
SELECT name, task_type, submission, payload, every_us, cron, timezone, start_at, anchor,
       next_at, last_at, last_task_id, skipped, missed, paused, created_at, updated_at
FROM schedules ORDER BY name;

-- name: schedule_put
-- Create schedule :name, or replace it whole (what was kept is passed back in).
INSERT INTO schedules (name, task_type, submission, payload, every_us, cron, timezone,
                       start_at, anchor, next_at, last_at, last_task_id, skipped, missed,
                       paused, created_at, updated_at)
VALUES (:name, :task_type, :submission, :payload, :every_us, :cron, :timezone, :start_at,
        :anchor, :next_at, :last_at, :last_task_id, :skipped, :missed, :paused,
        :created_at, :updated_at)
ON CONFLICT (name) DO UPDATE SET
    task_type = excluded.task_type, submission = excluded.submission,
    payload = excluded.payload, every_us = excluded.every_us, cron = excluded.cron,
    timezone = excluded.timezone, start_at = excluded.start_at, anchor = excluded.anchor,
    next_at = excluded.next_at, last_at = excluded.last_at,
    last_task_id = excluded.last_task_id, skipped = excluded.skipped,
    missed = excluded.missed, paused = excluded.paused, updated_at = excluded.updated_at;

-- name: schedule_fired
-- An occurrence of :name was fired (its task submitted, or it was skipped: :skipped 1),
-- the :missed ones before it not replayed.
UPDATE schedules
SET next_at = :next_at, last_at = :last_at, last_task_id = :last_task_id,
    skipped = skipped + :skipped, missed = missed + :missed, updated_at = :now
WHERE name = :name;

-- name: schedule_set_paused
UPDATE schedules SET paused = :paused, next_at = :next_at, updated_at = :now
WHERE name = :name;

-- name: schedule_delete
DELETE FROM schedules WHERE name = :name;

-- name: schedules_due
-- The schedules due at :now, earliest first (the partial index on next_at).
SELECT name, task_type, submission, payload, every_us, cron, timezone, start_at, anchor,
       next_at, last_at, last_task_id, skipped, missed, paused, created_at, updated_at
FROM schedules
WHERE paused = 0 AND next_at <= :now
ORDER BY next_at LIMIT :limit;

-- name: schedules_next
-- When the next occurrence of any schedule comes due (no row: none will).
SELECT next_at FROM schedules
WHERE paused = 0 AND next_at IS NOT NULL
ORDER BY next_at LIMIT 1;

-- name: schedule_task_status
-- The status of active task :id (no row: it finished, or never was).
SELECT status FROM tasks WHERE id = :id;

-- ------------------------------------------------------------------ batches as units of work (schema 7)
-- A batch's row is written by the transactions that insert its tasks (batch_open in the
-- first, batch_grow in each); it is sealed once the submission ended, and finished by the
-- first sweep (batches_done, batch_tallies, batch_finish) that finds it sealed with none
-- of its tasks active.

-- name: batch_open
INSERT INTO batches (name, created_at) VALUES (:name, :now) RETURNING id;

-- name: batch_grow
-- A transaction of batch :id inserted :n tasks; :sealed (0 or 1): the submission's last.
UPDATE batches SET total = total + :n, sealed = MAX(sealed, :sealed) WHERE id = :id;

-- name: batch_seal
-- The submission of batch :id ended before its last transaction (it stopped).
UPDATE batches SET sealed = 1 WHERE id = :id;

-- name: batch_rows
-- Batches as stored, newest first, at most :limit (NULL: all).
SELECT id, name, created_at, sealed, total, finished_at, completed, failed, cancelled,
       superseded, expired, expected_bytes, completed_bytes
FROM batches
ORDER BY id DESC
LIMIT COALESCE(:limit, -1);

-- name: batch_row
-- Batch :id as stored (the columns of batch_rows).
SELECT id, name, created_at, sealed, total, finished_at, completed, failed, cancelled,
       superseded, expired, expected_bytes, completed_bytes
FROM batches
WHERE id = :id;

-- name: batch_tallies
-- The tasks of the batches :ids (a JSON array), active and finished, by batch and status:
-- how many, their expected bytes, the last finish (NULL for active ones).
SELECT batch_id, status, COUNT(*), TOTAL(expected_read_bytes + expected_write_bytes + expected_net_rx_bytes + expected_net_tx_bytes), NULL
FROM tasks
WHERE batch_id IN (SELECT value FROM json_each(:ids))
GROUP BY batch_id, status
UNION ALL
SELECT batch_id, status, COUNT(*), TOTAL(expected_read_bytes + expected_write_bytes + expected_net_rx_bytes + expected_net_tx_bytes), MAX(finished_at)
FROM history
WHERE batch_id IN (SELECT value FROM json_each(:ids))
GROUP BY batch_id, status;

-- name: batches_done
-- The sealed batches not finished yet with none of their tasks active.
SELECT b.id FROM batches AS b
WHERE b.finished_at IS NULL AND b.sealed
  AND NOT EXISTS (SELECT 1 FROM tasks AS t WHERE t.batch_id = b.id);

-- name: batch_finish
-- Finish batch :id with its counts frozen, unless finished already or a task of it is
-- active.
UPDATE batches
SET finished_at = :finished_at, completed = :completed, failed = :failed,
    cancelled = :cancelled, superseded = :superseded, expired = :expired,
    expected_bytes = :expected_bytes, completed_bytes = :completed_bytes
WHERE id = :id AND finished_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM tasks AS t WHERE t.batch_id = :id);

-- ------------------------------------------------------------------ retention
-- prune_history: the ids are selected once, their rows exported, then deleted in
-- transactions of a few thousand ids (taskmill/store/retention.py); the export under way
-- is recorded in taskmill_meta (meta_*) until it is published.

-- name: prune_select
-- Ids of the finished tasks a prune removes: finished before :cutoff (+inf: any time),
-- and older than the :keep_last most recently finished (NULL: none held back) — the
-- kept rows begin at the :keep_last-th newest by (finished_at, id); with fewer rows
-- than that, nothing is older.  Walks history_finished from its oldest end.
SELECT id FROM history
WHERE finished_at < :cutoff
  AND (:keep_last IS NULL
       OR (finished_at, id) < (SELECT finished_at, id FROM history
                               ORDER BY finished_at DESC, id DESC
                               LIMIT 1 OFFSET :keep_last - 1));

-- name: prune_rows
-- The rows of ids (a JSON array) as history() shows them.
SELECT id, task_type, dedup_key, group_name AS "group", priority, status, payload, label,
       expected_read_bytes, expected_write_bytes, expected_net_rx_bytes,
       expected_net_tx_bytes, max_retries, attempts, last_error, replaced_by, created_at,
       started_at, finished_at, batch_id, parent_id
FROM history
WHERE id IN (SELECT value FROM json_each(?))
ORDER BY id;

-- name: prune_delete
DELETE FROM history WHERE id IN (SELECT value FROM json_each(?));

-- name: meta_get
SELECT value FROM taskmill_meta WHERE key = ?;

-- name: meta_set
INSERT INTO taskmill_meta (key, value) VALUES (?, ?)
ON CONFLICT (key) DO UPDATE SET value = excluded.value;

-- name: meta_delete
DELETE FROM taskmill_meta WHERE key = ?;

-- ------------------------------------------------------------------ bulk control

-- name: active_task_types
SELECT DISTINCT task_type FROM tasks;

-- name: cancel_candidates
-- The next active tasks a bulk cancel takes, by id, after :after and up to :last (the
-- last id handed out when the cancel began, query next_id).  A NULL filter (a JSON
-- array) matches everything; :statuses is always given.
SELECT id FROM tasks
WHERE id > :after AND id <= :last
  AND status IN (SELECT value FROM json_each(:statuses))
  AND (:types IS NULL OR task_type IN (SELECT value FROM json_each(:types)))
  AND (:groups IS NULL OR group_name IN (SELECT value FROM json_each(:groups)))
  AND (:labels IS NULL OR label IN (SELECT value FROM json_each(:labels)))
  AND (:tags IS NULL OR id IN {fragment_tagged})
ORDER BY id
LIMIT :limit;

-- name: fragment_tagged
-- The tasks carrying every pair of :tags, a JSON array of [key, value] with the rarest pair
-- first (the store orders them): that pair's tasks through task_tags_pair, each checked for
-- the others through the primary key — never every task of a common pair.
(SELECT g.task_id FROM task_tags AS g
 WHERE g.key = json_extract(:tags, '$[0][0]') AND g.value = json_extract(:tags, '$[0][1]')
   AND NOT EXISTS (
       SELECT 1 FROM json_each(:tags) AS p
       WHERE p.key > 0 AND NOT EXISTS (
           SELECT 1 FROM task_tags AS o
           WHERE o.task_id = g.task_id AND o.key = json_extract(p.value, '$[0]')
             AND o.value = json_extract(p.value, '$[1]'))))

-- name: fragment_tags_carried
-- The row `t` carries every pair of :tags (a JSON array of [key, value]), each looked up
-- through task_tags' primary key: what a walk of the tasks by id checks when the pairs are
-- common (fragment_tagged reads the rarest pair's tasks instead).
NOT EXISTS (
    SELECT 1 FROM json_each(:tags) AS p
    WHERE NOT EXISTS (
        SELECT 1 FROM task_tags AS o
        WHERE o.task_id = t.id AND o.key = json_extract(p.value, '$[0]')
          AND o.value = json_extract(p.value, '$[1]')))

-- name: tag_pair_count
-- How many tasks carry the pair :key, :value, counted up to :cap.
SELECT count(*) FROM (SELECT 1 FROM task_tags WHERE key = :key AND value = :value LIMIT :cap);

-- name: tags_insert
-- The tags of tasks just inserted: :rows is a JSON array of [task id, key, value].
INSERT INTO task_tags (task_id, key, value)
SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]')
FROM json_each(:rows);

-- name: tags_of
-- The tags of the tasks :ids (a JSON array), active or finished, by task and key.
SELECT task_id, key, value FROM task_tags
WHERE task_id IN (SELECT value FROM json_each(:ids))
ORDER BY task_id, key;

-- name: cancel_candidates_by_key
-- The active tasks holding the keys of :triples, a JSON array of [key hash, task type,
-- dedup key], found through the active-key index (the texts checked: a hash collision is
-- not a match), with the filters of cancel_candidates.
SELECT t.id
FROM json_each(:triples) AS p
CROSS JOIN tasks AS t ON t.key_hash = json_extract(p.value, '$[0]')
WHERE t.task_type = json_extract(p.value, '$[1]')
  AND t.dedup_key = json_extract(p.value, '$[2]')
  AND t.id <= :last
  AND t.status IN (SELECT value FROM json_each(:statuses))
  AND (:groups IS NULL OR t.group_name IN (SELECT value FROM json_each(:groups)))
  AND (:labels IS NULL OR t.label IN (SELECT value FROM json_each(:labels)))
  AND (:tags IS NULL OR t.id IN {fragment_tagged});

-- name: failed_to_retry
-- The failed tasks of history to submit again, in history order, each with its id: those
-- matching the filters (NULL: any) that finished at or after :since (NULL: ever), except
-- a keyed one that is no longer the latest record of its key (something later happened
-- to the key; checked again by the merge, batch_match_retried).  The later records are
-- found by one scan of history probing an index on the failures.
WITH failed AS MATERIALIZED (
    SELECT id, task_type, dedup_key FROM history
    WHERE status = 'failed' AND {fragment_retry_filters}
), followed AS (
    SELECT f.id
    FROM history AS later
    CROSS JOIN failed AS f
        ON f.task_type = later.task_type AND f.dedup_key = later.dedup_key
       AND later.id > f.id
)
SELECT h.id, h.task_type, h.dedup_key, h.group_name, h.priority, h.payload, h.label,
       h.expected_read_bytes, h.expected_write_bytes, h.expected_net_rx_bytes,
       h.expected_net_tx_bytes, h.max_retries
FROM failed AS f
CROSS JOIN history AS h ON h.id = f.id
WHERE f.id NOT IN (SELECT id FROM followed)
ORDER BY h.id;

-- name: failed_to_retry_ids
-- failed_to_retry narrowed to the failures of the task ids :ids (a JSON array), found by
-- id; a keyed one is checked against the history rows after it alone (a walk of history's
-- ids above its own), so retrying a recent failure reads little of history.
SELECT h.id, h.task_type, h.dedup_key, h.group_name, h.priority, h.payload, h.label,
       h.expected_read_bytes, h.expected_write_bytes, h.expected_net_rx_bytes,
       h.expected_net_tx_bytes, h.max_retries
FROM history AS h
WHERE h.id IN (SELECT value FROM json_each(:ids)) AND h.status = 'failed'
  AND {fragment_retry_filters}
  AND NOT EXISTS (
      SELECT 1 FROM history AS later
      WHERE later.id > h.id AND later.task_type = h.task_type
        AND later.dedup_key = h.dedup_key)
ORDER BY h.id;

-- name: fragment_retry_filters
-- The filters of a retry of failures on a history row (NULL: any).
(:types IS NULL OR task_type IN (SELECT value FROM json_each(:types)))
      AND (:groups IS NULL OR group_name IN (SELECT value FROM json_each(:groups)))
      AND (:since IS NULL OR finished_at >= :since)

-- name: throughput
-- The tasks that ended from :start until before :end, per minute (of Unix time:
-- floor(finished_at / 60)) and final status: a range of history_finished.
SELECT CAST(finished_at / 60 AS INTEGER) AS minute, status, count(*)
FROM history
WHERE finished_at >= :start AND finished_at < :end
GROUP BY minute, status;

-- name: recent_counts
-- Every active task, and the tasks that ended at :since or later (a range of
-- history_finished), per group, task type and status.
SELECT group_name, task_type, status, count(*) FROM tasks GROUP BY 1, 2, 3
UNION ALL
SELECT group_name, task_type, status, count(*) FROM history
WHERE finished_at >= :since
GROUP BY 1, 2, 3;

-- ------------------------------------------------------------------ attempts (schema 6)

-- name: attempt_traceback
-- The last frames of a failed attempt's traceback, on the row its trigger just wrote.
UPDATE attempts SET traceback = :traceback
WHERE id = (SELECT MAX(id) FROM attempts WHERE task_id = :id);

-- name: attempts_mark
-- The newest attempt recorded so far: a recovery marks the ones it adds after it.
SELECT COALESCE(MAX(id), 0) FROM attempts;

-- name: attempts_lost
-- Attempts a recovery gave back (released by the trigger) were lost with their worker.
UPDATE attempts SET outcome = 'lost', error = :why
WHERE id > :mark AND outcome = 'released' AND worker IS :owner;

-- name: select_attempts_of
-- The recorded attempts of some tasks (:ids a JSON array), newest first.
SELECT task_id, attempt, worker, started_at, finished_at, outcome, error, traceback
FROM attempts
WHERE task_id IN (SELECT value FROM json_each(:ids))
  AND (:outcomes IS NULL OR outcome IN (SELECT value FROM json_each(:outcomes)))
ORDER BY id DESC
LIMIT :limit;

-- name: select_attempts
-- Every recorded attempt, newest first.
SELECT task_id, attempt, worker, started_at, finished_at, outcome, error, traceback
FROM attempts
WHERE (:outcomes IS NULL OR outcome IN (SELECT value FROM json_each(:outcomes)))
ORDER BY id DESC
LIMIT :limit;
