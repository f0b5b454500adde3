DROP INDEX api_keys_project_start;
DROP INDEX api_keys_project_name;
