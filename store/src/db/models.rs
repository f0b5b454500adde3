//! Row types. Insert and read types are named apart (`NewX` vs `XRow`); JSON columns hold the
//! shared crate's serde forms, so a stored value parses back with the same validation.

use diesel::prelude::*;

use super::schema::{admin_tokens, admins, api_keys, audit_log, projects};
use crate::credentials::Role;
use crate::ids::{AdminId, TokenId};
use crate::ids::{KeyId, ProjectId};
use keygate_shared::{Environment, Kind};

/// A project row.
#[derive(Debug, Clone, Queryable, Insertable, AsChangeset)]
#[diesel(table_name = projects)]
pub struct ProjectRow {
    pub id: ProjectId,
    pub name: String,
    pub key_prefix: String,
    pub routes: String,
    pub default_route_policy: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub route_matching: String,
}

/// An API key row. Holds the key's hash and start, never the key.
#[derive(Debug, Clone, Queryable, Insertable)]
#[diesel(table_name = api_keys)]
pub struct KeyRow {
    pub id: KeyId,
    pub project_id: ProjectId,
    pub name: String,
    pub kind: Kind,
    pub environment: Environment,
    pub key_hash: String,
    pub key_start: String,
    /// JSON of [`crate::domain::keys::StoredPolicy`].
    pub policy: String,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub revoked_at: Option<i64>,
    pub revoked_reason: Option<String>,
    pub rotated_to: Option<KeyId>,
    pub rotated_from: Option<KeyId>,
    /// Start of the latest minute with a `valid` verdict reported for the key.
    pub last_used_at: Option<i64>,
}

/// The mutable part of a key row.
#[derive(Debug, Clone, AsChangeset)]
#[diesel(table_name = api_keys, treat_none_as_null = true)]
pub struct KeyChanges {
    pub name: String,
    /// JSON of [`crate::domain::keys::StoredPolicy`].
    pub policy: String,
    pub expires_at: Option<i64>,
    pub updated_at: i64,
}

/// An admin account row. `Debug` leaves the password hash out.
#[derive(Clone, Queryable, Insertable)]
#[diesel(table_name = admins)]
pub struct AdminRow {
    pub id: AdminId,
    pub email: String,
    pub role: Role,
    /// Argon2 PHC string.
    pub password_hash: String,
    pub created_at: i64,
    /// Sessions issued under another epoch are refused (see `auth::Claims::sep`).
    pub session_epoch: i64,
}

impl std::fmt::Debug for AdminRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminRow")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("role", &self.role)
            .field("password_hash", &crate::REDACTED)
            .field("created_at", &self.created_at)
            .field("session_epoch", &self.session_epoch)
            .finish()
    }
}

/// An admin API token row: SHA-256 hex of the token, never the token.
#[derive(Debug, Clone, Queryable, Insertable)]
#[diesel(table_name = admin_tokens)]
pub struct TokenRow {
    pub id: TokenId,
    pub name: String,
    pub role: Role,
    pub token_hash: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// An audit entry.
#[derive(Debug, Clone, Queryable, Insertable)]
#[diesel(table_name = audit_log)]
pub struct AuditRow {
    pub id: String,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target_id: String,
    pub details: String,
}
