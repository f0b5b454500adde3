//! One key's page: its settings, usage chart and sightings, and the forms that update,
//! rotate and revoke it.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup};
use serde_json::{json, Value};

use super::{form_of, key_field, plaintext_page, spec_fields, spec_json};
use crate::auth::Writers;
use crate::console::layout::{self, FieldErrors};
use crate::console::session::{self, ConsoleError, Session};
use crate::console::{field, field_error, html_response, redirect, submit, usage, Form, Posted};
use crate::db::DbConn;
use crate::domain::keys::{self as domain, KeyView, RotateKey};
use crate::domain::usage::{self as domain_usage, Granularity, SightingKind, SightingsQuery};
use crate::error::ApiError;
use crate::ids::KeyId;
use crate::state::db;
use crate::state::AppState;
use keygate_store::StoreError;

async fn load_key(state: &web::Data<AppState>, id: &str) -> Result<KeyView, ConsoleError> {
    let id = id.to_owned();
    db(state, move |c, now| domain::get(c, now, &KeyId::new(id)))
        .await
        .map_err(|e| match e {
            ApiError::NotFound(m) => ConsoleError::NotFound(m),
            other => other.into(),
        })
}

/// The key's usage chart at `g`, with links to the key page at the other granularities, and
/// its sightings.
async fn usage_chart(
    state: &web::Data<AppState>,
    key_id: &str,
    g: Granularity,
) -> Result<Markup, ConsoleError> {
    let page = format!("/console/keys/{key_id}");
    let chart = usage::chart(
        state,
        usage::Whose::Key(KeyId::new(key_id)),
        g,
        "usage-chart",
        |choice| format!("{page}?granularity={}#usage-h", choice.as_str()),
    )
    .await?;
    let sightings = sightings(state, key_id).await?;
    Ok(html! { (chart) (sightings) })
}

/// Rows of each kind of sighting shown on the key page.
const SIGHTINGS_SHOWN: i64 = 20;

/// The newest referrer origins and client IPs the edges reported for the key (`GET
/// /v1/keys/{id}/sightings`), each with when it was first and last seen and how often.
async fn sightings(state: &web::Data<AppState>, key_id: &str) -> Result<Markup, ConsoleError> {
    let id = KeyId::new(key_id);
    let lists = db(state, move |c, _| -> Result<_, keygate_store::StoreError> {
        let mut out = Vec::new();
        for kind in [SightingKind::Referrer, SightingKind::Ip] {
            let q = SightingsQuery {
                kind: Some(kind),
                limit: Some(SIGHTINGS_SHOWN),
            };
            out.push((kind, domain_usage::sightings(c, &id, q)?.items));
        }
        Ok(out)
    })
    .await?;
    Ok(html! {
        h3 #sightings-h { "Where it was seen" }
        p { "As reported by the edges, newest first (the " (SIGHTINGS_SHOWN) " newest of each kind). Origins are what the request's " code { "Origin" } " or " code { "Referer" } " header claimed: anyone outside a browser can forge them." }
        @for (kind, items) in &lists {
            @let (id, title, empty) = match kind {
                SightingKind::Referrer => ("sightings-referrer", "Origins", "No origin seen."),
                SightingKind::Ip => ("sightings-ip", "Client IPs", "No client IP seen."),
            };
            @if items.is_empty() { p id=(id) { (empty) } }
            @else {
                div.table-wrap { table id=(id) {
                    caption { (title) }
                    thead { tr {
                        th scope="col" { "Value" } th scope="col" { "First seen" }
                        th scope="col" { "Last seen" } th scope="col" { "Requests" }
                    } }
                    tbody {
                        @for i in items {
                            tr {
                                td { code { (i.value) } }
                                td { (layout::ts(i.first_seen_at)) }
                                td { (layout::ts(i.last_seen_at)) }
                                td { (i.count) }
                            }
                        }
                    }
                } }
            }
        }
    })
}

#[derive(Debug, serde::Deserialize)]
struct KeyNote {
    saved: Option<String>,
    revoked: Option<String>,
    granularity: Option<String>,
}

fn key_page(
    s: &Session,
    k: &KeyView,
    form: &Form,
    errors: &FieldErrors,
    chart: Markup,
    note: Option<&str>,
) -> String {
    let kind = serde_json::to_value(k.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let status = serde_json::to_value(k.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let active = status == "active";
    layout::page(
        &format!("Key {}", k.name),
        Some(s),
        html! {
            p { a href=(format!("/console/projects/{}", k.project_id)) { "← Back to the project" } }
            p { a href=(format!("/console/alerts?key_id={}&status=all", k.id)) #key-alerts { "Alerts for this key" } }
            @if let Some(n) = note { (layout::notice("ok", n)) }
            @if let Some(e) = errors.get("form") { p.error role="alert" { (e) } }
            dl.facts #key-facts {
                dt { "Id" } dd { code { (k.id) } }
                dt { "Start" } dd { code { (k.start) "…" } }
                dt { "Kind" } dd { (kind) }
                dt { "Environment" } dd { (k.environment.as_str()) }
                dt { "Status" } dd #key-status { span class=(format!("badge {status}")) { (status) } }
                dt { "Created" } dd { (layout::ts(k.created_at)) }
                dt { "Last used" } dd #last-used { (layout::last_used(k.last_used_at)) }
                @if let Some(t) = k.expires_at { dt { "Expires" } dd { (layout::ts(t)) } }
                @if let Some(t) = k.revoked_at { dt { "Revoked" } dd { (layout::ts(t)) } }
                @if let Some(r) = &k.revoked_reason { dt { "Revocation reason" } dd #revoked-reason { (r) } }
                @if let Some(r) = &k.rotated_to { dt { "Rotated to" } dd { a href=(format!("/console/keys/{r}")) { (r) } } }
                @if let Some(r) = &k.rotated_from { dt { "Rotated from" } dd { a href=(format!("/console/keys/{r}")) { (r) } } }
                dt { "Referrers" } dd #referrers-view { (field(form, "referrers").replace('\n', ", ")) }
                dt { "IPs" } dd { (field(form, "ips").replace('\n', ", ")) }
                dt { "Scopes" } dd { (field(form, "scopes").replace('\n', ", ")) }
            }
            section aria-labelledby="usage-h" {
                h2 #usage-h { "Usage" }
                (chart)
            }
            @if s.can_write() && status != "revoked" {
                section.card aria-labelledby="edit-h" {
                    h2 #edit-h { "Restrictions and settings" }
                    form method="post" action=(format!("/console/keys/{}", k.id)) #key-edit {
                        (layout::csrf(s))
                        (spec_fields(form, errors))
                        button type="submit" { "Save changes" }
                    }
                }
            }
            @if s.can_write() && active && k.rotated_to.is_none() {
                section.card aria-labelledby="rotate-h" {
                    h2 #rotate-h { "Rotate" }
                    p { "Issues a new key with the same settings. The old key keeps working for the grace period." }
                    form method="post" action=(format!("/console/keys/{}/rotate", k.id)) #rotate-form {
                        (layout::csrf(s))
                        (layout::select("grace_seconds", "Grace period for the old key", &[("0", "none: stop the old key now"), ("3600", "1 hour"), ("86400", "1 day"), ("604800", "7 days"), ("2592000", "30 days")], "3600", errors))
                        button type="submit" { "Rotate key" }
                    }
                }
            }
            @if s.can_write() && status != "revoked" {
                section.card.danger aria-labelledby="revoke-h" {
                    h2 #revoke-h { "Revoke" }
                    form method="post" action=(format!("/console/keys/{}/revoke", k.id)) #revoke-form {
                        (layout::csrf(s))
                        (layout::text_input("reason", "Reason", "", Some("Recorded in the audit log"), errors, true))
                        div.field.check {
                            input type="checkbox" #confirm name="confirm" value="yes" required;
                            label for="confirm" { "I understand that this key stops working at once and cannot be restored." }
                        }
                        @if let Some(e) = errors.get("confirm") { p.field-error role="alert" { (e) } }
                        button.danger type="submit" { "Revoke key" }
                    }
                }
            }
        },
    )
}

/// GET /console/keys/{id}
pub async fn show(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ConsoleError> {
    let s = session::current(&req, &state).await?;
    let k = load_key(&state, &path).await?;
    let note: KeyNote = serde_urlencoded::from_str(req.query_string()).unwrap_or(KeyNote {
        saved: None,
        revoked: None,
        granularity: None,
    });
    let g = usage::granularity(note.granularity.as_deref());
    let chart = usage_chart(&state, &k.id, g).await?;
    let note = if note.saved.is_some() {
        Some("Changes saved.")
    } else if note.revoked.is_some() {
        Some("Key revoked.")
    } else {
        None
    };
    Ok(html_response(
        StatusCode::OK,
        key_page(&s, &k, &form_of(&k), &FieldErrors::default(), chart, note),
    ))
}

/// POST /console/keys/{id}
pub async fn update(
    state: web::Data<AppState>,
    path: web::Path<String>,
    Posted { session, form, .. }: Posted<Writers>,
) -> Result<HttpResponse, ConsoleError> {
    let k = load_key(&state, &path).await?;
    let mut errors = FieldErrors::default();
    let body = spec_json(&form, false, &mut errors);
    if errors.is_empty() {
        match change_key(&state, &session, &k, &body, domain::update).await? {
            Ok(k) => return Ok(redirect(&format!("/console/keys/{}?saved=1", k.id))),
            Err(e) => errors = e,
        }
    }
    let status = StatusCode::UNPROCESSABLE_ENTITY;
    key_page_again(&state, &session, &k, status, &form, &errors).await
}

/// POST /console/keys/{id}/rotate
pub async fn rotate(
    state: web::Data<AppState>,
    path: web::Path<String>,
    Posted { session, form, .. }: Posted<Writers>,
) -> Result<HttpResponse, ConsoleError> {
    let k = load_key(&state, &path).await?;
    let body = json!({"grace_seconds": field(&form, "grace_seconds").parse::<u64>().unwrap_or(0)});
    let actor = session.admin_id.clone();
    let id = k.id.clone();
    let result = submit(&state, &body, move |c, now, input: RotateKey| {
        domain::rotate(c, now, &actor, &id, input)
    })
    .await;
    match result {
        Ok(r) => {
            let extra = html! {
                p #previous-note {
                    "The previous key " code { (r.previous.id) } " "
                    @match r.previous.expires_at {
                        Some(t) => { "keeps working until " (layout::ts(t)) "." }
                        None => { "keeps working." }
                    }
                }
            };
            Ok(html_response(
                StatusCode::CREATED,
                plaintext_page(&session, "Key rotated", &r.key, &r.view, Some(extra)),
            ))
        }
        Err(e) => {
            let errors = field_error(e, key_field)?;
            key_page_again(
                &state,
                &session,
                &k,
                StatusCode::CONFLICT,
                &form_of(&k),
                &errors,
            )
            .await
        }
    }
}

/// POST /console/keys/{id}/revoke
pub async fn revoke(
    state: web::Data<AppState>,
    path: web::Path<String>,
    Posted { session, form, .. }: Posted<Writers>,
) -> Result<HttpResponse, ConsoleError> {
    let k = load_key(&state, &path).await?;
    let mut errors = FieldErrors::default();
    if field(&form, "confirm") != "yes" {
        errors.push("confirm", "Tick the confirmation to revoke the key.");
    } else {
        let reason = field(&form, "reason");
        let body = json!({"reason": if reason.is_empty() { Value::Null } else { json!(reason) }});
        match change_key(&state, &session, &k, &body, domain::revoke).await? {
            Ok(k) => return Ok(redirect(&format!("/console/keys/{}?revoked=1", k.id))),
            Err(e) => errors = e,
        }
    }
    let status = StatusCode::UNPROCESSABLE_ENTITY;
    key_page_again(&state, &session, &k, status, &form_of(&k), &errors).await
}

/// Saves a change to key `k` through `change` (the domain's `update` or `revoke`) as the
/// session's admin: the key as it is now, or the errors to show beside the form's fields.
async fn change_key<I>(
    state: &web::Data<AppState>,
    session: &Session,
    k: &KeyView,
    body: &Value,
    change: fn(&mut DbConn, i64, &str, &KeyId, I) -> Result<KeyView, StoreError>,
) -> Result<Result<KeyView, FieldErrors>, ConsoleError>
where
    I: serde::de::DeserializeOwned + Send + 'static,
{
    let actor = session.admin_id.clone();
    let id = k.id.clone();
    let result = submit(state, body, move |c, now, input: I| {
        change(c, now, &actor, &id, input)
    })
    .await;
    match result {
        Ok(k) => Ok(Ok(k)),
        Err(e) => Ok(Err(field_error(e, key_field)?)),
    }
}

/// The key page again after a failed form, with its errors and `values` in the edit form.
async fn key_page_again(
    state: &web::Data<AppState>,
    session: &Session,
    k: &KeyView,
    status: StatusCode,
    values: &Form,
    errors: &FieldErrors,
) -> Result<HttpResponse, ConsoleError> {
    let chart = usage_chart(state, &k.id, Granularity::Hour).await?;
    Ok(html_response(
        status,
        key_page(session, k, values, errors, chart, None),
    ))
}
