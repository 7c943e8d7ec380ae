-- Schema 4 (as the SQLite store's migration 004): tasks may expire if not started in
-- time and end as 'expired' in history; groups can be paused; rate limits keep token
-- buckets in the store.
ALTER TABLE taskmill.tasks ADD COLUMN expires_at double precision;
CREATE INDEX tasks_expiry ON taskmill.tasks (expires_at) WHERE expires_at IS NOT NULL;
ALTER TABLE taskmill.history DROP CONSTRAINT history_status_check;
ALTER TABLE taskmill.history ADD CONSTRAINT history_status_check
    CHECK (status IN ('completed', 'failed', 'cancelled', 'superseded', 'expired'));
-- include: group_pauses.sql
-- include: rate_buckets.sql
