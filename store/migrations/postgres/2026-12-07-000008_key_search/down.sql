DROP INDEX api_keys_project_start;
DROP INDEX api_keys_project_name;
ALTER TABLE api_keys ALTER COLUMN key_start TYPE TEXT COLLATE "default";
ALTER TABLE api_keys ALTER COLUMN name TYPE TEXT COLLATE "default";
