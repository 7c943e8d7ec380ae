-- Schema 5 (as the SQLite store's migration 005): a worker's boot id and PID namespace,
-- so that only a worker of the same host, boot and PID namespace judges it dead by its
-- pid; `heartbeat_at` is written by the server's clock from this version on.
ALTER TABLE taskmill.workers ADD COLUMN scope text;
