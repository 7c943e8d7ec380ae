-- Schema 4 -> 5: a worker's process is told apart from one of the same host name and
-- pid in another container.
--
-- `scope` is the worker's boot id and PID namespace: only a worker of the same host,
-- boot and PID namespace may judge it dead by its pid; any other waits for its lease.
-- From this version on `heartbeat_at` is written by the store's clock, and leases are
-- judged by it.
ALTER TABLE workers ADD COLUMN scope TEXT;
