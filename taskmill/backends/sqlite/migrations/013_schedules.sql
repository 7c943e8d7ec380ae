-- Schema 12 -> 13: schedules.  A schedule submits its task at each occurrence (an
-- interval, or a five-field cron expression in a time zone), once however many schedulers
-- run on the store: the one that fires an occurrence moves `next_at` on in the
-- transaction that submits its task, and the others find it moved.

-- include: schedules.sql
