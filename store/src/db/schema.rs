//! Kept by hand: `diesel print-schema` emits backend-specific types, and these tables use only
//! types that mean the same on SQLite and PostgreSQL.

diesel::table! {
    projects (id) {
        id -> Text,
        name -> Text,
        key_prefix -> Text,
        routes -> Text,
        default_route_policy -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
        route_matching -> Text,
    }
}

diesel::table! {
    api_keys (id) {
        id -> Text,
        project_id -> Text,
        name -> Text,
        kind -> Text,
        environment -> Text,
        key_hash -> Text,
        key_start -> Text,
        policy -> Text,
        expires_at -> Nullable<BigInt>,
        created_at -> BigInt,
        updated_at -> BigInt,
        revoked_at -> Nullable<BigInt>,
        revoked_reason -> Nullable<Text>,
        rotated_to -> Nullable<Text>,
        rotated_from -> Nullable<Text>,
        last_used_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    admins (id) {
        id -> Text,
        email -> Text,
        role -> Text,
        password_hash -> Text,
        created_at -> BigInt,
        session_epoch -> BigInt,
    }
}

diesel::table! {
    admin_tokens (id) {
        id -> Text,
        name -> Text,
        role -> Text,
        token_hash -> Text,
        created_at -> BigInt,
        last_used_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    audit_log (id) {
        id -> Text,
        at -> BigInt,
        actor -> Text,
        action -> Text,
        target_id -> Text,
        details -> Text,
    }
}

diesel::table! {
    snapshot_state (id) {
        id -> Integer,
        version -> BigInt,
    }
}

diesel::table! {
    key_usage (key_id, minute, code) {
        key_id -> Text,
        minute -> BigInt,
        code -> Text,
        count -> BigInt,
    }
}

diesel::table! {
    key_usage_hourly (key_id, hour, code) {
        key_id -> Text,
        hour -> BigInt,
        code -> Text,
        count -> BigInt,
    }
}

diesel::table! {
    key_usage_daily (key_id, day, code) {
        key_id -> Text,
        day -> BigInt,
        code -> Text,
        count -> BigInt,
    }
}

diesel::table! {
    key_sightings (key_id, kind, value) {
        key_id -> Text,
        kind -> Text,
        value -> Text,
        first_seen_at -> BigInt,
        last_seen_at -> BigInt,
        count -> BigInt,
    }
}

diesel::table! {
    alert_rules (project_id, rule) {
        project_id -> Text,
        rule -> Text,
        enabled -> Bool,
        threshold -> BigInt,
        window_seconds -> BigInt,
        auto_revoke -> Bool,
        updated_at -> BigInt,
    }
}

diesel::table! {
    alerts (id) {
        id -> Text,
        project_id -> Text,
        key_id -> Text,
        rule -> Text,
        summary -> Text,
        details -> Text,
        status -> Text,
        raised_at -> BigInt,
        acknowledged_at -> Nullable<BigInt>,
        acknowledged_by -> Nullable<Text>,
        action -> Nullable<Text>,
    }
}

diesel::table! {
    webhook_endpoints (id) {
        id -> Text,
        url -> Text,
        description -> Text,
        events -> Text,
        expiring_days -> BigInt,
        secret -> Text,
        enabled -> Bool,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    events (id) {
        id -> Text,
        #[sql_name = "type"]
        event_type -> Text,
        created_at -> BigInt,
        data -> Text,
        dedupe_key -> Nullable<Text>,
    }
}

diesel::table! {
    webhook_deliveries (id) {
        id -> Text,
        endpoint_id -> Text,
        event_id -> Text,
        status -> Text,
        attempts -> BigInt,
        next_attempt_at -> Nullable<BigInt>,
        last_attempt_at -> Nullable<BigInt>,
        last_status_code -> Nullable<BigInt>,
        last_error -> Nullable<Text>,
        created_at -> BigInt,
    }
}

diesel::table! {
    webhook_attempts (delivery_id, attempt) {
        delivery_id -> Text,
        attempt -> BigInt,
        at -> BigInt,
        status_code -> Nullable<BigInt>,
        error -> Nullable<Text>,
        duration_ms -> BigInt,
    }
}

diesel::table! {
    job_runs (name) {
        name -> Text,
        next_run_at -> BigInt,
        last_run_at -> BigInt,
    }
}

diesel::table! {
    revoked_sessions (token_hash) {
        token_hash -> Text,
        admin_id -> Text,
        expires_at -> BigInt,
    }
}

diesel::table! {
    key_changes (key_id) {
        key_id -> Text,
        version -> BigInt,
    }
}

diesel::joinable!(api_keys -> projects (project_id));
diesel::joinable!(key_changes -> api_keys (key_id));
diesel::joinable!(webhook_deliveries -> webhook_endpoints (endpoint_id));
diesel::joinable!(webhook_deliveries -> events (event_id));
diesel::allow_tables_to_appear_in_same_query!(
    projects,
    api_keys,
    key_changes,
    key_usage,
    key_usage_hourly,
    key_usage_daily,
    key_sightings,
    alert_rules,
    alerts,
    webhook_endpoints,
    events,
    webhook_deliveries,
    webhook_attempts,
);
