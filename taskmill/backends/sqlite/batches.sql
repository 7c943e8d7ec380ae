CREATE TABLE batches (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,   -- never handed out twice
    name            TEXT,
    created_at      REAL    NOT NULL,
    sealed          INTEGER NOT NULL DEFAULT 0,          -- 1 once its submission ended
    total           INTEGER NOT NULL DEFAULT 0,          -- the tasks it inserted
    finished_at     REAL,                                -- sealed, and none of its tasks active
    -- frozen when it finished (history may be pruned later): its tasks by how they ended,
    -- the expected bytes of them all and of the completed ones
    completed       INTEGER,
    failed          INTEGER,
    cancelled       INTEGER,
    superseded      INTEGER,
    expired         INTEGER,
    expected_bytes  INTEGER,
    completed_bytes INTEGER
);

-- The batches not finished yet: what a scheduler's sweep looks at.
CREATE INDEX batches_open ON batches (id) WHERE finished_at IS NULL;
