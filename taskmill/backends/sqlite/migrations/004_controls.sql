-- Schema 4: the controls of a real sync.  Tasks may expire if not started in time (and
-- end as 'expired' in history); groups can be paused; rate limits keep token buckets in
-- the store.  SQLite cannot change a CHECK constraint, so history is rebuilt with the
-- new status (its rows copied as they are).
ALTER TABLE tasks ADD COLUMN expires_at REAL;
CREATE INDEX tasks_expiry ON tasks (expires_at) WHERE expires_at IS NOT NULL;
ALTER TABLE history RENAME TO history_v3;
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
    finished_at           REAL    NOT NULL
);
INSERT INTO history SELECT * FROM history_v3;
DROP TABLE history_v3;
CREATE INDEX history_finished ON history (finished_at);

-- Groups held by pause_group (schema 4): none of their tasks is dispatched until
-- `until` (NULL: until resume_group).
CREATE TABLE group_pauses (
    group_name TEXT PRIMARY KEY,
    until      REAL,
    paused_at  REAL NOT NULL
) WITHOUT ROWID;

-- Token buckets of the schedulers' rate limits (schema 4), shared by every scheduler on
-- the store: `key` is 'group:NAME' or 'type:TASK_TYPE'; the bucket held `tokens` at
-- `updated_at` and refills at the limit's rate up to its burst.
CREATE TABLE rate_buckets (
    key        TEXT PRIMARY KEY,
    tokens     REAL NOT NULL,
    updated_at REAL NOT NULL
) WITHOUT ROWID;
