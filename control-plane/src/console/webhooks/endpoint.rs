//! One endpoint's page: its settings, its delivery log with manual retries, and the forms
//! that edit, enable, disable, delete it and rotate its secret.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup};

use super::{
    edit_form, edit_values, enabled_badge, endpoint_body, rotate_form, single, webhook_field,
    MultiForm,
};
use crate::auth::Writers;
use crate::console::layout::{self, FieldErrors};
use crate::console::session::{self, ConsoleError, Session};
use crate::console::{field, field_error, html_response, redirect, submit, Posted};
use crate::domain::webhooks::{
    self as domain, DeliveryQuery, DeliveryView, RotateSecret, RotatedSecret, UpdateWebhook,
    WebhookView,
};
use crate::error::ApiError;
use crate::ids::{DeliveryId, WebhookId};
use crate::state::db;
use crate::state::AppState;

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
    let id = WebhookId::new(id);
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

/// The endpoint's page, with a note, or the errors and values of a form that failed.
async fn page_again(
    s: &Session,
    state: &web::Data<AppState>,
    id: &str,
    status: StatusCode,
    extras: ShowExtras<'_>,
) -> Result<HttpResponse, ConsoleError> {
    let (w, deliveries) = load(state, id).await?;
    Ok(html_response(status, show_page(s, &w, &deliveries, extras)))
}

/// The endpoint's page again, with the errors of a form that failed.
async fn errors_again(
    s: &Session,
    state: &web::Data<AppState>,
    id: &str,
    status: StatusCode,
    errors: FieldErrors,
) -> Result<HttpResponse, ConsoleError> {
    let extras = ShowExtras {
        errors,
        ..Default::default()
    };
    page_again(s, state, id, status, extras).await
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
    let note: Note = serde_urlencoded::from_str(req.query_string()).unwrap_or_default();
    let note = match note.done.as_deref() {
        Some("enabled") => Some("Endpoint enabled."),
        Some("disabled") => Some("Endpoint disabled: nothing is sent until it is enabled again."),
        Some("retry") => Some("Delivery queued: it is sent within a few seconds."),
        Some("saved") => Some("Changes saved."),
        _ => None,
    };
    page_again(
        &s,
        &state,
        &path,
        StatusCode::OK,
        ShowExtras {
            note,
            ..Default::default()
        },
    )
    .await
}

async fn set_enabled(
    state: web::Data<AppState>,
    id: String,
    s: Session,
    enabled: bool,
) -> Result<HttpResponse, ConsoleError> {
    let actor = s.admin_id.clone();
    let wid = WebhookId::new(id.clone());
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
    state: web::Data<AppState>,
    path: web::Path<String>,
    posted: Posted<Writers>,
) -> Result<HttpResponse, ConsoleError> {
    set_enabled(state, path.into_inner(), posted.session, true).await
}

/// POST /console/webhooks/{id}/disable
pub async fn disable(
    state: web::Data<AppState>,
    path: web::Path<String>,
    posted: Posted<Writers>,
) -> Result<HttpResponse, ConsoleError> {
    set_enabled(state, path.into_inner(), posted.session, false).await
}

/// POST /console/webhooks/{id}/delete
pub async fn delete(
    state: web::Data<AppState>,
    path: web::Path<String>,
    Posted { session, form, .. }: Posted<Writers>,
) -> Result<HttpResponse, ConsoleError> {
    let id = path.into_inner();
    if field(&form, "confirm") != "yes" {
        let mut errors = FieldErrors::default();
        errors.push("confirm", "Tick the confirmation to delete the endpoint.");
        return errors_again(
            &session,
            &state,
            &id,
            StatusCode::UNPROCESSABLE_ENTITY,
            errors,
        )
        .await;
    }
    let actor = session.admin_id.clone();
    match db(&state, move |c, now| {
        domain::delete(c, now, &actor, &WebhookId::new(id))
    })
    .await
    {
        Ok(()) => Ok(redirect("/console/webhooks")),
        Err(ApiError::NotFound(m)) => Err(ConsoleError::NotFound(m)),
        Err(e) => Err(e.into()),
    }
}

/// POST /console/webhooks/{id}/deliveries/{delivery_id}/retry
pub async fn retry(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    Posted { session, .. }: Posted<Writers>,
) -> Result<HttpResponse, ConsoleError> {
    let (id, delivery_id) = path.into_inner();
    let wid = WebhookId::new(id.clone());
    let result = db(&state, move |c, now| {
        domain::retry_delivery(c, now, &wid, &DeliveryId::new(delivery_id))
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
            errors_again(&session, &state, &id, StatusCode::CONFLICT, errors).await
        }
    }
}

/// POST /console/webhooks/{id}: the edit form (URL, description, events, days of warning,
/// enabled), through the same validation and address guard as `PATCH /v1/webhooks/{id}`.
pub async fn update(
    state: web::Data<AppState>,
    path: web::Path<String>,
    Posted { session, form, .. }: Posted<Writers, MultiForm>,
) -> Result<HttpResponse, ConsoleError> {
    let values = single(&form);
    let id = path.into_inner();
    let errors = match endpoint_body(&form) {
        Ok(body) => {
            let url = field(&values, "url").to_owned();
            let result = match crate::routes::webhooks::guard_target(&state, &url).await {
                Ok(()) => {
                    let (actor, wid) = (session.admin_id.clone(), WebhookId::new(id.clone()));
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
    page_again(
        &session,
        &state,
        &id,
        StatusCode::UNPROCESSABLE_ENTITY,
        ShowExtras {
            form: &form,
            errors,
            ..Default::default()
        },
    )
    .await
}

/// POST /console/webhooks/{id}/rotate-secret: a new signing secret, shown in this response
/// only, as `POST /v1/webhooks/{id}/rotate-secret` does.
pub async fn rotate_secret(
    state: web::Data<AppState>,
    path: web::Path<String>,
    Posted { session, form, .. }: Posted<Writers>,
) -> Result<HttpResponse, ConsoleError> {
    let id = path.into_inner();
    let mut errors = FieldErrors::default();
    let grace = field(&form, "grace_seconds");
    let result = match grace.parse::<u32>() {
        Ok(grace_seconds) => {
            let (actor, wid) = (session.admin_id.clone(), WebhookId::new(id.clone()));
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
                    &session,
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
    errors_again(&session, &state, &id, status, errors).await
}
