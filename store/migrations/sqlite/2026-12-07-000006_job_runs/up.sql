-- One row per background job: the start of the next tick window it may run in. A replica runs
-- a job's tick only if it moves `next_run_at` past `now` itself (an atomic conditional
-- update), so that of several replicas on one database exactly one runs each tick.
CREATE TABLE job_runs (
    name TEXT PRIMARY KEY NOT NULL,
    next_run_at BIGINT NOT NULL,
    last_run_at BIGINT NOT NULL
);
