CREATE TABLE taskmill.task_deps (
    task_id    bigint NOT NULL,   -- the blocked task
    depends_on bigint,            -- the task it waits for (NULL: see on_row)
    -- a row of the task's own batch merged by a later transaction of it, not yet merged:
    -- depends_on is set when it is
    batch_id   bigint,
    on_row     bigint
);

-- A dependency that ends: the tasks waiting for it.
CREATE INDEX task_deps_on ON taskmill.task_deps (depends_on) WHERE depends_on IS NOT NULL;

-- A task's own edges (tasks() shows what it still awaits; a task that ends drops them).
CREATE INDEX task_deps_task ON taskmill.task_deps (task_id);

-- Rows of a batch merged by a later transaction of it.
CREATE INDEX task_deps_row ON taskmill.task_deps (batch_id, on_row) WHERE depends_on IS NULL;
