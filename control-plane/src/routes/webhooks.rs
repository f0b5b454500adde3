//! `/v1/webhooks/...`: endpoints, their signing secrets and their delivery log.

use actix_web::{delete, get, patch, post, web, HttpResponse};

use super::db;
use super::problems::{AuthErrors, BodyErrors, ByIdErrors, QueryErrors};
use crate::auth::{Authed, Readers, Writers};
use crate::domain::webhooks::{
    self as domain, CreateWebhook, CreatedWebhook, DeliveryDetail, DeliveryPage, DeliveryQuery,
    DeliveryView, RotateSecret, RotatedSecret, UpdateWebhook, WebhookList, WebhookView,
};
use crate::error::{ApiError, Problem};
use crate::extract::{Json, Query};
use crate::ids::{DeliveryId, WebhookId};
use crate::state::AppState;

/// Refuses a webhook URL whose host is, or resolves to, a non-public address (422
/// `webhook_target_forbidden`), unless the operator allows private targets. A host that does
/// not resolve now is let through: every send checks again.
pub(crate) async fn guard_target(state: &web::Data<AppState>, url: &str) -> Result<(), ApiError> {
    // A URL that does not parse is refused by the domain's own check, which names the problem.
    let Ok(parsed) = url::Url::parse(url.trim()) else {
        return Ok(());
    };
    if !matches!(parsed.scheme(), "http" | "https") {
        return Ok(());
    }
    if state.webhooks.allow_private_targets {
        return Ok(());
    }
    match crate::ssrf::resolve_target(&parsed, false, &crate::ssrf::system_resolver()).await {
        Err(e @ crate::ssrf::TargetError::Forbidden { .. }) => Err(ApiError::Unprocessable {
            code: "webhook_target_forbidden",
            field: "url",
            detail: e.to_string(),
        }),
        _ => Ok(()),
    }
}

/// Create a webhook endpoint. The signing `secret` is in this response only.
#[utoipa::path(
    operation_id = "create_webhook",
    tag = "webhooks",
    request_body = CreateWebhook,
    responses(
        (status = 201, description = "Created; `secret` is shown only here", body = CreatedWebhook),
        AuthErrors,
        BodyErrors,
        (status = 422, description = "validation_failed; webhook_target_forbidden: the URL's host is or resolves to a loopback, private, link-local or other non-public address", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/webhooks")]
pub async fn create(
    state: web::Data<AppState>,
    auth: Authed<Writers>,
    body: Json<CreateWebhook>,
) -> Result<HttpResponse, ApiError> {
    guard_target(&state, &body.0.url).await?;
    let actor = auth.principal.actor;
    let created = db(&state, move |c, now| domain::create(c, now, &actor, body.0)).await?;
    Ok(HttpResponse::Created().json(created))
}

/// List webhook endpoints, newest first.
#[utoipa::path(
    operation_id = "list_webhooks",
    tag = "webhooks",
    responses(
        (status = 200, body = WebhookList),
        AuthErrors,
    )
)]
#[get("/webhooks")]
pub async fn list(
    state: web::Data<AppState>,
    _auth: Authed<Readers>,
) -> Result<HttpResponse, ApiError> {
    let list = db(&state, |c, _| domain::list(c)).await?;
    Ok(HttpResponse::Ok().json(list))
}

/// Get a webhook endpoint.
#[utoipa::path(
    operation_id = "get_webhook",
    tag = "webhooks",
    params(("webhook_id" = String, Path, description = "whk_...")),
    responses(
        (status = 200, body = WebhookView),
        AuthErrors,
        ByIdErrors,
    )
)]
#[get("/webhooks/{webhook_id}")]
pub async fn get(
    state: web::Data<AppState>,
    _auth: Authed<Readers>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let view = db(&state, move |c, _| domain::get(c, &WebhookId::new(id))).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Update a webhook endpoint (any of `url`, `events`, `description`, `expiring_days`,
/// `enabled`).
#[utoipa::path(
    operation_id = "update_webhook",
    tag = "webhooks",
    params(("webhook_id" = String, Path, description = "whk_...")),
    request_body = UpdateWebhook,
    responses(
        (status = 200, body = WebhookView),
        AuthErrors,
        BodyErrors,
        ByIdErrors,
        (status = 422, description = "validation_failed; webhook_target_forbidden: the URL's host is or resolves to a loopback, private, link-local or other non-public address", body = Problem, content_type = "application/problem+json"),
    )
)]
#[patch("/webhooks/{webhook_id}")]
pub async fn update(
    state: web::Data<AppState>,
    auth: Authed<Writers>,
    path: web::Path<String>,
    body: Json<UpdateWebhook>,
) -> Result<HttpResponse, ApiError> {
    if let Some(url) = &body.0.url {
        guard_target(&state, url).await?;
    }
    let id = path.into_inner();
    let actor = auth.principal.actor;
    let view = db(&state, move |c, now| {
        domain::update(c, now, &actor, &WebhookId::new(id), body.0)
    })
    .await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Delete a webhook endpoint. Its pending deliveries become `failed` with
/// `last_error: "endpoint deleted"`; nothing more is sent to it.
#[utoipa::path(
    operation_id = "delete_webhook",
    tag = "webhooks",
    params(("webhook_id" = String, Path, description = "whk_...")),
    responses(
        (status = 204, description = "Deleted"),
        AuthErrors,
        ByIdErrors,
    )
)]
#[delete("/webhooks/{webhook_id}")]
pub async fn remove(
    state: web::Data<AppState>,
    auth: Authed<Writers>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let actor = auth.principal.actor;
    db(&state, move |c, now| {
        domain::delete(c, now, &actor, &WebhookId::new(id))
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Replace the signing secret. The new `secret` is in this response only; the old one keeps
/// signing, next to it, for `grace_seconds`.
#[utoipa::path(
    operation_id = "rotate_webhook_secret",
    tag = "webhooks",
    params(("webhook_id" = String, Path, description = "whk_...")),
    request_body = RotateSecret,
    responses(
        (status = 200, description = "The new secret, shown only here", body = RotatedSecret),
        AuthErrors,
        BodyErrors,
        ByIdErrors,
    )
)]
#[post("/webhooks/{webhook_id}/rotate-secret")]
pub async fn rotate_secret(
    state: web::Data<AppState>,
    auth: Authed<Writers>,
    path: web::Path<String>,
    body: Json<RotateSecret>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let actor = auth.principal.actor;
    let rotated = db(&state, move |c, now| {
        domain::rotate_secret(c, now, &actor, &WebhookId::new(id), body.0)
    })
    .await?;
    Ok(HttpResponse::Ok().json(rotated))
}

/// An endpoint's delivery log, newest first.
#[utoipa::path(
    operation_id = "list_webhook_deliveries",
    tag = "webhooks",
    params(("webhook_id" = String, Path, description = "whk_..."), DeliveryQuery),
    responses(
        (status = 200, body = DeliveryPage),
        AuthErrors,
        QueryErrors,
        ByIdErrors,
    )
)]
#[get("/webhooks/{webhook_id}/deliveries")]
pub async fn deliveries(
    state: web::Data<AppState>,
    _auth: Authed<Readers>,
    path: web::Path<String>,
    query: Query<DeliveryQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let page = db(&state, move |c, _| {
        domain::list_deliveries(c, &WebhookId::new(id), query.0)
    })
    .await?;
    Ok(HttpResponse::Ok().json(page))
}

/// One delivery: its attempts (status code, error, duration) and the event it carries.
#[utoipa::path(
    operation_id = "get_webhook_delivery",
    tag = "webhooks",
    params(
        ("webhook_id" = String, Path, description = "whk_..."),
        ("delivery_id" = String, Path, description = "dlv_..."),
    ),
    responses(
        (status = 200, body = DeliveryDetail),
        AuthErrors,
        ByIdErrors,
    )
)]
#[get("/webhooks/{webhook_id}/deliveries/{delivery_id}")]
pub async fn delivery(
    state: web::Data<AppState>,
    _auth: Authed<Readers>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, delivery_id) = path.into_inner();
    let detail = db(&state, move |c, _| {
        domain::get_delivery(c, &WebhookId::new(id), &DeliveryId::new(delivery_id))
    })
    .await?;
    Ok(HttpResponse::Ok().json(detail))
}

/// Send a delivery again now, whatever its state (a failed one gets one more attempt).
#[utoipa::path(
    operation_id = "retry_webhook_delivery",
    tag = "webhooks",
    params(
        ("webhook_id" = String, Path, description = "whk_..."),
        ("delivery_id" = String, Path, description = "dlv_..."),
    ),
    responses(
        (status = 202, description = "Queued for an attempt now", body = DeliveryView),
        AuthErrors,
        ByIdErrors,
        (status = 409, description = "endpoint_disabled", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/webhooks/{webhook_id}/deliveries/{delivery_id}/retry")]
pub async fn retry(
    state: web::Data<AppState>,
    _auth: Authed<Writers>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, delivery_id) = path.into_inner();
    let view = db(&state, move |c, now| {
        domain::retry_delivery(c, now, &WebhookId::new(id), &DeliveryId::new(delivery_id))
    })
    .await?;
    Ok(HttpResponse::Accepted().json(view))
}
