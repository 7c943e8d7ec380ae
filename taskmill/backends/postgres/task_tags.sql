CREATE TABLE taskmill.task_tags (
    task_id bigint NOT NULL,
    key     text   NOT NULL,
    value   text   NOT NULL,
    PRIMARY KEY (task_id, key)
);

-- A filter on tags: the tasks carrying a pair.
CREATE INDEX task_tags_pair ON taskmill.task_tags (key, value, task_id);

-- A task pruned from history takes its tags along.
CREATE FUNCTION taskmill.tags_pruned() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM taskmill.task_tags AS t USING gone AS o WHERE t.task_id = o.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER tags_pruned AFTER DELETE ON taskmill.history
REFERENCING OLD TABLE AS gone
FOR EACH STATEMENT EXECUTE FUNCTION taskmill.tags_pruned();
