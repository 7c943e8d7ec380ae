-- Schema 4: the controls of a real sync.  Tasks may expire if not started in time (and
-- end as 'expired' in history); groups can be paused; rate limits keep token buckets in
-- the store.  SQLite cannot change a CHECK constraint, so history is rebuilt with the
-- new status (its rows copied as they are).
ALTER TABLE tasks ADD COLUMN expires_at REAL;
CREATE INDEX tasks_expiry ON tasks (expires_at) WHERE expires_at IS NOT NULL;
ALTER TABLE history RENAME TO history_v3;
-- include: history.sql
INSERT INTO history SELECT * FROM history_v3;
DROP TABLE history_v3;
CREATE INDEX history_finished ON history (finished_at);

-- include: group_pauses.sql

-- include: rate_buckets.sql
