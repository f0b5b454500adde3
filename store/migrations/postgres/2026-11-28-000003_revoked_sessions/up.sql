-- Session tokens ended by logging out. A session JWT is otherwise valid until it expires; each
-- request with one also looks here. A row can go once its token would have expired anyway.
CREATE TABLE revoked_sessions (
    token_hash TEXT PRIMARY KEY NOT NULL,
    admin_id TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX revoked_sessions_expires_at ON revoked_sessions (expires_at);
