CREATE TABLE taskmill.schedules (
    name         text             PRIMARY KEY CHECK (name <> ''),
    task_type    text             NOT NULL CHECK (task_type <> ''),
    -- the submission's other fields, checked, as a JSON object (its dedup_key null: each
    -- occurrence's task gets 'name@<occurrence, ISO>')
    submission   text             NOT NULL,
    payload      bytea,
    -- exactly one of the two: an interval (microseconds, from `anchor`) or a five-field
    -- cron expression, read in `timezone`
    every_us     bigint           CHECK (every_us >= 1000000),
    cron         text,
    timezone     text             NOT NULL,
    start_at     double precision,             -- as given (NULL: from when it was made)
    anchor       double precision NOT NULL,    -- the first occurrence an interval counts from
    next_at      double precision,             -- the next occurrence (NULL: none will come)
    last_at      double precision,             -- the last occurrence submitted
    last_task_id bigint,                       -- its task (pending or blocked: skip the next)
    skipped      bigint           NOT NULL DEFAULT 0,  -- occurrences skipped so (no pile-up)
    missed       bigint           NOT NULL DEFAULT 0,  -- due while none ran: not replayed
    paused       boolean          NOT NULL DEFAULT false,
    created_at   double precision NOT NULL,
    updated_at   double precision NOT NULL,
    CHECK ((every_us IS NULL) <> (cron IS NULL))
);

-- What a scheduler's poll reads: the schedules coming due, by time.
CREATE INDEX schedules_due ON taskmill.schedules (next_at) WHERE NOT paused;
