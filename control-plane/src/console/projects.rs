//! Projects: list and create; a project's routes, default policy and keys.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use keygate_shared::KeyStatus;
use maud::{html, Markup};
use serde_json::{json, Value};

use super::layout::{self, FieldErrors};
use super::session::{self, ConsoleError, Session};
use super::{field, field_error, html_response, redirect, submit, usage, Form, Posted};
use crate::auth::Writers;
use crate::domain::keys::{self as key_domain, KeyListQuery, KeyView};
use crate::domain::projects::{self as domain, CreateProject, ProjectView, UpdateProject};
use crate::ids::{KeyId, ProjectId};
use crate::state::db;
use crate::state::AppState;

fn project_field(f: &str) -> String {
    let top = f.split(['.', '[']).next().unwrap_or(f);
    match top {
        "name" | "key_prefix" | "routes" | "default_route_policy" => top.to_owned(),
        _ => "form".to_owned(),
    }
}

/// Routes as editable text: `METHODS PATH SCOPE` per line.
fn routes_text(p: &ProjectView) -> String {
    let routes = serde_json::to_value(&p.routes).unwrap_or(Value::Null);
    routes
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|r| {
                    let methods = r["methods"]
                        .as_array()
                        .map(|m| {
                            m.iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_default();
                    format!(
                        "{} {} {}",
                        methods,
                        r["path"].as_str().unwrap_or(""),
                        r["scope"].as_str().unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// Parses the routes text; a line that is not `METHODS PATH SCOPE` is a field error.
fn parse_routes(text: &str, errors: &mut FieldErrors) -> Value {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts.is_empty() {
            continue;
        }
        if parts.len() != 3 {
            errors.push(
                "routes",
                format!(
                    "line {}: expected `METHODS PATH SCOPE`, e.g. `GET,HEAD /orders/* orders:read`",
                    i + 1
                ),
            );
            continue;
        }
        let methods: Vec<String> = parts[0]
            .split(',')
            .filter(|m| !m.is_empty())
            .map(str::to_ascii_uppercase)
            .collect();
        out.push(json!({"methods": methods, "path": parts[1], "scope": parts[2]}));
    }
    Value::Array(out)
}

fn policy_select(current: &str, errors: &FieldErrors) -> Markup {
    layout::select(
        "default_route_policy",
        "Default route policy (paths that no route matches)",
        &[("allow", "allow"), ("deny", "deny (insufficient_scope)")],
        current,
        errors,
    )
}

fn list_page(s: &Session, projects: &[ProjectView], form: &Form, errors: &FieldErrors) -> String {
    layout::page(
        "Projects",
        Some(s),
        html! {
            @if projects.is_empty() { p { "No projects yet." } }
            @else {
                div.table-wrap { table {
                    caption { "All projects" }
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Key prefix" } th scope="col" { "Routes" } th scope="col" { "Created" } } }
                    tbody {
                        @for p in projects {
                            tr {
                                td { a href=(format!("/console/projects/{}", p.id)) { (p.name) } }
                                td { code { (p.key_prefix) } }
                                td { (p.routes.len()) }
                                td { (layout::ts(p.created_at)) }
                            }
                        }
                    }
                } }
            }
            @if s.can_write() {
                section.card aria-labelledby="new-project" {
                    h2 #new-project { "New project" }
                    @if let Some(e) = errors.get("form") { p.error role="alert" { (e) } }
                    form method="post" action="/console/projects" #project-form {
                        (layout::csrf(s))
                        (layout::text_input("name", "Name", field(form, "name"), None, errors, true))
                        (layout::text_input("key_prefix", "Key prefix", field(form, "key_prefix"), Some("2 to 12 of a-z and 0-9, starting with a letter; fixed forever"), errors, true))
                        (layout::textarea("routes", "Routes", field(form, "routes"), Some("One per line: METHODS PATH SCOPE, e.g. GET,HEAD /orders/* orders:read (* for any method)"), errors))
                        (policy_select(form.get("default_route_policy").map_or("allow", String::as_str), errors))
                        button type="submit" { "Create project" }
                    }
                }
            }
        },
    )
}

/// GET /console/projects
pub async fn list(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ConsoleError> {
    let s = session::current(&req, &state).await?;
    let projects = db(&state, |c, _| domain::list(c)).await?.items;
    let empty = Form::new();
    Ok(html_response(
        StatusCode::OK,
        list_page(&s, &projects, &empty, &FieldErrors::default()),
    ))
}

/// POST /console/projects
pub async fn create(
    state: web::Data<AppState>,
    Posted { session, form, .. }: Posted<Writers>,
) -> Result<HttpResponse, ConsoleError> {
    let mut errors = FieldErrors::default();
    let routes = parse_routes(field(&form, "routes"), &mut errors);
    if errors.is_empty() {
        let body = json!({
            "name": field(&form, "name"),
            "key_prefix": field(&form, "key_prefix"),
            "routes": routes,
            "default_route_policy": field(&form, "default_route_policy"),
        });
        let actor = session.admin_id.clone();
        let result = submit(&state, &body, move |c, now, input: CreateProject| {
            domain::create(c, now, &actor, input)
        })
        .await;
        match result {
            Ok(p) => return Ok(redirect(&format!("/console/projects/{}?created=1", p.id))),
            Err(e) => errors = field_error(e, project_field)?,
        }
    }
    let projects = db(&state, |c, _| domain::list(c)).await?.items;
    Ok(html_response(
        StatusCode::UNPROCESSABLE_ENTITY,
        list_page(&session, &projects, &form, &errors),
    ))
}

fn status_badge(st: KeyStatus) -> Markup {
    let name = serde_json::to_value(st)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    html! { span class=(format!("badge {name}")) { (name) } }
}

#[derive(Debug, serde::Deserialize)]
struct KeyFilters {
    status: Option<String>,
    environment: Option<String>,
    q: Option<String>,
    cursor: Option<String>,
    created: Option<String>,
    saved: Option<String>,
    granularity: Option<String>,
}

impl KeyFilters {
    /// The key filters that are set, then `more` that are set, as query pairs for a link.
    fn pairs<'a, const N: usize>(
        &'a self,
        more: [(&'a str, Option<&'a str>); N],
    ) -> Vec<(&'a str, &'a str)> {
        [
            ("status", self.status.as_deref()),
            ("environment", self.environment.as_deref()),
            ("q", self.q.as_deref()),
        ]
        .into_iter()
        .chain(more)
        .filter_map(|(k, v)| v.filter(|v| !v.is_empty()).map(|v| (k, v)))
        .collect()
    }
}

/// The project's usage chart at the page's granularity; its links keep the key filters.
async fn usage_chart(
    state: &web::Data<AppState>,
    p: &ProjectView,
    f: &KeyFilters,
) -> Result<Markup, ConsoleError> {
    let g = usage::granularity(f.granularity.as_deref());
    let page = format!("/console/projects/{}", p.id);
    let kept = f.pairs([("cursor", f.cursor.as_deref())]);
    usage::chart(
        state,
        usage::Whose::Project(p.id.clone()),
        g,
        "project-usage-chart",
        |choice| {
            let mut pairs = kept.clone();
            pairs.push(("granularity", choice.as_str()));
            let query = serde_urlencoded::to_string(&pairs).unwrap_or_default();
            format!("{page}?{query}#project-usage-h")
        },
    )
    .await
}

#[allow(clippy::too_many_arguments)]
fn project_page(
    s: &Session,
    p: &ProjectView,
    keys: &KeyList,
    filters: &KeyFilters,
    form: Option<&Form>,
    errors: &FieldErrors,
    note: Option<&str>,
    chart: Markup,
) -> String {
    let status = filters.status.as_deref().unwrap_or("");
    let env = filters.environment.as_deref().unwrap_or("");
    let q = filters.q.as_deref().unwrap_or("");
    let routes = form.map_or_else(|| routes_text(p), |f| field(f, "routes").to_owned());
    let name = form.map_or(p.name.as_str(), |f| field(f, "name"));
    let policy_now = serde_json::to_value(p.default_route_policy)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "allow".to_owned());
    let policy = form
        .and_then(|f| f.get("default_route_policy").cloned())
        .unwrap_or(policy_now.clone());
    layout::page(
        &format!("Project {}", p.name),
        Some(s),
        html! {
            @if let Some(n) = note { (layout::notice("ok", n)) }
            dl.facts {
                dt { "Id" } dd { code { (p.id) } }
                dt { "Key prefix" } dd { code { (p.key_prefix) } }
                dt { "Default route policy" } dd { (policy_now) }
                dt { "Created" } dd { (layout::ts(p.created_at)) }
                dt { "Alerts" } dd {
                    a href=(format!("/console/alerts?project_id={}&status=all", p.id)) #project-alerts { "Alerts" }
                    " · "
                    a href=(format!("/console/projects/{}/alert-rules", p.id)) #alert-rules { "Alert rules" }
                }
            }
            section aria-labelledby="project-usage-h" {
                h2 #project-usage-h { "Usage (all keys)" }
                (chart)
            }
            section aria-labelledby="keys-h" {
                h2 #keys-h { "Keys" }
                @if s.can_write() {
                    p { a.button href=(format!("/console/projects/{}/keys/new", p.id)) #new-key { "New key" } }
                }
                form.filters method="get" action=(format!("/console/projects/{}", p.id)) role="search" {
                    div.field { label for="status" { "Status" }
                        select #status name="status" {
                            @for (v, t) in [("", "any"), ("active", "active"), ("expired", "expired"), ("revoked", "revoked")] {
                                option value=(v) selected[v == status] { (t) }
                            }
                        }
                    }
                    div.field { label for="environment" { "Environment" }
                        select #environment name="environment" {
                            @for (v, t) in [("", "any"), ("live", "live"), ("test", "test")] {
                                option value=(v) selected[v == env] { (t) }
                            }
                        }
                    }
                    div.field {
                        label for="q" { "Name or start" }
                        input type="search" #q name="q" value=(q) aria-describedby="q-hint";
                        small #q-hint { "The beginning of a name (any case), a key's start, or a key id" }
                    }
                    button type="submit" { "Filter" }
                }
                @if let Some(e) = &keys.error { p.error role="alert" #keys-error { (e) } }
                @if keys.keys.is_empty() {
                    p #no-keys {
                        @if filters.cursor.as_deref().is_some_and(|c| !c.is_empty()) { "No older keys match." }
                        @else { "No keys match." }
                    }
                }
                @else {
                    div.table-wrap { table #keys {
                        caption {
                            (keys.keys.len()) " keys"
                            @if keys.next_cursor.is_some() { ", newest first; more below" }
                        }
                        thead { tr { th scope="col" { "Name" } th scope="col" { "Start" } th scope="col" { "Kind" } th scope="col" { "Env" } th scope="col" { "Status" } th scope="col" { "Created" } th scope="col" { "Last used" } } }
                        tbody {
                            @for k in &keys.keys {
                                tr {
                                    td { a href=(format!("/console/keys/{}", k.id)) { (k.name) } }
                                    td { code { (k.start) "…" } }
                                    td { (serde_json::to_value(k.kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()) }
                                    td { (k.environment.as_str()) }
                                    td { (status_badge(k.status)) }
                                    td { (layout::ts(k.created_at)) }
                                    td { (layout::last_used(k.last_used_at)) }
                                }
                            }
                        }
                    } }
                }
                nav.pager aria-label="Key pages" {
                    @if filters.cursor.as_deref().is_some_and(|c| !c.is_empty()) {
                        a href=(page_link(p, filters, None)) #newest-keys { "Newest keys" }
                    }
                    @if let Some(next) = &keys.next_cursor {
                        " "
                        a href=(page_link(p, filters, Some(next))) #older-keys rel="next" { "Older keys" }
                    }
                }
            }
            section.card aria-labelledby="routes-h" {
                h2 #routes-h { "Routes and default policy" }
                @if s.can_write() {
                    @if let Some(e) = errors.get("form") { p.error role="alert" { (e) } }
                    form method="post" action=(format!("/console/projects/{}", p.id)) #project-edit {
                        (layout::csrf(s))
                        (layout::text_input("name", "Name", name, None, errors, true))
                        (layout::textarea("routes", "Routes", &routes, Some("One per line: METHODS PATH SCOPE, e.g. GET,HEAD /orders/* orders:read (* for any method)"), errors))
                        (policy_select(&policy, errors))
                        button type="submit" { "Save project" }
                    }
                } @else {
                    pre #routes-view { (routes) }
                }
            }
        },
    )
}

fn parse_filters(req: &HttpRequest) -> KeyFilters {
    serde_urlencoded::from_str(req.query_string()).unwrap_or(KeyFilters {
        status: None,
        environment: None,
        q: None,
        cursor: None,
        created: None,
        saved: None,
        granularity: None,
    })
}

async fn load_project(state: &web::Data<AppState>, id: &str) -> Result<ProjectView, ConsoleError> {
    let id = id.to_owned();
    db(state, move |c, _| domain::get(c, &ProjectId::new(id)))
        .await
        .map_err(|e| match e {
            crate::error::ApiError::NotFound(m) => ConsoleError::NotFound(m),
            other => other.into(),
        })
}

/// Keys shown on a project page.
const KEYS_PER_PAGE: i64 = 50;

/// One page of a project's keys, as the filters ask.
struct KeyList {
    keys: Vec<KeyView>,
    /// Cursor of the next (older) page.
    next_cursor: Option<String>,
    /// Why the filters were refused (too long a search, a bad cursor), shown instead of keys.
    error: Option<String>,
}

/// Reads one page of keys through the store's search: `q` is a key id (exact), a key start
/// (it begins with the project's key prefix and `_`), or else the beginning of a name.
async fn key_list(
    state: &web::Data<AppState>,
    p: &ProjectView,
    f: &KeyFilters,
) -> Result<KeyList, ConsoleError> {
    let status = f
        .status
        .as_deref()
        .filter(|s| !s.is_empty())
        .and_then(|s| serde_json::from_value(json!(s)).ok());
    let env = f
        .environment
        .as_deref()
        .filter(|s| !s.is_empty())
        .and_then(|s| serde_json::from_value(json!(s)).ok());
    let q = f.q.as_deref().unwrap_or("").trim();
    if let Some(key) = key_by_id(state, p, q, status, env).await? {
        return Ok(KeyList {
            keys: key.into_iter().collect(),
            next_cursor: None,
            error: None,
        });
    }
    let (name_prefix, start) = if q.is_empty() {
        (None, None)
    } else if q.starts_with(&format!("{}_", p.key_prefix)) {
        (None, Some(q.to_owned()))
    } else {
        (Some(q.to_owned()), None)
    };
    let query = KeyListQuery {
        status,
        environment: env,
        limit: Some(KEYS_PER_PAGE),
        cursor: f.cursor.clone().filter(|c| !c.is_empty()),
        name_prefix,
        start,
    };
    let pid = p.id.clone();
    match db(state, move |c, now| key_domain::list(c, now, &pid, query)).await {
        Ok(page) => Ok(KeyList {
            keys: page.items,
            next_cursor: page.next_cursor,
            error: None,
        }),
        Err(crate::error::ApiError::Validation { field, message }) => Ok(KeyList {
            keys: Vec::new(),
            next_cursor: None,
            error: Some(format!("{field}: {message}")),
        }),
        Err(e) => Err(e.into()),
    }
}

/// The key `q` names when it is a key id of this project matching the filters: `Some(None)`
/// when it is an id but not such a key, `None` when `q` is not an id.
async fn key_by_id(
    state: &web::Data<AppState>,
    p: &ProjectView,
    q: &str,
    status: Option<KeyStatus>,
    env: Option<keygate_shared::Environment>,
) -> Result<Option<Option<KeyView>>, ConsoleError> {
    let is_id = q.len() == "key_".len() + 26
        && q.starts_with("key_")
        && q["key_".len()..].bytes().all(|b| b.is_ascii_alphanumeric());
    if !is_id {
        return Ok(None);
    }
    let id = KeyId::new(q.to_owned());
    let key = match db(state, move |c, now| key_domain::get(c, now, &id)).await {
        Ok(k) => Some(k),
        Err(crate::error::ApiError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    Ok(Some(key.filter(|k| {
        k.project_id == p.id
            && status.is_none_or(|s| k.status == s)
            && env.is_none_or(|e| k.environment == e)
    })))
}

/// The project page's query with `cursor` set: the filters and granularity are kept.
fn page_link(p: &ProjectView, f: &KeyFilters, cursor: Option<&str>) -> String {
    let pairs = f.pairs([
        ("granularity", f.granularity.as_deref()),
        ("cursor", cursor),
    ]);
    let query = serde_urlencoded::to_string(&pairs).unwrap_or_default();
    if query.is_empty() {
        format!("/console/projects/{}#keys-h", p.id)
    } else {
        format!("/console/projects/{}?{query}#keys-h", p.id)
    }
}

/// GET /console/projects/{id}
pub async fn show(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ConsoleError> {
    let s = session::current(&req, &state).await?;
    let p = load_project(&state, &path).await?;
    let filters = parse_filters(&req);
    let keys = key_list(&state, &p, &filters).await?;
    let chart = usage_chart(&state, &p, &filters).await?;
    let note = if filters.created.is_some() {
        Some("Project created.")
    } else if filters.saved.is_some() {
        Some("Project saved.")
    } else {
        None
    };
    Ok(html_response(
        StatusCode::OK,
        project_page(
            &s,
            &p,
            &keys,
            &filters,
            None,
            &FieldErrors::default(),
            note,
            chart,
        ),
    ))
}

/// POST /console/projects/{id}
pub async fn update(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    Posted { session, form, .. }: Posted<Writers>,
) -> Result<HttpResponse, ConsoleError> {
    let p = load_project(&state, &path).await?;
    let mut errors = FieldErrors::default();
    let routes = parse_routes(field(&form, "routes"), &mut errors);
    if errors.is_empty() {
        let body = json!({
            "name": field(&form, "name"),
            "routes": routes,
            "default_route_policy": field(&form, "default_route_policy"),
        });
        let actor = session.admin_id.clone();
        let id = p.id.clone();
        let result = submit(&state, &body, move |c, now, input: UpdateProject| {
            domain::update(c, now, &actor, &id, input)
        })
        .await;
        match result {
            Ok(p) => return Ok(redirect(&format!("/console/projects/{}?saved=1", p.id))),
            Err(e) => errors = field_error(e, project_field)?,
        }
    }
    let filters = parse_filters(&req);
    let keys = key_list(&state, &p, &filters).await?;
    let chart = usage_chart(&state, &p, &filters).await?;
    Ok(html_response(
        StatusCode::UNPROCESSABLE_ENTITY,
        project_page(
            &session,
            &p,
            &keys,
            &filters,
            Some(&form),
            &errors,
            None,
            chart,
        ),
    ))
}
