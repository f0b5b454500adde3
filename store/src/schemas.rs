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
#[serde(deny_unknown_fields)]
#[schema(as = Route)]
pub struct RouteSchema {
    /// Method names (letters, at most 32), or `["*"]`.
    #[schema(example = json!(["GET"]), min_items = 1)]
    methods: Vec<MethodSchema>,
    /// Exact path, or a prefix ending in `/*`.
    #[schema(example = "/orders/*")]
    path: String,
    /// Scope a key needs.
    scope: ScopeSchema,
}

/// A method name (1 to 32 letters), or `*` alone for every method.
#[derive(Debug, ToSchema, serde::Serialize)]
#[schema(as = Method, pattern = "^([A-Za-z]{1,32}|[*])$", example = "GET")]
pub struct MethodSchema(String);

/// A scope: 1 to 128 characters of letters, digits and `: . _ - /`.
#[derive(Debug, ToSchema, serde::Serialize)]
#[schema(as = Scope, pattern = "^[A-Za-z0-9:._/-]{1,128}$", example = "orders:read")]
pub struct ScopeSchema(String);

/// Referrer and IP restrictions; empty lists restrict nothing.
#[derive(Debug, ToSchema, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[serde(deny_unknown_fields)]
#[schema(as = Restrictions)]
pub struct RestrictionsSchema {
    /// Referrer patterns (docs/referrers.md), at most 100.
    #[schema(example = json!(["https://shop.example.com/*"]), required = false, max_items = 100)]
    referrers: Vec<String>,
    /// CIDR networks or addresses, at most 100.
    #[schema(example = json!(["203.0.113.0/24"]), required = false, max_items = 100)]
    ips: Vec<String>,
}

/// At most `limit` requests per `period_seconds`.
#[derive(Debug, ToSchema, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[serde(deny_unknown_fields)]
#[schema(as = RateLimit)]
pub struct RateLimitSchema {
    /// 1 to 4294967295.
    #[schema(minimum = 1, maximum = 4294967295_u32, format = Int64)]
    limit: u32,
    /// 1 to 4294967295.
    #[schema(minimum = 1, maximum = 4294967295_u32, format = Int64)]
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
#[serde(deny_unknown_fields)]
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

/// A webhook event type.
#[derive(Debug, ToSchema, serde::Serialize)]
#[schema(as = WebhookEvent)]
#[allow(missing_docs)]
pub enum WebhookEventSchema {
    #[serde(rename = "key.created")]
    KeyCreated,
    #[serde(rename = "key.rotated")]
    KeyRotated,
    #[serde(rename = "key.revoked")]
    KeyRevoked,
    #[serde(rename = "key.expiring")]
    KeyExpiring,
    #[serde(rename = "alert.raised")]
    AlertRaised,
}
