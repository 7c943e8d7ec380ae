-- Schema 6: every attempt that ended.  Included whole by schema.sql and by the
-- migration 006_attempts.sql (see with_includes in taskmill/store/sql.py).  Released
-- with that migration: never edit it (tests/test_migrations.py holds its digest); a later
-- change to these objects is a migration of its own, and schema.sql then says it.

-- Every attempt that ended (schema 6), one row each, written by the triggers below so
-- that no way of ending an attempt can forget it (as in the SQLite store): a result
-- recorded (completed; failed, to be retried or for good), an attempt given back
-- (released: not a try, so the next attempt carries the same number), a task cancelled,
-- superseded or expired while it ran.  `worker` is the owner that ran it, `traceback` the
-- last frames of a failure's traceback (set by the worker after the trigger's row).  An
-- attempt never ends before it started: a worker's start time, from its reading of the
-- server's clock, may run a little ahead of the clock the end is read from.
CREATE TABLE taskmill.attempts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- order of recording
    task_id     bigint           NOT NULL,
    attempt     integer          NOT NULL,
    worker      text,
    started_at  double precision,
    finished_at double precision NOT NULL,
    outcome     text             NOT NULL,
    error       text,
    traceback   text
);

CREATE INDEX attempts_task ON taskmill.attempts (task_id);

-- An attempt that ends with its task still active: failed and waiting out its backoff,
-- or given back uncounted (released).  A row trigger: its WHEN is checked without
-- calling the function, so claims and other updates pay nothing.
CREATE FUNCTION taskmill.attempt_ended() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO taskmill.attempts (task_id, attempt, worker, started_at, finished_at, outcome, error)
    VALUES (
        OLD.id, OLD.attempts, OLD.owner, OLD.started_at,
        greatest(OLD.started_at, extract(epoch FROM clock_timestamp())),
        CASE WHEN NEW.attempts < OLD.attempts THEN 'released'
             WHEN NEW.status = 'pending' THEN 'failed'
             ELSE NEW.status END,
        CASE WHEN NEW.status = 'pending' AND NEW.attempts >= OLD.attempts
             THEN NEW.last_error END
    );
    RETURN NULL;
END
$$;

CREATE TRIGGER attempt_ended AFTER UPDATE OF status ON taskmill.tasks
FOR EACH ROW WHEN (OLD.status = 'running' AND NEW.status <> 'running')
EXECUTE FUNCTION taskmill.attempt_ended();

-- An attempt whose task ended: history holds the task by the end of the statement, with
-- the end's status, time and error.  One call per statement (a completion records many
-- tasks at once), over the rows it deleted.
CREATE FUNCTION taskmill.attempts_finished() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO taskmill.attempts (task_id, attempt, worker, started_at, finished_at, outcome, error)
    SELECT o.id, o.attempts, o.owner, o.started_at, greatest(o.started_at, h.finished_at),
           h.status,
           CASE WHEN h.status = 'failed' THEN h.last_error END
    FROM gone AS o
    JOIN taskmill.history AS h ON h.id = o.id
    WHERE o.status = 'running';
    RETURN NULL;
END
$$;

CREATE TRIGGER attempts_finished AFTER DELETE ON taskmill.tasks
REFERENCING OLD TABLE AS gone
FOR EACH STATEMENT EXECUTE FUNCTION taskmill.attempts_finished();

-- A task pruned from history takes its attempts along.
CREATE FUNCTION taskmill.attempts_pruned() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM taskmill.attempts AS a USING gone AS o WHERE a.task_id = o.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER attempts_pruned AFTER DELETE ON taskmill.history
REFERENCING OLD TABLE AS gone
FOR EACH STATEMENT EXECUTE FUNCTION taskmill.attempts_pruned();
