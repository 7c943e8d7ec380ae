-- Schema 6: every attempt that ended.  Included whole by schema.sql and by the
-- migration 006_attempts.sql (see with_includes in taskmill/store/sql.py).  Released
-- with that migration: never edit it (tests/test_migrations.py holds its digest); a later
-- change to these objects is a migration of its own, and schema.sql then says it.

-- Every attempt that ended (schema 6), one row each, written by the triggers below so
-- that no way of ending an attempt can forget it: a result recorded (completed; failed,
-- to be retried or for good), an attempt given back (released: the worker shut down or
-- was fenced; the next attempt carries the same number, since it was not a try), a task
-- cancelled, superseded or expired while it ran.  `worker` is the owner that ran it,
-- `traceback` the last frames of a failure's traceback (set by the worker after the
-- trigger's row).  An attempt never ends before it started: a worker's start time, from
-- its reading of the store's clock, may run a little ahead of the clock the end is read
-- from.  A running attempt is the task's own row (tasks.started_at, owner).
CREATE TABLE attempts (
    id          INTEGER PRIMARY KEY,   -- order of recording
    task_id     INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    worker      TEXT,
    started_at  REAL,
    finished_at REAL    NOT NULL,
    outcome     TEXT    NOT NULL,
    error       TEXT,
    traceback   TEXT
);

CREATE INDEX attempts_task ON attempts (task_id);

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

-- A task pruned from history takes its attempts along.
CREATE TRIGGER attempts_pruned AFTER DELETE ON history
BEGIN
    DELETE FROM attempts WHERE task_id = OLD.id;
END;
