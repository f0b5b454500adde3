//! `/v1/usage` (posted by the edge) and `/v1/keys/{key_id}/usage`.

use actix_web::{get, post, web, HttpResponse};

use super::db;
use crate::auth::{Authed, Readers, UsageWriters};
use crate::domain::usage::{self as domain, UsageAccepted, UsageQuery, UsageReport, UsageSeries};
use crate::error::{ApiError, Problem};
use crate::extract::{Json, Query};
use crate::state::AppState;

/// Add per-minute verdict counts (edge role).
#[utoipa::path(
    operation_id = "record_usage",
    tag = "usage",
    request_body = UsageReport,
    responses(
        (status = 202, body = UsageAccepted), (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"), (status = 403, description = "forbidden", body = Problem, content_type = "application/problem+json"), (status = 422, description = "validation_failed", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "malformed_json", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "payload_too_large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "unsupported_media_type", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "internal_error", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/usage")]
pub async fn record(
    state: web::Data<AppState>,
    _auth: Authed<UsageWriters>,
    body: Json<UsageReport>,
) -> Result<HttpResponse, ApiError> {
    let accepted = db(&state, move |c, _| domain::record(c, body.0)).await?;
    Ok(HttpResponse::Accepted().json(accepted))
}

/// A key's per-minute verdict counts (default: the last 24 hours).
#[utoipa::path(
    operation_id = "get_key_usage",
    tag = "usage",
    params(("key_id" = String, Path, description = "key_..."), UsageQuery),
    responses(
        (status = 200, body = UsageSeries), (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"), (status = 403, description = "forbidden", body = Problem, content_type = "application/problem+json"), (status = 404, description = "not_found", body = Problem, content_type = "application/problem+json"), (status = 422, description = "validation_failed", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "internal_error", body = Problem, content_type = "application/problem+json"),
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
    let series = db(&state, move |c, now| domain::series(c, now, &id, query.0)).await?;
    Ok(HttpResponse::Ok().json(series))
}
