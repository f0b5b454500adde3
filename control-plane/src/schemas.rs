//! OpenAPI shapes of the shared crate's types. The shared crate stays free of server
//! dependencies, so its serde forms are described here; the API types point at these with
//! `#[schema(value_type = ...)]`.
#![allow(dead_code)]

use utoipa::ToSchema;

/// `secret` (sk, servers) or `publishable` (pk, browsers; needs a referrer restriction).
#[derive(Debug, ToSchema, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[schema(as = Kind)]
#[allow(missing_docs)]
pub enum KindSchema {
    Secret,
    Publishable,
}

/// `live` or `test`.
#[derive(Debug, ToSchema, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[schema(as = Environment)]
#[allow(missing_docs)]
pub enum EnvironmentSchema {
    Live,
    Test,
}

/// A key's status at the time of the response.
#[derive(Debug, ToSchema, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[schema(as = KeyStatus)]
#[allow(missing_docs)]
pub enum KeyStatusSchema {
    Active,
    Expired,
    Revoked,
}

/// What a valid key may do on a path no route matches.
#[derive(Debug, ToSchema, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[schema(as = DefaultRoutePolicy)]
#[allow(missing_docs)]
pub enum DefaultRoutePolicySchema {
    Allow,
    Deny,
}

/// How a project's routes compare with request paths (docs/edge.md, "Paths").
#[derive(Debug, ToSchema, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[schema(as = RouteMatching)]
#[allow(missing_docs)]
pub enum RouteMatchingSchema {
    Exact,
    CaseInsensitive,
}

/// `{methods, path, scope}`: a request whose method and path match needs `scope`.
#[derive(Debug, ToSchema, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[schema(as = Route)]
pub struct RouteSchema {
    /// Uppercase methods, or `["*"]`.
    #[schema(example = json!(["GET"]))]
    methods: Vec<String>,
    /// Exact path, or a prefix ending in `/*`.
    #[schema(example = "/orders/*")]
    path: String,
    /// Scope a key needs.
    #[schema(example = "orders:read")]
    scope: String,
}

/// Referrer and IP restrictions; empty lists restrict nothing.
#[derive(Debug, ToSchema, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[schema(as = Restrictions)]
pub struct RestrictionsSchema {
    /// Referrer patterns (contract section 3).
    #[schema(example = json!(["https://shop.example.com/*"]))]
    referrers: Vec<String>,
    /// CIDR networks or addresses.
    #[schema(example = json!(["203.0.113.0/24"]))]
    ips: Vec<String>,
}

/// At most `limit` requests per `period_seconds`.
#[derive(Debug, ToSchema, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[schema(as = RateLimit)]
pub struct RateLimitSchema {
    /// Positive.
    #[schema(minimum = 1)]
    limit: u32,
    /// Positive.
    #[schema(minimum = 1)]
    period_seconds: u32,
}

/// Quota period (UTC).
#[derive(Debug, ToSchema, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[schema(as = QuotaPeriod)]
#[allow(missing_docs)]
pub enum QuotaPeriodSchema {
    Day,
    Month,
    Total,
}

/// At most `limit` successful requests per period.
#[derive(Debug, ToSchema, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[schema(as = Quota)]
pub struct QuotaSchema {
    /// Positive.
    #[schema(minimum = 1)]
    limit: u64,
    /// Period.
    period: QuotaPeriodSchema,
}

/// The verdict codes of `/v1/verify`.
#[derive(Debug, ToSchema, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[schema(as = VerifyCode)]
#[allow(missing_docs)]
pub enum VerifyCodeSchema {
    Valid,
    MalformedKey,
    UnknownKey,
    ExpiredKey,
    RevokedKey,
    EnvironmentNotAllowed,
    ReferrerNotAllowed,
    IpNotAllowed,
    InsufficientScope,
    RateLimited,
    QuotaExceeded,
}
