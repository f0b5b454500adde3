//! The one evaluation function that decides a request. The edge and `/v1/verify` both call
//! [`evaluate`]; nothing else decides a verdict.
//!
//! Checks run in the contract's order: format and checksum, existence, status (revoked),
//! expiry, environment, referrer, client IP, route scope, rate limit, quota.

use core::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::host::EnvironmentRule;
use crate::key::{self, KeyHash};
use crate::limits::{self, LimitDecision, LimitInfo, LimitState, Limits};
use crate::policy::{match_route_with, DefaultRoutePolicy, KeyRecord, ProjectPolicy};
use crate::referrer;

/// A verdict's machine-readable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Code {
    /// The key may make this request.
    Valid,
    /// No key in the request.
    MissingKey,
    /// Not a key, or its checksum is wrong.
    MalformedKey,
    /// A well-formed key that does not exist.
    UnknownKey,
    /// Past its expiry (or its rotation grace).
    ExpiredKey,
    /// Revoked.
    RevokedKey,
    /// The key's environment is not the one this host serves.
    EnvironmentNotAllowed,
    /// The Origin/Referer matches none of the key's patterns.
    ReferrerNotAllowed,
    /// The client IP is in none of the key's networks.
    IpNotAllowed,
    /// The route needs a scope the key lacks (or no route matches under `deny`).
    InsufficientScope,
    /// Over the rate limit.
    RateLimited,
    /// Over the quota.
    QuotaExceeded,
    /// No verified snapshot, or the one held is past its validity (edge only).
    SnapshotUnavailable,
    /// The key's record (or its project's policy) in the snapshot could not be decoded by this
    /// build: that key is refused, every other key is decided as usual (edge only).
    KeyUnavailable,
}

impl Code {
    /// The snake_case code.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Valid => "valid",
            Code::MissingKey => "missing_key",
            Code::MalformedKey => "malformed_key",
            Code::UnknownKey => "unknown_key",
            Code::ExpiredKey => "expired_key",
            Code::RevokedKey => "revoked_key",
            Code::EnvironmentNotAllowed => "environment_not_allowed",
            Code::ReferrerNotAllowed => "referrer_not_allowed",
            Code::IpNotAllowed => "ip_not_allowed",
            Code::InsufficientScope => "insufficient_scope",
            Code::RateLimited => "rate_limited",
            Code::QuotaExceeded => "quota_exceeded",
            Code::SnapshotUnavailable => "snapshot_unavailable",
            Code::KeyUnavailable => "key_unavailable",
        }
    }

    /// The HTTP status the edge answers with.
    pub fn http_status(self) -> u16 {
        match self {
            Code::Valid => 200,
            Code::MissingKey
            | Code::MalformedKey
            | Code::UnknownKey
            | Code::ExpiredKey
            | Code::RevokedKey => 401,
            Code::EnvironmentNotAllowed
            | Code::ReferrerNotAllowed
            | Code::IpNotAllowed
            | Code::InsufficientScope => 403,
            Code::RateLimited | Code::QuotaExceeded => 429,
            Code::SnapshotUnavailable | Code::KeyUnavailable => 503,
        }
    }

    /// A short human title for problem+json.
    pub fn title(self) -> &'static str {
        match self {
            Code::Valid => "Valid",
            Code::MissingKey => "API key missing",
            Code::MalformedKey => "API key malformed",
            Code::UnknownKey => "API key unknown",
            Code::ExpiredKey => "API key expired",
            Code::RevokedKey => "API key revoked",
            Code::EnvironmentNotAllowed => "Environment not allowed",
            Code::ReferrerNotAllowed => "Referrer not allowed",
            Code::IpNotAllowed => "IP address not allowed",
            Code::InsufficientScope => "Insufficient scope",
            Code::RateLimited => "Rate limit exceeded",
            Code::QuotaExceeded => "Quota exceeded",
            Code::SnapshotUnavailable => "Key snapshot unavailable",
            Code::KeyUnavailable => "API key unavailable",
        }
    }
}

/// What is known about a request.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestFacts<'a> {
    /// The presented key, if any.
    pub key: Option<&'a str>,
    /// The `Origin` header.
    pub origin: Option<&'a str>,
    /// The `Referer` header.
    pub referer: Option<&'a str>,
    /// The client IP.
    pub ip: Option<IpAddr>,
    /// HTTP method; with `path`, selects the route. Without both, no route check is made.
    pub method: Option<&'a str>,
    /// Request path, without query, already normalised with [`crate::path::normalize`]: the
    /// path the origin receives.
    pub path: Option<&'a str>,
    /// Which environments the receiving host serves.
    pub environment: EnvironmentRule,
}

/// What a snapshot (or any store) knows about one key hash.
#[derive(Debug, Clone, Copy)]
pub enum Lookup<'v> {
    /// The key's record.
    Found(&'v KeyRecord),
    /// No such key.
    Absent,
    /// The shard that would hold it is not loaded yet.
    NotLoaded {
        /// Index of the shard to load.
        shard: u32,
    },
    /// The key is in the snapshot, but its record could not be decoded: refuse it alone.
    Unusable {
        /// The key id, when it could be read.
        key_id: &'v str,
    },
}

/// Read access to keys and projects.
pub trait SnapshotView {
    /// Looks a key up by hash.
    fn key(&self, hash: &KeyHash) -> Lookup<'_>;
    /// Looks a project up by id.
    fn project(&self, project_id: &str) -> Option<&ProjectPolicy>;
    /// Whether the project is in the snapshot but its policy could not be decoded, so none of
    /// its keys can be decided.
    fn project_unusable(&self, _project_id: &str) -> bool {
        false
    }
}

/// A decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict<'v> {
    /// The code.
    pub code: Code,
    /// The key's record, once it was found.
    pub record: Option<&'v KeyRecord>,
    /// Rate-limit or quota header values, when the key has limits.
    pub limits: Option<LimitInfo>,
}

impl<'v> Verdict<'v> {
    fn new(code: Code, record: Option<&'v KeyRecord>) -> Self {
        Verdict {
            code,
            record,
            limits: None,
        }
    }
    /// Whether the request may pass.
    pub fn is_valid(&self) -> bool {
        self.code == Code::Valid
    }
}

/// The result of [`evaluate`]: a verdict, or what the caller must fetch first.
#[derive(Debug, Clone, Copy)]
pub enum Evaluation<'v> {
    /// Decided.
    Done(Verdict<'v>),
    /// The shard holding the key must be loaded, then `evaluate` called again.
    NeedsShard(u32),
    /// Every check but the counters passed; run [`limits::admit`] where the counters live and
    /// finish with [`Pending::finish`].
    NeedsCounters(Pending<'v>),
}

/// A request that passed every check but its limits.
#[derive(Debug, Clone, Copy)]
pub struct Pending<'v> {
    record: &'v KeyRecord,
}

impl<'v> Pending<'v> {
    /// The key's record.
    pub fn record(&self) -> &'v KeyRecord {
        self.record
    }
    /// The limits to pass to [`limits::admit`].
    pub fn limits(&self) -> Limits {
        Limits {
            rate_limit: self.record.rate_limit,
            quota: self.record.quota,
        }
    }
    /// Turns the counters' decision into the verdict.
    pub fn finish(self, decision: LimitDecision) -> Verdict<'v> {
        let (code, info) = match decision {
            LimitDecision::Allowed(info) => (Code::Valid, info),
            LimitDecision::RateLimited(info) => (Code::RateLimited, Some(info)),
            LimitDecision::QuotaExceeded(info) => (Code::QuotaExceeded, Some(info)),
        };
        Verdict {
            code,
            record: Some(self.record),
            limits: info,
        }
    }
}

/// Decides a request at `now_ms` (Unix milliseconds). With `counters`, the rate limit and quota
/// are decided here and the state updated; without, a key that has limits yields
/// [`Evaluation::NeedsCounters`].
pub fn evaluate<'v, V: SnapshotView + ?Sized>(
    view: &'v V,
    facts: &RequestFacts<'_>,
    now_ms: i64,
    counters: Option<&mut LimitState>,
) -> Evaluation<'v> {
    let Some(text) = facts.key else {
        return Evaluation::Done(Verdict::new(Code::MissingKey, None));
    };
    let Ok(parsed) = key::parse(text) else {
        return Evaluation::Done(Verdict::new(Code::MalformedKey, None));
    };
    let record = match view.key(&parsed.hash()) {
        Lookup::Found(r) => r,
        Lookup::Absent => return Evaluation::Done(Verdict::new(Code::UnknownKey, None)),
        Lookup::NotLoaded { shard } => return Evaluation::NeedsShard(shard),
        Lookup::Unusable { .. } => {
            return Evaluation::Done(Verdict::new(Code::KeyUnavailable, None))
        }
    };
    let done = |code| Evaluation::Done(Verdict::new(code, Some(record)));
    if view.project_unusable(&record.project_id) {
        return done(Code::KeyUnavailable);
    }
    if record.revoked {
        return done(Code::RevokedKey);
    }
    if record.expires_at_ms.is_some_and(|e| e <= now_ms) {
        return done(Code::ExpiredKey);
    }
    if !facts.environment.allows(record.environment) {
        return done(Code::EnvironmentNotAllowed);
    }
    if !record.referrers.is_empty()
        && !referrer::any_matches(&record.referrers, facts.origin, facts.referer)
    {
        return done(Code::ReferrerNotAllowed);
    }
    if !record.ips.is_empty() {
        let allowed = facts
            .ip
            .is_some_and(|ip| record.ips.iter().any(|net| net.contains(ip)));
        if !allowed {
            return done(Code::IpNotAllowed);
        }
    }
    if let (Some(method), Some(path)) = (facts.method, facts.path) {
        // A key whose project is missing from the snapshot has no routes to satisfy: refuse.
        let Some(project) = view.project(&record.project_id) else {
            return done(Code::InsufficientScope);
        };
        let allowed = match match_route_with(&project.routes, method, path, project.route_matching)
        {
            Some(route) => record.scopes.contains(&route.scope),
            None => project.default_route_policy == DefaultRoutePolicy::Allow,
        };
        if !allowed {
            return done(Code::InsufficientScope);
        }
    }
    let pending = Pending { record };
    if !record.needs_counters() {
        return Evaluation::Done(Verdict::new(Code::Valid, Some(record)));
    }
    match counters {
        Some(state) => {
            Evaluation::Done(pending.finish(limits::admit(&pending.limits(), state, now_ms)))
        }
        None => Evaluation::NeedsCounters(pending),
    }
}
