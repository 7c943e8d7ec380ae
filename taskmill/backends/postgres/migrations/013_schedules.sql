-- Schema 13 (as the SQLite store's migration 013): schedules.  A schedule submits its task
-- at each occurrence (an interval, or a five-field cron expression in a time zone), once
-- however many schedulers run on the store: the one that fires an occurrence locks the row
-- and moves `next_at` on in the transaction that submits its task; the others, waiting on
-- the row, find it moved.

-- include: schedules.sql
