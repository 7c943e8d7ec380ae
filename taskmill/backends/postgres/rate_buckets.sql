CREATE TABLE taskmill.rate_buckets (
    key        text             PRIMARY KEY,
    tokens     double precision NOT NULL,
    updated_at double precision NOT NULL
);
