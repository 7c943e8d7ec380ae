-- Token buckets of the schedulers' rate limits (schema 4), shared by every scheduler on
-- the store: `key` is 'group:NAME' or 'type:TASK_TYPE'; the bucket held `tokens` at
-- `updated_at` and refills at the limit's rate up to its burst.
CREATE TABLE rate_buckets (
    key        TEXT PRIMARY KEY,
    tokens     REAL NOT NULL,
    updated_at REAL NOT NULL
) WITHOUT ROWID;
