-- Prefix search of a project's keys (`name_prefix` and `start` of the key list): each prefix
-- is a range `p <= col < successor(p)` on one of these, in the order of the BINARY collation
-- (bytes). `lower` folds only ASCII letters here (SQLite without ICU), as on PostgreSQL.
-- `id` last, so the page's cursor is checked in the index.
CREATE INDEX api_keys_project_name ON api_keys (project_id, lower(name), id);
CREATE INDEX api_keys_project_start ON api_keys (project_id, key_start, id);
