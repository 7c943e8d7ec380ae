-- Groups held by pause_group (schema 4): none of their tasks is dispatched until
-- `until` (NULL: until resume_group).
CREATE TABLE group_pauses (
    group_name TEXT PRIMARY KEY,
    until      REAL,
    paused_at  REAL NOT NULL
) WITHOUT ROWID;
