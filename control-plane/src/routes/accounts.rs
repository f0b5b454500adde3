//! `/v1/auth/login`, `/v1/auth/logout`, `/v1/admins`, `/v1/admin-tokens` and `/v1/audit`.

use actix_web::http::header;
use actix_web::{delete, get, patch, post, web, HttpRequest, HttpResponse};

use super::db;
use super::problems::{AnyRoleErrors, AuthErrors, BodyErrors, ByIdErrors, QueryErrors};
use crate::auth::{bearer_token, end_session_token, AnyRole, Authed, Owners, Readers};
use crate::domain::accounts::{
    self as domain, AdminList, AdminView, ChangePassword, CreateAdmin, CreateToken, CreatedToken,
    Login, Session, TokenList, UpdateAdmin,
};
use crate::domain::audit::{self as audit_log, AuditPage, AuditQuery};
use crate::error::{ApiError, Problem};
use crate::extract::{Json, Query};
use crate::ids::{AdminId, TokenId};
use crate::state::AppState;

/// Log in with email and password; returns a session token (JWT).
#[utoipa::path(
    operation_id = "login",
    tag = "auth",
    request_body = Login,
    security(()),
    responses(
        (status = 200, body = Session),
        BodyErrors,
        (status = 401, description = "invalid_credentials", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "login_throttled: too many failed logins for this account or from this client; `Retry-After` says when to try again", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before the next attempt"))),
        (status = 500, description = "internal_error", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/auth/login")]
pub async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: Json<Login>,
) -> Result<HttpResponse, ApiError> {
    let client = crate::throttle::client_address(&req, &state.trusted_proxies);
    let session = crate::auth::login(&state, body.0, client).await?;
    Ok(HttpResponse::Ok().json(session))
}

/// End the calling session: its token is refused from now on, before its expiry. Only for
/// session tokens; an admin API token ends with `DELETE /v1/admin-tokens/{token_id}`.
#[utoipa::path(
    operation_id = "logout",
    tag = "auth",
    responses(
        (status = 204, description = "The session is ended"),
        AnyRoleErrors,
        (status = 400, description = "not_a_session: the bearer token is an API token", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/auth/logout")]
pub async fn logout(
    req: HttpRequest,
    state: web::Data<AppState>,
    _auth: Authed<AnyRole>,
) -> Result<HttpResponse, ApiError> {
    if !end_session_token(&state, request_token(&req)).await? {
        return Err(ApiError::BadRequest {
            code: "not_a_session",
            detail: "only a session token can log out; delete an API token with DELETE /v1/admin-tokens/{token_id}".into(),
        });
    }
    Ok(HttpResponse::NoContent().finish())
}

fn request_token(req: &HttpRequest) -> &str {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .unwrap_or_default()
}

/// Change one's own password (any role, session tokens only). The current password is
/// required; every session of the admin ends, this one included, and the answer is a new
/// session to continue with.
#[utoipa::path(
    operation_id = "change_password",
    tag = "auth",
    request_body = ChangePassword,
    responses(
        (status = 200, description = "Changed; every earlier session of this admin is ended, use this new one", body = Session),
        AnyRoleErrors,
        BodyErrors,
        (status = 400, description = "not_a_session: the bearer token is an API token; malformed_json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "validation_failed (new_password too short or long); wrong_current_password", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "login_throttled: too many wrong current passwords", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before the next attempt"))),
    )
)]
#[post("/auth/password")]
pub async fn change_password(
    req: HttpRequest,
    state: web::Data<AppState>,
    _auth: Authed<AnyRole>,
    body: Json<ChangePassword>,
) -> Result<HttpResponse, ApiError> {
    let token = request_token(&req).to_owned();
    if token.matches('.').count() != 2 {
        return Err(crate::auth::not_a_session());
    }
    let client = crate::throttle::client_address(&req, &state.trusted_proxies);
    let session = crate::auth::change_password(&state, &token, body.0, client).await?;
    Ok(HttpResponse::Ok().json(session))
}

/// Change an admin's role (owner only). Their sessions end at once; demoting the last owner
/// is refused.
#[utoipa::path(
    operation_id = "update_admin",
    tag = "admins",
    request_body = UpdateAdmin,
    params(("admin_id" = String, Path, description = "adm_...")),
    responses(
        (status = 200, body = AdminView),
        AuthErrors,
        BodyErrors,
        ByIdErrors,
        (status = 409, description = "last_owner: this is the only owner", body = Problem, content_type = "application/problem+json"),
    )
)]
#[patch("/admins/{admin_id}")]
pub async fn update_admin(
    state: web::Data<AppState>,
    auth: Authed<Owners>,
    path: web::Path<String>,
    body: Json<UpdateAdmin>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let actor = auth.principal.actor;
    let view = db(&state, move |c, now| {
        domain::update_admin(c, now, &actor, &AdminId::new(id), body.0)
    })
    .await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Delete an admin (owner only). Their sessions end at once; deleting the last owner is
/// refused.
#[utoipa::path(
    operation_id = "delete_admin",
    tag = "admins",
    params(("admin_id" = String, Path, description = "adm_...")),
    responses(
        (status = 204, description = "Deleted"),
        AuthErrors,
        ByIdErrors,
        (status = 409, description = "last_owner: this is the only owner", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/admins/{admin_id}")]
pub async fn delete_admin(
    state: web::Data<AppState>,
    auth: Authed<Owners>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let actor = auth.principal.actor;
    db(&state, move |c, now| {
        domain::delete_admin(c, now, &actor, &AdminId::new(id))
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Create an admin account (owner only).
#[utoipa::path(
    operation_id = "create_admin",
    tag = "admins",
    request_body = CreateAdmin,
    responses(
        (status = 201, body = AdminView),
        AuthErrors,
        BodyErrors,
        (status = 409, description = "duplicate_email", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/admins")]
pub async fn create_admin(
    state: web::Data<AppState>,
    auth: Authed<Owners>,
    body: Json<CreateAdmin>,
) -> Result<HttpResponse, ApiError> {
    let actor = auth.principal.actor;
    let view = create_admin_off_connection(&state, actor, body.0).await?;
    Ok(HttpResponse::Created().json(view))
}

/// Checks a new admin, hashes the password (bounded, no connection held), then stores it.
pub(crate) async fn create_admin_off_connection(
    state: &web::Data<AppState>,
    actor: String,
    input: CreateAdmin,
) -> Result<AdminView, ApiError> {
    domain::check_email(&input.email)?;
    domain::check_password(&input.password)?;
    let CreateAdmin {
        email,
        role,
        password,
    } = input;
    let hash = crate::auth::password_work(state, move || domain::hash_password(&password)).await?;
    db(state, move |c, now| {
        domain::create_admin_hashed(c, now, &actor, &email, role, hash)
    })
    .await
}

/// List admin accounts (owner only).
#[utoipa::path(
    operation_id = "list_admins",
    tag = "admins",
    responses(
        (status = 200, body = AdminList),
        AuthErrors,
    )
)]
#[get("/admins")]
pub async fn list_admins(
    state: web::Data<AppState>,
    _auth: Authed<Owners>,
) -> Result<HttpResponse, ApiError> {
    let list = db(&state, |c, _| domain::list_admins(c)).await?;
    Ok(HttpResponse::Ok().json(list))
}

/// Create an admin API token (owner only). The token is in this response only.
#[utoipa::path(
    operation_id = "create_token",
    tag = "admin-tokens",
    request_body = CreateToken,
    responses(
        (status = 201, body = CreatedToken),
        AuthErrors,
        BodyErrors,
    )
)]
#[post("/admin-tokens")]
pub async fn create_token(
    state: web::Data<AppState>,
    auth: Authed<Owners>,
    body: Json<CreateToken>,
) -> Result<HttpResponse, ApiError> {
    let actor = auth.principal.actor;
    let created = db(&state, move |c, now| {
        domain::create_token(c, now, &actor, body.0)
    })
    .await?;
    Ok(HttpResponse::Created().json(created))
}

/// List admin API tokens (owner only).
#[utoipa::path(
    operation_id = "list_tokens",
    tag = "admin-tokens",
    responses(
        (status = 200, body = TokenList),
        AuthErrors,
    )
)]
#[get("/admin-tokens")]
pub async fn list_tokens(
    state: web::Data<AppState>,
    _auth: Authed<Owners>,
) -> Result<HttpResponse, ApiError> {
    let list = db(&state, |c, _| domain::list_tokens(c)).await?;
    Ok(HttpResponse::Ok().json(list))
}

/// Delete an admin API token; it stops working at once (owner only).
#[utoipa::path(
    operation_id = "delete_token",
    tag = "admin-tokens",
    params(("token_id" = String, Path, description = "tok_...")),
    responses(
        (status = 204, description = "Deleted"),
        AuthErrors,
        ByIdErrors,
    )
)]
#[delete("/admin-tokens/{token_id}")]
pub async fn delete_token(
    state: web::Data<AppState>,
    auth: Authed<Owners>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let actor = auth.principal.actor;
    db(&state, move |c, now| {
        domain::delete_token(c, now, &actor, &TokenId::new(id))
    })
    .await?;
    state.token_cache.clear();
    Ok(HttpResponse::NoContent().finish())
}

/// The audit log, newest first.
#[utoipa::path(
    operation_id = "list_audit",
    tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, body = AuditPage),
        AuthErrors,
        QueryErrors,
    )
)]
#[get("/audit")]
pub async fn audit(
    state: web::Data<AppState>,
    _auth: Authed<Readers>,
    query: Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = db(&state, move |c, _| audit_log::list(c, query.0)).await?;
    Ok(HttpResponse::Ok().json(page))
}
