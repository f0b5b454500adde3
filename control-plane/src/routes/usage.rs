//! `/v1/usage` (posted by the edge), `/v1/keys/{key_id}/usage`,
//! `/v1/projects/{project_id}/usage` and `/v1/keys/{key_id}/sightings`.

use actix_web::{get, post, web, HttpResponse};

use super::db;
use super::problems::{AuthErrors, BodyErrors, ByIdErrors, QueryErrors};
use crate::auth::{Authed, Readers, UsageWriters};
use crate::domain::usage::{
    self as domain, Scope, SightingList, SightingsQuery, UsageAccepted, UsageQuery, UsageReport,
    UsageSeries,
};
use crate::error::ApiError;
use crate::extract::{Json, Query, USAGE_BODY_LIMIT};
use crate::ids::{KeyId, ProjectId};
use crate::state::AppState;

/// Add per-minute verdict counts and the client IPs and referrer origins seen per key (edge
/// role). Counts roll up into hours and days; a `valid` count moves the key's `last_used_at`
/// forward. Bodies up to 2 MiB.
#[utoipa::path(
    operation_id = "record_usage",
    tag = "usage",
    request_body = UsageReport,
    responses(
        (status = 202, body = UsageAccepted),
        AuthErrors,
        BodyErrors,
    )
)]
#[post("/usage")]
pub async fn record(
    state: web::Data<AppState>,
    _auth: Authed<UsageWriters>,
    body: Json<UsageReport, USAGE_BODY_LIMIT>,
) -> Result<HttpResponse, ApiError> {
    let accepted = db(&state, move |c, _| domain::record(c, body.0)).await?;
    Ok(HttpResponse::Accepted().json(accepted))
}

/// A key's verdict counts per minute, hour or day (default: per minute, the last 24 hours).
#[utoipa::path(
    operation_id = "get_key_usage",
    tag = "usage",
    params(("key_id" = String, Path, description = "key_..."), UsageQuery),
    responses(
        (status = 200, body = UsageSeries),
        AuthErrors,
        QueryErrors,
        ByIdErrors,
    )
)]
#[get("/keys/{key_id}/usage")]
pub async fn series(
    state: web::Data<AppState>,
    _auth: Authed<Readers>,
    path: web::Path<String>,
    query: Query<UsageQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let series = db(&state, move |c, now| {
        domain::series(c, now, Scope::Key(&KeyId::new(id)), query.0)
    })
    .await?;
    Ok(HttpResponse::Ok().json(series))
}

/// A project's verdict counts per minute, hour or day, summed over all its keys (revoked and
/// expired ones included; default: per minute, the last 24 hours).
#[utoipa::path(
    operation_id = "get_project_usage",
    tag = "usage",
    params(("project_id" = String, Path, description = "prj_..."), UsageQuery),
    responses(
        (status = 200, body = UsageSeries),
        AuthErrors,
        QueryErrors,
        ByIdErrors,
    )
)]
#[get("/projects/{project_id}/usage")]
pub async fn project_series(
    state: web::Data<AppState>,
    _auth: Authed<Readers>,
    path: web::Path<String>,
    query: Query<UsageQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let usage = db(&state, move |c, now| {
        domain::series(c, now, Scope::Project(&ProjectId::new(id)), query.0)
    })
    .await?;
    Ok(HttpResponse::Ok().json(usage))
}

/// The client IPs and referrer origins the edge saw using a key, newest first seen first.
#[utoipa::path(
    operation_id = "list_key_sightings",
    tag = "usage",
    params(("key_id" = String, Path, description = "key_..."), SightingsQuery),
    responses(
        (status = 200, body = SightingList),
        AuthErrors,
        QueryErrors,
        ByIdErrors,
    )
)]
#[get("/keys/{key_id}/sightings")]
pub async fn sightings(
    state: web::Data<AppState>,
    _auth: Authed<Readers>,
    path: web::Path<String>,
    query: Query<SightingsQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let list = db(&state, move |c, _| {
        domain::sightings(c, &KeyId::new(id), query.0)
    })
    .await?;
    Ok(HttpResponse::Ok().json(list))
}
