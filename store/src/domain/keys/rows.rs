//! A key row as the API shows it (its status at `now`, its stored policy) and as the
//! snapshot publishes it.

use keygate_shared::{
    IpNet, KeyHash, KeyRecord, KeyStatus, Quota, RateLimit, ReferrerPattern, Restrictions, Scope,
};
use serde::{Deserialize, Serialize};

use super::{KeyView, Metadata};
use crate::db::models::KeyRow;
use crate::error::StoreError;

pub(super) fn status_at(r: &KeyRow, now: i64) -> KeyStatus {
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
    pub(super) fn parse(r: &KeyRow) -> Result<Self, StoreError> {
        serde_json::from_str(&r.policy).map_err(StoreError::internal)
    }
    pub(super) fn to_json(&self) -> Result<String, StoreError> {
        serde_json::to_string(self).map_err(StoreError::internal)
    }
}

impl KeyView {
    /// From a row at `now`.
    pub fn from_row(r: &KeyRow, now: i64) -> Result<Self, StoreError> {
        let p = StoredPolicy::parse(r)?;
        Ok(KeyView {
            id: r.id.clone(),
            project_id: r.project_id.clone(),
            name: r.name.clone(),
            kind: r.kind,
            environment: r.environment,
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
        key_id: r.id.to_string(),
        project_id: r.project_id.to_string(),
        kind: r.kind,
        environment: r.environment,
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
