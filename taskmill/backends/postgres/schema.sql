-- taskmill store schema on PostgreSQL, version 14 (the SQLite store's schema 14, column for
-- column).  Everything lives in the schema `taskmill`, so the store can share a database
-- with the user's own tables; the runner (postgres/migrate.py) creates the schema and
-- applies this file, or the migrations in migrations/ to an older store, in one
-- transaction under an advisory lock.
--
-- Parts, as in the SQLite store's schema.sql: an object unchanged since the migration that
-- created it is written once, in a part file beside migrations/ named by what it creates
-- (group_pauses.sql, rate_buckets.sql, attempts.sql, batches.sql, schedules.sql), included
-- here and by that migration; a part is released text, never edited (a change is a new
-- migration, and this file then writes the object itself).
--
-- Active tasks (pending, running, paused) live in `tasks`; a task that finishes moves,
-- with the same id, to `history`.  Ids come from the sequence `task_ids` and are never
-- handed out twice.

CREATE TABLE taskmill.meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

CREATE SEQUENCE taskmill.task_ids AS bigint;

CREATE TABLE taskmill.tasks (
    id                    bigint   PRIMARY KEY DEFAULT nextval('taskmill.task_ids'),
    task_type             text     NOT NULL CHECK (task_type <> ''),
    dedup_key             text              CHECK (dedup_key <> ''),
    group_name            text,
    priority              smallint NOT NULL CHECK (priority BETWEEN 0 AND 255),
    -- queue order within a priority: a new task's own id; a task that supersedes a
    -- pending one inherits the replaced task's position
    queue_pos             bigint   NOT NULL,
    status                text     NOT NULL DEFAULT 'pending'
                                   CHECK (status IN ('pending', 'running', 'paused', 'blocked',
                                                     'waiting')),
    payload               bytea,
    label                 text,
    expected_read_bytes   bigint   NOT NULL DEFAULT 0 CHECK (expected_read_bytes >= 0),
    expected_write_bytes  bigint   NOT NULL DEFAULT 0 CHECK (expected_write_bytes >= 0),
    expected_net_rx_bytes bigint   NOT NULL DEFAULT 0 CHECK (expected_net_rx_bytes >= 0),
    expected_net_tx_bytes bigint   NOT NULL DEFAULT 0 CHECK (expected_net_tx_bytes >= 0),
    max_retries           integer           CHECK (max_retries >= 0),
    attempts              integer  NOT NULL DEFAULT 0,
    last_error            text,
    run_after             double precision, -- not dispatched before this time (start later, retry)
    owner                 text,             -- the worker running it: 'host:pid:token'
    created_at            double precision NOT NULL,
    started_at            double precision,
    key_hash              bigint,           -- taskmill/store/keys.py; NULL without a key
    expires_at            double precision, -- not started by then: ends as 'expired'
    batch_id              bigint,           -- the batch that inserted it (schema 7)
    on_dependency_failure text,             -- cancel (NULL), fail or ignore (schema 8)
    parent_id             bigint,           -- the task that spawned it (schema 9)
    -- a waiting parent's last child ended: NULL ends it; 'wanted' -> pending as 'due',
    -- for the claim to run its finalizer (schema 9)
    finalizer             text              CHECK (finalizer IN ('wanted', 'due')),
    -- what a running attempt last reported (ctx.progress), 0..1 and a message (schema 10)
    progress              double precision,
    progress_message      text,
    -- paused to make room for more urgent work, at this time (schema 11; NULL: not so)
    preempted_at          double precision
);

ALTER SEQUENCE taskmill.task_ids OWNED BY taskmill.tasks.id;

-- One active task per (task_type, dedup_key), enforced by PostgreSQL itself on the 64-bit
-- key hash, under any number of concurrent writers.  The text stays the truth: a hash
-- match with a different text is a collision, refused.
CREATE UNIQUE INDEX tasks_active_key ON taskmill.tasks (key_hash) WHERE key_hash IS NOT NULL;

-- The claim: `WHERE status = 'pending' ORDER BY priority, queue_pos, id … FOR UPDATE
-- SKIP LOCKED` walks this index in exactly its order (an index scan, no sort).
CREATE INDEX tasks_claim ON taskmill.tasks (priority, queue_pos, id) WHERE status = 'pending';

-- Running tasks by owner (leases, release, counts per group).
CREATE INDEX tasks_running ON taskmill.tasks (owner) WHERE status = 'running';

-- Tasks waiting out a retry backoff (run_after is only set on those).
CREATE INDEX tasks_retry ON taskmill.tasks (run_after) WHERE run_after IS NOT NULL;

-- Tasks that expire if not started in time.
CREATE INDEX tasks_expiry ON taskmill.tasks (expires_at) WHERE expires_at IS NOT NULL;

-- The tasks of each batch, active and finished (schema 7): its counts and whether any of
-- its tasks is still active.
CREATE INDEX tasks_batch ON taskmill.tasks (batch_id) WHERE batch_id IS NOT NULL;
CREATE INDEX tasks_parent ON taskmill.tasks (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX tasks_preempted ON taskmill.tasks (preempted_at) WHERE preempted_at IS NOT NULL;

CREATE TABLE taskmill.history (
    id                    bigint   PRIMARY KEY,   -- the task's own id
    task_type             text     NOT NULL,
    dedup_key             text,
    group_name            text,
    priority              smallint NOT NULL,
    payload               bytea,
    label                 text,
    expected_read_bytes   bigint   NOT NULL DEFAULT 0,
    expected_write_bytes  bigint   NOT NULL DEFAULT 0,
    expected_net_rx_bytes bigint   NOT NULL DEFAULT 0,
    expected_net_tx_bytes bigint   NOT NULL DEFAULT 0,
    max_retries           integer,
    status                text     NOT NULL
                                   CHECK (status IN ('completed', 'failed', 'cancelled', 'superseded',
                                                     'expired')),
    attempts              integer  NOT NULL,
    last_error            text,
    replaced_by           bigint,           -- for 'superseded': the task that replaced it
    created_at            double precision NOT NULL,
    started_at            double precision,
    finished_at           double precision NOT NULL,
    batch_id              bigint,           -- the batch that inserted it (schema 7)
    parent_id             bigint            -- the task that spawned it (schema 9)
);

CREATE INDEX history_finished ON taskmill.history (finished_at);
CREATE INDEX history_batch ON taskmill.history (batch_id) WHERE batch_id IS NOT NULL;

-- A parent's children, active and finished (schema 9).
CREATE INDEX history_parent ON taskmill.history (parent_id) WHERE parent_id IS NOT NULL;

-- Workers and their leases: a scheduler renews `heartbeat_at` while it runs; a running
-- task whose owner's lease ran out is pending again.
CREATE TABLE taskmill.workers (
    owner         text             PRIMARY KEY,   -- 'host:pid:token', as in tasks.owner
    host          text             NOT NULL,
    pid           integer          NOT NULL,
    lease_timeout double precision NOT NULL CHECK (lease_timeout > 0),
    heartbeat_at  double precision NOT NULL,   -- by the server's clock (schema 5)
    started_at    double precision NOT NULL,
    scope         text,                        -- boot and PID namespace (schema 5; NULL: unknown)
    held          text                         -- {group or "type:T": reason} at its last claim (schema 14)
);

-- Groups held by pause_group: none of their tasks is dispatched until `until` (NULL: until
-- resume_group).
-- include: group_pauses.sql

-- Token buckets of the schedulers' rate limits, shared by every scheduler on the store:
-- `key` is 'group:NAME' or 'type:TASK_TYPE'; the bucket held `tokens` at `updated_at` and
-- refills at the limit's rate up to its burst.
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
