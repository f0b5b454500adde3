-- Prefix search of a project's keys (`name_prefix` and `start` of the key list): each prefix
-- is a range `p <= col < successor(p)` on one of these indexes. The `C` collation makes the
-- range compare bytes, as SQLite does (any other collation may order `ab-` outside
-- [`ab`, `ac`)), and makes `lower` fold only ASCII letters, as SQLite's does. Neither column
-- is sorted by anywhere else.
ALTER TABLE api_keys ALTER COLUMN name TYPE TEXT COLLATE "C";
ALTER TABLE api_keys ALTER COLUMN key_start TYPE TEXT COLLATE "C";
CREATE INDEX api_keys_project_name ON api_keys (project_id, lower(name), id);
CREATE INDEX api_keys_project_start ON api_keys (project_id, key_start, id);
