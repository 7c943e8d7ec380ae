-- Schema 13 -> 14: what held a worker's groups back at its last claim, readable from the
-- store alone (a dashboard with no scheduler of its own).
--
-- `held` is a JSON object {group, or "type:T": reason ("group limit", "byte budget",
-- "rate limit")}, written by the worker with its lease renewal when it changes; NULL:
-- nothing held back.  Only a worker whose lease is alive is believed.
ALTER TABLE workers ADD COLUMN held TEXT;
