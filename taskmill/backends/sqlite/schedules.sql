CREATE TABLE schedules (
    name         TEXT    PRIMARY KEY CHECK (name <> ''),
    task_type    TEXT    NOT NULL CHECK (task_type <> ''),
    -- the submission's other fields, checked, as a JSON object (its dedup_key null: each
    -- occurrence's task gets 'name@<occurrence, ISO>')
    submission   TEXT    NOT NULL,
    payload      BLOB,
    -- exactly one of the two: an interval (microseconds, from `anchor`) or a five-field
    -- cron expression, read in `timezone`
    every_us     INTEGER CHECK (every_us >= 1000000),
    cron         TEXT,
    timezone     TEXT    NOT NULL,
    start_at     REAL,                        -- as given (NULL: from when it was made)
    anchor       REAL    NOT NULL,            -- the first occurrence an interval counts from
    next_at      REAL,                        -- the next occurrence (NULL: none will come)
    last_at      REAL,                        -- the last occurrence submitted
    last_task_id INTEGER,                     -- its task (pending or blocked: skip the next)
    skipped      INTEGER NOT NULL DEFAULT 0,  -- occurrences skipped so (no pile-up)
    missed       INTEGER NOT NULL DEFAULT 0,  -- due while no scheduler ran: not replayed
    paused       INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
    created_at   REAL    NOT NULL,
    updated_at   REAL    NOT NULL,
    CHECK ((every_us IS NULL) <> (cron IS NULL))
);

-- What a scheduler's poll reads: the schedules coming due, by time.
CREATE INDEX schedules_due ON schedules (next_at) WHERE paused = 0;
