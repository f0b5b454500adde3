//! The policy model: what a key may do, and the project routes that map requests to scopes.
//!
//! These types are both the API's JSON (control plane) and the snapshot's records (edge). Each
//! validates itself on deserialization, so a value that exists is a valid one.

use core::fmt;
use core::num::{NonZeroU32, NonZeroU64};

use serde::{Deserialize, Serialize};

use crate::cidr::IpNet;
use crate::key::{Environment, KeyHash, Kind};
use crate::referrer::ReferrerPattern;

/// `{limit, period_seconds}`: at most `limit` requests per `period_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests allowed per period (positive).
    pub limit: NonZeroU32,
    /// Period length in seconds (positive).
    pub period_seconds: NonZeroU32,
}

/// The calendar period of a quota, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaPeriod {
    /// Resets at 00:00 UTC.
    Day,
    /// Resets on the first of the month, 00:00 UTC.
    Month,
    /// Never resets.
    Total,
}

/// `{limit, period}`: at most `limit` successful requests per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Requests allowed per period (positive).
    pub limit: NonZeroU64,
    /// The period.
    pub period: QuotaPeriod,
}

/// Referrer and IP restrictions. Empty lists restrict nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restrictions {
    /// Allowed referrers (docs/referrers.md).
    #[serde(default)]
    pub referrers: Vec<ReferrerPattern>,
    /// Allowed client networks.
    #[serde(default)]
    pub ips: Vec<IpNet>,
}

/// A key's status as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    /// Usable.
    Active,
    /// Past `expires_at`.
    Expired,
    /// Revoked.
    Revoked,
}

/// What happens to a valid key on a path that no route matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DefaultRoutePolicy {
    /// Let it through.
    #[default]
    Allow,
    /// Answer `insufficient_scope`.
    Deny,
}

/// How a project's routes compare with request paths.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteMatching {
    /// Byte for byte (after normalisation): `/ADMIN` is not `/admin`.
    #[default]
    Exact,
    /// ASCII letters compare case-insensitively, for origins that route that way (Express by
    /// default, IIS): `/ADMIN` needs the scope of `/admin`.
    CaseInsensitive,
}

impl RouteMatching {
    /// Whether this is [`RouteMatching::Exact`].
    pub fn is_exact(&self) -> bool {
        *self == RouteMatching::Exact
    }
}

/// HTTP methods a route applies to: a list, or `["*"]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Methods {
    /// Every method.
    Any,
    /// These methods, uppercase.
    List(Vec<String>),
}

impl Methods {
    fn matches(&self, method: &str) -> bool {
        match self {
            Methods::Any => true,
            Methods::List(list) => list.iter().any(|m| m.eq_ignore_ascii_case(method)),
        }
    }
}

impl Serialize for Methods {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            // A slice, not an array: serde writes arrays as tuples, which binary formats
            // (postcard, in snapshots) encode without the length that `Vec` decoding expects.
            Methods::Any => ["*"][..].serialize(s),
            Methods::List(l) => l.serialize(s),
        }
    }
}

impl Methods {
    /// From a list of method names, or `["*"]`.
    pub fn from_list(list: Vec<String>) -> Result<Self, String> {
        if list.is_empty() {
            return Err("methods must not be empty".into());
        }
        if list.iter().any(|m| m == "*") {
            return if list.len() == 1 {
                Ok(Methods::Any)
            } else {
                Err("\"*\" must be the only method".into())
            };
        }
        let mut out = Vec::with_capacity(list.len());
        for m in list {
            let valid =
                !m.is_empty() && m.len() <= 32 && m.bytes().all(|b| b.is_ascii_alphabetic());
            if !valid {
                return Err(format!("invalid method {m:?}"));
            }
            out.push(m.to_ascii_uppercase());
        }
        Ok(Methods::List(out))
    }
}

impl<'de> Deserialize<'de> for Methods {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Methods::from_list(Vec::<String>::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A route path: exact (`/orders`) or a prefix ending in `/*` (`/orders/*`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoutePath {
    text: String,
    prefix: bool,
}

impl RoutePath {
    /// Parses a route path, in the normal form of [`crate::path::normalize`]: request paths
    /// are normalised before they are matched, so a route is too (`/a//b` is `/a/b`).
    pub fn parse(s: &str) -> Result<Self, String> {
        if !s.starts_with('/') || s.chars().any(char::is_whitespace) || s.contains(['?', '#']) {
            return Err(format!(
                "route path {s:?} must start with / and have no query"
            ));
        }
        let (base, prefix) = match s.strip_suffix('*') {
            Some(base) if base.ends_with('/') && !base.contains('*') => (base, true),
            _ if s.contains('*') => {
                return Err(format!("`*` may only be the last segment of {s:?}"));
            }
            _ => (s, false),
        };
        if base.contains(';') {
            return Err(format!(
                "route path {s:?} may not contain `;` (request paths lose `;` parameters)"
            ));
        }
        let normal = crate::path::normalize(base)
            .map_err(|e| format!("route path {s:?} cannot be normalised: {e}"))?;
        let mut text = normal.into_owned();
        if prefix {
            if !text.ends_with('/') {
                text.push('/');
            }
            text.push('*');
        }
        Ok(RoutePath { text, prefix })
    }

    /// The path text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// `/orders/*` matches `/orders/`, `/orders/1`, and also `/orders` itself.
    fn matches(&self, path: &str, matching: RouteMatching) -> bool {
        let text = self.text.as_bytes();
        let path = path.as_bytes();
        let eq = match matching {
            RouteMatching::Exact => short_eq,
            RouteMatching::CaseInsensitive => <[u8]>::eq_ignore_ascii_case,
        };
        if self.prefix {
            // `text` is `{base}/*`.
            let base = &text[..text.len() - 1];
            (path.len() >= base.len() && eq(&path[..base.len()], base))
                || eq(path, &base[..base.len() - 1])
        } else {
            eq(path, text)
        }
    }

    /// Higher is more specific: an exact path beats any prefix; a longer prefix beats a shorter.
    fn specificity(&self) -> u64 {
        let len = (self.text.len() as u64).min((1 << 60) - 1);
        u64::from(!self.prefix) << 61 | len
    }
}

/// Byte equality for the short strings of route matching, inline: most comparisons fail in
/// the first bytes, and a call to `memcmp` costs more than the comparison.
#[inline]
fn short_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

impl Serialize for RoutePath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for RoutePath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RoutePath::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A scope name: 1 to 128 characters of `[A-Za-z0-9:._/-]`. Scopes compare literally.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Scope(String);

impl Scope {
    /// Parses a scope name.
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b":._-/".contains(&b));
        if ok {
            Ok(Scope(s.to_owned()))
        } else {
            Err(format!(
                "scope {s:?} must be 1 to 128 characters of letters, digits and : . _ - /"
            ))
        }
    }
    /// The scope text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Scope::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// `{methods, path, scope}`: a request whose method and path match needs `scope`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Methods this route covers.
    pub methods: Methods,
    /// Path this route covers.
    pub path: RoutePath,
    /// Scope a key needs.
    pub scope: Scope,
}

/// The most specific route matching `method` and `path`: the most specific path first, then a
/// route that names the method over one with `*`.
pub fn match_route<'r>(routes: &'r [Route], method: &str, path: &str) -> Option<&'r Route> {
    match_route_with(routes, method, path, RouteMatching::Exact)
}

/// [`match_route`] comparing paths as `matching` says.
pub fn match_route_with<'r>(
    routes: &'r [Route],
    method: &str,
    path: &str,
    matching: RouteMatching,
) -> Option<&'r Route> {
    // One integer per candidate (a plain loop: this runs on every request). On a tie the last
    // route wins, as with `Iterator::max_by_key`.
    let mut best: Option<(&Route, u64)> = None;
    for r in routes {
        if !(r.path.matches(path, matching) && r.methods.matches(method)) {
            continue;
        }
        let score = r.path.specificity() << 1 | u64::from(matches!(r.methods, Methods::List(_)));
        if best.is_none_or(|(_, s)| score >= s) {
            best = Some((r, score));
        }
    }
    best.map(|(r, _)| r)
}

/// A project's part of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectPolicy {
    /// Project id.
    pub project_id: String,
    /// Routes.
    pub routes: Vec<Route>,
    /// Policy for paths no route matches.
    pub default_route_policy: DefaultRoutePolicy,
    /// How routes compare with paths. Manifest format 2 carries it; a manifest where every
    /// project matches exactly is written in format 1, without it (see `snapshot::format_for`).
    #[serde(default)]
    pub route_matching: RouteMatching,
}

/// A key's part of a snapshot: everything evaluation needs, and the hash instead of the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// SHA-256 of the key string.
    pub hash: KeyHash,
    /// Key id.
    pub key_id: String,
    /// Project id.
    pub project_id: String,
    /// Kind.
    pub kind: Kind,
    /// Environment.
    pub environment: Environment,
    /// Revoked keys stay in snapshots so that they answer `revoked_key`, not `unknown_key`.
    pub revoked: bool,
    /// Unix milliseconds; after a rotation, the end of the grace period if earlier.
    pub expires_at_ms: Option<i64>,
    /// Granted scopes.
    pub scopes: Vec<Scope>,
    /// Allowed referrers; empty means any.
    pub referrers: Vec<ReferrerPattern>,
    /// Allowed client networks; empty means any.
    pub ips: Vec<IpNet>,
    /// Rate limit.
    pub rate_limit: Option<RateLimit>,
    /// Quota.
    pub quota: Option<Quota>,
    /// The key's metadata as JSON text (the binary snapshot format cannot carry free JSON).
    pub metadata_json: Option<String>,
}

impl KeyRecord {
    /// Whether a verdict for this key needs rate-limit or quota counters.
    pub fn needs_counters(&self) -> bool {
        self.rate_limit.is_some() || self.quota.is_some()
    }

    /// The status at `now_ms`.
    pub fn status(&self, now_ms: i64) -> KeyStatus {
        if self.revoked {
            KeyStatus::Revoked
        } else if self.expires_at_ms.is_some_and(|e| e <= now_ms) {
            KeyStatus::Expired
        } else {
            KeyStatus::Active
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(methods: &[&str], path: &str, scope: &str) -> Route {
        serde_json::from_value(
            serde_json::json!({"methods": methods, "path": path, "scope": scope}),
        )
        .expect("route")
    }

    #[test]
    fn most_specific_route_wins() {
        let routes = vec![
            route(&["*"], "/orders/*", "orders:read"),
            route(&["POST"], "/orders/*", "orders:write"),
            route(&["*"], "/orders/export", "orders:export"),
            route(&["*"], "/orders/archive/*", "orders:archive"),
        ];
        let pick = |m, p| match_route(&routes, m, p).map(|r| r.scope.as_str().to_owned());
        assert_eq!(pick("GET", "/orders/1").as_deref(), Some("orders:read"));
        assert_eq!(pick("post", "/orders/1").as_deref(), Some("orders:write"));
        assert_eq!(
            pick("GET", "/orders/export").as_deref(),
            Some("orders:export")
        );
        assert_eq!(
            pick("GET", "/orders/archive/9").as_deref(),
            Some("orders:archive")
        );
        assert_eq!(pick("GET", "/orders").as_deref(), Some("orders:read"));
        assert_eq!(pick("GET", "/ordersx"), None);
        assert_eq!(pick("GET", "/users"), None);
    }

    #[test]
    fn routes_round_trip_in_json_and_postcard() {
        let routes = vec![
            route(&["*"], "/orders/*", "orders:read"),
            route(&["get", "POST"], "/orders/export", "orders:export"),
        ];
        let bytes = postcard::to_allocvec(&routes).expect("encode");
        let back: Vec<Route> = postcard::from_bytes(&bytes).expect("decode");
        assert_eq!(back, routes);
        let json = serde_json::to_value(&routes).expect("json");
        assert_eq!(json[0]["methods"], serde_json::json!(["*"]));
        assert_eq!(json[1]["methods"], serde_json::json!(["GET", "POST"]));
        let back: Vec<Route> = serde_json::from_value(json).expect("json back");
        assert_eq!(back, routes);
    }

    #[test]
    fn route_validation() {
        for bad in ["orders", "/a*/b", "/*/x", "/a*", "/a?b=1"] {
            assert!(RoutePath::parse(bad).is_err(), "{bad}");
        }
        assert!(serde_json::from_value::<Route>(
            serde_json::json!({"methods": ["*", "GET"], "path": "/", "scope": "a"})
        )
        .is_err());
        assert!(serde_json::from_value::<Route>(
            serde_json::json!({"methods": [], "path": "/", "scope": "a"})
        )
        .is_err());
        assert!(serde_json::from_value::<RateLimit>(
            serde_json::json!({"limit": 0, "period_seconds": 60})
        )
        .is_err());
    }
}
