-- Schema 1 -> 2: workers hold leases on the tasks they run.
--
-- A scheduler registers itself here and renews `heartbeat_at` while it runs; a
-- running task whose owner stopped renewing for `lease_timeout` seconds (or that
-- has no row here: a worker of the 0.1 schema) is put back to pending by any
-- other scheduler on the store.

CREATE TABLE workers (
    owner         TEXT    PRIMARY KEY,   -- 'host:pid:token', as in tasks.owner
    host          TEXT    NOT NULL,
    pid           INTEGER NOT NULL,
    lease_timeout REAL    NOT NULL CHECK (lease_timeout > 0),
    heartbeat_at  REAL    NOT NULL,
    started_at    REAL    NOT NULL
) WITHOUT ROWID;
