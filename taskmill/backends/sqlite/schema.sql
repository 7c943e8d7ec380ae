-- taskmill store schema, version 14 (the whole current schema; a store written by an
-- older version is brought here by the files in migrations/, see sql.py).
--
-- Parts: a table, index or trigger unchanged since the migration that created it is
-- written once, in a part file beside migrations/ named by what it creates (history.sql,
-- group_pauses.sql, rate_buckets.sql, attempts.sql, batches.sql, schedules.sql); this file
-- and that migration both say `-- include: part.sql` where it stands.  A part is released text: never edit it
-- (tests/test_migrations.py holds the digest of every migration with its parts in
-- place).  Changing such an object takes a new migration, and this file then writes the
-- object's new form itself instead of the include.  What differs from the migration's
-- version (workers, given `scope` by migration 005 and `held` by 014; history, given
-- `batch_id` by 007; tasks) is written here in full.
--
-- Active tasks (pending, running, paused) live in `tasks`; a task that finishes
-- moves, with the same id, to `history`.  Ids come from AUTOINCREMENT and are
-- never handed out twice, even after every task has finished.

CREATE TABLE taskmill_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- Active tasks (schema 8: rebuilt by migration 008 for the statuses `blocked` and
-- `waiting`; schema 9: `parent_id` and `finalizer`, added by migration 009, and schema
-- 10: `progress` and `progress_message`, by migration 010, where the text shows), with
-- their indexes.
CREATE TABLE tasks (
    id                    INTEGER PRIMARY KEY AUTOINCREMENT,
    task_type             TEXT    NOT NULL CHECK (task_type <> ''),
    dedup_key             TEXT             CHECK (dedup_key <> ''),
    group_name            TEXT,
    priority              INTEGER NOT NULL CHECK (priority BETWEEN 0 AND 255),
    -- queue order within a priority: a new task's own id; a task that supersedes
    -- a pending one inherits the replaced task's position
    queue_pos             INTEGER NOT NULL,
    -- blocked: waits for its dependencies (task_deps); waiting: a parent whose children
    -- run; neither is ever dispatched
    status                TEXT    NOT NULL DEFAULT 'pending'
                                  CHECK (status IN ('pending', 'running', 'paused', 'blocked',
                                                    'waiting')),
    payload               BLOB,
    label                 TEXT,
    expected_read_bytes   INTEGER NOT NULL DEFAULT 0 CHECK (expected_read_bytes >= 0),
    expected_write_bytes  INTEGER NOT NULL DEFAULT 0 CHECK (expected_write_bytes >= 0),
    expected_net_rx_bytes INTEGER NOT NULL DEFAULT 0 CHECK (expected_net_rx_bytes >= 0),
    expected_net_tx_bytes INTEGER NOT NULL DEFAULT 0 CHECK (expected_net_tx_bytes >= 0),
    max_retries           INTEGER          CHECK (max_retries >= 0),
    attempts              INTEGER NOT NULL DEFAULT 0,
    last_error            TEXT,
    run_after             REAL,            -- not dispatched before this time (retry backoff)
    owner                 TEXT,            -- the worker running it: 'host:pid:token'
    created_at            REAL    NOT NULL,
    started_at            REAL,
    key_hash              INTEGER,         -- taskmill/store/keys.py; NULL without a key
    expires_at            REAL,            -- not started by then: ends as 'expired'
    batch_id              INTEGER,         -- the batch that inserted it (NULL: a submit)
    on_dependency_failure TEXT             -- cancel (NULL), fail or ignore
, parent_id INTEGER, finalizer TEXT CHECK (finalizer IN ('wanted', 'due')), progress REAL, progress_message TEXT, preempted_at REAL);

-- One active task per (task_type, dedup_key), enforced by the database itself on
-- `key_hash`, a 64-bit hash of the pair.  A fixed-width key keeps this index small, so
-- inserts into a large store touch few of its pages.  The text stays the truth: a hash
-- match with a different text is a collision, refused (taskmill/store/keys.py).
CREATE UNIQUE INDEX tasks_active_key ON tasks (key_hash) WHERE key_hash IS NOT NULL;

-- Dispatch order: priority (0 first), then queue order.
CREATE INDEX tasks_queue ON tasks (status, priority, queue_pos);

-- Tasks waiting for a start time or a retry backoff (run_after is only set on those).
CREATE INDEX tasks_retry ON tasks (run_after) WHERE run_after IS NOT NULL;

-- Tasks that expire if not started in time.
CREATE INDEX tasks_expiry ON tasks (expires_at) WHERE expires_at IS NOT NULL;

-- The tasks of each batch: its counts and whether any of its tasks is still active.
CREATE INDEX tasks_batch ON tasks (batch_id) WHERE batch_id IS NOT NULL;

-- A parent's children (schema 9).
CREATE INDEX tasks_parent ON tasks (parent_id) WHERE parent_id IS NOT NULL;

-- Tasks paused by preemption (schema 11): resumed once no urgent task waits.
CREATE INDEX tasks_preempted ON tasks (preempted_at) WHERE preempted_at IS NOT NULL;

-- Finished tasks, with the same ids; `batch_id` (schema 7) sits last, where migration 007
-- added it.
CREATE TABLE history (
    id                    INTEGER PRIMARY KEY,   -- the task's own id
    task_type             TEXT    NOT NULL,
    dedup_key             TEXT,
    group_name            TEXT,
    priority              INTEGER NOT NULL,
    payload               BLOB,
    label                 TEXT,
    expected_read_bytes   INTEGER NOT NULL DEFAULT 0,
    expected_write_bytes  INTEGER NOT NULL DEFAULT 0,
    expected_net_rx_bytes INTEGER NOT NULL DEFAULT 0,
    expected_net_tx_bytes INTEGER NOT NULL DEFAULT 0,
    max_retries           INTEGER,
    status                TEXT    NOT NULL
                                  CHECK (status IN ('completed', 'failed', 'cancelled', 'superseded',
                                                    'expired')),
    attempts              INTEGER NOT NULL,
    last_error            TEXT,
    replaced_by           INTEGER,          -- for 'superseded': the task that replaced it
    created_at            REAL    NOT NULL,
    started_at            REAL,
    finished_at           REAL    NOT NULL, batch_id INTEGER, parent_id INTEGER
);

-- No index on history's keys (nothing looks them up; dropped in schema 3): a finished
-- task costs its row and this one index entry.
CREATE INDEX history_finished ON history (finished_at);
CREATE INDEX history_batch ON history (batch_id) WHERE batch_id IS NOT NULL;
CREATE INDEX history_parent ON history (parent_id) WHERE parent_id IS NOT NULL;

-- Workers and their leases (schema 2): a scheduler renews `heartbeat_at` while it
-- runs; a running task whose owner's lease ran out is pending again.  Schema 5:
-- `heartbeat_at` goes by the store's clock; `scope` is the worker's boot id and PID
-- namespace (NULL: unknown), without which no one judges it dead by its pid.  Schema 14:
-- `held`, what held the worker's groups back at its last claim (a JSON object {group, or
-- "type:T": reason}; NULL: nothing), written with its lease renewal when it changes.
CREATE TABLE workers (
    owner         TEXT    PRIMARY KEY,   -- 'host:pid:token', as in tasks.owner
    host          TEXT    NOT NULL,
    pid           INTEGER NOT NULL,
    lease_timeout REAL    NOT NULL CHECK (lease_timeout > 0),
    heartbeat_at  REAL    NOT NULL,
    started_at    REAL    NOT NULL,
    scope         TEXT,
    held          TEXT
) WITHOUT ROWID;

-- include: group_pauses.sql

-- include: rate_buckets.sql

-- include: attempts.sql

-- Batches as units of work (schema 7): every submit_batch that inserted a task.
-- include: batches.sql

-- What blocked tasks wait for (schema 8).
-- include: task_deps.sql

-- Tags (schema 12): a task's key: value labels, active or finished.
-- include: task_tags.sql

-- Schedules (schema 13): a task submitted at each occurrence, once.
-- include: schedules.sql
