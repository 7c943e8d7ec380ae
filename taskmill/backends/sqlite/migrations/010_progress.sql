-- Schema 9 -> 10: stored progress.  What a running attempt last reported through
-- `ctx.progress()` (a fraction 0..1 and a message), written by its scheduler a few times a
-- second at most, so every process sees it in `tasks()`; cleared when an attempt starts.
ALTER TABLE tasks ADD COLUMN progress REAL;
ALTER TABLE tasks ADD COLUMN progress_message TEXT;
