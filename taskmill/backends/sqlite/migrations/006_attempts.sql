-- Schema 5 -> 6: every attempt that ended is kept (start, end, worker, outcome, error,
-- the last frames of its traceback), as schema.sql says.  Attempts that ended before
-- this version are not known: only the tasks' own counts and last errors.

-- include: attempts.sql
