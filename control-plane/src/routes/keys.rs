//! `/v1/projects/{project_id}/keys`, `/v1/keys/...` and `/v1/verify`.

use actix_web::{get, patch, post, web, HttpResponse};

use super::db;
use super::problems::{AuthErrors, BodyErrors, ByIdErrors, QueryErrors};
use crate::auth::{Authed, Readers, Writers};
use crate::domain::keys::{
    self as domain, CreatedKey, KeyListQuery, KeyPage, KeySpec, KeyView, RevokeKey, RotateKey,
    RotatedKey, UpdateKey,
};
use crate::error::{ApiError, Problem};
use crate::extract::{Json, Query};
use crate::ids::{KeyId, ProjectId};
use crate::state::AppState;
use crate::verify::{self as verifier, VerifyRequest, VerifyResponse};

/// Issue a key. The plaintext `key` is in this response only.
#[utoipa::path(
    operation_id = "create_key",
    tag = "keys",
    params(("project_id" = String, Path, description = "prj_...")),
    request_body = KeySpec,
    responses(
        (status = 201, description = "Created; `key` is shown only here", body = CreatedKey),
        AuthErrors,
        BodyErrors,
        ByIdErrors,
    )
)]
#[post("/projects/{project_id}/keys")]
pub async fn create(
    state: web::Data<AppState>,
    auth: Authed<Writers>,
    path: web::Path<String>,
    body: Json<KeySpec>,
) -> Result<HttpResponse, ApiError> {
    let project_id = path.into_inner();
    let actor = auth.principal.actor;
    let created = db(&state, move |c, now| {
        domain::create(c, now, &actor, &ProjectId::new(project_id), body.0)
    })
    .await?;
    Ok(HttpResponse::Created().json(created))
}

/// List a project's keys, newest first.
#[utoipa::path(
    operation_id = "list_keys",
    tag = "keys",
    params(("project_id" = String, Path, description = "prj_..."), KeyListQuery),
    responses(
        (status = 200, body = KeyPage),
        AuthErrors,
        QueryErrors,
        ByIdErrors,
    )
)]
#[get("/projects/{project_id}/keys")]
pub async fn list(
    state: web::Data<AppState>,
    _auth: Authed<Readers>,
    path: web::Path<String>,
    query: Query<KeyListQuery>,
) -> Result<HttpResponse, ApiError> {
    let project_id = path.into_inner();
    let page = db(&state, move |c, now| {
        domain::list(c, now, &ProjectId::new(project_id), query.0)
    })
    .await?;
    Ok(HttpResponse::Ok().json(page))
}

/// Get a key.
#[utoipa::path(
    operation_id = "get_key",
    tag = "keys",
    params(("key_id" = String, Path, description = "key_...")),
    responses(
        (status = 200, body = KeyView),
        AuthErrors,
        ByIdErrors,
    )
)]
#[get("/keys/{key_id}")]
pub async fn get(
    state: web::Data<AppState>,
    _auth: Authed<Readers>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let view = db(&state, move |c, now| domain::get(c, now, &KeyId::new(id))).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Update a key (any spec field but `kind` and `environment`).
#[utoipa::path(
    operation_id = "update_key",
    tag = "keys",
    params(("key_id" = String, Path, description = "key_...")),
    request_body = UpdateKey,
    responses(
        (status = 200, body = KeyView),
        AuthErrors,
        BodyErrors,
        ByIdErrors,
        (status = 409, description = "conflict", body = Problem, content_type = "application/problem+json"),
    )
)]
#[patch("/keys/{key_id}")]
pub async fn update(
    state: web::Data<AppState>,
    auth: Authed<Writers>,
    path: web::Path<String>,
    body: Json<UpdateKey>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let actor = auth.principal.actor;
    let view = db(&state, move |c, now| {
        domain::update(c, now, &actor, &KeyId::new(id), body.0)
    })
    .await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Rotate a key: a new key with the same spec; the old one works for `grace_seconds` more,
/// never past its own expiry.
#[utoipa::path(
    operation_id = "rotate_key",
    tag = "keys",
    params(("key_id" = String, Path, description = "key_...")),
    request_body = RotateKey,
    responses(
        (status = 201, description = "The new key; `key` is shown only here", body = RotatedKey),
        AuthErrors,
        BodyErrors,
        ByIdErrors,
        (status = 409, description = "key_not_active (revoked or expired) or already_rotated", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/keys/{key_id}/rotate")]
pub async fn rotate(
    state: web::Data<AppState>,
    auth: Authed<Writers>,
    path: web::Path<String>,
    body: Json<RotateKey>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let actor = auth.principal.actor;
    let rotated = db(&state, move |c, now| {
        domain::rotate(c, now, &actor, &KeyId::new(id), body.0)
    })
    .await?;
    Ok(HttpResponse::Created().json(rotated))
}

/// Revoke a key, at once.
#[utoipa::path(
    operation_id = "revoke_key",
    tag = "keys",
    params(("key_id" = String, Path, description = "key_...")),
    request_body = RevokeKey,
    responses(
        (status = 200, body = KeyView),
        AuthErrors,
        BodyErrors,
        ByIdErrors,
        (status = 409, description = "already_revoked", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/keys/{key_id}/revoke")]
pub async fn revoke(
    state: web::Data<AppState>,
    auth: Authed<Writers>,
    path: web::Path<String>,
    body: Json<RevokeKey>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let actor = auth.principal.actor;
    let view = db(&state, move |c, now| {
        domain::revoke(c, now, &actor, &KeyId::new(id), body.0)
    })
    .await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Verify a key against request facts with the edge's evaluation.
#[utoipa::path(
    operation_id = "verify_key",
    tag = "verify",
    request_body = VerifyRequest,
    responses(
        (status = 200, description = "The verdict (also for invalid keys)", body = VerifyResponse),
        AuthErrors,
        BodyErrors,
        (status = 400, description = "malformed_json, or invalid_path: `path` cannot be normalised safely (an encoded / or \\, a \\, a NUL, a bad escape, or a dot segment above the root), as the edge answers for it", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/verify")]
pub async fn verify(
    state: web::Data<AppState>,
    _auth: Authed<Readers>,
    body: Json<VerifyRequest>,
) -> Result<HttpResponse, ApiError> {
    let resp = verifier::decide(&state, body.0).await?;
    Ok(HttpResponse::Ok().json(resp))
}
