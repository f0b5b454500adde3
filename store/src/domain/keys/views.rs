//! The request and response bodies of the key API.

use keygate_shared::{Environment, KeyStatus, Kind, Quota, RateLimit, Restrictions, Scope};
use serde::{Deserialize, Serialize};

use super::Metadata;
use crate::domain::double_option;
use crate::ids::{KeyId, ProjectId};

fn default_kind() -> Kind {
    Kind::Secret
}

fn default_environment() -> Environment {
    Environment::Live
}

/// A key spec: the body of `POST /v1/projects/{project_id}/keys`. Only `name` is required:
/// `kind` defaults to `secret`, `environment` to `live`, everything else to none.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct KeySpec {
    /// Display name: not blank, at most 200 characters once trimmed, no control characters.
    #[cfg_attr(
        feature = "openapi",
        schema(example = "Checkout web app", min_length = 1)
    )]
    pub name: String,
    /// `secret` (the default) or `publishable`.
    #[serde(default = "default_kind")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schemas::KindSchema, default = "secret"))]
    pub kind: Kind,
    /// `live` (the default) or `test`.
    #[serde(default = "default_environment")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schemas::EnvironmentSchema, default = "live"))]
    pub environment: Environment,
    /// Granted scopes, at most 100.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(
        value_type = Vec<crate::schemas::ScopeSchema>,
        example = json!(["orders:read"]),
        max_items = 100
    ))]
    pub scopes: Vec<Scope>,
    /// Referrer and IP restrictions. Not nullable: leave it out for none.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schemas::RestrictionsSchema))]
    pub restrictions: Restrictions,
    /// Rate limit.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::schemas::RateLimitSchema>))]
    pub rate_limit: Option<RateLimit>,
    /// Quota.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::schemas::QuotaSchema>))]
    pub quota: Option<Quota>,
    /// RFC 3339; must be in the future.
    #[serde(default, with = "crate::timefmt::opt_rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub expires_at: Option<i64>,
    /// Free JSON object (at most 4 KiB), returned by `/v1/verify`.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<Metadata>,
}

/// Body of `PATCH /v1/keys/{key_id}`: any spec field but `kind` and `environment`; `null`
/// clears `rate_limit`, `quota`, `expires_at` and `metadata`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateKey {
    /// Display name: not blank, at most 200 characters once trimmed, no control characters.
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub name: Option<String>,
    /// Replaces the scopes (at most 100).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<crate::schemas::ScopeSchema>>, max_items = 100))]
    pub scopes: Option<Vec<Scope>>,
    /// Replaces the restrictions.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::schemas::RestrictionsSchema>))]
    pub restrictions: Option<Restrictions>,
    /// Rate limit, or `null` to remove it.
    #[serde(default, deserialize_with = "double_option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::schemas::RateLimitSchema>))]
    pub rate_limit: Option<Option<RateLimit>>,
    /// Quota, or `null` to remove it.
    #[serde(default, deserialize_with = "double_option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::schemas::QuotaSchema>))]
    pub quota: Option<Option<Quota>>,
    /// RFC 3339 in the future, or `null` for no expiry.
    #[serde(default, deserialize_with = "opt_opt_time")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub expires_at: Option<Option<i64>>,
    /// Metadata, or `null` to remove it.
    #[serde(default, deserialize_with = "double_option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<Option<Metadata>>,
    /// Refused: fixed at creation. Not in the document: with no properties beyond the listed
    /// ones allowed, it says what the server does (422).
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub kind: Option<serde_json::Value>,
    /// Refused: fixed at creation (see `kind`).
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub environment: Option<serde_json::Value>,
}

fn opt_opt_time<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<i64>>, D::Error> {
    crate::timefmt::opt_rfc3339::deserialize(d).map(Some)
}

/// Body of `POST /v1/keys/{key_id}/rotate`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    /// How long the old key keeps working: 0 to 2592000 (30 days). Default 0.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(maximum = 2592000))]
    pub grace_seconds: u32,
}

/// Body of `POST /v1/keys/{key_id}/revoke`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RevokeKey {
    /// Why (at most 500 characters).
    pub reason: Option<String>,
}

/// A key as the API shows it: never the plaintext, never the hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyView {
    /// `key_...`.
    pub id: KeyId,
    /// `prj_...`.
    pub project_id: ProjectId,
    /// Display name.
    pub name: String,
    /// Kind.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schemas::KindSchema))]
    pub kind: Kind,
    /// Environment.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schemas::EnvironmentSchema))]
    pub environment: Environment,
    /// Scopes.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub scopes: Vec<Scope>,
    /// Restrictions.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schemas::RestrictionsSchema))]
    pub restrictions: Restrictions,
    /// Rate limit.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::schemas::RateLimitSchema>))]
    pub rate_limit: Option<RateLimit>,
    /// Quota.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::schemas::QuotaSchema>))]
    pub quota: Option<Quota>,
    /// RFC 3339; after a rotation, the end of the grace period.
    #[serde(with = "crate::timefmt::opt_rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub expires_at: Option<i64>,
    /// Metadata.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<serde_json::Value>,
    /// `{prefix}_{kind}_{env}_` and four secret characters.
    pub start: String,
    /// At the time of the response.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schemas::KeyStatusSchema))]
    pub status: KeyStatus,
    /// RFC 3339.
    #[serde(with = "crate::timefmt::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: i64,
    /// RFC 3339.
    #[serde(with = "crate::timefmt::opt_rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub revoked_at: Option<i64>,
    /// Reason given at revocation.
    pub revoked_reason: Option<String>,
    /// The key that replaced this one.
    pub rotated_to: Option<KeyId>,
    /// The key this one replaced.
    pub rotated_from: Option<KeyId>,
    /// RFC 3339: start of the latest minute in which the edge reported a `valid` request
    /// with this key; `null` if none was reported.
    #[serde(with = "crate::timefmt::opt_rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub last_used_at: Option<i64>,
}

/// A created key: its view plus the plaintext, shown this once. `Debug` leaves the plaintext
/// out.
#[derive(Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedKey {
    /// The view.
    #[serde(flatten)]
    pub view: KeyView,
    /// The plaintext key. Store it now: it is never shown again.
    pub key: String,
}

impl std::fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedKey")
            .field("view", &self.view)
            .field("key", &crate::REDACTED)
            .finish()
    }
}

/// The old key of a rotation.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PreviousKey {
    /// Old key id.
    pub id: KeyId,
    /// When the old key stops working.
    #[serde(with = "crate::timefmt::opt_rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub expires_at: Option<i64>,
}

/// A rotation's result: the new key, its plaintext, and the old key's end. `Debug` leaves the
/// plaintext out.
#[derive(Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RotatedKey {
    /// The new key's view.
    #[serde(flatten)]
    pub view: KeyView,
    /// The new plaintext key, shown this once.
    pub key: String,
    /// The old key.
    pub previous: PreviousKey,
}

impl std::fmt::Debug for RotatedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotatedKey")
            .field("view", &self.view)
            .field("key", &crate::REDACTED)
            .field("previous", &self.previous)
            .finish()
    }
}

/// A page of keys.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyPage {
    /// Newest first.
    pub items: Vec<KeyView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Query of `GET /v1/projects/{project_id}/keys`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
pub struct KeyListQuery {
    /// `active`, `expired` or `revoked`.
    #[cfg_attr(feature = "openapi", param(value_type = Option<crate::schemas::KeyStatusSchema>))]
    pub status: Option<KeyStatus>,
    /// `live` or `test`.
    #[cfg_attr(feature = "openapi", param(value_type = Option<crate::schemas::EnvironmentSchema>))]
    pub environment: Option<Environment>,
    /// 1 to 200; default 50.
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 200))]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    #[cfg_attr(feature = "openapi", param(pattern = "^(key_[0-9A-Za-z]{26})?$"))]
    pub cursor: Option<String>,
    /// Only keys whose name starts with this, ignoring the case of ASCII letters (`check`
    /// finds "Checkout web app"; other characters match exactly). `%` and `_` are plain
    /// characters. At most 200 characters; empty means no filter.
    #[cfg_attr(feature = "openapi", param(max_length = 200, example = "Checkout"))]
    pub name_prefix: Option<String>,
    /// Only keys whose visible start begins with this, case-sensitive: the whole `start` of a
    /// key (`acme_sk_live_Ab12`) or any beginning of it. At most 64 characters; empty means no
    /// filter.
    #[cfg_attr(
        feature = "openapi",
        param(max_length = 64, example = "acme_sk_live_Ab12")
    )]
    pub start: Option<String>,
}
