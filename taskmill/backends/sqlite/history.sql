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
