//! `POST /v1/verify`: the same [`keygate_shared::evaluate`] as the edge, on facts from the body.
//!
//! The key is looked up by hash in the database (unique index) with its project on every call,
//! so a revocation or a policy change is in force for the very next request on every replica.
//! Rate-limit and quota counters live in this process (`AppState::counters`): each replica
//! counts on its own and counts restart with the process. The edge's Durable Objects are the
//! shared counters; these exist so that `/v1/verify` gives the edge's answer for the same facts.

use std::net::IpAddr;
use std::sync::Arc;

use diesel::prelude::*;

use keygate_shared::{
    evaluate, Code, Environment, EnvironmentRule, Evaluation, KeyHash, KeyRecord, LimitInfo,
    Lookup, ProjectPolicy, RequestFacts, Scope, SnapshotView,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::db::models::{KeyRow, ProjectRow};
use crate::db::schema::{api_keys, projects};
use crate::db::DbConn;
use crate::domain::keys::record_from_row;
use crate::domain::projects::ProjectView;
use crate::error::ApiError;
use crate::state::AppState;
use crate::with_backend;

/// Body of `POST /v1/verify`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The presented key.
    pub key: String,
    /// The request's `Referer` (or `Origin`) URL.
    pub referrer: Option<String>,
    /// Client IP address: IPv4 or IPv6, without a zone.
    pub ip: Option<String>,
    /// HTTP method (1 to 32 letters); with `path`, selects the project route.
    #[schema(pattern = "^[A-Za-z]{1,32}$")]
    pub method: Option<String>,
    /// Request path, starting with `/` (a query or fragment is ignored).
    #[schema(pattern = "^/")]
    pub path: Option<String>,
    /// Host the request was sent to; mapped to an environment by `KEYGATE_HOST_ENVIRONMENTS`.
    pub host: Option<String>,
}

impl std::fmt::Debug for VerifyRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyRequest").finish_non_exhaustive()
    }
}

/// The verdict.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VerifyResponse {
    /// Whether the request may pass.
    pub valid: bool,
    /// Why.
    #[schema(value_type = crate::schemas::VerifyCodeSchema)]
    pub code: Code,
    /// The key, when it exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Its project, when the key exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// Its environment, when the key exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::schemas::EnvironmentSchema>)]
    pub environment: Option<Environment>,
    /// Its scopes, when valid.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>)]
    pub scopes: Option<Vec<Scope>>,
    /// Its metadata, when valid.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    /// Rate-limit or quota state, for keys with limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub limits: Option<LimitInfo>,
}

impl VerifyResponse {
    fn bare(code: Code) -> Self {
        VerifyResponse {
            valid: code == Code::Valid,
            code,
            key_id: None,
            project_id: None,
            environment: None,
            scopes: None,
            metadata: None,
            limits: None,
        }
    }
}

/// Checked facts of a request.
struct Facts {
    ip: Option<IpAddr>,
    path: Option<String>,
    environment: EnvironmentRule,
}

fn check(req: &VerifyRequest, state: &AppState) -> Result<Facts, ApiError> {
    let ip = req
        .ip
        .as_deref()
        .map(|s| {
            s.trim()
                .parse::<IpAddr>()
                .map_err(|_| ApiError::validation("ip", format!("{s:?} is not an IP address")))
        })
        .transpose()?;
    // Seen as the edge sees it: the Workers runtime parses the request URL first (WHATWG:
    // dot segments resolved and clamped at the root, `\` read as `/`), then the edge
    // normalises what is left with the shared function.
    let path = match req.path.as_deref() {
        None => None,
        Some(p) => {
            let p = p.split(['?', '#']).next().unwrap_or(p);
            if !p.starts_with('/') {
                return Err(ApiError::validation("path", "must start with /"));
            }
            let parsed = url::Url::parse(&format!("http://verify.invalid{p}"))
                .map_err(|e| ApiError::validation("path", e.to_string()))?;
            Some(
                keygate_shared::path::normalize(parsed.path())
                    .map_err(|e| ApiError::BadRequest {
                        code: "invalid_path",
                        detail: format!("path: {e}"),
                    })?
                    .into_owned(),
            )
        }
    };
    if let Some(m) = &req.method {
        if m.is_empty() || m.len() > 32 || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(ApiError::validation("method", "is not an HTTP method"));
        }
    }
    // A request without `host` asks about the key alone: no host rule applies.
    let environment = match req.host.as_deref() {
        None => EnvironmentRule::Any,
        Some(h) => state.host_environments.rule_for(Some(h)),
    };
    Ok(Facts {
        ip,
        path,
        environment,
    })
}

/// Checks the request's shape before any blocking work.
pub fn precheck(req: &VerifyRequest, state: &AppState) -> Result<(), ApiError> {
    check(req, state).map(|_| ())
}

/// The parsed policy of a project, reused while its `updated_at` is unchanged.
fn project_policy(state: &AppState, row: ProjectRow) -> Result<Arc<ProjectPolicy>, ApiError> {
    let mut cache = state
        .policy_cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((at, p)) = cache.get(row.id.as_str()) {
        if *at == row.updated_at {
            return Ok(p.clone());
        }
    }
    let updated_at = row.updated_at;
    let policy = Arc::new(ProjectView::from_row(row)?.policy());
    if cache.len() > 10_000 {
        cache.clear();
    }
    cache.insert(policy.project_id.clone(), (updated_at, policy.clone()));
    Ok(policy)
}

/// A view of the one key a request presents (and its project): evaluation needs no more.
struct OneKey<'a> {
    record: Option<&'a KeyRecord>,
    project: Option<&'a ProjectPolicy>,
}

impl SnapshotView for OneKey<'_> {
    fn key(&self, hash: &KeyHash) -> Lookup<'_> {
        match self.record {
            Some(r) if r.hash == *hash => Lookup::Found(r),
            _ => Lookup::Absent,
        }
    }
    fn project(&self, project_id: &str) -> Option<&ProjectPolicy> {
        self.project.filter(|p| p.project_id == project_id)
    }
}

fn lookup(conn: &mut DbConn, hash_hex: &str) -> Result<Option<(KeyRow, ProjectRow)>, ApiError> {
    // On the concrete connection: through the multi-connection diesel rebuilds and re-prepares
    // this statement on every call; here it is prepared once per connection.
    let query = api_keys::table
        .inner_join(projects::table)
        .filter(api_keys::key_hash.eq(hash_hex));
    // `load`, not `first`: SQLite re-prepares a statement whose LIMIT is a bound parameter on
    // every execution; the hash is unique, so there is at most one row anyway.
    let rows: Vec<(KeyRow, ProjectRow)> = with_backend!(conn, |c| query.load(c))?;
    Ok(rows.into_iter().next())
}

/// `POST /v1/verify`'s whole decision, shared by the route and the console's "Try a key":
/// the shape check, the evaluation on the blocking pool, and the verdict metric.
pub async fn decide(
    state: &actix_web::web::Data<AppState>,
    req: VerifyRequest,
) -> Result<VerifyResponse, ApiError> {
    precheck(&req, state)?;
    let st = state.clone();
    let resp = crate::error::blocking(move || verify(&st, &req)).await?;
    state.metrics.observe_verdict(resp.code.as_str());
    Ok(resp)
}

/// Decides a request. Blocking: call from `web::block`.
pub fn verify(state: &AppState, req: &VerifyRequest) -> Result<VerifyResponse, ApiError> {
    let facts = check(req, state)?;
    let now = state.clock.now_ms();
    let Ok(parsed) = keygate_shared::key::parse(&req.key) else {
        // Malformed keys are refused without a lookup.
        return Ok(VerifyResponse::bare(Code::MalformedKey));
    };
    let found = {
        let mut conn = state.pool.get()?;
        lookup(&mut conn, &parsed.hash().to_hex())?
    };
    let (record, policy) = match found {
        Some((k, p)) => (Some(record_from_row(&k)?), Some(project_policy(state, p)?)),
        None => (None, None),
    };
    let view = OneKey {
        record: record.as_ref(),
        project: policy.as_deref(),
    };
    let request = RequestFacts {
        key: Some(&req.key),
        origin: None,
        referer: req.referrer.as_deref(),
        ip: facts.ip,
        method: req.method.as_deref(),
        path: facts.path.as_deref(),
        environment: facts.environment,
    };
    let verdict = match evaluate(&view, &request, now, None) {
        Evaluation::Done(v) => v,
        Evaluation::NeedsCounters(pending) => {
            let mut counters = state
                .counters
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let st = counters.entry(pending.record().key_id.clone()).or_default();
            let decision = keygate_shared::admit(&pending.limits(), st, now);
            pending.finish(decision)
        }
        // A memory view has every shard; treat the impossible as unknown.
        Evaluation::NeedsShard(_) => return Ok(VerifyResponse::bare(Code::UnknownKey)),
    };
    let mut resp = VerifyResponse::bare(verdict.code);
    if let Some(r) = verdict.record {
        resp.key_id = Some(r.key_id.clone());
        resp.project_id = Some(r.project_id.clone());
        resp.environment = Some(r.environment);
        if verdict.is_valid() {
            resp.scopes = Some(r.scopes.clone());
            resp.metadata = r
                .metadata_json
                .as_deref()
                .and_then(|m| serde_json::from_str(m).ok());
        }
    }
    resp.limits = verdict.limits;
    Ok(resp)
}
