//! `/v1/alerts` and `/v1/projects/{project_id}/alert-rules`.

use actix_web::{get, patch, post, web, HttpResponse};

use super::db;
use super::problems::{AuthErrors, BodyErrors, ByIdErrors, QueryErrors};
use crate::auth::{Authed, Readers, Writers};
use crate::domain::alerts::{
    self as domain, Acknowledge, AlertPage, AlertQuery, AlertRuleList, AlertRuleUpdate,
    AlertRuleView, AlertView,
};
use crate::error::{ApiError, Problem};
use crate::extract::{Json, Query};
use crate::ids::{AlertId, ProjectId};
use crate::state::AppState;

/// List alerts, newest first.
#[utoipa::path(
    operation_id = "list_alerts",
    tag = "alerts",
    params(AlertQuery),
    responses(
        (status = 200, body = AlertPage),
        AuthErrors,
        QueryErrors,
    )
)]
#[get("/alerts")]
pub async fn list(
    state: web::Data<AppState>,
    _auth: Authed<Readers>,
    query: Query<AlertQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = db(&state, move |c, _| domain::list(c, query.0)).await?;
    Ok(HttpResponse::Ok().json(page))
}

/// One alert.
#[utoipa::path(
    operation_id = "get_alert",
    tag = "alerts",
    params(("alert_id" = String, Path, description = "alr_...")),
    responses(
        (status = 200, body = AlertView),
        AuthErrors,
        ByIdErrors,
    )
)]
#[get("/alerts/{alert_id}")]
pub async fn get(
    state: web::Data<AppState>,
    _auth: Authed<Readers>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let alert = db(&state, move |c, _| domain::get(c, &AlertId::new(id))).await?;
    Ok(HttpResponse::Ok().json(alert))
}

/// Acknowledge an alert: it stops counting as open and the audit log names who looked at it.
#[utoipa::path(
    operation_id = "acknowledge_alert",
    tag = "alerts",
    params(("alert_id" = String, Path, description = "alr_...")),
    request_body = Acknowledge,
    responses(
        (status = 200, body = AlertView),
        AuthErrors,
        BodyErrors,
        ByIdErrors,
        (status = 409, description = "already_acknowledged", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/alerts/{alert_id}/acknowledge")]
pub async fn acknowledge(
    state: web::Data<AppState>,
    auth: Authed<Writers>,
    path: web::Path<String>,
    body: Json<Acknowledge>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let actor = auth.principal.actor;
    let alert = db(&state, move |c, now| {
        domain::acknowledge(c, now, &actor, &AlertId::new(id), body.0)
    })
    .await?;
    Ok(HttpResponse::Ok().json(alert))
}

/// A project's alert rules, defaults filled in.
#[utoipa::path(
    operation_id = "list_alert_rules",
    tag = "alerts",
    params(("project_id" = String, Path, description = "prj_...")),
    responses(
        (status = 200, body = AlertRuleList),
        AuthErrors,
        ByIdErrors,
    )
)]
#[get("/projects/{project_id}/alert-rules")]
pub async fn list_rules(
    state: web::Data<AppState>,
    _auth: Authed<Readers>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let rules = db(&state, move |c, _| {
        domain::list_rules(c, &ProjectId::new(id))
    })
    .await?;
    Ok(HttpResponse::Ok().json(rules))
}

/// Change one alert rule of a project: enable or disable it, its threshold and window, and
/// whether it revokes keys.
#[utoipa::path(
    operation_id = "update_alert_rule",
    tag = "alerts",
    params(
        ("project_id" = String, Path, description = "prj_..."),
        ("rule" = String, Path, description = "new_ips, new_referrers, rejections, traffic_spike, test_key_on_live, near_quota or near_expiry"),
    ),
    request_body = AlertRuleUpdate,
    responses(
        (status = 200, body = AlertRuleView),
        AuthErrors,
        BodyErrors,
        ByIdErrors,
    )
)]
#[patch("/projects/{project_id}/alert-rules/{rule}")]
pub async fn update_rule(
    state: web::Data<AppState>,
    auth: Authed<Writers>,
    path: web::Path<(String, String)>,
    body: Json<AlertRuleUpdate>,
) -> Result<HttpResponse, ApiError> {
    let (project_id, rule) = path.into_inner();
    let actor = auth.principal.actor;
    let view = db(&state, move |c, now| {
        domain::update_rule(c, now, &actor, &ProjectId::new(project_id), &rule, body.0)
    })
    .await?;
    Ok(HttpResponse::Ok().json(view))
}
