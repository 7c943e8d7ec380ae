-- Named queries of the PostgreSQL task store, parsed once by taskmill.store.postgres.store
-- (the loader of taskmill.store.sql).  Parameters are always bound (psycopg's named
-- placeholders); no SQL is built from data.  `{KEY_HASH}` is replaced, when the file is
-- loaded, by the key-hash expression of taskmill/store/keys.py (a constant, never data).
-- `{CLAIM_LOCK}` likewise by the claim lock's key (store.py).
-- No percent sign may appear in this file outside a placeholder (psycopg reads them all).

-- ------------------------------------------------------------------ connections

-- name: session_settings
-- Every connection's session: how long a statement waits for a lock (a row, an advisory
-- lock) before failing, and no JIT compilation.  taskmill's statements are short; a
-- server compiles any statement whose estimated cost passes jit_above_cost with LLVM,
-- which costs 100-200 ms each (a claim of 4 rows measured 214 ms, all of it JIT) —
-- and the dispatch session's pinned plans (below) carry an estimate far above that.
SELECT set_config('lock_timeout', %(ms)s, false),
       set_config('jit', 'off', false);

-- ------------------------------------------------------------------ locks
-- Transaction-scoped advisory locks, released at commit or rollback.

-- name: advisory_lock
-- Waits for, then holds until the transaction ends, the advisory lock :lock (one of the
-- keys in store.py: SUBMIT_LOCK serializes submits store-wide, so two submits of a key
-- never decide on the same state; CLAIM_LOCK serializes claims, so group limits count
-- the running tasks with no other claim in between).
SELECT pg_advisory_xact_lock(%(lock)s);

-- name: begin_claim
-- Opens the transaction of a claim that counts limits and takes CLAIM_LOCK, in one round
-- trip (two statements without parameters travel as one message).  {CLAIM_LOCK} is
-- replaced by the key when the file is loaded (a constant of store.py, never data).
BEGIN; SELECT pg_advisory_xact_lock({CLAIM_LOCK});

-- ------------------------------------------------------------------ submitting

-- name: find_active
-- The active task holding a key hash, with its text (a different text is a collision);
-- locked, so a claim skips it and a concurrent change waits for this submit.
SELECT id, status, priority, queue_pos, task_type, dedup_key, expires_at, parent_id
FROM taskmill.tasks
WHERE key_hash = %(key_hash)s
FOR UPDATE;

-- name: expired_ids
-- Tasks not started by their expiry time (pending, waiting out a retry, or paused),
-- locked; one a submit is deciding on is left for the next sweep.
SELECT id FROM taskmill.tasks
WHERE expires_at <= %(now)s AND status IN ('pending', 'paused', 'blocked')
ORDER BY id
FOR UPDATE SKIP LOCKED;

-- name: any_expired
SELECT EXISTS (
    SELECT 1 FROM taskmill.tasks
    WHERE expires_at <= %(now)s AND status IN ('pending', 'paused', 'blocked')
);

-- name: next_id
SELECT nextval('taskmill.task_ids');

-- name: insert_task
INSERT INTO taskmill.tasks (
    id, task_type, dedup_key, group_name, priority, queue_pos, payload, label,
    expected_read_bytes, expected_write_bytes, expected_net_rx_bytes, expected_net_tx_bytes,
    max_retries, created_at, key_hash, run_after, expires_at, batch_id, on_dependency_failure,
    parent_id, status
) VALUES (
    %(id)s, %(task_type)s, %(dedup_key)s, %(group)s, %(priority)s, %(queue_pos)s,
    %(payload)s, %(label)s, %(expected_read_bytes)s, %(expected_write_bytes)s,
    %(expected_net_rx_bytes)s, %(expected_net_tx_bytes)s, %(max_retries)s, %(now)s,
    %(key_hash)s, %(run_after)s, %(expires_at)s, NULL, %(on_dependency_failure)s,
    %(parent_id)s, 'pending'
);

-- name: upgrade_priority
UPDATE taskmill.tasks SET priority = %(priority)s
WHERE id = %(id)s AND status = 'pending' AND priority > %(priority)s;

-- ------------------------------------------------------------------ finishing
-- A finished task moves to history in one statement: the DELETE locks the row, so two
-- transactions finishing the same task never both record it (the later one finds it gone).

-- name: finish
-- Move active tasks (:ids) to history with a final status; returns each one's id, the
-- status it had and its parent (in no order).  With :owner, only the attempts still running for it, at the
-- attempt numbers :attempts gives (NULL: any); :replaced_by names the task that replaced
-- each one (superseded).  :attempts and :replaced_by are arrays of :ids' length or NULL
-- (unnest pads a NULL array with NULLs).  The one statement every way of finishing uses:
-- a completion or a failure (owned), a cancel, an expiry, a supersede (one or a batch's).
WITH moved AS (
    DELETE FROM taskmill.tasks AS t
    USING unnest(%(ids)b::bigint[], %(attempts)s::integer[], %(replaced_by)b::bigint[])
          AS p (id, attempt, replaced_by)
    WHERE t.id = p.id
      AND (%(owner)s::text IS NULL OR (t.status = 'running' AND t.owner = %(owner)s::text))
      AND (p.attempt IS NULL OR t.attempts = p.attempt)
    RETURNING t.*, p.replaced_by AS new_id
), recorded AS (
    INSERT INTO taskmill.history (
        id, task_type, dedup_key, group_name, priority, payload, label,
        expected_read_bytes, expected_write_bytes, expected_net_rx_bytes,
        expected_net_tx_bytes, max_retries, status, attempts, last_error, replaced_by,
        created_at, started_at, finished_at, batch_id, parent_id
    )
    SELECT id, task_type, dedup_key, group_name, priority, payload, label,
           expected_read_bytes, expected_write_bytes, expected_net_rx_bytes,
           expected_net_tx_bytes, max_retries, %(status)s, attempts,
           COALESCE(%(error)s::text, last_error), new_id, created_at, started_at, %(now)s,
           batch_id, parent_id
    FROM moved
)
SELECT id, status, parent_id FROM moved;

-- ------------------------------------------------------------------ claiming

-- name: dispatch_settings
-- The dispatch connection's session (claims and attempts' outcomes only): a claim's plan
-- is pinned to a walk of the tasks_claim index in its order (no sort, no bitmap, no
-- sequential scan) whatever the table's statistics say, and every statement is planned
-- once.  Right after a large batch lands in an empty queue, before autovacuum has
-- analysed the table, the planner otherwise reads and sorts every pending row on each
-- claim (measured: 6 ms instead of 0.1 ms per claim at 5,000 pending tasks).
-- Switching a plan method off only adds 10^10 to its estimated cost: with JIT on, that
-- would compile every statement of this session (session_settings turns JIT off on every
-- connection; test_postgres_plans checks each dispatch plan on a server with JIT forced on).
SELECT set_config('enable_sort', 'off', false),
       set_config('enable_bitmapscan', 'off', false),
       set_config('enable_seqscan', 'off', false),
       set_config('plan_cache_mode', 'force_generic_plan', false);

-- name: claim
-- Marks the next dispatchable tasks running for :owner, in one statement, and returns
-- them, when no group limit is counted: the first :limit candidates in dispatch order
-- (priority, queue order, id) through the tasks_claim index, skipping rows another
-- transaction holds (FOR UPDATE SKIP LOCKED).  The filter is claim_candidates'.
WITH picked AS (
    SELECT id
    FROM taskmill.tasks
    WHERE status = 'pending'
      AND task_type = ANY(%(types)s::text[])
      AND (run_after IS NULL OR run_after <= %(now)s)
      AND (expires_at IS NULL OR expires_at > %(now)s)
      AND (group_name IS NULL OR group_name NOT IN (
          SELECT p.group_name FROM taskmill.group_pauses AS p
          WHERE p.until IS NULL OR p.until > %(now)s))
    ORDER BY priority, queue_pos, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE taskmill.tasks AS t
SET status = 'running', attempts = t.attempts + 1, started_at = %(now)s,
    owner = %(owner)s, run_after = NULL, progress = NULL, progress_message = NULL
FROM picked
WHERE t.id = picked.id
RETURNING t.id, t.task_type, t.dedup_key, t.group_name, t.priority, t.payload, t.label,
          t.attempts, t.max_retries, t.queue_pos, t.finalizer;

-- name: claim_counts
-- What a claim that counts limits reads under CLAIM_LOCK, in one statement: per group,
-- the running tasks and their expected bytes, whoever runs them (when :counted), so group
-- limits and byte budgets hold across workers; and the stored token buckets of :keys.
-- The bytes are summed as numeric (exact, never out of range: four figures of up to
-- 2^63 - 1 per task), in a column of their own.
SELECT 'group', group_name, count(*)::double precision, NULL::double precision,
       sum(expected_read_bytes::numeric + expected_write_bytes + expected_net_rx_bytes
           + expected_net_tx_bytes)
FROM taskmill.tasks
WHERE %(counted)s AND status = 'running' AND group_name IS NOT NULL
GROUP BY group_name
UNION ALL
SELECT 'bucket', key, tokens, updated_at, NULL::numeric FROM taskmill.rate_buckets
WHERE key = ANY(%(keys)s::text[]);

-- name: claim_candidates
-- A claim that counts limits (the caller holds CLAIM_LOCK): the next dispatchable tasks
-- in dispatch order, as the claim query walks them, skipping held groups (full, over
-- their budget, out of tokens) and held task types, with each task's expected bytes
-- (summed as numeric: exact, never out of range); locked, so no other claim takes them
-- before this one marks them (mark_running).
SELECT id, task_type, dedup_key, group_name, priority, payload, label, attempts,
       max_retries, finalizer, queue_pos, created_at,
       expected_read_bytes::numeric + expected_write_bytes + expected_net_rx_bytes
       + expected_net_tx_bytes
FROM taskmill.tasks
WHERE status = 'pending'
  AND task_type = ANY(%(types)s::text[])
  AND (run_after IS NULL OR run_after <= %(now)s)
  AND (expires_at IS NULL OR expires_at > %(now)s)
  AND (group_name IS NULL OR NOT group_name = ANY(%(held)s::text[]))
  AND (group_name IS NULL OR group_name NOT IN (
      SELECT p.group_name FROM taskmill.group_pauses AS p
      WHERE p.until IS NULL OR p.until > %(now)s))
ORDER BY priority, queue_pos, id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: pending_levels
-- The priorities of the pending tasks, most urgent first: one probe of tasks_claim per
-- level (aging claims the first tasks of each level and orders them by their age).
WITH RECURSIVE level (p) AS (
    SELECT (SELECT min(priority) FROM taskmill.tasks WHERE status = 'pending')
    UNION ALL
    SELECT (SELECT min(priority) FROM taskmill.tasks
            WHERE status = 'pending' AND priority > level.p)
    FROM level
    WHERE level.p IS NOT NULL
)
SELECT p FROM level WHERE p IS NOT NULL;

-- name: mark_running
-- Marks the picked candidates running for :owner and stores the rate buckets as they
-- stand after them (:keys, :tokens, :at of one length; empty without rate limits).
-- The ids are joined (unnest), not tested with = ANY, and their status is not tested: the
-- candidates are locked (FOR UPDATE) by this transaction since claim_candidates read them
-- pending, so nothing else changed them; a test of status = 'pending' would let the
-- planner walk the whole tasks_claim index (a partial index on pending tasks, id its
-- last column) instead of probing the primary key — it did, on a table not analysed yet.
WITH marked AS (
    UPDATE taskmill.tasks AS t
    SET status = 'running', attempts = t.attempts + 1, started_at = %(now)s,
        owner = %(owner)s, run_after = NULL, progress = NULL, progress_message = NULL
    FROM unnest(%(ids)s::bigint[]) AS p (id)
    WHERE t.id = p.id
    RETURNING t.id
), stored AS (
    INSERT INTO taskmill.rate_buckets (key, tokens, updated_at)
    SELECT * FROM unnest(%(keys)s::text[], %(tokens)s::double precision[],
                         %(at)s::double precision[])
    ON CONFLICT (key) DO UPDATE SET tokens = excluded.tokens, updated_at = excluded.updated_at
)
SELECT count(*) FROM marked;

-- ------------------------------------------------------------------ attempts

-- name: store_progress
-- What running attempts last reported (ctx.progress), for attempts still running for
-- :owner: :ids, :attempts, :fractions and :messages of one length.
UPDATE taskmill.tasks AS t
SET progress = r.fraction, progress_message = r.message
FROM unnest(%(ids)s::bigint[], %(attempts)s::integer[], %(fractions)s::double precision[],
            %(messages)s::text[]) AS r (id, attempt, fraction, message)
WHERE t.id = r.id AND t.status = 'running' AND t.owner = %(owner)s
  AND t.attempts = r.attempt;

-- name: retry_later
-- A failed attempt that will be tried again: pending, not before :run_after.
UPDATE taskmill.tasks
SET status = 'pending', owner = NULL, last_error = %(error)s, run_after = %(run_after)s
WHERE id = %(id)s AND status = 'running' AND owner = %(owner)s
  AND (%(attempt)s::integer IS NULL OR attempts = %(attempt)s::integer);

-- name: preempt_running
-- Pause running attempts to make room for more urgent work: not counted as tries, kept
-- in their queue place, marked preempted at :now.
UPDATE taskmill.tasks AS t
SET status = 'paused', owner = NULL, attempts = greatest(t.attempts - 1, 0),
    started_at = NULL, preempted_at = %(now)s
FROM unnest(%(ids)s::bigint[], %(attempts)s::integer[]) AS p (id, attempt)
WHERE t.id = p.id AND t.status = 'running' AND t.owner = %(owner)s
  AND (p.attempt IS NULL OR t.attempts = p.attempt);

-- name: urgent_waiting
-- How many tasks of :types at :priority or more urgent wait to start (at most :limit),
-- through the claim index.
SELECT count(*) FROM (
    SELECT 1 FROM taskmill.tasks
    WHERE status = 'pending' AND priority <= %(priority)s
      AND task_type = ANY(%(types)s::text[])
      AND (run_after IS NULL OR run_after <= %(now)s)
    LIMIT %(limit)s
) AS u;

-- name: any_preempted
SELECT EXISTS (SELECT 1 FROM taskmill.tasks WHERE preempted_at IS NOT NULL);

-- name: resume_preempted
-- Tasks paused by preemption go back to pending, in their queue place, when no task of
-- :types at :priority or more urgent waits to start.
UPDATE taskmill.tasks AS t SET status = 'pending', preempted_at = NULL
WHERE t.preempted_at IS NOT NULL AND t.status = 'paused'
  AND NOT EXISTS (
      SELECT 1 FROM taskmill.tasks AS u
      WHERE u.status = 'pending' AND u.priority <= %(priority)s
        AND u.task_type = ANY(%(types)s::text[])
        AND (u.run_after IS NULL OR u.run_after <= %(now)s));

-- name: release_running
-- Give running attempts back to the queue without counting them as tries.
UPDATE taskmill.tasks AS t
SET status = 'pending', owner = NULL, attempts = greatest(t.attempts - 1, 0),
    started_at = NULL
FROM unnest(%(ids)s::bigint[], %(attempts)s::integer[]) AS p (id, attempt)
WHERE t.id = p.id AND t.status = 'running' AND t.owner = %(owner)s
  AND (p.attempt IS NULL OR t.attempts = p.attempt);

-- name: owned_running
-- Of :ids (with :attempts, NULL matching any), those running for :owner.
SELECT t.id
FROM unnest(%(ids)s::bigint[], %(attempts)s::integer[]) AS p (id, attempt)
JOIN taskmill.tasks AS t ON t.id = p.id
WHERE t.status = 'running' AND t.owner = %(owner)s
  AND (p.attempt IS NULL OR t.attempts = p.attempt);

-- name: active_status
SELECT id, status FROM taskmill.tasks WHERE id = ANY(%(ids)s::bigint[]);

-- name: history_status
SELECT id, status, replaced_by FROM taskmill.history WHERE id = ANY(%(ids)s::bigint[]);

-- name: has_work_for_types
-- Pending or running, or paused by preemption (resumed by itself): each its own index.
SELECT EXISTS (
    SELECT 1 FROM taskmill.tasks
    WHERE status IN ('pending', 'running') AND task_type = ANY(%(types)s::text[])
) OR EXISTS (
    SELECT 1 FROM taskmill.tasks
    WHERE preempted_at IS NOT NULL AND task_type = ANY(%(types)s::text[])
);

-- name: next_run_after
-- The earliest time a waiting task may start: a start time or a retry coming due, or a
-- group's pause ending (any task type: an early wake-up costs one poll).
SELECT least(
    (SELECT min(run_after) FROM taskmill.tasks WHERE run_after IS NOT NULL),
    (SELECT min(until) FROM taskmill.group_pauses WHERE until > %(now)s)
);

-- name: pause_group
INSERT INTO taskmill.group_pauses (group_name, until, paused_at)
VALUES (%(group)s, %(until)s, %(now)s)
ON CONFLICT (group_name) DO UPDATE SET until = excluded.until, paused_at = excluded.paused_at;

-- name: resume_group
DELETE FROM taskmill.group_pauses WHERE group_name = %(group)s;

-- name: waiting_for_start
-- Pending tasks per group that wait for a start time (or a retry's backoff) after :now.
SELECT group_name, count(*) FROM taskmill.tasks
WHERE status = 'pending' AND run_after > %(now)s
GROUP BY group_name;

-- name: waiting_for_retry
-- Of those, the ones waiting out a retry's backoff: they were tried (a start time set at
-- submission is cleared when the task is first claimed, so attempts > 0 tells them apart).
SELECT group_name, count(*) FROM taskmill.tasks
WHERE status = 'pending' AND run_after > %(now)s AND attempts > 0
GROUP BY group_name;

-- name: paused_groups
SELECT group_name, until FROM taskmill.group_pauses
WHERE until IS NULL OR until > %(now)s
ORDER BY group_name;

-- ------------------------------------------------------------------ workers and leases

-- name: store_clock
-- The server's clock, in seconds since the epoch: every lease is judged by it, never by
-- the clock of the worker that asks.
SELECT extract(epoch FROM clock_timestamp());

-- name: register_worker
-- A lease starts by the server's clock, as every renewal does.
INSERT INTO taskmill.workers (owner, host, pid, lease_timeout, heartbeat_at, started_at, scope)
VALUES (%(owner)s, %(host)s, %(pid)s, %(lease)s, extract(epoch FROM clock_timestamp()), extract(epoch FROM clock_timestamp()), %(scope)s)
ON CONFLICT (owner) DO UPDATE
SET lease_timeout = excluded.lease_timeout, heartbeat_at = excluded.heartbeat_at,
    scope = excluded.scope
RETURNING heartbeat_at;

-- name: renew_worker
-- The server's time of the renewal (no row: the lease was taken away).  :now only for a
-- test of the plan; a worker passes NULL.  :held, what held the worker's groups back
-- (schema 14): NULL keeps what it wrote last, '' clears it.
UPDATE taskmill.workers SET heartbeat_at = COALESCE(%(now)s::float8, extract(epoch FROM clock_timestamp())),
    held = NULLIF(COALESCE(%(held)s::text, held), '')
WHERE owner = %(owner)s
RETURNING heartbeat_at;

-- name: forget_worker
DELETE FROM taskmill.workers WHERE owner = %(owner)s;

-- name: forget_expired_worker
-- Deletes the row only while its lease is still out; a renewal in flight is waited for
-- (the row is locked), and one that landed keeps the row.  :now NULL: the server's clock.
DELETE FROM taskmill.workers
WHERE owner = %(owner)s AND heartbeat_at + lease_timeout < COALESCE(%(now)s::float8, extract(epoch FROM clock_timestamp()));

-- name: running_owner_leases
-- Each owner of running tasks: whether its lease ran out by :now (the server's clock when
-- NULL; NULL: it holds no lease), and the host, boot and PID namespace it runs in.
SELECT r.owner, w.heartbeat_at + w.lease_timeout < COALESCE(%(now)s::float8, extract(epoch FROM clock_timestamp())), w.scope
FROM (SELECT DISTINCT owner FROM taskmill.tasks WHERE status = 'running') AS r
LEFT JOIN taskmill.workers AS w ON w.owner = r.owner;

-- name: expired_workers
SELECT owner FROM taskmill.workers WHERE heartbeat_at + lease_timeout < COALESCE(%(now)s::float8, extract(epoch FROM clock_timestamp()));

-- name: workers_held
-- What held groups back at the last claim of each worker whose lease runs at :now (the
-- server's clock when NULL), as it wrote it (schema 14), by owner.
SELECT held FROM taskmill.workers
WHERE held IS NOT NULL AND heartbeat_at + lease_timeout >= COALESCE(%(now)s::float8, extract(epoch FROM clock_timestamp()))
ORDER BY owner;

-- name: release_expired_owner
-- An owner whose lease ran out: its tasks are pending again (unless it renewed meanwhile).
UPDATE taskmill.tasks
SET status = 'pending', owner = NULL, attempts = greatest(attempts - 1, 0), started_at = NULL
WHERE status = 'running' AND owner = %(owner)s
  AND NOT EXISTS (
      SELECT 1 FROM taskmill.workers AS w
      WHERE w.owner = %(owner)s AND w.heartbeat_at + w.lease_timeout >= COALESCE(%(now)s::float8, extract(epoch FROM clock_timestamp()))
  );

-- name: release_owner
-- Every running task of :owner (NULL: the tasks that have no owner) back to pending.
UPDATE taskmill.tasks
SET status = 'pending', owner = NULL, attempts = greatest(attempts - 1, 0), started_at = NULL
WHERE status = 'running' AND owner IS NOT DISTINCT FROM %(owner)s::text;

-- name: worker_list
-- Every registered worker with the tasks running for it now (tasks_running), by host and pid.
SELECT w.owner, w.host, w.pid, w.started_at, w.heartbeat_at, w.lease_timeout,
       COALESCE(r.running, 0)
FROM taskmill.workers AS w
LEFT JOIN (
    SELECT owner, count(*) AS running FROM taskmill.tasks WHERE status = 'running' GROUP BY owner
) AS r ON r.owner = w.owner
ORDER BY w.host, w.pid, w.owner;

-- name: owned_by
SELECT id FROM taskmill.tasks WHERE status = 'running' AND owner = %(owner)s ORDER BY id;

-- ------------------------------------------------------------------ task control

-- name: set_status
UPDATE taskmill.tasks SET status = %(to)s, preempted_at = NULL
WHERE id = %(id)s AND status = %(from)s;

-- ------------------------------------------------------------------ bulk control

-- name: cancel_pick
-- The next active tasks a bulk cancel takes, by id, after :after and up to :last (the last
-- id handed out when the cancel began), locked until the cancel commits; a NULL filter
-- matches everything, :status is always given.  A row that changes while this waits for
-- its lock is checked again (a claim made it running, a submit superseded it).
SELECT id FROM taskmill.tasks
WHERE id > %(after)s AND id <= %(last)s
  AND status = ANY(%(status)s::text[])
  AND (%(task_type)s::text[] IS NULL OR task_type = ANY(%(task_type)s::text[]))
  AND (%(group)s::text[] IS NULL OR group_name = ANY(%(group)s::text[]))
  AND (%(label)s::text[] IS NULL OR label = ANY(%(label)s::text[]))
  AND (%(tag_keys)s::text[] IS NULL OR id IN {fragment_tagged})
ORDER BY id
LIMIT %(limit)s
FOR UPDATE;

-- name: cancel_pick_by_key
-- The active tasks holding the keys of :key_hashes, :task_types and :dedup_keys (arrays of
-- one length), found through the active-key index (the texts checked: a hash collision
-- is not a match), with the filters of cancel_pick; locked as there.
SELECT t.id
FROM unnest(%(key_hashes)s::bigint[], %(task_types)s::text[], %(dedup_keys)s::text[])
     AS p (key_hash, task_type, dedup_key)
JOIN taskmill.tasks AS t ON t.key_hash = p.key_hash
WHERE t.task_type = p.task_type AND t.dedup_key = p.dedup_key
  AND t.id <= %(last)s
  AND t.status = ANY(%(status)s::text[])
  AND (%(group)s::text[] IS NULL OR t.group_name = ANY(%(group)s::text[]))
  AND (%(label)s::text[] IS NULL OR t.label = ANY(%(label)s::text[]))
  AND (%(tag_keys)s::text[] IS NULL OR t.id IN {fragment_tagged})
ORDER BY t.id
FOR UPDATE OF t;

-- name: active_task_types
SELECT DISTINCT task_type FROM taskmill.tasks;

-- name: failed_to_retry
-- The failed tasks of history to submit again, in history order, each with its id: those
-- matching the filters (NULL: any) that finished at or after :since (NULL: ever), except
-- a keyed one that is no longer the latest record of its key (something later happened
-- to the key; checked again by the merge, batch_match_retried).  :ids: only the failures
-- of those task ids (NULL: any).
SELECT h.id, h.task_type, h.dedup_key, h.group_name, h.priority::bigint, h.payload, h.label,
       h.expected_read_bytes, h.expected_write_bytes, h.expected_net_rx_bytes,
       h.expected_net_tx_bytes, h.max_retries::bigint
FROM taskmill.history AS h
WHERE h.status = 'failed'
  AND (%(task_type)s::text[] IS NULL OR h.task_type = ANY(%(task_type)s::text[]))
  AND (%(group)s::text[] IS NULL OR h.group_name = ANY(%(group)s::text[]))
  AND (%(since)s::double precision IS NULL OR h.finished_at >= %(since)s::double precision)
  AND (%(ids)s::bigint[] IS NULL OR h.id = ANY(%(ids)s::bigint[]))
  AND NOT EXISTS (
      SELECT 1 FROM taskmill.history AS later
      WHERE later.task_type = h.task_type AND later.dedup_key = h.dedup_key
        AND later.id > h.id
  )
ORDER BY h.id;

-- ------------------------------------------------------------------ queries

-- name: counts
SELECT status, count(*) FROM taskmill.tasks GROUP BY status
UNION ALL
SELECT status, count(*) FROM taskmill.history GROUP BY status;

-- name: active_group_counts
-- Active tasks per group and status (never history): a metrics scrape's one read.
SELECT group_name, status, count(*) FROM taskmill.tasks GROUP BY group_name, status;

-- name: fragment_tagged
-- The tasks carrying every pair of :tag_keys / :tag_values (arrays of one length, the rarest
-- pair first: the store orders them): that pair's tasks through task_tags_pair, each checked
-- for the others through the primary key — never every task of a common pair.
(SELECT g.task_id FROM taskmill.task_tags AS g
 WHERE g.key = (%(tag_keys)s::text[])[1] AND g.value = (%(tag_values)s::text[])[1]
   AND NOT EXISTS (
       SELECT 1
       FROM unnest(%(tag_keys)s::text[], %(tag_values)s::text[]) WITH ORDINALITY
            AS p (key, value, n)
       WHERE p.n > 1 AND NOT EXISTS (
           SELECT 1 FROM taskmill.task_tags AS o
           WHERE o.task_id = g.task_id AND o.key = p.key AND o.value = p.value)))

-- name: tag_pair_count
-- How many tasks carry the pair :key, :value, counted up to :cap.
SELECT count(*) FROM (
    SELECT 1 FROM taskmill.task_tags WHERE key = %(key)s AND value = %(value)s LIMIT %(cap)s
) AS c;

-- name: tags_insert
-- The tags of tasks just inserted: the arrays side by side, one row per pair.
INSERT INTO taskmill.task_tags (task_id, key, value)
SELECT * FROM unnest(%(ids)s::bigint[], %(keys)s::text[], %(values)s::text[]);

-- name: tags_of
-- The tags of the tasks :ids, active or finished, by task and key.
SELECT task_id, key, value FROM taskmill.task_tags
WHERE task_id = ANY(%(ids)s::bigint[])
ORDER BY task_id, key;

-- name: select_tasks
-- Active tasks in dispatch order; a NULL filter matches everything, a NULL limit is none.
-- :tag_keys and :tag_values (arrays of one length): the tasks carrying every pair.
SELECT id, task_type, dedup_key, group_name, priority, status, queue_pos, payload, label,
       expected_read_bytes, expected_write_bytes, expected_net_rx_bytes,
       expected_net_tx_bytes, max_retries, attempts, last_error, run_after, expires_at,
       created_at, started_at, progress, progress_message, preempted_at, batch_id,
       parent_id, on_dependency_failure
FROM taskmill.tasks
WHERE (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s::bigint[]))
  AND (%(status)s::text[] IS NULL OR status = ANY(%(status)s::text[]))
  AND (%(task_type)s::text[] IS NULL OR task_type = ANY(%(task_type)s::text[]))
  AND (%(group)s::text[] IS NULL OR group_name = ANY(%(group)s::text[]))
  AND (%(batch_ids)s::bigint[] IS NULL OR batch_id = ANY(%(batch_ids)s::bigint[]))
  AND (%(tag_keys)s::text[] IS NULL OR id IN {fragment_tagged})
ORDER BY priority, queue_pos, id
LIMIT %(limit)s::bigint;

-- name: select_history
-- Finished tasks by id; filters as in select_tasks.
SELECT id, task_type, dedup_key, group_name, priority, status, payload, label,
       expected_read_bytes, expected_write_bytes, expected_net_rx_bytes,
       expected_net_tx_bytes, max_retries, attempts, last_error, replaced_by, created_at,
       started_at, finished_at, batch_id, parent_id
FROM taskmill.history
WHERE (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s::bigint[]))
  AND (%(status)s::text[] IS NULL OR status = ANY(%(status)s::text[]))
  AND (%(task_type)s::text[] IS NULL OR task_type = ANY(%(task_type)s::text[]))
  AND (%(group)s::text[] IS NULL OR group_name = ANY(%(group)s::text[]))
  AND (%(batch_ids)s::bigint[] IS NULL OR batch_id = ANY(%(batch_ids)s::bigint[]))
  AND (%(tag_keys)s::text[] IS NULL OR id IN {fragment_tagged})
ORDER BY id
LIMIT %(limit)s::bigint;

-- name: browse_settings
-- The plan of the browse that follows in its read transaction, pinned to the walks it was
-- written for (each table backwards along its primary key): a never-analysed table (a
-- large batch into an empty store) otherwise makes the planner read a whole table and
-- sort it for a status filter it guesses rare.  And planned for its own values each time,
-- even once the statement is prepared: a generic plan keeps every `IS NULL OR` and the
-- choice of tag test (a rare pair's ids become a plain array compared row by row).  Undone
-- at the transaction's end; JIT is off on every connection (session_settings), so the
-- cost these add compiles nothing.
SELECT set_config('enable_seqscan', 'off', true),
       set_config('enable_bitmapscan', 'off', true),
       set_config('enable_sort', 'off', true),
       set_config('plan_cache_mode', 'force_custom_plan', true);

-- name: browse
-- One page of tasks, active and finished together, newest first: each table read backwards
-- along its primary key from :before, its first :limit matches (a table the page rules out,
-- :active or :finished false, not read at all), the two merged by id.  The filters are
-- select_tasks', :key_prefix: a dedup key starting with that text (NULL: any), and
-- :parent_id: the children of that task, all newer than it (NULL: any).
SELECT * FROM (
    (SELECT id, status, task_type, dedup_key, group_name, priority, attempts, label,
            last_error, created_at, started_at, NULL::double precision AS finished_at,
            progress, batch_id, parent_id, true AS active
     FROM taskmill.tasks AS t
     WHERE %(active)s::boolean AND id < %(before)s::bigint AND {fragment_browse_filters}
     ORDER BY id DESC
     LIMIT %(limit)s::bigint)
    UNION ALL
    (SELECT id, status, task_type, dedup_key, group_name, priority, attempts, label,
            last_error, created_at, started_at, finished_at,
            NULL::double precision AS progress, batch_id, parent_id, false AS active
     FROM taskmill.history AS t
     WHERE %(finished)s::boolean AND id < %(before)s::bigint AND {fragment_browse_filters}
     ORDER BY id DESC
     LIMIT %(limit)s::bigint)
) AS page
ORDER BY id DESC
LIMIT %(limit)s::bigint;

-- name: fragment_browse_filters
-- The filters of a page of browse on the rows `t` of one table.  Tags: with a rare pair
-- first, its tasks (fragment_tagged) are the ids to look up; when even that pair is common
-- (:tags_common), each row's tags are checked as the walk meets it.
(%(status)s::text[] IS NULL OR status = ANY(%(status)s::text[]))
     AND (%(task_type)s::text[] IS NULL OR task_type = ANY(%(task_type)s::text[]))
     AND (%(group)s::text[] IS NULL OR group_name = ANY(%(group)s::text[]))
     AND (%(batch_ids)s::bigint[] IS NULL OR batch_id = ANY(%(batch_ids)s::bigint[]))
     AND (%(key_prefix)s::text IS NULL OR starts_with(dedup_key, %(key_prefix)s::text))
     AND (%(parent_id)s::bigint IS NULL
          OR (parent_id = %(parent_id)s::bigint AND id > %(parent_id)s::bigint))
     AND (%(tag_keys)s::text[] IS NULL
          OR CASE WHEN %(tags_common)s::boolean THEN {fragment_tags_carried}
                  ELSE t.id = ANY(ARRAY{fragment_tagged}) END)

-- name: fragment_tags_carried
-- The row `t` carries every pair of :tag_keys / :tag_values, each looked up through
-- task_tags' primary key: what a walk of the tasks by id checks when the pairs are common.
NOT EXISTS (
    SELECT 1 FROM unnest(%(tag_keys)s::text[], %(tag_values)s::text[]) AS p (key, value)
    WHERE NOT EXISTS (
        SELECT 1 FROM taskmill.task_tags AS o
        WHERE o.task_id = t.id AND o.key = p.key AND o.value = p.value))

-- name: throughput
-- The tasks that ended from :start until before :end, per minute (of Unix time:
-- floor(finished_at / 60)) and final status: a range of history_finished.
SELECT floor(finished_at / 60)::bigint AS minute, status, count(*)
FROM taskmill.history
WHERE finished_at >= %(start)s::double precision AND finished_at < %(end)s::double precision
GROUP BY minute, status;

-- name: recent_counts
-- Every active task, and the tasks that ended at :since or later (a range of
-- history_finished), per group, task type and status.
SELECT group_name, task_type, status, count(*) FROM taskmill.tasks GROUP BY 1, 2, 3
UNION ALL
SELECT group_name, task_type, status, count(*) FROM taskmill.history
WHERE finished_at >= %(since)s::double precision
GROUP BY 1, 2, 3;

-- name: stats_by_group
SELECT group_name, status, count(*) FROM taskmill.tasks GROUP BY 1, 2
UNION ALL
SELECT group_name, status, count(*) FROM taskmill.history GROUP BY 1, 2;

-- name: stats_by_priority
SELECT priority::bigint, status, count(*) FROM taskmill.tasks GROUP BY 1, 2
UNION ALL
SELECT priority::bigint, status, count(*) FROM taskmill.history GROUP BY 1, 2;

-- name: stats_by_task_type
SELECT task_type, status, count(*) FROM taskmill.tasks GROUP BY 1, 2
UNION ALL
SELECT task_type, status, count(*) FROM taskmill.history GROUP BY 1, 2;

-- ------------------------------------------------------------------ integrity

-- name: integrity_problems
-- The store's invariants, one row per kind of breach with how many rows break it, in this
-- order (an empty result: every invariant holds).
SELECT problem, n FROM (
    SELECT 1 AS ord,
           'active tasks whose key_hash is not the hash of their task_type and dedup_key'
               AS problem,
           count(*) AS n
    FROM taskmill.tasks
    WHERE key_hash IS DISTINCT FROM {KEY_HASH}
    UNION ALL
    SELECT 2, 'keys held by more than one active task', count(*)
    FROM (
        SELECT 1 FROM taskmill.tasks WHERE dedup_key IS NOT NULL
        GROUP BY task_type, dedup_key HAVING count(*) > 1
    ) AS dup
    UNION ALL
    SELECT 3, 'ids both active and finished', count(*)
    FROM taskmill.tasks AS t JOIN taskmill.history AS h ON h.id = t.id
    UNION ALL
    SELECT 4, 'running tasks without an owner, or other tasks with one', count(*)
    FROM taskmill.tasks
    WHERE (status = 'running') <> (owner IS NOT NULL)
    UNION ALL
    SELECT 5, 'finished tasks whose replaced_by does not match their status', count(*)
    FROM taskmill.history
    WHERE (status = 'superseded') <> (replaced_by IS NOT NULL)
    UNION ALL
    SELECT 6, 'ids above the last one the id sequence handed out', count(*)
    FROM (
        SELECT id FROM taskmill.tasks UNION ALL SELECT id FROM taskmill.history
    ) AS every_id
    WHERE id > (
        SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM taskmill.task_ids
    )
) AS checks
WHERE n > 0
ORDER BY ord;

-- ------------------------------------------------------------------ batches
-- A batch part is bulk-copied by DuckDB's postgres extension into a private UNLOGGED
-- staging table, taskmill.{stage} (a unique name made by the store, never data, quoted
-- as an identifier), then merged by one transaction holding SUBMIT_LOCK.  The store
-- drops the staging table afterwards, also when the merge fails.

-- name: batch_stage_create
CREATE UNLOGGED TABLE taskmill.{stage} (
    ord                   bigint  NOT NULL,     -- the input row index
    pos                   bigint  NOT NULL,     -- 1, 2, … over the staged rows, in ord order
    task_type             text    NOT NULL,
    dedup_key             text,
    group_name            text,
    priority              integer NOT NULL,
    payload               bytea,
    label                 text,
    expected_read_bytes   bigint  NOT NULL,
    expected_write_bytes  bigint  NOT NULL,
    expected_net_rx_bytes bigint  NOT NULL,
    expected_net_tx_bytes bigint  NOT NULL,
    max_retries           integer,
    strategy              text    NOT NULL,
    run_after             double precision,
    expires_at            double precision,
    on_dependency_failure text,
    key_hash              bigint                -- filled by DuckDB (taskmill/store/keys.py)
);

-- name: batch_stage_analyze
-- Row count and key-hash statistics for the planner (the match join then probes the
-- active-key index); the key hash alone, as sampling the texts too cost more than the
-- copy itself (0.3 s for 100,000 rows).
ANALYZE taskmill.{stage} (key_hash);

-- name: batch_stage_drop
DROP TABLE IF EXISTS taskmill.{stage};

-- name: batch_stage_leftovers
-- Staging tables whose name starts with the prefix (stage_: all of them; a name is
-- stage_<host tag>_<pid>_b<backend pid>_<random>, or the older stage_<host tag>_<pid>_<random>).
SELECT tablename FROM pg_catalog.pg_tables
WHERE schemaname = 'taskmill' AND starts_with(tablename, %(prefix)s);

-- name: batch_live_sessions
-- Which of these server processes serve a live session, on any database of the server
-- (pid is shown to every role; a sweep keeps the staging tables of those sessions).
SELECT pid FROM pg_catalog.pg_stat_activity WHERE pid = ANY(%(pids)s::integer[]);

-- name: batch_match
-- The one indexed join: every staged row with a key probes the active-key index; the
-- matched active tasks are locked until the merge commits.  `same` is 0 for a key-hash
-- collision (the texts differ), not a duplicate.
SELECT s.ord, t.id, t.status, t.priority::bigint, t.queue_pos,
       (t.task_type = s.task_type AND t.dedup_key = s.dedup_key)::int
FROM taskmill.{stage} AS s
JOIN taskmill.tasks AS t ON t.key_hash = s.key_hash
WHERE s.key_hash IS NOT NULL
ORDER BY s.ord
FOR UPDATE OF t;

-- name: batch_match_retried
-- For retry_failed (:ords, :failed: the keyed staged rows batch_match did not match and
-- the history row each one retries): a row whose key has a history record newer than its
-- failure — the failure was retried meanwhile, by another call, and that retry has
-- finished, or the key went through otherwise — is matched with the newest such record,
-- so it is deduplicated, never inserted.  Run in the merge after batch_match, under
-- SUBMIT_LOCK: a retry committed by another call is visible to batch_match (then locked
-- there) or, had it ended since, its record is visible here (a task moves to history in
-- one statement, so no end falls between the two).
SELECT DISTINCT ON (r.ord) r.ord, later.id, later.status, later.priority::bigint,
       0::bigint, 1
FROM unnest(%(ords)s::bigint[], %(failed)s::bigint[]) AS r (ord, failed_id)
JOIN taskmill.{stage} AS s ON s.ord = r.ord
JOIN taskmill.history AS later
  ON later.task_type = s.task_type AND later.dedup_key = s.dedup_key
 AND later.id > r.failed_id
WHERE later.id > %(floor)s
ORDER BY r.ord, later.id DESC;

-- name: batch_match_plan
-- The same for a plan (a read-only transaction: nothing is locked).  A task that has
-- expired by :now is left out: the submit would expire it first, freeing its key.
SELECT s.ord, t.id, t.status, t.priority::bigint, t.queue_pos,
       (t.task_type = s.task_type AND t.dedup_key = s.dedup_key)::int
FROM taskmill.{stage} AS s
JOIN taskmill.tasks AS t ON t.key_hash = s.key_hash
WHERE s.key_hash IS NOT NULL
  AND (t.expires_at IS NULL OR t.expires_at > %(now)s OR t.status = 'running')
ORDER BY s.ord;

-- name: batch_last_id
-- The last id the sequence handed out (0 if none): a plan's new ids follow it.
SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM taskmill.task_ids;

-- name: batch_reserve_ids
-- Draw :n ids (n > 0), ascending.  Under SUBMIT_LOCK no other batch or keyed submit draws
-- meanwhile, so they are one contiguous block; a submit of a task without a key draws
-- without the lock and may take an id in between (the batch's ids stay unique and
-- ascending in input order).  setval would be faster but is not safe against those.
SELECT nextval('taskmill.task_ids') AS id FROM generate_series(1, %(n)s::bigint) ORDER BY id;

-- name: batch_upgrade
-- Raise the priority of pending duplicates (skip): :ids and :priorities of one length.
UPDATE taskmill.tasks AS t SET priority = u.priority
FROM unnest(%(ids)b::bigint[], %(priorities)b::smallint[]) AS u (id, priority)
WHERE t.id = u.id AND t.status = 'pending' AND t.priority > u.priority;

-- name: batch_insert
-- Insert the staged rows that become tasks, with ids :base + 1, :base + 2, … in input
-- order.  Only matched rows are listed (:ords, :keep, :queue_pos of one length): a
-- matched row is inserted when :keep (it supersedes), at :queue_pos when it takes a
-- pending task's queue place; an unmatched row is always inserted, at its own id.
INSERT INTO taskmill.tasks (
    id, task_type, dedup_key, group_name, priority, queue_pos, payload, label,
    expected_read_bytes, expected_write_bytes, expected_net_rx_bytes, expected_net_tx_bytes,
    max_retries, created_at, key_hash, run_after, expires_at, batch_id, on_dependency_failure,
    parent_id, status
)
SELECT %(base)s::bigint + row_number() OVER w, s.task_type, s.dedup_key, s.group_name,
       s.priority, COALESCE(m.queue_pos, %(base)s::bigint + row_number() OVER w), s.payload,
       s.label, s.expected_read_bytes, s.expected_write_bytes, s.expected_net_rx_bytes,
       s.expected_net_tx_bytes, s.max_retries, %(now)s, s.key_hash, s.run_after, s.expires_at,
       %(batch_id)s::bigint, s.on_dependency_failure, %(parent_id)s::bigint,
       CASE WHEN b.ord IS NOT NULL THEN 'blocked' ELSE 'pending' END
FROM taskmill.{stage} AS s
LEFT JOIN unnest(%(ords)b::bigint[], %(keep)b::boolean[], %(queue_pos)b::bigint[])
     AS m (ord, keep, queue_pos) ON m.ord = s.ord
LEFT JOIN unnest(%(blocked)s::bigint[]) AS b (ord) ON b.ord = s.ord
WHERE m.ord IS NULL OR m.keep
WINDOW w AS (ORDER BY s.ord);

-- name: batch_insert_listed
-- The same with every inserted row listed (:ords, :ids, :queue_pos of one length): for
-- ids that are not one contiguous block (a keyless submit drew some in between).
INSERT INTO taskmill.tasks (
    id, task_type, dedup_key, group_name, priority, queue_pos, payload, label,
    expected_read_bytes, expected_write_bytes, expected_net_rx_bytes, expected_net_tx_bytes,
    max_retries, created_at, key_hash, run_after, expires_at, batch_id, on_dependency_failure,
    parent_id, status
)
SELECT d.id, s.task_type, s.dedup_key, s.group_name, s.priority, d.queue_pos, s.payload,
       s.label, s.expected_read_bytes, s.expected_write_bytes, s.expected_net_rx_bytes,
       s.expected_net_tx_bytes, s.max_retries, %(now)s, s.key_hash, s.run_after, s.expires_at,
       %(batch_id)s::bigint, s.on_dependency_failure, %(parent_id)s::bigint,
       CASE WHEN b.ord IS NOT NULL THEN 'blocked' ELSE 'pending' END
FROM unnest(%(ords)b::bigint[], %(ids)b::bigint[], %(queue_pos)b::bigint[])
     AS d (ord, id, queue_pos)
JOIN taskmill.{stage} AS s ON s.ord = d.ord
LEFT JOIN unnest(%(blocked)s::bigint[]) AS b (ord) ON b.ord = s.ord;

-- ------------------------------------------------------------------ child tasks (schema 9)
-- As in the SQLite store's queries (taskmill/backends/family.py settles them).  A parent's
-- row is locked (family_parents) before its children are counted (family_busy, a
-- statement of its own: a new snapshot), by a child's end and a parent's park alike.

-- name: family_children
SELECT id, parent_id FROM taskmill.tasks
WHERE parent_id = ANY(%(ids)s::bigint[])
ORDER BY id;

-- name: family_adopt
UPDATE taskmill.tasks AS t SET parent_id = p.parent
FROM unnest(%(tasks)s::bigint[], %(parents)s::bigint[]) AS p (task, parent)
WHERE t.id = p.task AND t.parent_id IS NULL;

-- name: family_parents
SELECT id, status, finalizer FROM taskmill.tasks
WHERE id = ANY(%(ids)s::bigint[])
ORDER BY id
FOR UPDATE;

-- name: family_busy
SELECT DISTINCT parent_id FROM taskmill.tasks WHERE parent_id = ANY(%(ids)s::bigint[]);

-- name: family_tallies
SELECT parent_id, status, count(*) FROM taskmill.history
WHERE parent_id = ANY(%(ids)s::bigint[])
GROUP BY parent_id, status;

-- name: family_counts
SELECT parent_id, status, count(*) FROM taskmill.tasks
WHERE parent_id = ANY(%(ids)s::bigint[])
GROUP BY parent_id, status
UNION ALL
SELECT parent_id, status, count(*) FROM taskmill.history
WHERE parent_id = ANY(%(ids)s::bigint[])
GROUP BY parent_id, status;

-- name: family_due
UPDATE taskmill.tasks SET status = 'pending', finalizer = 'due', expires_at = NULL
WHERE id = ANY(%(ids)s::bigint[]) AND status = 'waiting';

-- name: family_wait
UPDATE taskmill.tasks SET status = 'waiting', finalizer = %(finalizer)s, owner = NULL
WHERE id = %(id)s AND status = 'running';

-- name: family_running
-- Task :id runs: held (FOR KEY SHARE) until the batch spawning its children commits, so a
-- cancel of it waits, then finds them.
SELECT 1 FROM taskmill.tasks WHERE id = %(id)s AND status = 'running' FOR KEY SHARE;

-- name: family_owned
-- Task :id runs as attempt :attempt for :owner: locked, for a park.
SELECT id FROM taskmill.tasks
WHERE id = %(id)s AND status = 'running' AND owner = %(owner)s
  AND (%(attempt)s::integer IS NULL OR attempts = %(attempt)s::integer)
FOR UPDATE;

-- ------------------------------------------------------------------ dependencies (schema 8)
-- As in the SQLite store's queries (taskmill/backends/depends.py settles them).

-- name: deps_insert
INSERT INTO taskmill.task_deps (task_id, depends_on, batch_id, on_row)
SELECT e.task_id, e.depends_on, CASE WHEN e.depends_on IS NULL THEN %(batch_id)s::bigint END,
       e.on_row
FROM unnest(%(tasks)s::bigint[], %(deps)s::bigint[], %(rows)s::bigint[])
     AS e (task_id, depends_on, on_row);

-- name: deps_resolve_rows
-- Rows of batch :batch_id merged now (:rows, their tasks :ids): the edges of earlier
-- transactions that named them name their tasks.
UPDATE taskmill.task_deps AS d
SET depends_on = r.task_id, batch_id = NULL, on_row = NULL
FROM unnest(%(rows)s::bigint[], %(ids)s::bigint[]) AS r (row, task_id)
WHERE d.depends_on IS NULL AND d.batch_id = %(batch_id)s::bigint AND d.on_row = r.row;

-- name: deps_unmerged
-- The edges of batch :batch_id still on rows it never merged, deleted, with each
-- dependent's policy; the dependents' rows locked.
WITH gone AS (
    DELETE FROM taskmill.task_deps
    WHERE depends_on IS NULL AND batch_id = %(batch_id)s
    RETURNING task_id
)
SELECT t.id, t.on_dependency_failure
FROM taskmill.tasks AS t
WHERE t.id IN (SELECT task_id FROM gone)
ORDER BY t.id
FOR UPDATE OF t;

-- name: deps_dependents
-- The edges on :ids with each dependent's policy; the dependents' rows locked (in id
-- order) so that two transactions settling dependencies of one task never both leave it
-- blocked.
SELECT d.task_id, d.depends_on, t.on_dependency_failure
FROM taskmill.task_deps AS d
JOIN taskmill.tasks AS t ON t.id = d.task_id
WHERE d.depends_on = ANY(%(ids)s::bigint[])
ORDER BY d.task_id
FOR UPDATE OF t;

-- name: deps_drop
DELETE FROM taskmill.task_deps AS d
USING unnest(%(tasks)s::bigint[], %(deps)s::bigint[]) AS p (task_id, depends_on)
WHERE d.depends_on = p.depends_on AND d.task_id = p.task_id;

-- name: deps_forget
DELETE FROM taskmill.task_deps WHERE task_id = ANY(%(ids)s::bigint[]);

-- name: deps_retarget
UPDATE taskmill.task_deps AS d SET depends_on = p.new
FROM unnest(%(old)s::bigint[], %(new)s::bigint[]) AS p (old, new)
WHERE d.depends_on = p.old;

-- name: deps_release
UPDATE taskmill.tasks AS t SET status = 'pending'
WHERE t.id = ANY(%(ids)s::bigint[]) AND t.status = 'blocked'
  AND NOT EXISTS (SELECT 1 FROM taskmill.task_deps AS d WHERE d.task_id = t.id);

-- name: deps_hold
-- Hold the active tasks :ids against their end until this transaction ends (claims and
-- other updates go on: KEY SHARE conflicts only with a delete).
SELECT id FROM taskmill.tasks WHERE id = ANY(%(ids)s::bigint[]) ORDER BY id FOR KEY SHARE;

-- name: deps_task_states
SELECT id, NULL::text, NULL::bigint FROM taskmill.tasks WHERE id = ANY(%(ids)s::bigint[])
UNION ALL
SELECT id, status, replaced_by FROM taskmill.history WHERE id = ANY(%(ids)s::bigint[]);

-- name: deps_by_key
SELECT t.id, t.dedup_key
FROM unnest(%(key_hashes)s::bigint[], %(task_types)s::text[], %(dedup_keys)s::text[])
     AS k (key_hash, task_type, dedup_key)
JOIN taskmill.tasks AS t ON t.key_hash = k.key_hash
WHERE t.task_type = k.task_type AND t.dedup_key = k.dedup_key;

-- name: deps_awaited
SELECT task_id, depends_on FROM taskmill.task_deps
WHERE task_id = ANY(%(ids)s::bigint[]) AND depends_on IS NOT NULL
ORDER BY task_id, depends_on;

-- ------------------------------------------------------------------ schedules (schema 10)
-- A schedule's row, whole, is these columns in this order (taskmill/backends/schedules.py
-- reads it by position).  An occurrence is claimed by the transaction that submits its
-- task: it locks the row while `next_at` is still the occurrence it saw due
-- (schedule_claim) and moves `next_at` on (schedule_fired).  Another scheduler claiming
-- the same occurrence waits for that lock, then reads the row again as committed: its
-- `next_at` has moved, so it finds nothing.

-- name: schedule_get
-- Schedule :name, locked until the transaction ends (a replace, a pause, a resume).
SELECT name, task_type, submission, payload, every_us, cron, timezone, start_at, anchor,
       next_at, last_at, last_task_id, skipped, missed, paused, created_at, updated_at
FROM taskmill.schedules WHERE name = %(name)s
FOR UPDATE;

-- name: schedule_claim
-- Schedule :name, locked, while its next occurrence is still :seen and it is not paused
-- (none: another scheduler fired it first, or it was paused, replaced or removed).
SELECT name, task_type, submission, payload, every_us, cron, timezone, start_at, anchor,
       next_at, last_at, last_task_id, skipped, missed, paused, created_at, updated_at
FROM taskmill.schedules WHERE name = %(name)s AND next_at = %(seen)s AND NOT paused
FOR UPDATE;

-- name: schedule_rows
SELECT name, task_type, submission, payload, every_us, cron, timezone, start_at, anchor,
       next_at, last_at, last_task_id, skipped, missed, paused, created_at, updated_at
FROM taskmill.schedules ORDER BY name;

-- name: schedule_put
-- Create schedule :name, or replace it whole (what was kept is passed back in).
INSERT INTO taskmill.schedules (name, task_type, submission, payload, every_us, cron,
                                timezone, start_at, anchor, next_at, last_at, last_task_id,
                                skipped, missed, paused, created_at, updated_at)
VALUES (%(name)s, %(task_type)s, %(submission)s, %(payload)s, %(every_us)s, %(cron)s,
        %(timezone)s, %(start_at)s, %(anchor)s, %(next_at)s, %(last_at)s,
        %(last_task_id)s, %(skipped)s, %(missed)s, %(paused)s, %(created_at)s,
        %(updated_at)s)
ON CONFLICT (name) DO UPDATE SET
    task_type = excluded.task_type, submission = excluded.submission,
    payload = excluded.payload, every_us = excluded.every_us, cron = excluded.cron,
    timezone = excluded.timezone, start_at = excluded.start_at, anchor = excluded.anchor,
    next_at = excluded.next_at, last_at = excluded.last_at,
    last_task_id = excluded.last_task_id, skipped = excluded.skipped,
    missed = excluded.missed, paused = excluded.paused, updated_at = excluded.updated_at;

-- name: schedule_fired
-- An occurrence of :name was fired (its task submitted, or it was skipped: :skipped 1),
-- the :missed ones before it not replayed.
UPDATE taskmill.schedules
SET next_at = %(next_at)s, last_at = %(last_at)s, last_task_id = %(last_task_id)s,
    skipped = skipped + %(skipped)s, missed = missed + %(missed)s, updated_at = %(now)s
WHERE name = %(name)s;

-- name: schedule_set_paused
UPDATE taskmill.schedules SET paused = %(paused)s, next_at = %(next_at)s, updated_at = %(now)s
WHERE name = %(name)s;

-- name: schedule_delete
DELETE FROM taskmill.schedules WHERE name = %(name)s;

-- name: schedules_due
-- The schedules due at :now, earliest first (the partial index on next_at).
SELECT name, task_type, submission, payload, every_us, cron, timezone, start_at, anchor,
       next_at, last_at, last_task_id, skipped, missed, paused, created_at, updated_at
FROM taskmill.schedules
WHERE NOT paused AND next_at <= %(now)s
ORDER BY next_at LIMIT %(limit)s;

-- name: schedules_next
-- When the next occurrence of any schedule comes due (no row: none will).
SELECT next_at FROM taskmill.schedules
WHERE NOT paused AND next_at IS NOT NULL
ORDER BY next_at LIMIT 1;

-- name: schedule_task_status
-- The status of active task :id (no row: it finished, or never was).
SELECT status FROM taskmill.tasks WHERE id = %(id)s;

-- ------------------------------------------------------------------ batches as units of work (schema 7)
-- As in the SQLite store's queries: batch_open in a batch's first inserting transaction,
-- batch_grow in each, batch_seal when it stopped early; a sweep finishes it.

-- name: batch_open
INSERT INTO taskmill.batches (name, created_at) VALUES (%(name)s, %(now)s) RETURNING id;

-- name: batch_grow
UPDATE taskmill.batches SET total = total + %(n)s, sealed = sealed OR %(sealed)s
WHERE id = %(id)s;

-- name: batch_seal
UPDATE taskmill.batches SET sealed = true WHERE id = %(id)s;

-- name: batch_rows
SELECT id, name, created_at, sealed, total, finished_at, completed, failed, cancelled,
       superseded, expired, expected_bytes, completed_bytes
FROM taskmill.batches
ORDER BY id DESC
LIMIT %(limit)s::bigint;

-- name: batch_row
SELECT id, name, created_at, sealed, total, finished_at, completed, failed, cancelled,
       superseded, expired, expected_bytes, completed_bytes
FROM taskmill.batches
WHERE id = %(id)s;

-- name: batch_tallies
SELECT batch_id, status, count(*), sum(expected_read_bytes::numeric + expected_write_bytes + expected_net_rx_bytes + expected_net_tx_bytes), NULL::double precision
FROM taskmill.tasks
WHERE batch_id = ANY(%(ids)s::bigint[])
GROUP BY batch_id, status
UNION ALL
SELECT batch_id, status, count(*), sum(expected_read_bytes::numeric + expected_write_bytes + expected_net_rx_bytes + expected_net_tx_bytes), max(finished_at)
FROM taskmill.history
WHERE batch_id = ANY(%(ids)s::bigint[])
GROUP BY batch_id, status;

-- name: batches_done
SELECT b.id FROM taskmill.batches AS b
WHERE b.finished_at IS NULL AND b.sealed
  AND NOT EXISTS (SELECT 1 FROM taskmill.tasks AS t WHERE t.batch_id = b.id);

-- name: batch_finish
-- (Two sweeps finishing one batch: the later UPDATE waits for the first, then finds
-- finished_at set and changes nothing.)
UPDATE taskmill.batches
SET finished_at = %(finished_at)s, completed = %(completed)s, failed = %(failed)s,
    cancelled = %(cancelled)s, superseded = %(superseded)s, expired = %(expired)s,
    expected_bytes = %(expected_bytes)s, completed_bytes = %(completed_bytes)s
WHERE id = %(id)s AND finished_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM taskmill.tasks AS t WHERE t.batch_id = %(id)s);

-- ------------------------------------------------------------------ wake-ups

-- name: notify_work
-- Tell every worker listening on the store that tasks became pending (delivered at commit;
-- PostgreSQL folds the same notification sent twice in one transaction into one).
SELECT pg_notify('taskmill_work', '');

-- name: listen_work
LISTEN taskmill_work;

-- ------------------------------------------------------------------ retention
-- prune_history: the ids are selected once, their rows exported, then deleted in
-- transactions of a few thousand ids (taskmill/store/retention.py).

-- name: prune_select
-- Ids of the finished tasks a prune removes: finished before :cutoff (+Infinity: any
-- time), and older than the :keep_last most recently finished (NULL: none held back) —
-- the kept rows begin at the :keep_last-th newest by (finished_at, id); with fewer rows
-- than that, nothing is older.
SELECT id FROM taskmill.history
WHERE finished_at < %(cutoff)s::double precision
  AND (%(keep_last)s::bigint IS NULL
       OR (finished_at, id) < (SELECT finished_at, id FROM taskmill.history
                               ORDER BY finished_at DESC, id DESC
                               LIMIT 1 OFFSET %(keep_last)s::bigint - 1));

-- name: prune_rows
-- The rows of :ids as select_history shows them.
SELECT id, task_type, dedup_key, group_name, priority, status, payload, label,
       expected_read_bytes, expected_write_bytes, expected_net_rx_bytes,
       expected_net_tx_bytes, max_retries, attempts, last_error, replaced_by, created_at,
       started_at, finished_at, batch_id, parent_id
FROM taskmill.history
WHERE id = ANY(%(ids)s::bigint[])
ORDER BY id;

-- name: prune_delete
DELETE FROM taskmill.history WHERE id = ANY(%(ids)s::bigint[]);

-- name: no_lock_timeout
-- For the prune lock's own session: its one wait is for the prune under way, however
-- long that takes.
SET lock_timeout = 0;

-- name: prune_lock
-- The prune lock (PRUNE_LOCK), held by the session until it ends.
SELECT pg_advisory_lock(%(lock)s);

-- name: meta_get
SELECT value FROM taskmill.meta WHERE key = %(key)s;

-- name: meta_set
INSERT INTO taskmill.meta (key, value) VALUES (%(key)s, %(value)s)
ON CONFLICT (key) DO UPDATE SET value = excluded.value;

-- name: meta_delete
DELETE FROM taskmill.meta WHERE key = %(key)s;

-- ------------------------------------------------------------------ attempts (schema 6)

-- name: attempt_traceback
-- The last frames of a failed attempt's traceback, on the row its trigger just wrote.
UPDATE taskmill.attempts SET traceback = %(traceback)s
WHERE id = (SELECT max(id) FROM taskmill.attempts WHERE task_id = %(id)s);

-- name: attempts_mark
-- The newest attempt recorded so far: a recovery marks the ones it adds after it.
SELECT COALESCE(max(id), 0) FROM taskmill.attempts;

-- name: attempts_lost
-- Attempts a recovery gave back (released by the trigger) were lost with their worker.
UPDATE taskmill.attempts SET outcome = 'lost', error = %(why)s
WHERE id > %(mark)s AND outcome = 'released' AND worker IS NOT DISTINCT FROM %(owner)s::text;

-- name: select_attempts_of
-- The recorded attempts of some tasks, newest first.
SELECT task_id, attempt, worker, started_at, finished_at, outcome, error, traceback
FROM taskmill.attempts
WHERE task_id = ANY(%(ids)s::bigint[])
  AND (%(outcomes)s::text[] IS NULL OR outcome = ANY(%(outcomes)s::text[]))
ORDER BY id DESC
LIMIT %(limit)s::bigint;

-- name: select_attempts
-- Every recorded attempt, newest first.
SELECT task_id, attempt, worker, started_at, finished_at, outcome, error, traceback
FROM taskmill.attempts
WHERE (%(outcomes)s::text[] IS NULL OR outcome = ANY(%(outcomes)s::text[]))
ORDER BY id DESC
LIMIT %(limit)s::bigint;
