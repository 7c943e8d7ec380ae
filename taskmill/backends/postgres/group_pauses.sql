CREATE TABLE taskmill.group_pauses (
    group_name text             PRIMARY KEY,
    until      double precision,
    paused_at  double precision NOT NULL
);
