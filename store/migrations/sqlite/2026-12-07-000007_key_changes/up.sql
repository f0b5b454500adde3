-- The snapshot version of the last change to what each key publishes: a publish reads only the
-- keys changed since the snapshot the control plane holds, through the index on `version`.
-- Keys without a row have not changed since before this table existed (version 0).
CREATE TABLE key_changes (
    key_id TEXT PRIMARY KEY NOT NULL REFERENCES api_keys (id),
    version BIGINT NOT NULL
);
CREATE INDEX key_changes_version ON key_changes (version);
