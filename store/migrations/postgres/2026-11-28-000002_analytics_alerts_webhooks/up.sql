-- Usage at hour and day granularity (minutes stay in key_usage), last-used time, what the
-- edge saw of each key's callers, alert rules and alerts, and webhooks with their persisted
-- deliveries. Portable SQL, as in the first migration.

ALTER TABLE api_keys ADD COLUMN last_used_at BIGINT;

CREATE TABLE key_usage_hourly (
    key_id TEXT NOT NULL,
    hour BIGINT NOT NULL,
    code TEXT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (key_id, hour, code)
);

CREATE TABLE key_usage_daily (
    key_id TEXT NOT NULL,
    day BIGINT NOT NULL,
    code TEXT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (key_id, day, code)
);

-- Distinct client IPs and referrer hosts per key, with when each was first and last seen.
CREATE TABLE key_sightings (
    key_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    first_seen_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (key_id, kind, value)
);
CREATE INDEX key_sightings_first_seen ON key_sightings (key_id, kind, first_seen_at);

-- A project's settings for one rule; no row means the rule's defaults.
CREATE TABLE alert_rules (
    project_id TEXT NOT NULL REFERENCES projects (id),
    rule TEXT NOT NULL,
    enabled BOOLEAN NOT NULL,
    threshold BIGINT NOT NULL,
    window_seconds BIGINT NOT NULL,
    auto_revoke BOOLEAN NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, rule)
);

CREATE TABLE alerts (
    id TEXT PRIMARY KEY NOT NULL,
    project_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    rule TEXT NOT NULL,
    summary TEXT NOT NULL,
    -- JSON: the evidence behind the summary.
    details TEXT NOT NULL,
    status TEXT NOT NULL,
    raised_at BIGINT NOT NULL,
    acknowledged_at BIGINT,
    acknowledged_by TEXT,
    -- `revoked` when the rule revoked the key.
    action TEXT
);
CREATE INDEX alerts_key_rule ON alerts (key_id, rule, raised_at);
CREATE INDEX alerts_status ON alerts (status, id);
CREATE INDEX alerts_project ON alerts (project_id, id);

CREATE TABLE webhook_endpoints (
    id TEXT PRIMARY KEY NOT NULL,
    url TEXT NOT NULL,
    description TEXT NOT NULL,
    -- JSON array of event types.
    events TEXT NOT NULL,
    expiring_days BIGINT NOT NULL,
    secret TEXT NOT NULL,
    enabled BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Every event, whether or not an endpoint wanted it. `dedupe_key` makes an event that must
-- happen once (a key entering its expiry window) idempotent.
CREATE TABLE events (
    id TEXT PRIMARY KEY NOT NULL,
    type TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    -- JSON.
    data TEXT NOT NULL,
    dedupe_key TEXT UNIQUE
);

-- One event to one endpoint; persisted before any attempt so a restart loses nothing.
CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY NOT NULL,
    endpoint_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    -- pending, succeeded, failed
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_at BIGINT,
    last_attempt_at BIGINT,
    last_status_code BIGINT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    UNIQUE (endpoint_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, id);

-- Each attempt of a delivery: the delivery log.
CREATE TABLE webhook_attempts (
    delivery_id TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    at BIGINT NOT NULL,
    status_code BIGINT,
    error TEXT,
    duration_ms BIGINT NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
