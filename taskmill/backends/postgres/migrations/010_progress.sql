-- Schema 10 (as the SQLite store's migration 010): stored progress — what a running
-- attempt last reported through `ctx.progress()`, cleared when an attempt starts.
ALTER TABLE taskmill.tasks ADD COLUMN progress double precision;
ALTER TABLE taskmill.tasks ADD COLUMN progress_message text;
