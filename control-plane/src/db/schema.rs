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
    }
}

diesel::table! {
    admins (id) {
        id -> Text,
        email -> Text,
        role -> Text,
        password_hash -> Text,
        created_at -> BigInt,
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

diesel::joinable!(api_keys -> projects (project_id));
diesel::allow_tables_to_appear_in_same_query!(projects, api_keys);
