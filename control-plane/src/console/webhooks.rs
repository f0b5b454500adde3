//! Webhooks: the endpoints (create, with the secret shown once; edit; enable, disable, delete;
//! secret rotation, the new secret shown once) and
//! each endpoint's delivery log with manual retries.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup};
use serde_json::{json, Value};

use super::layout::{self, FieldErrors};
use super::session::{self, ConsoleError, Session};
use super::{field, field_error, html_response, post_session, redirect, submit, Form};
use crate::domain::events::EVENT_TYPES;
use crate::domain::webhooks::{
    self as domain, CreateWebhook, DeliveryQuery, DeliveryView, RotateSecret, RotatedSecret,
    UpdateWebhook, WebhookView, DEFAULT_EXPIRING_DAYS,
};
use crate::error::ApiError;
use crate::state::db;
use crate::state::AppState;

/// A form whose fields may repeat (the event checkboxes).
pub type MultiForm = web::Form<Vec<(String, String)>>;

fn webhook_field(f: &str) -> String {
    let top = f.split(['.', '[']).next().unwrap_or(f);
    match top {
        "url" | "events" | "description" | "expiring_days" => top.to_owned(),
        _ => "form".to_owned(),
    }
}

/// The last value of each field, for the CSRF check and the single-valued fields.
fn single(form: &[(String, String)]) -> HashMap<String, String> {
    form.iter().cloned().collect()
}

fn checked_events(form: &[(String, String)]) -> Vec<String> {
    form.iter()
        .filter(|(k, _)| k == "events")
        .map(|(_, v)| v.clone())
        .collect()
}

/// The endpoint fields shared by the create and edit forms.
fn endpoint_fields(
    values: &HashMap<String, String>,
    chosen: &[String],
    days: &str,
    enabled: bool,
    errors: &FieldErrors,
) -> Markup {
    let events_error = errors.get("events");
    html! {
        (layout::text_input("url", "URL", field(values, "url"), Some("http or https; Keygate POSTs each event here"), errors, true))
        (layout::text_input("description", "Description", field(values, "description"), None, errors, false))
        fieldset.invalid[events_error.is_some()] aria-describedby=[events_error.map(|_| "events-error")] {
            legend { "Events" }
            @for t in EVENT_TYPES {
                div.field.check {
                    input type="checkbox" id=(format!("event-{t}")) name="events" value=(t)
                        checked[chosen.iter().any(|c| c == t)];
                    label for=(format!("event-{t}")) { code { (t) } }
                }
            }
            @if let Some(e) = events_error { p.field-error #events-error role="alert" { (e) } }
        }
        (layout::field("expiring_days", "Days of warning for key.expiring", Some("1 to 90"), errors, html! {
            input type="number" #expiring_days name="expiring_days" min="1" max="90" value=(days)
                aria-describedby="expiring_days-hint";
        }))
        div.field.check {
            input type="checkbox" #enabled name="enabled" value="yes" checked[enabled];
            label for="enabled" { "Enabled" }
        }
    }
}

fn new_form(s: &Session, form: &[(String, String)], errors: &FieldErrors) -> Markup {
    let values = single(form);
    // A fresh form subscribes to everything about keys.
    let fresh = form.is_empty();
    let chosen: Vec<String> = if fresh {
        EVENT_TYPES
            .iter()
            .filter(|t| t.starts_with("key."))
            .map(|t| (*t).to_owned())
            .collect()
    } else {
        checked_events(form)
    };
    let days = values
        .get("expiring_days")
        .cloned()
        .unwrap_or_else(|| DEFAULT_EXPIRING_DAYS.to_string());
    html! {
        section.card aria-labelledby="new-webhook" {
            h2 #new-webhook { "New endpoint" }
            @if let Some(e) = errors.get("form") { p.error role="alert" { (e) } }
            form method="post" action="/console/webhooks" #webhook-form {
                (layout::csrf(s))
                (endpoint_fields(&values, &chosen, &days, fresh || values.contains_key("enabled"), errors))
                button type="submit" { "Create endpoint" }
            }
        }
    }
}

/// The edit form's values for an endpoint.
fn edit_values(w: &WebhookView) -> Vec<(String, String)> {
    let mut v = vec![
        ("url".to_owned(), w.url.clone()),
        ("description".to_owned(), w.description.clone()),
        ("expiring_days".to_owned(), w.expiring_days.to_string()),
    ];
    v.extend(w.events.iter().map(|e| ("events".to_owned(), e.clone())));
    if w.enabled {
        v.push(("enabled".to_owned(), "yes".to_owned()));
    }
    v
}

fn edit_form(
    s: &Session,
    w: &WebhookView,
    form: &[(String, String)],
    errors: &FieldErrors,
) -> Markup {
    let values = single(form);
    html! {
        section.card aria-labelledby="edit-h" {
            h2 #edit-h { "Edit endpoint" }
            form method="post" action=(format!("/console/webhooks/{}", w.id)) #webhook-edit {
                (layout::csrf(s))
                (endpoint_fields(&values, &checked_events(form), field(&values, "expiring_days"), values.contains_key("enabled"), errors))
                button type="submit" { "Save changes" }
            }
        }
    }
}

fn rotate_form(s: &Session, w: &WebhookView, errors: &FieldErrors) -> Markup {
    html! {
        section.card aria-labelledby="rotate-h" {
            h2 #rotate-h { "Rotate the signing secret" }
            p { "Makes a new signing secret, shown once. During the grace period each delivery carries a signature with the old secret too, so receivers can switch over." }
            form method="post" action=(format!("/console/webhooks/{}/rotate-secret", w.id)) #rotate-secret-form {
                (layout::csrf(s))
                (layout::select("grace_seconds", "Old secret keeps signing for", &[("0", "no time: stop it now"), ("3600", "1 hour"), ("86400", "1 day"), ("604800", "7 days")], "86400", errors))
                button type="submit" { "Rotate secret" }
            }
        }
    }
}

fn list_page(
    s: &Session,
    hooks: &[WebhookView],
    form: &[(String, String)],
    errors: &FieldErrors,
    created: Option<(&WebhookView, &str)>,
) -> String {
    layout::page(
        "Webhooks",
        Some(s),
        html! {
            @if let Some((w, secret)) = created {
                div.warning role="alert" {
                    strong { "Copy the signing secret now. " }
                    "It is shown only once. Use it to check the Keygate-Webhook-Signature header of each delivery."
                }
                div.secret {
                    label for="plaintext" { "Signing secret of " (w.url) }
                    input #plaintext type="text" readonly value=(secret);
                    button type="button" #copy data-copy="plaintext" { "Copy" }
                }
                p { a href=(format!("/console/webhooks/{}", w.id)) { "I have stored it: go to the endpoint" } }
            }
            @if hooks.is_empty() { p { "No webhook endpoints yet." } }
            @else {
                div.table-wrap { table #webhooks {
                    caption { "Endpoints" }
                    thead { tr { th scope="col" { "URL" } th scope="col" { "Events" } th scope="col" { "State" } th scope="col" { "Created" } } }
                    tbody {
                        @for w in hooks {
                            tr {
                                td { a href=(format!("/console/webhooks/{}", w.id)) { (w.url) } @if !w.description.is_empty() { br; small { (w.description) } } }
                                td { (w.events.join(", ")) }
                                td { (enabled_badge(w.enabled)) }
                                td { (layout::ts(w.created_at)) }
                            }
                        }
                    }
                } }
            }
            @if s.can_write() { (new_form(s, form, errors)) }
        },
    )
}

fn enabled_badge(enabled: bool) -> Markup {
    if enabled {
        html! { span.badge.active { "enabled" } }
    } else {
        html! { span.badge.expired { "disabled" } }
    }
}

/// GET /console/webhooks
pub async fn list(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ConsoleError> {
    let s = session::current(&req, &state).await?;
    let hooks = db(&state, |c, _| domain::list(c)).await?.items;
    Ok(html_response(
        StatusCode::OK,
        list_page(&s, &hooks, &[], &FieldErrors::default(), None),
    ))
}

/// POST /console/webhooks
pub async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: MultiForm,
) -> Result<HttpResponse, ConsoleError> {
    let values = single(&form);
    let s = post_session(&req, &state, &values).await?;
    s.require_writer()?;
    let (body, mut errors) = match endpoint_body(&form) {
        Ok(body) => (body, FieldErrors::default()),
        Err(errors) => (Value::Null, errors),
    };
    if errors.is_empty() {
        let actor = s.admin_id.clone();
        let url = field(&values, "url").to_owned();
        let result = match crate::routes::webhooks::guard_target(&state, &url).await {
            Ok(()) => {
                submit(&state, &body, move |c, now, input: CreateWebhook| {
                    domain::create(c, now, &actor, input)
                })
                .await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(created) => {
                let hooks = db(&state, |c, _| domain::list(c)).await?.items;
                return Ok(html_response(
                    StatusCode::CREATED,
                    list_page(
                        &s,
                        &hooks,
                        &[],
                        &FieldErrors::default(),
                        Some((&created.view, &created.secret)),
                    ),
                ));
            }
            Err(e) => errors = field_error(e, webhook_field)?,
        }
    }
    let hooks = db(&state, |c, _| domain::list(c)).await?.items;
    Ok(html_response(
        StatusCode::UNPROCESSABLE_ENTITY,
        list_page(&s, &hooks, &form, &errors, None),
    ))
}

fn status_badge(d: &DeliveryView) -> Markup {
    let s = d.status.as_str();
    html! { span class=(format!("badge {s}")) { (s) } }
}

/// What the endpoint page shows besides the endpoint: a note, the edit form's values and the
/// errors of the form just posted, and a new secret after a rotation (shown this once).
#[derive(Default)]
struct ShowExtras<'a> {
    note: Option<&'a str>,
    form: &'a [(String, String)],
    errors: FieldErrors,
    rotated: Option<&'a RotatedSecret>,
}

fn show_page(s: &Session, w: &WebhookView, deliveries: &[DeliveryView], x: ShowExtras) -> String {
    let errors = &x.errors;
    let note = x.note;
    // A fresh edit form holds the endpoint's values; a refused one, what was posted.
    let edit = if x.form.is_empty() {
        edit_values(w)
    } else {
        x.form.to_vec()
    };
    layout::page(
        &format!("Webhook {}", w.url),
        Some(s),
        html! {
            p { a href="/console/webhooks" { "← All webhooks" } }
            @if let Some(n) = note { (layout::notice("ok", n)) }
            @if let Some(e) = errors.get("form") { p.error role="alert" { (e) } }
            @if let Some(r) = x.rotated {
                div.warning role="alert" {
                    strong { "Copy the new signing secret now. " }
                    "It is shown only once. "
                    @if let Some(until) = r.previous_secret_expires_at {
                        "Until " (layout::ts(until)) " each delivery is signed with the old secret too, so the receiver can switch over."
                    } @else {
                        "The old secret no longer signs anything."
                    }
                }
                div.secret {
                    label for="plaintext" { "New signing secret of " (w.url) }
                    input #plaintext type="text" readonly value=(r.secret);
                    button type="button" #copy data-copy="plaintext" { "Copy" }
                }
            }
            dl.facts #webhook-facts {
                dt { "Id" } dd { code { (w.id) } }
                dt { "URL" } dd { code { (w.url) } }
                @if !w.description.is_empty() { dt { "Description" } dd { (w.description) } }
                dt { "Events" } dd { (w.events.join(", ")) }
                dt { "key.expiring warning" } dd { (w.expiring_days) " days" }
                dt { "State" } dd #webhook-state { (enabled_badge(w.enabled)) }
                dt { "Signing secret" } dd { code { (w.secret_start) "…" } }
                dt { "Created" } dd { (layout::ts(w.created_at)) }
                dt { "Updated" } dd { (layout::ts(w.updated_at)) }
            }
            @if s.can_write() {
                div.filters {
                    @if w.enabled {
                        form method="post" action=(format!("/console/webhooks/{}/disable", w.id)) {
                            (layout::csrf(s))
                            button type="submit" { "Disable" }
                        }
                    } @else {
                        form method="post" action=(format!("/console/webhooks/{}/enable", w.id)) {
                            (layout::csrf(s))
                            button type="submit" { "Enable" }
                        }
                    }
                }
                (edit_form(s, w, &edit, errors))
                (rotate_form(s, w, errors))
            }
            section aria-labelledby="deliveries-h" {
                h2 #deliveries-h { "Delivery log" }
                @if deliveries.is_empty() { p { "No deliveries yet." } }
                @else {
                    div.table-wrap { table #deliveries {
                        caption { "Newest first (" (deliveries.len()) ")" }
                        thead { tr {
                            th scope="col" { "Created" } th scope="col" { "Event" } th scope="col" { "Status" }
                            th scope="col" { "Attempts" } th scope="col" { "Last status code" } th scope="col" { "Last error" }
                            th scope="col" { "Next attempt" }
                            @if s.can_write() { th scope="col" { span.sr-only { "Actions" } } }
                        } }
                        tbody {
                            @for d in deliveries {
                                tr {
                                    td { (layout::ts(d.created_at)) }
                                    td { code { (d.event_type) } br; small { code { (d.event_id) } } }
                                    td { (status_badge(d)) }
                                    td { (d.attempts) }
                                    td { (d.last_status_code.map(|c| c.to_string()).unwrap_or_else(|| "–".to_owned())) }
                                    td { (d.last_error.as_deref().unwrap_or("")) }
                                    td { (d.next_attempt_at.map(layout::ts).unwrap_or_else(|| "–".to_owned())) }
                                    @if s.can_write() {
                                        td { form method="post" action=(format!("/console/webhooks/{}/deliveries/{}/retry", w.id, d.id)) {
                                            (layout::csrf(s))
                                            button type="submit" aria-label=(format!("Send delivery {} again now", d.id)) { "Retry now" }
                                        } }
                                    }
                                }
                            }
                        }
                    } }
                }
            }
            @if s.can_write() {
                section.card.danger aria-labelledby="delete-h" {
                    h2 #delete-h { "Delete" }
                    form method="post" action=(format!("/console/webhooks/{}/delete", w.id)) #delete-form {
                        (layout::csrf(s))
                        div.field.check {
                            input type="checkbox" #confirm name="confirm" value="yes" required;
                            label for="confirm" { "I understand that nothing more is sent to this endpoint and its pending deliveries fail." }
                        }
                        @if let Some(e) = errors.get("confirm") { p.field-error role="alert" { (e) } }
                        button.danger type="submit" { "Delete endpoint" }
                    }
                }
            }
        },
    )
}

async fn load(
    state: &web::Data<AppState>,
    id: &str,
) -> Result<(WebhookView, Vec<DeliveryView>), ConsoleError> {
    let id = id.to_owned();
    let found = db(state, move |c, _| -> Result<_, keygate_store::StoreError> {
        let w = domain::get(c, &id)?;
        let page = domain::list_deliveries(
            c,
            &id,
            DeliveryQuery {
                status: None,
                limit: Some(100),
                cursor: None,
            },
        )?;
        Ok((w, page.items))
    })
    .await;
    match found {
        Ok(v) => Ok(v),
        Err(ApiError::NotFound(m)) => Err(ConsoleError::NotFound(m)),
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Default, serde::Deserialize)]
struct Note {
    done: Option<String>,
}

/// GET /console/webhooks/{id}
pub async fn show(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ConsoleError> {
    let s = session::current(&req, &state).await?;
    let (w, deliveries) = load(&state, &path).await?;
    let note: Note = serde_urlencoded::from_str(req.query_string()).unwrap_or_default();
    let note = match note.done.as_deref() {
        Some("enabled") => Some("Endpoint enabled."),
        Some("disabled") => Some("Endpoint disabled: nothing is sent until it is enabled again."),
        Some("retry") => Some("Delivery queued: it is sent within a few seconds."),
        Some("saved") => Some("Changes saved."),
        _ => None,
    };
    Ok(html_response(
        StatusCode::OK,
        show_page(
            &s,
            &w,
            &deliveries,
            ShowExtras {
                note,
                ..Default::default()
            },
        ),
    ))
}

async fn set_enabled(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: String,
    form: Form,
    enabled: bool,
) -> Result<HttpResponse, ConsoleError> {
    let s = post_session(&req, &state, &form).await?;
    s.require_writer()?;
    let actor = s.admin_id.clone();
    let wid = id.clone();
    let result = db(&state, move |c, now| {
        domain::update(
            c,
            now,
            &actor,
            &wid,
            UpdateWebhook {
                enabled: Some(enabled),
                ..Default::default()
            },
        )
    })
    .await;
    match result {
        Ok(_) => Ok(redirect(&format!(
            "/console/webhooks/{id}?done={}",
            if enabled { "enabled" } else { "disabled" }
        ))),
        Err(ApiError::NotFound(m)) => Err(ConsoleError::NotFound(m)),
        Err(e) => Err(e.into()),
    }
}

/// POST /console/webhooks/{id}/enable
pub async fn enable(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    form: Form,
) -> Result<HttpResponse, ConsoleError> {
    set_enabled(req, state, path.into_inner(), form, true).await
}

/// POST /console/webhooks/{id}/disable
pub async fn disable(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    form: Form,
) -> Result<HttpResponse, ConsoleError> {
    set_enabled(req, state, path.into_inner(), form, false).await
}

/// POST /console/webhooks/{id}/delete
pub async fn delete(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    form: Form,
) -> Result<HttpResponse, ConsoleError> {
    let s = post_session(&req, &state, &form).await?;
    s.require_writer()?;
    let id = path.into_inner();
    if field(&form, "confirm") != "yes" {
        let (w, deliveries) = load(&state, &id).await?;
        let mut errors = FieldErrors::default();
        errors.push("confirm", "Tick the confirmation to delete the endpoint.");
        return Ok(html_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            show_page(
                &s,
                &w,
                &deliveries,
                ShowExtras {
                    errors,
                    ..Default::default()
                },
            ),
        ));
    }
    let actor = s.admin_id.clone();
    match db(&state, move |c, now| domain::delete(c, now, &actor, &id)).await {
        Ok(()) => Ok(redirect("/console/webhooks")),
        Err(ApiError::NotFound(m)) => Err(ConsoleError::NotFound(m)),
        Err(e) => Err(e.into()),
    }
}

/// POST /console/webhooks/{id}/deliveries/{delivery_id}/retry
pub async fn retry(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    form: Form,
) -> Result<HttpResponse, ConsoleError> {
    let s = post_session(&req, &state, &form).await?;
    s.require_writer()?;
    let (id, delivery_id) = path.into_inner();
    let wid = id.clone();
    let result = db(&state, move |c, now| {
        domain::retry_delivery(c, now, &wid, &delivery_id)
    })
    .await;
    match result {
        Ok(_) => Ok(redirect(&format!("/console/webhooks/{id}?done=retry"))),
        Err(ApiError::NotFound(m)) => Err(ConsoleError::NotFound(m)),
        Err(e) => {
            let mut errors = field_error(e, webhook_field)?;
            if errors.is_empty() {
                errors.push("form", "the delivery could not be queued");
            }
            let (w, deliveries) = load(&state, &id).await?;
            Ok(html_response(
                StatusCode::CONFLICT,
                show_page(
                    &s,
                    &w,
                    &deliveries,
                    ShowExtras {
                        errors,
                        ..Default::default()
                    },
                ),
            ))
        }
    }
}

/// The JSON body of the create and edit forms, or the field errors that stop it.
fn endpoint_body(form: &[(String, String)]) -> Result<Value, FieldErrors> {
    let values = single(form);
    let days = field(&values, "expiring_days");
    let expiring_days = if days.is_empty() {
        Value::Null
    } else {
        match days.parse::<i64>() {
            Ok(d) => json!(d),
            Err(_) => {
                let mut errors = FieldErrors::default();
                errors.push("expiring_days", "expiring_days: must be a whole number");
                return Err(errors);
            }
        }
    };
    Ok(json!({
        "url": field(&values, "url"),
        "description": field(&values, "description"),
        "events": checked_events(form),
        "expiring_days": expiring_days,
        "enabled": values.contains_key("enabled"),
    }))
}

/// POST /console/webhooks/{id}: the edit form (URL, description, events, days of warning,
/// enabled), through the same validation and address guard as `PATCH /v1/webhooks/{id}`.
pub async fn update(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    form: MultiForm,
) -> Result<HttpResponse, ConsoleError> {
    let values = single(&form);
    let s = post_session(&req, &state, &values).await?;
    s.require_writer()?;
    let id = path.into_inner();
    let errors = match endpoint_body(&form) {
        Ok(body) => {
            let url = field(&values, "url").to_owned();
            let result = match crate::routes::webhooks::guard_target(&state, &url).await {
                Ok(()) => {
                    let (actor, wid) = (s.admin_id.clone(), id.clone());
                    submit(&state, &body, move |c, now, input: UpdateWebhook| {
                        domain::update(c, now, &actor, &wid, input)
                    })
                    .await
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(_) => return Ok(redirect(&format!("/console/webhooks/{id}?done=saved"))),
                Err(ApiError::NotFound(m)) => return Err(ConsoleError::NotFound(m)),
                Err(e) => field_error(e, webhook_field)?,
            }
        }
        Err(errors) => errors,
    };
    let (w, deliveries) = load(&state, &id).await?;
    Ok(html_response(
        StatusCode::UNPROCESSABLE_ENTITY,
        show_page(
            &s,
            &w,
            &deliveries,
            ShowExtras {
                form: &form,
                errors,
                ..Default::default()
            },
        ),
    ))
}

/// POST /console/webhooks/{id}/rotate-secret: a new signing secret, shown in this response
/// only, as `POST /v1/webhooks/{id}/rotate-secret` does.
pub async fn rotate_secret(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    form: Form,
) -> Result<HttpResponse, ConsoleError> {
    let s = post_session(&req, &state, &form).await?;
    s.require_writer()?;
    let id = path.into_inner();
    let mut errors = FieldErrors::default();
    let grace = field(&form, "grace_seconds");
    let result = match grace.parse::<u32>() {
        Ok(grace_seconds) => {
            let (actor, wid) = (s.admin_id.clone(), id.clone());
            db(&state, move |c, now| {
                domain::rotate_secret(c, now, &actor, &wid, RotateSecret { grace_seconds })
            })
            .await
        }
        Err(_) => Err(ApiError::validation(
            "grace_seconds",
            "must be a whole number of seconds",
        )),
    };
    let status = match result {
        Ok(rotated) => {
            let (_, deliveries) = load(&state, &id).await?;
            return Ok(html_response(
                StatusCode::OK,
                show_page(
                    &s,
                    &rotated.view,
                    &deliveries,
                    ShowExtras {
                        rotated: Some(&rotated),
                        ..Default::default()
                    },
                ),
            ));
        }
        Err(ApiError::NotFound(m)) => return Err(ConsoleError::NotFound(m)),
        Err(ApiError::Validation { field, message }) => {
            errors.push("grace_seconds", format!("{field}: {message}"));
            StatusCode::UNPROCESSABLE_ENTITY
        }
        Err(e) => return Err(e.into()),
    };
    let (w, deliveries) = load(&state, &id).await?;
    Ok(html_response(
        status,
        show_page(
            &s,
            &w,
            &deliveries,
            ShowExtras {
                errors,
                ..Default::default()
            },
        ),
    ))
}
