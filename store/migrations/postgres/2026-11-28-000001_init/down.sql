DROP TRIGGER audit_log_no_change ON audit_log;
DROP FUNCTION audit_log_append_only();
DROP TABLE key_usage;
DROP TABLE snapshot_state;
DROP TABLE audit_log;
DROP TABLE admin_tokens;
DROP TABLE admins;
DROP TABLE api_keys;
DROP TABLE projects;
