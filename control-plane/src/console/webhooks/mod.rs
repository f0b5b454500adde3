//! Webhooks: the endpoints (create, with the secret shown once; edit; enable, disable, delete;
//! secret rotation, the new secret shown once) and
//! each endpoint's delivery log with manual retries.

mod endpoint;

pub use endpoint::{delete, disable, enable, retry, rotate_secret, show, update};

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup};
use serde_json::{json, Value};

use super::layout::{self, FieldErrors};
use super::session::{self, ConsoleError, Session};
use super::{field, field_error, html_response, submit, Posted};
use crate::auth::Writers;
use crate::domain::events::EVENT_TYPES;
use crate::domain::webhooks::{self as domain, CreateWebhook, WebhookView, DEFAULT_EXPIRING_DAYS};
use crate::state::db;
use crate::state::AppState;

/// A form whose fields may repeat (the event checkboxes): every pair, in order.
pub type MultiForm = Vec<(String, String)>;

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
    state: web::Data<AppState>,
    Posted { session, form, .. }: Posted<Writers, MultiForm>,
) -> Result<HttpResponse, ConsoleError> {
    let values = single(&form);
    let (body, mut errors) = match endpoint_body(&form) {
        Ok(body) => (body, FieldErrors::default()),
        Err(errors) => (Value::Null, errors),
    };
    if errors.is_empty() {
        let actor = session.admin_id.clone();
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
                        &session,
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
        list_page(&session, &hooks, &form, &errors, None),
    ))
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
