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

/// Liveness and database reachability.
#[utoipa::path(
    operation_id = "healthz",
    tag = "system",
    security(()),
    responses(
        (status = 200, body = Health), (status = 500, description = "internal_error", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/healthz")]
pub async fn healthz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let st = state.clone();
    blocking(move || {
        let mut c = st.pool.get()?;
        c.batch_execute("SELECT 1")?;
        Ok(())
    })
    .await?;
    Ok(HttpResponse::Ok().json(Health {
        status: "ok".to_owned(),
    }))
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
