//! `POST /v1/leaks`: leak reports from secret-scanning partners and `keygate scan --revoke`.

use actix_web::{post, web, HttpResponse};

use super::db;
use super::problems::{AuthErrors, BodyErrors};
use crate::auth::{Authed, Writers};
use crate::domain::leaks::{self as domain, LeakOutcome, LeakReport};
use crate::error::ApiError;
use crate::extract::Json;
use crate::state::AppState;

/// Report leaked keys. Each live key is revoked at once (reason `leaked: reported by
/// {source}`); the audit log names the reporter, the source and the URL. Malformed keys are
/// answered `malformed` without any lookup; well-formed keys that match nothing `unknown`.
#[utoipa::path(
    operation_id = "report_leaks",
    tag = "keys",
    request_body = LeakReport,
    responses(
        (status = 200, description = "One item per reported key, in order", body = LeakOutcome),
        AuthErrors,
        BodyErrors,
    )
)]
#[post("/leaks")]
pub async fn report(
    state: web::Data<AppState>,
    auth: Authed<Writers>,
    body: Json<LeakReport>,
) -> Result<HttpResponse, ApiError> {
    let actor = auth.principal.actor;
    let outcome = db(&state, move |c, now| domain::report(c, now, &actor, body.0)).await?;
    Ok(HttpResponse::Ok().json(outcome))
}
