//! `/healthz`, `/openapi.json` and `/metrics` (no authentication: keep them on a private
//! network, or filter `/metrics` at the proxy).

use actix_web::{get, web, HttpResponse};
use diesel::connection::SimpleConnection as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{blocking, ApiError, Problem};
use crate::state::AppState;

/// Health.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

/// The pre-rendered OpenAPI document.
#[derive(Debug, Clone)]
pub struct OpenApiJson(pub String);

/// How long `/readyz` waits for the database.
pub const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Liveness: 200 while the process serves requests, whatever the state of the database (a
/// restart would not bring the database back). For load balancers, use `/readyz`.
#[utoipa::path(
    operation_id = "healthz",
    tag = "system",
    security(()),
    responses(
        (status = 200, body = Health),
    )
)]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "ok".to_owned(),
    })
}

/// Readiness: 200 when a new database connection can be opened and answers `SELECT 1` within
/// 3 seconds, else 503 `database_unavailable`. A new connection, not a pooled one, so that the
/// answer is about the database now.
#[utoipa::path(
    operation_id = "readyz",
    tag = "system",
    security(()),
    responses(
        (status = 200, body = Health),
        (status = 503, description = "database_unavailable: the database cannot be reached", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let target = state.db_target.clone();
    let check = blocking(move || -> Result<(), ApiError> {
        let mut c = target
            .establish()
            .map_err(|e| ApiError::internal(anyhow::anyhow!("{e}")))?;
        c.batch_execute("SELECT 1")?;
        Ok(())
    });
    let unavailable = |why: String| {
        tracing::warn!(error = %why, "not ready: the database cannot be reached");
        ApiError::ServiceUnavailable {
            code: "database_unavailable",
            detail: "the database cannot be reached".to_owned(),
        }
    };
    match actix_web::rt::time::timeout(READY_TIMEOUT, check).await {
        Ok(Ok(())) => Ok(HttpResponse::Ok().json(Health {
            status: "ok".to_owned(),
        })),
        Ok(Err(e)) => Err(unavailable(format!("{e:#}"))),
        Err(_) => Err(unavailable("timed out".to_owned())),
    }
}

/// This document.
#[utoipa::path(
    operation_id = "get_openapi",
    tag = "system",
    security(()),
    responses(
        (status = 200, description = "OpenAPI 3 document", content_type = "application/json", body = Object),
    )
)]
#[get("/openapi.json")]
pub async fn openapi(doc: web::Data<OpenApiJson>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(doc.0.clone())
}

/// Prometheus metrics.
#[utoipa::path(
    operation_id = "get_metrics",
    tag = "system",
    security(()),
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
    )
)]
#[get("/metrics")]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}
