//! API keys: issue, list, update, rotate, revoke. Only the SHA-256 of a key and its start are
//! stored; the plaintext leaves the process once, in the response that creates it.

use diesel::prelude::*;
use keygate_shared::{
    Environment, IpNet, KeyHash, KeyPrefix, KeyRecord, KeyStatus, Kind, PlaintextKey, Quota,
    RateLimit, ReferrerPattern, Restrictions, Scope,
};
use serde::{Deserialize, Serialize};

use super::{audit, bump_version, check_name, double_option, events, projects, Page};
use crate::db::models::{KeyChanges, KeyRow};
use crate::db::schema::{api_keys, key_changes};
use crate::db::{write_tx, DbConn};
use crate::error::{ConflictCode, StoreError};
use crate::ids::new_id;

/// Longest rotation grace: 30 days.
pub const MAX_GRACE_SECONDS: u32 = 30 * 86_400;
const MAX_LIST_ITEMS: usize = 100;
const MAX_METADATA_BYTES: usize = 4096;
/// Longest revocation reason.
pub const MAX_REASON_CHARS: usize = 500;

type Metadata = serde_json::Map<String, serde_json::Value>;

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
    pub id: String,
    /// `prj_...`.
    pub project_id: String,
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
    pub rotated_to: Option<String>,
    /// The key this one replaced.
    pub rotated_from: Option<String>,
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
    pub id: String,
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
}

fn status_at(r: &KeyRow, now: i64) -> KeyStatus {
    if r.revoked_at.is_some() {
        KeyStatus::Revoked
    } else if r.expires_at.is_some_and(|e| e <= now) {
        KeyStatus::Expired
    } else {
        KeyStatus::Active
    }
}

/// The policy part of a key, stored as one JSON column (portable, and keeps the table narrow).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StoredPolicy {
    /// Scopes.
    #[serde(default)]
    pub scopes: Vec<Scope>,
    /// Referrer patterns.
    #[serde(default)]
    pub referrers: Vec<ReferrerPattern>,
    /// Networks.
    #[serde(default)]
    pub ips: Vec<IpNet>,
    /// Rate limit.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// Quota.
    #[serde(default)]
    pub quota: Option<Quota>,
    /// Metadata.
    #[serde(default)]
    pub metadata: Option<Metadata>,
}

impl StoredPolicy {
    fn parse(r: &KeyRow) -> Result<Self, StoreError> {
        serde_json::from_str(&r.policy).map_err(StoreError::internal)
    }
    fn to_json(&self) -> Result<String, StoreError> {
        serde_json::to_string(self).map_err(StoreError::internal)
    }
}

fn kind_of(s: &str) -> Result<Kind, StoreError> {
    s.parse()
        .map_err(|_| StoreError::internal(anyhow::anyhow!("stored kind {s:?}")))
}

fn env_of(s: &str) -> Result<Environment, StoreError> {
    s.parse()
        .map_err(|_| StoreError::internal(anyhow::anyhow!("stored environment {s:?}")))
}

impl KeyView {
    /// From a row at `now`.
    pub fn from_row(r: &KeyRow, now: i64) -> Result<Self, StoreError> {
        let p = StoredPolicy::parse(r)?;
        Ok(KeyView {
            id: r.id.clone(),
            project_id: r.project_id.clone(),
            name: r.name.clone(),
            kind: kind_of(&r.kind)?,
            environment: env_of(&r.environment)?,
            scopes: p.scopes,
            restrictions: Restrictions {
                referrers: p.referrers,
                ips: p.ips,
            },
            rate_limit: p.rate_limit,
            quota: p.quota,
            expires_at: r.expires_at,
            metadata: p.metadata.map(serde_json::Value::Object),
            start: r.key_start.clone(),
            status: status_at(r, now),
            created_at: r.created_at,
            revoked_at: r.revoked_at,
            revoked_reason: r.revoked_reason.clone(),
            rotated_to: r.rotated_to.clone(),
            rotated_from: r.rotated_from.clone(),
            last_used_at: r.last_used_at,
        })
    }
}

/// The snapshot record of a key row.
pub fn record_from_row(r: &KeyRow) -> Result<KeyRecord, StoreError> {
    let p = StoredPolicy::parse(r)?;
    let metadata_json = p
        .metadata
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(StoreError::internal)?;
    Ok(KeyRecord {
        hash: KeyHash::from_hex(&r.key_hash)
            .ok_or_else(|| StoreError::internal(anyhow::anyhow!("stored hash of {}", r.id)))?,
        key_id: r.id.clone(),
        project_id: r.project_id.clone(),
        kind: kind_of(&r.kind)?,
        environment: env_of(&r.environment)?,
        revoked: r.revoked_at.is_some(),
        expires_at_ms: r.expires_at,
        scopes: p.scopes,
        referrers: p.referrers,
        ips: p.ips,
        rate_limit: p.rate_limit,
        quota: p.quota,
        metadata_json,
    })
}

/// Whatever the API accepts, the edge enforces: a key whose snapshot record the edge's decoder
/// (the same code in the Worker's build) would not give back unchanged is refused here, with
/// the reason, rather than published.
fn check_edge_decodes(row: &KeyRow) -> Result<(), StoreError> {
    let record = record_from_row(row)?;
    keygate_shared::record::edge_round_trip(&record)
        .map_err(|e| StoreError::validation("restrictions", e.reason))
}

fn check_scopes(mut scopes: Vec<Scope>) -> Result<Vec<Scope>, StoreError> {
    if scopes.len() > MAX_LIST_ITEMS {
        return Err(StoreError::validation(
            "scopes",
            format!("at most {MAX_LIST_ITEMS} scopes"),
        ));
    }
    scopes.sort();
    scopes.dedup();
    Ok(scopes)
}

fn check_restrictions(kind: Kind, r: &Restrictions) -> Result<(), StoreError> {
    if r.referrers.len() > MAX_LIST_ITEMS {
        return Err(StoreError::validation(
            "restrictions.referrers",
            format!("at most {MAX_LIST_ITEMS} patterns"),
        ));
    }
    if r.ips.len() > MAX_LIST_ITEMS {
        return Err(StoreError::validation(
            "restrictions.ips",
            format!("at most {MAX_LIST_ITEMS} networks"),
        ));
    }
    if kind == Kind::Publishable && r.referrers.is_empty() {
        return Err(StoreError::validation(
            "restrictions.referrers",
            "a publishable key needs at least one referrer pattern",
        ));
    }
    Ok(())
}

fn check_expiry(expires_at: Option<i64>, now: i64) -> Result<(), StoreError> {
    if expires_at.is_some_and(|e| e <= now) {
        return Err(StoreError::validation(
            "expires_at",
            "must be in the future",
        ));
    }
    Ok(())
}

fn check_metadata(m: &Option<Metadata>) -> Result<(), StoreError> {
    let len = m
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(StoreError::internal)?
        .map_or(0, |j| j.len());
    if len > MAX_METADATA_BYTES {
        return Err(StoreError::validation(
            "metadata",
            format!("must be at most {MAX_METADATA_BYTES} bytes of JSON"),
        ));
    }
    Ok(())
}

/// Loads a key row.
pub fn find_row(conn: &mut DbConn, id: &str) -> Result<KeyRow, StoreError> {
    // `load` on the concrete connection keeps the prepared statement cached (see
    // verify::lookup); the id is the primary key.
    let query = api_keys::table.find(id);
    let rows: Vec<KeyRow> = crate::with_backend!(conn, |c| query.load(c))?;
    rows.into_iter()
        .next()
        .ok_or_else(|| StoreError::not_found("key", id))
}

/// Issues a key in a project.
pub fn create(
    conn: &mut DbConn,
    now: i64,
    actor: &str,
    project_id: &str,
    spec: KeySpec,
) -> Result<CreatedKey, StoreError> {
    let name = check_name("name", &spec.name)?;
    let scopes = check_scopes(spec.scopes)?;
    check_restrictions(spec.kind, &spec.restrictions)?;
    check_expiry(spec.expires_at, now)?;
    check_metadata(&spec.metadata)?;
    let policy = StoredPolicy {
        scopes,
        referrers: spec.restrictions.referrers,
        ips: spec.restrictions.ips,
        rate_limit: spec.rate_limit,
        quota: spec.quota,
        metadata: spec.metadata,
    }
    .to_json()?;
    write_tx(conn, |conn| {
        let version = bump_version(conn)?;
        let project = projects::find_row(conn, project_id)?;
        let prefix = KeyPrefix::parse(&project.key_prefix).map_err(StoreError::internal)?;
        let key =
            PlaintextKey::generate(&mut rand::rngs::OsRng, &prefix, spec.kind, spec.environment);
        let row = KeyRow {
            id: new_id("key"),
            project_id: project.id,
            name,
            kind: spec.kind.as_str().to_owned(),
            environment: spec.environment.as_str().to_owned(),
            key_hash: key.hash().to_hex(),
            key_start: key.start(),
            policy,
            expires_at: spec.expires_at,
            created_at: now,
            updated_at: now,
            revoked_at: None,
            revoked_reason: None,
            rotated_to: None,
            rotated_from: None,
            last_used_at: None,
        };
        check_edge_decodes(&row)?;
        diesel::insert_into(api_keys::table)
            .values(&row)
            .execute(conn)?;
        mark_changed(conn, &row.id, version)?;
        let view = KeyView::from_row(&row, now)?;
        audit::record(
            conn,
            now,
            actor,
            "key.create",
            &view.id,
            serde_json::json!({ "before": null, "after": view }),
        )?;
        events::emit(
            conn,
            now,
            events::KEY_CREATED,
            &serde_json::json!({ "key": view }),
        )?;
        Ok(CreatedKey {
            view,
            key: key.into_string(),
        })
    })
}

/// One key.
pub fn get(conn: &mut DbConn, now: i64, id: &str) -> Result<KeyView, StoreError> {
    KeyView::from_row(&find_row(conn, id)?, now)
}

/// A page of a project's keys, newest first.
pub fn list(
    conn: &mut DbConn,
    now: i64,
    project_id: &str,
    q: KeyListQuery,
) -> Result<KeyPage, StoreError> {
    let page = Page::parse(q.limit, q.cursor, "key")?;
    projects::find_row(conn, project_id)?;
    let mut query = api_keys::table
        .filter(api_keys::project_id.eq(project_id.to_owned()))
        .into_boxed();
    if let Some(env) = q.environment {
        query = query.filter(api_keys::environment.eq(env.as_str()));
    }
    match q.status {
        None => {}
        Some(KeyStatus::Revoked) => query = query.filter(api_keys::revoked_at.is_not_null()),
        Some(KeyStatus::Expired) => {
            query = query
                .filter(api_keys::revoked_at.is_null())
                .filter(api_keys::expires_at.le(now))
        }
        Some(KeyStatus::Active) => {
            query = query.filter(api_keys::revoked_at.is_null()).filter(
                api_keys::expires_at
                    .is_null()
                    .or(api_keys::expires_at.gt(now)),
            )
        }
    }
    if let Some(b) = &page.before {
        query = query.filter(api_keys::id.lt(b.clone()));
    }
    let rows: Vec<KeyRow> = query
        .order(api_keys::id.desc())
        .limit(page.limit + 1)
        .load(conn)?;
    let (rows, next_cursor) = page.finish(rows, |r| &r.id);
    let items = rows
        .iter()
        .map(|r| KeyView::from_row(r, now))
        .collect::<Result<_, _>>()?;
    Ok(KeyPage { items, next_cursor })
}

/// Applies a partial update.
pub fn update(
    conn: &mut DbConn,
    now: i64,
    actor: &str,
    id: &str,
    input: UpdateKey,
) -> Result<KeyView, StoreError> {
    if input.kind.is_some() {
        return Err(StoreError::validation(
            "kind",
            "cannot be changed after the key is created",
        ));
    }
    if input.environment.is_some() {
        return Err(StoreError::validation(
            "environment",
            "cannot be changed after the key is created",
        ));
    }
    let name = input
        .name
        .as_deref()
        .map(|n| check_name("name", n))
        .transpose()?;
    let scopes = input.scopes.map(check_scopes).transpose()?;
    if let Some(Some(e)) = input.expires_at {
        check_expiry(Some(e), now)?;
    }
    if let Some(m) = &input.metadata {
        check_metadata(m)?;
    }
    write_tx(conn, |conn| {
        let version = bump_version(conn)?;
        let row = find_row(conn, id)?;
        if row.revoked_at.is_some() {
            return Err(StoreError::Conflict {
                code: ConflictCode::KeyNotActive,
                detail: format!("key {id:?} is revoked and cannot be changed"),
            });
        }
        let before = KeyView::from_row(&row, now)?;
        let kind = before.kind;
        let restrictions = input
            .restrictions
            .unwrap_or_else(|| before.restrictions.clone());
        check_restrictions(kind, &restrictions)?;
        let expires_at = match input.expires_at {
            None => row.expires_at,
            Some(new) => {
                // A rotated key must not outlive the end of its grace period.
                let extends = match (new, row.expires_at) {
                    (_, None) => false,
                    (None, Some(_)) => true,
                    (Some(n), Some(cur)) => n > cur,
                };
                if row.rotated_to.is_some() && extends {
                    return Err(StoreError::validation(
                        "expires_at",
                        "a rotated key's expiry cannot be extended",
                    ));
                }
                new
            }
        };
        let mut policy = StoredPolicy::parse(&row)?;
        if let Some(sc) = scopes {
            policy.scopes = sc;
        }
        policy.referrers = restrictions.referrers;
        policy.ips = restrictions.ips;
        if let Some(v) = input.rate_limit {
            policy.rate_limit = v;
        }
        if let Some(v) = input.quota {
            policy.quota = v;
        }
        if let Some(v) = input.metadata {
            policy.metadata = v;
        }
        let changes = KeyChanges {
            name: name.unwrap_or_else(|| row.name.clone()),
            policy: policy.to_json()?,
            expires_at,
            updated_at: now,
        };
        check_edge_decodes(&KeyRow {
            policy: changes.policy.clone(),
            expires_at: changes.expires_at,
            ..row.clone()
        })?;
        diesel::update(api_keys::table.find(id))
            .set(&changes)
            .execute(conn)?;
        mark_changed(conn, id, version)?;
        let after = KeyView::from_row(&find_row(conn, id)?, now)?;
        audit::record(
            conn,
            now,
            actor,
            "key.update",
            id,
            serde_json::json!({ "before": before, "after": after }),
        )?;
        Ok(after)
    })
}

/// Replaces a key with a new one of the same spec; the old key keeps working for
/// `grace_seconds`, but never past its own expiry.
pub fn rotate(
    conn: &mut DbConn,
    now: i64,
    actor: &str,
    id: &str,
    input: RotateKey,
) -> Result<RotatedKey, StoreError> {
    if input.grace_seconds > MAX_GRACE_SECONDS {
        return Err(StoreError::validation(
            "grace_seconds",
            format!("must be between 0 and {MAX_GRACE_SECONDS} (30 days)"),
        ));
    }
    write_tx(conn, |conn| {
        let version = bump_version(conn)?;
        let old = find_row(conn, id)?;
        match status_at(&old, now) {
            KeyStatus::Active => {}
            status => {
                let s = if status == KeyStatus::Revoked {
                    "revoked"
                } else {
                    "expired"
                };
                return Err(StoreError::Conflict {
                    code: ConflictCode::KeyNotActive,
                    detail: format!("key {id:?} is {s} and cannot be rotated"),
                });
            }
        }
        if let Some(to) = &old.rotated_to {
            return Err(StoreError::Conflict {
                code: ConflictCode::AlreadyRotated,
                detail: format!("key {id:?} was already rotated to {to:?}"),
            });
        }
        let before = KeyView::from_row(&old, now)?;
        let project = projects::find_row(conn, &old.project_id)?;
        let prefix = KeyPrefix::parse(&project.key_prefix).map_err(StoreError::internal)?;
        let kind = kind_of(&old.kind)?;
        let env = env_of(&old.environment)?;
        let key = PlaintextKey::generate(&mut rand::rngs::OsRng, &prefix, kind, env);
        let new_row = KeyRow {
            id: new_id("key"),
            key_hash: key.hash().to_hex(),
            key_start: key.start(),
            created_at: now,
            updated_at: now,
            revoked_at: None,
            revoked_reason: None,
            rotated_to: None,
            rotated_from: Some(old.id.clone()),
            last_used_at: None,
            ..old.clone()
        };
        diesel::insert_into(api_keys::table)
            .values(&new_row)
            .execute(conn)?;
        let grace_end = now + i64::from(input.grace_seconds) * 1000;
        let old_expiry = Some(old.expires_at.map_or(grace_end, |e| e.min(grace_end)));
        diesel::update(api_keys::table.find(id))
            .set((
                api_keys::expires_at.eq(old_expiry),
                api_keys::rotated_to.eq(Some(new_row.id.clone())),
                api_keys::updated_at.eq(now),
            ))
            .execute(conn)?;
        mark_changed(conn, &new_row.id, version)?;
        mark_changed(conn, id, version)?;
        let after_old = KeyView::from_row(&find_row(conn, id)?, now)?;
        let view = KeyView::from_row(&new_row, now)?;
        audit::record(
            conn,
            now,
            actor,
            "key.rotate",
            id,
            serde_json::json!({
                "before": before,
                "after": after_old,
                "new_key_id": view.id,
                "grace_seconds": input.grace_seconds,
            }),
        )?;
        audit::record(
            conn,
            now,
            actor,
            "key.create",
            &view.id,
            serde_json::json!({ "before": null, "after": view, "rotated_from": id }),
        )?;
        events::emit(
            conn,
            now,
            events::KEY_CREATED,
            &serde_json::json!({ "key": view }),
        )?;
        events::emit(
            conn,
            now,
            events::KEY_ROTATED,
            &serde_json::json!({
                "key": after_old,
                "new_key": view,
                "grace_seconds": input.grace_seconds,
            }),
        )?;
        Ok(RotatedKey {
            view,
            key: key.into_string(),
            previous: PreviousKey {
                id: id.to_owned(),
                expires_at: old_expiry,
            },
        })
    })
}

/// Revokes a key at once.
pub fn revoke(
    conn: &mut DbConn,
    now: i64,
    actor: &str,
    id: &str,
    input: RevokeKey,
) -> Result<KeyView, StoreError> {
    let reason = input
        .reason
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty());
    if reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > MAX_REASON_CHARS)
    {
        return Err(StoreError::validation(
            "reason",
            format!("must be at most {MAX_REASON_CHARS} characters"),
        ));
    }
    write_tx(conn, |conn| {
        bump_version(conn)?;
        let row = find_row(conn, id)?;
        if row.revoked_at.is_some() {
            return Err(StoreError::Conflict {
                code: ConflictCode::AlreadyRevoked,
                detail: format!("key {id:?} is already revoked"),
            });
        }
        mark_revoked(
            conn,
            now,
            actor,
            &row,
            reason.clone(),
            serde_json::Map::new(),
        )
    })
}

/// Records that key `id` changed at snapshot `version`, inside the transaction that bumped the
/// version to it: a publish then reads only the keys changed since the snapshot it holds.
/// Every write to what a key publishes goes through here.
pub fn mark_changed(conn: &mut DbConn, id: &str, version: i64) -> Result<(), StoreError> {
    // Writers are serialised by the version bump, so update-then-insert cannot race.
    let n = diesel::update(key_changes::table.find(id))
        .set(key_changes::version.eq(version))
        .execute(conn)?;
    if n == 0 {
        diesel::insert_into(key_changes::table)
            .values((key_changes::key_id.eq(id), key_changes::version.eq(version)))
            .execute(conn)?;
    }
    Ok(())
}

/// Revokes a live key row inside the caller's transaction (which has bumped the snapshot
/// version): sets `revoked_at`, writes the `key.revoke` audit entry (before/after views plus
/// `audit_extra`) and emits `key.revoked`. Every revocation path goes through here, so none
/// forgets the audit entry or the event.
pub fn mark_revoked(
    conn: &mut DbConn,
    now: i64,
    actor: &str,
    row: &KeyRow,
    reason: Option<String>,
    audit_extra: serde_json::Map<String, serde_json::Value>,
) -> Result<KeyView, StoreError> {
    let before = KeyView::from_row(row, now)?;
    // The caller's transaction bumped the version: this is the value it bumped it to.
    let version = super::current_version(conn)?;
    diesel::update(api_keys::table.find(&row.id))
        .set((
            api_keys::revoked_at.eq(Some(now)),
            api_keys::revoked_reason.eq(reason.clone()),
            api_keys::updated_at.eq(now),
        ))
        .execute(conn)?;
    mark_changed(conn, &row.id, version)?;
    let after = KeyView::from_row(&find_row(conn, &row.id)?, now)?;
    let mut details = serde_json::Map::new();
    details.insert(
        "before".to_owned(),
        serde_json::to_value(&before).map_err(StoreError::internal)?,
    );
    details.insert(
        "after".to_owned(),
        serde_json::to_value(&after).map_err(StoreError::internal)?,
    );
    details.extend(audit_extra);
    audit::record(
        conn,
        now,
        actor,
        "key.revoke",
        &row.id,
        serde_json::Value::Object(details),
    )?;
    events::emit(
        conn,
        now,
        events::KEY_REVOKED,
        &serde_json::json!({ "key": after, "reason": reason, "actor": actor }),
    )?;
    Ok(after)
}
