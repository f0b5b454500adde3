//! Snapshot records decoded one at a time, so that one record a build cannot use refuses that
//! key alone (`key_unavailable`) and never its neighbours in the shard.
//!
//! The binary layout is exactly that of [`KeyRecord`] and [`ProjectPolicy`] (postcard writes
//! struct fields in order): the wire types below read the same bytes with every validated field
//! as plain data, and [`decode_record`] / [`decode_project`] then apply the checks field by
//! field. A shard that does not parse as bytes at all is still refused whole; its digest is
//! signed, so that only happens when the control plane wrote something this build cannot read.

use core::num::{NonZeroU32, NonZeroU64};

use serde::Deserialize;

use crate::cidr::IpNet;
use crate::key::{Environment, KeyHash, Kind};
use crate::policy::{
    DefaultRoutePolicy, KeyRecord, Methods, ProjectPolicy, Quota, QuotaPeriod, RateLimit, Route,
    RouteMatching, RoutePath, Scope,
};
use crate::referrer::ReferrerPattern;

/// A key record as the snapshot carries it, before its fields are checked.
#[derive(Debug, Deserialize)]
pub(crate) struct WireRecord {
    hash: KeyHash,
    key_id: String,
    project_id: String,
    kind: Kind,
    environment: Environment,
    revoked: bool,
    expires_at_ms: Option<i64>,
    scopes: Vec<String>,
    referrers: Vec<String>,
    ips: Vec<(Vec<u8>, u8)>,
    rate_limit: Option<(u32, u32)>,
    quota: Option<(u64, QuotaPeriod)>,
    metadata_json: Option<String>,
}

impl WireRecord {
    pub(crate) fn hash(&self) -> KeyHash {
        self.hash
    }
}

/// A decoded snapshot record: usable, or refused alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// Every field checked.
    Usable(KeyRecord),
    /// Some field does not decode in this build.
    Unusable {
        /// The key id.
        key_id: String,
        /// Which field, and why.
        reason: String,
    },
}

/// Checks a wire record's fields.
pub(crate) fn decode_record(w: WireRecord) -> Entry {
    let key_id = w.key_id.clone();
    match checked_record(w) {
        Ok(r) => Entry::Usable(r),
        Err(reason) => Entry::Unusable { key_id, reason },
    }
}

fn checked_record(w: WireRecord) -> Result<KeyRecord, String> {
    let scopes = w
        .scopes
        .iter()
        .map(|s| Scope::parse(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("scopes: {e}"))?;
    let referrers = w
        .referrers
        .iter()
        .map(|p| ReferrerPattern::decode(p).map_err(|e| format!("referrer {p:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let ips = w
        .ips
        .iter()
        .map(|(bytes, prefix)| IpNet::from_parts(bytes, *prefix))
        .collect::<Option<Vec<_>>>()
        .ok_or("ips: an invalid network")?;
    let rate_limit = match w.rate_limit {
        None => None,
        Some((limit, period)) => Some(RateLimit {
            limit: NonZeroU32::new(limit).ok_or("rate_limit: zero limit")?,
            period_seconds: NonZeroU32::new(period).ok_or("rate_limit: zero period")?,
        }),
    };
    let quota = match w.quota {
        None => None,
        Some((limit, period)) => Some(Quota {
            limit: NonZeroU64::new(limit).ok_or("quota: zero limit")?,
            period,
        }),
    };
    Ok(KeyRecord {
        hash: w.hash,
        key_id: w.key_id,
        project_id: w.project_id,
        kind: w.kind,
        environment: w.environment,
        revoked: w.revoked,
        expires_at_ms: w.expires_at_ms,
        scopes,
        referrers,
        ips,
        rate_limit,
        quota,
        metadata_json: w.metadata_json,
    })
}

#[derive(Debug, Deserialize)]
struct WireRoute {
    methods: Vec<String>,
    path: String,
    scope: String,
}

/// A project policy as a format-1 manifest carries it.
#[derive(Debug, Deserialize)]
pub(crate) struct WireProjectV1 {
    project_id: String,
    routes: Vec<WireRoute>,
    default_route_policy: DefaultRoutePolicy,
}

/// A project policy as a format-2 manifest carries it: format 1 and how routes match.
#[derive(Debug, Deserialize)]
pub(crate) struct WireProject {
    project_id: String,
    routes: Vec<WireRoute>,
    default_route_policy: DefaultRoutePolicy,
    route_matching: RouteMatching,
}

impl From<WireProjectV1> for WireProject {
    fn from(v: WireProjectV1) -> Self {
        WireProject {
            project_id: v.project_id,
            routes: v.routes,
            default_route_policy: v.default_route_policy,
            route_matching: RouteMatching::Exact,
        }
    }
}

/// Checks a wire project's routes: `Err((project_id, reason))` when one does not decode.
pub(crate) fn decode_project(w: WireProject) -> Result<ProjectPolicy, (String, String)> {
    let mut routes = Vec::with_capacity(w.routes.len());
    for r in &w.routes {
        let route = (|| {
            Ok::<_, String>(Route {
                methods: Methods::from_list(r.methods.clone())?,
                path: RoutePath::parse(&r.path)?,
                scope: Scope::parse(&r.scope)?,
            })
        })();
        match route {
            Ok(route) => routes.push(route),
            Err(e) => return Err((w.project_id, format!("route {:?}: {e}", r.path))),
        }
    }
    Ok(ProjectPolicy {
        project_id: w.project_id,
        routes,
        default_route_policy: w.default_route_policy,
        route_matching: w.route_matching,
    })
}

/// Why a record would not reach the edge intact.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key {key_id}: {reason}")]
pub struct RecordError {
    /// The key id.
    pub key_id: String,
    /// What the edge's decoder says.
    pub reason: String,
}

/// Encodes `record` as a snapshot does and decodes it as the edge does (this code has no
/// feature that changes it): the control plane's check before it publishes, so a record the
/// edge would refuse is caught with its key id instead of reaching a shard.
pub fn edge_round_trip(record: &KeyRecord) -> Result<(), RecordError> {
    edge_encode(record).map(drop)
}

/// [`edge_round_trip`], giving the record's encoded bytes: exactly what a shard holds for it.
pub fn edge_encode(record: &KeyRecord) -> Result<Vec<u8>, RecordError> {
    let fail = |reason: String| RecordError {
        key_id: record.key_id.clone(),
        reason,
    };
    let bytes = postcard::to_allocvec(record).map_err(|e| fail(e.to_string()))?;
    let wire: WireRecord = postcard::from_bytes(&bytes).map_err(|e| fail(e.to_string()))?;
    match decode_record(wire) {
        Entry::Usable(back) if back == *record => Ok(bytes),
        Entry::Usable(_) => Err(fail("decodes to a different record".into())),
        Entry::Unusable { reason, .. } => Err(fail(reason)),
    }
}

/// [`edge_round_trip`] for a project's policy.
pub fn edge_round_trip_project(project: &ProjectPolicy) -> Result<(), RecordError> {
    let fail = |reason: String| RecordError {
        key_id: project.project_id.clone(),
        reason,
    };
    // As format 2 writes it (format 1 writes the same fields but the last).
    let bytes = postcard::to_allocvec(project).map_err(|e| fail(e.to_string()))?;
    let wire: WireProject = postcard::from_bytes(&bytes).map_err(|e| fail(e.to_string()))?;
    match decode_project(wire) {
        Ok(back) if back == *project => Ok(()),
        Ok(_) => Err(fail("decodes to a different policy".into())),
        Err((_, reason)) => Err(fail(reason)),
    }
}
