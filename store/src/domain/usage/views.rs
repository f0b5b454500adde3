//! The bodies of the usage API: the edge's reports, and the series and sightings read back.

use std::collections::BTreeMap;

use keygate_shared::Code;
use serde::{Deserialize, Serialize};

use super::Granularity;
use crate::error::StoreError;

/// One count.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UsageItem {
    /// `key_...` (1 to 64 characters).
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 64))]
    pub key_id: String,
    /// RFC 3339; truncated to the minute.
    #[serde(with = "crate::timefmt::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub minute: i64,
    /// Verdict code.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schemas::VerifyCodeSchema))]
    pub code: Code,
    /// 1 to 4294967295.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 4294967295_u32, format = Int64))]
    pub count: u32,
}

/// What a sighting is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SightingKind {
    /// A client IP address (`CF-Connecting-IP`).
    Ip,
    /// A referrer origin (`Origin`, else `Referer`), `scheme://host[:port]`.
    Referrer,
}

impl SightingKind {
    /// The stored and serialized name.
    pub fn as_str(self) -> &'static str {
        match self {
            SightingKind::Ip => "ip",
            SightingKind::Referrer => "referrer",
        }
    }

    pub(super) fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "ip" => Ok(SightingKind::Ip),
            "referrer" => Ok(SightingKind::Referrer),
            other => Err(StoreError::internal(anyhow::anyhow!(
                "stored sighting kind {other:?}"
            ))),
        }
    }
}

/// A value the edge saw for a key during one flush interval.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SightingReport {
    /// `key_...` (1 to 64 characters).
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 64))]
    pub key_id: String,
    /// `ip` or `referrer`.
    pub kind: SightingKind,
    /// An IPv4 or IPv6 address, or an origin `scheme://host[:port]` (at most 255 characters).
    pub value: String,
    /// RFC 3339.
    #[serde(with = "crate::timefmt::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub first_seen: i64,
    /// RFC 3339; not before `first_seen`.
    #[serde(with = "crate::timefmt::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub last_seen: i64,
    /// Requests: 1 to 4294967295.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 4294967295_u32, format = Int64))]
    pub count: u32,
}

/// Body of `POST /v1/usage`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UsageReport {
    /// At most 5000 items.
    pub items: Vec<UsageItem>,
    /// At most 5000 sightings.
    #[serde(default)]
    pub sightings: Vec<SightingReport>,
}

/// Answer of `POST /v1/usage`.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageAccepted {
    /// Number of items added.
    pub accepted: usize,
    /// Number of sightings added.
    pub sightings: usize,
}

/// Query of `GET /v1/keys/{key_id}/usage` and `GET /v1/projects/{project_id}/usage`.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// RFC 3339; default 24 hours before `to`. Rounded down to the start of its bucket.
    #[serde(default, with = "crate::timefmt::opt_rfc3339")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<String>, format = DateTime))]
    pub from: Option<i64>,
    /// RFC 3339; default now.
    #[serde(default, with = "crate::timefmt::opt_rfc3339")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<String>, format = DateTime))]
    pub to: Option<i64>,
    /// `minute` (default), `hour` or `day`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", param(value_type = Option<Granularity>))]
    pub granularity: Granularity,
}

/// One bucket's count of one code.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsagePoint {
    /// Start of the bucket, RFC 3339.
    #[serde(with = "crate::timefmt::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub start: i64,
    /// Verdict code.
    pub code: String,
    /// Requests.
    pub count: i64,
}

/// Usage of a key or a project.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageSeries {
    /// The bucket size.
    pub granularity: Granularity,
    /// Start of the first bucket of the window, RFC 3339.
    #[serde(with = "crate::timefmt::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub from: i64,
    /// End of the window, RFC 3339: buckets starting after it are left out.
    #[serde(with = "crate::timefmt::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub to: i64,
    /// Non-zero counts, by bucket start, then code.
    pub items: Vec<UsagePoint>,
    /// Sum over the window per code.
    #[cfg_attr(feature = "openapi", schema(example = json!({"valid": 120, "rate_limited": 3})))]
    pub totals: BTreeMap<String, i64>,
}

/// Query of `GET /v1/keys/{key_id}/sightings`.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
pub struct SightingsQuery {
    /// Only this kind; default both.
    #[cfg_attr(feature = "openapi", param(value_type = Option<SightingKind>))]
    pub kind: Option<SightingKind>,
    /// 1 to 1000; default 100.
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 1000))]
    pub limit: Option<i64>,
}

/// A client IP or referrer origin seen for a key.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SightingView {
    /// `ip` or `referrer`.
    pub kind: SightingKind,
    /// The address or origin.
    pub value: String,
    /// RFC 3339.
    #[serde(with = "crate::timefmt::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub first_seen_at: i64,
    /// RFC 3339.
    #[serde(with = "crate::timefmt::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub last_seen_at: i64,
    /// Requests seen with this value.
    pub count: i64,
}

/// A key's sightings.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SightingList {
    /// Newest `first_seen_at` first.
    pub items: Vec<SightingView>,
}

/// How long each kind of usage row is kept, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Minute counts.
    pub minute_ms: i64,
    /// Hour counts.
    pub hour_ms: i64,
    /// Day counts.
    pub day_ms: i64,
    /// Sightings, by `last_seen_at`.
    pub sighting_ms: i64,
}

/// Rows deleted by one [`prune`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Minute counts.
    pub minutes: usize,
    /// Hour counts.
    pub hours: usize,
    /// Day counts.
    pub days: usize,
    /// Sightings.
    pub sightings: usize,
}
