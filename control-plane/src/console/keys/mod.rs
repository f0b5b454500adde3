//! Keys: create (the plaintext shown once), detail with the restrictions editor, rotate,
//! revoke, the usage chart and the key's sightings.

mod page;

pub use page::{revoke, rotate, show, update};

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup};
use serde_json::{json, Map, Value};

use super::layout::{self, FieldErrors};
use super::session::{self, ConsoleError, Session};
use super::{field, field_error, html_response, submit, Form, Posted};
use crate::auth::Writers;
use crate::domain::keys::{self as domain, KeySpec, KeyView};
use crate::error::ApiError;
use crate::ids::ProjectId;
use crate::state::AppState;

/// Maps an API field path to the form field that shows its message.
fn key_field(f: &str) -> String {
    let f = f.strip_prefix("restrictions.").unwrap_or(f);
    let top = f.split(['.', '[']).next().unwrap_or(f);
    match top {
        "name" | "kind" | "environment" | "scopes" | "referrers" | "ips" | "rate_limit"
        | "quota" | "expires_at" | "metadata" => top.to_owned(),
        "restrictions" => "referrers".to_owned(),
        "grace_seconds" => "grace_seconds".to_owned(),
        "reason" => "reason".to_owned(),
        _ => "form".to_owned(),
    }
}

fn lines(s: &str) -> Vec<String> {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

fn number(form: &Form, name: &str, errors: &mut FieldErrors, group: &str) -> Option<Value> {
    let v = field(form, name);
    if v.is_empty() {
        return None;
    }
    match v.parse::<i64>() {
        Ok(n) => Some(json!(n)),
        Err(_) => {
            errors.push(group, format!("{name}: must be a whole number"));
            None
        }
    }
}

/// The JSON body of a key form (the key spec; without kind and environment for updates).
fn spec_json(form: &Form, creating: bool, errors: &mut FieldErrors) -> Value {
    let mut body = Map::new();
    body.insert("name".into(), json!(field(form, "name")));
    if creating {
        body.insert("kind".into(), json!(field(form, "kind")));
        body.insert("environment".into(), json!(field(form, "environment")));
    }
    body.insert("scopes".into(), json!(lines(field(form, "scopes"))));
    body.insert(
        "restrictions".into(),
        json!({"referrers": lines(field(form, "referrers")), "ips": lines(field(form, "ips"))}),
    );
    let rl_limit = number(form, "rate_limit_limit", errors, "rate_limit");
    let rl_period = number(form, "rate_limit_period_seconds", errors, "rate_limit");
    let rate_limit = match (rl_limit, rl_period) {
        (None, None) => Value::Null,
        (l, p) => {
            let mut m = Map::new();
            if let Some(l) = l {
                m.insert("limit".into(), l);
            }
            if let Some(p) = p {
                m.insert("period_seconds".into(), p);
            }
            Value::Object(m)
        }
    };
    let q_limit = number(form, "quota_limit", errors, "quota");
    let quota = match q_limit {
        None => Value::Null,
        Some(l) => json!({"limit": l, "period": field(form, "quota_period")}),
    };
    let expires = field(form, "expires_at");
    let metadata_text = field(form, "metadata");
    let metadata = if metadata_text.is_empty() {
        Value::Null
    } else {
        match serde_json::from_str::<Value>(metadata_text) {
            Ok(v) => v,
            Err(e) => {
                errors.push("metadata", format!("metadata: not valid JSON: {e}"));
                Value::Null
            }
        }
    };
    if creating {
        if !rate_limit.is_null() {
            body.insert("rate_limit".into(), rate_limit);
        }
        if !quota.is_null() {
            body.insert("quota".into(), quota);
        }
        if !expires.is_empty() {
            body.insert("expires_at".into(), json!(expires));
        }
        if !metadata.is_null() {
            body.insert("metadata".into(), metadata);
        }
    } else {
        body.insert("rate_limit".into(), rate_limit);
        body.insert("quota".into(), quota);
        body.insert(
            "expires_at".into(),
            if expires.is_empty() {
                Value::Null
            } else {
                json!(expires)
            },
        );
        body.insert("metadata".into(), metadata);
    }
    Value::Object(body)
}

/// The form's values for a key view.
fn form_of(k: &KeyView) -> Form {
    let mut m = Form::new();
    let v = serde_json::to_value(k).unwrap_or(Value::Null);
    let join = |v: &Value| {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
    };
    m.insert("name".to_owned(), k.name.clone());
    m.insert("scopes".to_owned(), join(&v["scopes"]));
    m.insert(
        "referrers".to_owned(),
        join(&v["restrictions"]["referrers"]),
    );
    m.insert("ips".to_owned(), join(&v["restrictions"]["ips"]));
    let num = |v: &Value| v.as_i64().map(|n| n.to_string()).unwrap_or_default();
    m.insert(
        "rate_limit_limit".to_owned(),
        num(&v["rate_limit"]["limit"]),
    );
    m.insert(
        "rate_limit_period_seconds".to_owned(),
        num(&v["rate_limit"]["period_seconds"]),
    );
    m.insert("quota_limit".to_owned(), num(&v["quota"]["limit"]));
    m.insert(
        "quota_period".to_owned(),
        v["quota"]["period"].as_str().unwrap_or("month").to_owned(),
    );
    m.insert(
        "expires_at".to_owned(),
        v["expires_at"].as_str().unwrap_or("").to_owned(),
    );
    m.insert(
        "metadata".to_owned(),
        if v["metadata"].is_null() {
            String::new()
        } else {
            v["metadata"].to_string()
        },
    );
    m
}

/// The fields every key form shares (all but kind and environment).
fn spec_fields(form: &Form, errors: &FieldErrors) -> Markup {
    html! {
        (layout::text_input("name", "Name", field(form, "name"), None, errors, true))
        (layout::textarea("scopes", "Scopes", field(form, "scopes"), Some("One per line, e.g. orders:read"), errors))
        (layout::textarea("referrers", "Allowed referrers", field(form, "referrers"), Some("One pattern per line, e.g. https://shop.example.com/* or *.example.org; required for publishable keys"), errors))
        (layout::textarea("ips", "Allowed IPs", field(form, "ips"), Some("One address or CIDR per line, e.g. 203.0.113.0/24"), errors))
        fieldset {
            legend { "Rate limit" }
            (layout::field("rate_limit", "Requests", None, errors, html! {
                input type="number" min="1" id="rate_limit" name="rate_limit_limit" value=(field(form, "rate_limit_limit")) aria-describedby=[errors.get("rate_limit").map(|_| "rate_limit-error")];
            }))
            div.field {
                label for="rate_limit_period_seconds" { "Per (seconds)" }
                input type="number" min="1" id="rate_limit_period_seconds" name="rate_limit_period_seconds" value=(field(form, "rate_limit_period_seconds"));
            }
        }
        fieldset {
            legend { "Quota" }
            (layout::field("quota", "Requests", None, errors, html! {
                input type="number" min="1" id="quota" name="quota_limit" value=(field(form, "quota_limit")) aria-describedby=[errors.get("quota").map(|_| "quota-error")];
            }))
            (layout::select("quota_period", "Per", &[("day", "day"), ("month", "month"), ("total", "total")], form.get("quota_period").map_or("month", String::as_str), &FieldErrors::default()))
        }
        (layout::text_input("expires_at", "Expires at", field(form, "expires_at"), Some("RFC 3339, e.g. 2027-01-01T00:00:00Z; empty for never"), errors, false))
        (layout::textarea("metadata", "Metadata", field(form, "metadata"), Some("A JSON object, e.g. {\"customer\": \"cus_123\"}"), errors))
    }
}

fn new_page(s: &Session, project_id: &str, form: &Form, errors: &FieldErrors) -> String {
    layout::page(
        "New key",
        Some(s),
        html! {
            p { a href=(format!("/console/projects/{project_id}")) { "← Back to the project" } }
            @if let Some(e) = errors.get("form") { p.error role="alert" { (e) } }
            @if !errors.is_empty() { p.error role="alert" #form-errors { "The key was not created: see the messages below." } }
            form.card method="post" action=(format!("/console/projects/{project_id}/keys")) #key-form {
                (layout::csrf(s))
                (layout::select("kind", "Kind", &[("secret", "secret (servers)"), ("publishable", "publishable (browsers)")], form.get("kind").map_or("secret", String::as_str), errors))
                (layout::select("environment", "Environment", &[("live", "live"), ("test", "test")], form.get("environment").map_or("live", String::as_str), errors))
                (spec_fields(form, errors))
                button type="submit" { "Create key" }
            }
        },
    )
}

/// GET /console/projects/{id}/keys/new
pub async fn new_form(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ConsoleError> {
    let s = session::current(&req, &state).await?;
    s.require_writer()?;
    let empty = Form::new();
    Ok(html_response(
        StatusCode::OK,
        new_page(&s, &path, &empty, &FieldErrors::default()),
    ))
}

fn plaintext_page(
    s: &Session,
    title: &str,
    key: &str,
    view: &KeyView,
    extra: Option<Markup>,
) -> String {
    layout::page(
        title,
        Some(s),
        html! {
            div.warning role="alert" {
                strong { "Copy this key now. " }
                "It is shown only once: Keygate stores only its hash and cannot show it again."
            }
            div.secret {
                label for="plaintext" { "The new key" }
                input #plaintext type="text" readonly value=(key) aria-describedby="plaintext-hint";
                button type="button" #copy data-copy="plaintext" { "Copy" }
                small #plaintext-hint { "Select the field and copy, or use the Copy button." }
            }
            @if let Some(x) = extra { (x) }
            p { a #to-key href=(format!("/console/keys/{}", view.id)) { "I have stored it: go to the key" } }
        },
    )
}

/// POST /console/projects/{id}/keys
pub async fn create(
    state: web::Data<AppState>,
    path: web::Path<String>,
    Posted { session, form, .. }: Posted<Writers>,
) -> Result<HttpResponse, ConsoleError> {
    let project_id = path.into_inner();
    let mut errors = FieldErrors::default();
    let body = spec_json(&form, true, &mut errors);
    if errors.is_empty() {
        let actor = session.admin_id.clone();
        let pid = project_id.clone();
        let result = submit(&state, &body, move |c, now, spec: KeySpec| {
            domain::create(c, now, &actor, &ProjectId::new(pid), spec)
        })
        .await;
        match result {
            Ok(created) => {
                return Ok(html_response(
                    StatusCode::CREATED,
                    plaintext_page(&session, "Key created", &created.key, &created.view, None),
                ));
            }
            Err(ApiError::NotFound(m)) => return Err(ConsoleError::NotFound(m)),
            Err(e) => errors = field_error(e, key_field)?,
        }
    }
    Ok(html_response(
        StatusCode::UNPROCESSABLE_ENTITY,
        new_page(&session, &project_id, &form, &errors),
    ))
}
