//! Projects: a key prefix (fixed at creation), routes and the default route policy.

use diesel::prelude::*;
use keygate_shared::{DefaultRoutePolicy, KeyPrefix, ProjectPolicy, Route, RouteMatching};
use serde::{Deserialize, Serialize};

use super::{audit, bump_version, check_name, is_unique_violation};
use crate::db::models::ProjectRow;
use crate::db::schema::projects;
use crate::db::{write_tx, DbConn};
use crate::error::StoreError;
use crate::ids::ProjectId;

/// Most routes a project may have.
pub const MAX_ROUTES: usize = 500;

/// Body of `POST /v1/projects`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    /// Display name: not blank, at most 200 characters once trimmed, no control characters.
    #[cfg_attr(feature = "openapi", schema(example = "Acme shop", min_length = 1))]
    pub name: String,
    /// 2 to 12 characters of `[a-z0-9]`, starting with a letter; never changes.
    #[cfg_attr(
        feature = "openapi",
        schema(example = "acme", pattern = "^[a-z][a-z0-9]{1,11}$")
    )]
    pub key_prefix: String,
    /// Route to scope mapping, at most 500 routes.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::schemas::RouteSchema>, max_items = 500))]
    pub routes: Vec<Route>,
    /// `allow` (default) or `deny`. Not nullable: leave it out for the default.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schemas::DefaultRoutePolicySchema))]
    pub default_route_policy: DefaultRoutePolicy,
    /// `exact` (default) or `case_insensitive`: how routes compare with request paths. Not
    /// nullable: leave it out for the default.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schemas::RouteMatchingSchema))]
    pub route_matching: RouteMatching,
}

/// Body of `PATCH /v1/projects/{project_id}`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateProject {
    /// Display name: not blank, at most 200 characters once trimmed, no control characters.
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub name: Option<String>,
    /// Replaces the routes (at most 500).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<crate::schemas::RouteSchema>>, max_items = 500))]
    pub routes: Option<Vec<Route>>,
    /// `allow` or `deny`.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::schemas::DefaultRoutePolicySchema>))]
    pub default_route_policy: Option<DefaultRoutePolicy>,
    /// `exact` or `case_insensitive`.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::schemas::RouteMatchingSchema>))]
    pub route_matching: Option<RouteMatching>,
    /// Refused: a prefix never changes. Not in the document: with no properties beyond the
    /// listed ones allowed, it says what the server does (422).
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub key_prefix: Option<serde_json::Value>,
}

/// A project.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProjectView {
    /// `prj_...`.
    pub id: ProjectId,
    /// Display name.
    pub name: String,
    /// Key prefix.
    pub key_prefix: String,
    /// Routes.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::schemas::RouteSchema>))]
    pub routes: Vec<Route>,
    /// Policy for paths no route matches.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schemas::DefaultRoutePolicySchema))]
    pub default_route_policy: DefaultRoutePolicy,
    /// How routes compare with request paths.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schemas::RouteMatchingSchema))]
    pub route_matching: RouteMatching,
    /// RFC 3339.
    #[serde(with = "crate::timefmt::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: i64,
    /// RFC 3339.
    #[serde(with = "crate::timefmt::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub updated_at: i64,
}

/// A list of projects.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProjectList {
    /// Newest first.
    pub items: Vec<ProjectView>,
}

fn matching_str(m: RouteMatching) -> &'static str {
    match m {
        RouteMatching::Exact => "exact",
        RouteMatching::CaseInsensitive => "case_insensitive",
    }
}

fn policy_str(p: DefaultRoutePolicy) -> &'static str {
    match p {
        DefaultRoutePolicy::Allow => "allow",
        DefaultRoutePolicy::Deny => "deny",
    }
}

impl ProjectView {
    /// From a row; a row that does not parse back is an internal error.
    pub fn from_row(r: ProjectRow) -> Result<Self, StoreError> {
        let routes: Vec<Route> = serde_json::from_str(&r.routes).map_err(StoreError::internal)?;
        let default_route_policy = match r.default_route_policy.as_str() {
            "deny" => DefaultRoutePolicy::Deny,
            _ => DefaultRoutePolicy::Allow,
        };
        let route_matching = match r.route_matching.as_str() {
            "case_insensitive" => RouteMatching::CaseInsensitive,
            _ => RouteMatching::Exact,
        };
        Ok(ProjectView {
            id: r.id,
            name: r.name,
            key_prefix: r.key_prefix,
            routes,
            default_route_policy,
            route_matching,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }

    /// The project's part of a snapshot.
    pub fn policy(&self) -> ProjectPolicy {
        ProjectPolicy {
            project_id: self.id.to_string(),
            routes: self.routes.clone(),
            default_route_policy: self.default_route_policy,
            route_matching: self.route_matching,
        }
    }
}

fn check_routes(routes: &[Route]) -> Result<(), StoreError> {
    if routes.len() > MAX_ROUTES {
        return Err(StoreError::validation(
            "routes",
            format!("at most {MAX_ROUTES} routes"),
        ));
    }
    Ok(())
}

fn to_json<T: Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(StoreError::internal)
}

/// Loads a project row.
pub fn find_row(conn: &mut DbConn, id: &ProjectId) -> Result<ProjectRow, StoreError> {
    // `load` on the concrete connection keeps the prepared statement cached (see
    // verify::lookup); the id is the primary key.
    let query = projects::table.find(id);
    let rows: Vec<ProjectRow> = crate::with_backend!(conn, |c| query.load(c))?;
    rows.into_iter()
        .next()
        .ok_or_else(|| StoreError::not_found("project", id))
}

/// Creates a project.
pub fn create(
    conn: &mut DbConn,
    now: i64,
    actor: &str,
    input: CreateProject,
) -> Result<ProjectView, StoreError> {
    let name = check_name("name", &input.name)?;
    let prefix = KeyPrefix::parse(&input.key_prefix)
        .map_err(|e| StoreError::validation("key_prefix", e.to_string()))?;
    check_routes(&input.routes)?;
    let row = ProjectRow {
        id: ProjectId::generate(),
        name,
        key_prefix: prefix.as_str().to_owned(),
        routes: to_json(&input.routes)?,
        default_route_policy: policy_str(input.default_route_policy).to_owned(),
        created_at: now,
        updated_at: now,
        route_matching: matching_str(input.route_matching).to_owned(),
    };
    write_tx(conn, |conn| {
        bump_version(conn)?;
        let taken: i64 = projects::table
            .filter(projects::key_prefix.eq(&row.key_prefix))
            .count()
            .get_result(conn)?;
        if taken > 0 {
            return Err(StoreError::DuplicatePrefix(row.key_prefix.clone()));
        }
        diesel::insert_into(projects::table)
            .values(&row)
            .execute(conn)
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::DuplicatePrefix(row.key_prefix.clone())
                } else {
                    e.into()
                }
            })?;
        let view = ProjectView::from_row(row.clone())?;
        audit::record(
            conn,
            now,
            actor,
            "project.create",
            &view.id,
            serde_json::json!({ "before": null, "after": view }),
        )?;
        Ok(view)
    })
}

/// Lists every project, newest first.
pub fn list(conn: &mut DbConn) -> Result<ProjectList, StoreError> {
    let rows: Vec<ProjectRow> = projects::table.order(projects::id.desc()).load(conn)?;
    let items = rows
        .into_iter()
        .map(ProjectView::from_row)
        .collect::<Result<_, _>>()?;
    Ok(ProjectList { items })
}

/// One project.
pub fn get(conn: &mut DbConn, id: &ProjectId) -> Result<ProjectView, StoreError> {
    ProjectView::from_row(find_row(conn, id)?)
}

/// Applies a partial update.
pub fn update(
    conn: &mut DbConn,
    now: i64,
    actor: &str,
    id: &ProjectId,
    input: UpdateProject,
) -> Result<ProjectView, StoreError> {
    if input.key_prefix.is_some() {
        return Err(StoreError::validation(
            "key_prefix",
            "cannot be changed after the project is created",
        ));
    }
    let name = input
        .name
        .as_deref()
        .map(|n| check_name("name", n))
        .transpose()?;
    if let Some(r) = &input.routes {
        check_routes(r)?;
    }
    write_tx(conn, |conn| {
        bump_version(conn)?;
        let before = ProjectView::from_row(find_row(conn, id)?)?;
        let mut after = before.clone();
        if let Some(n) = name {
            after.name = n;
        }
        if let Some(r) = input.routes {
            after.routes = r;
        }
        if let Some(p) = input.default_route_policy {
            after.default_route_policy = p;
        }
        if let Some(m) = input.route_matching {
            after.route_matching = m;
        }
        after.updated_at = now;
        diesel::update(projects::table.find(id))
            .set((
                projects::name.eq(&after.name),
                projects::routes.eq(to_json(&after.routes)?),
                projects::default_route_policy.eq(policy_str(after.default_route_policy)),
                projects::route_matching.eq(matching_str(after.route_matching)),
                projects::updated_at.eq(now),
            ))
            .execute(conn)?;
        audit::record(
            conn,
            now,
            actor,
            "project.update",
            id,
            serde_json::json!({ "before": before, "after": after }),
        )?;
        Ok(after)
    })
}
