//! `/v1/projects`.

use actix_web::{get, patch, post, web, HttpResponse};

use super::db;
use super::problems::{AuthErrors, BodyErrors, ByIdErrors};
use crate::auth::{Authed, Readers, Writers};
use crate::domain::projects::{
    self as domain, CreateProject, ProjectList, ProjectView, UpdateProject,
};
use crate::error::{ApiError, Problem};
use crate::extract::Json;
use crate::ids::ProjectId;
use crate::state::AppState;

/// Create a project.
#[utoipa::path(
    operation_id = "create_project",
    tag = "projects",
    request_body = CreateProject,
    responses(
        (status = 201, description = "Created", body = ProjectView),
        AuthErrors,
        BodyErrors,
        (status = 422, description = "validation_failed or duplicate_prefix", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/projects")]
pub async fn create(
    state: web::Data<AppState>,
    auth: Authed<Writers>,
    body: Json<CreateProject>,
) -> Result<HttpResponse, ApiError> {
    let actor = auth.principal.actor;
    let view = db(&state, move |c, now| domain::create(c, now, &actor, body.0)).await?;
    Ok(HttpResponse::Created().json(view))
}

/// List projects.
#[utoipa::path(
    operation_id = "list_projects",
    tag = "projects",
    responses(
        (status = 200, body = ProjectList),
        AuthErrors,
    )
)]
#[get("/projects")]
pub async fn list(
    state: web::Data<AppState>,
    _auth: Authed<Readers>,
) -> Result<HttpResponse, ApiError> {
    let list = db(&state, |c, _| domain::list(c)).await?;
    Ok(HttpResponse::Ok().json(list))
}

/// Get a project.
#[utoipa::path(
    operation_id = "get_project",
    tag = "projects",
    params(("project_id" = String, Path, description = "prj_...")),
    responses(
        (status = 200, body = ProjectView),
        AuthErrors,
        ByIdErrors,
    )
)]
#[get("/projects/{project_id}")]
pub async fn get(
    state: web::Data<AppState>,
    _auth: Authed<Readers>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let view = db(&state, move |c, _| domain::get(c, &ProjectId::new(id))).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Update a project's name, routes or default route policy.
#[utoipa::path(
    operation_id = "update_project",
    tag = "projects",
    params(("project_id" = String, Path, description = "prj_...")),
    request_body = UpdateProject,
    responses(
        (status = 200, body = ProjectView),
        AuthErrors,
        BodyErrors,
        ByIdErrors,
    )
)]
#[patch("/projects/{project_id}")]
pub async fn update(
    state: web::Data<AppState>,
    auth: Authed<Writers>,
    path: web::Path<String>,
    body: Json<UpdateProject>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let actor = auth.principal.actor;
    let view = db(&state, move |c, now| {
        domain::update(c, now, &actor, &ProjectId::new(id), body.0)
    })
    .await?;
    Ok(HttpResponse::Ok().json(view))
}
