-- Schema 14 (as the SQLite store's migration 014): what held a worker's groups back at its
-- last claim, a JSON object {group, or "type:T": reason}, written with its lease renewal
-- when it changes (NULL: nothing held back); read by views with no scheduler of their own.
ALTER TABLE taskmill.workers ADD COLUMN held text;
