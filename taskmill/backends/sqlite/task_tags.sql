CREATE TABLE task_tags (
    task_id INTEGER NOT NULL,
    key     TEXT    NOT NULL,
    value   TEXT    NOT NULL,
    PRIMARY KEY (task_id, key)
) WITHOUT ROWID;

-- A filter on tags: the tasks carrying a pair.
CREATE INDEX task_tags_pair ON task_tags (key, value, task_id);

-- A task pruned from history takes its tags along.
CREATE TRIGGER tags_pruned AFTER DELETE ON history
BEGIN
    DELETE FROM task_tags WHERE task_id = OLD.id;
END;
