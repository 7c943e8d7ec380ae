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
);

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
