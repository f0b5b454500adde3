//! "Try a key": a key and the facts of a request in, the edge's verdict out. The form is
//! decided by [`crate::verify::decide`], the very function behind `POST /v1/verify`, so it
//! counts against rate limits and quotas as that endpoint does. Like the endpoint, any role may
//! use it. The key is never written back into the page.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup};

use super::layout::{self, FieldErrors};
use super::session::{self, ConsoleError, Session};
use super::{field, html_response, Form, Posted};
use crate::auth::AnyRole;
use crate::error::ApiError;
use crate::state::AppState;
use crate::verify::{decide, VerifyRequest, VerifyResponse};

/// The form's fields other than the key, in the order shown.
const FACTS: [(&str, &str, &str); 5] = [
    (
        "method",
        "Method",
        "e.g. GET; with the path, selects the project's route",
    ),
    ("path", "Path", "e.g. /v1/orders/42"),
    (
        "referrer",
        "Origin or referrer",
        "The request's Origin or Referer, e.g. https://shop.example.com/cart",
    ),
    ("ip", "Client IP", "e.g. 203.0.113.7"),
    (
        "host",
        "Host",
        "The hostname the request was sent to; empty to ask about the key alone",
    ),
];

fn form_page(
    s: &Session,
    form: &Form,
    errors: &FieldErrors,
    verdict: Option<&VerifyResponse>,
) -> String {
    layout::page(
        "Try a key",
        Some(s),
        html! {
            p { "Decides a request exactly as " code { "POST /v1/verify" } " does, with the edge's evaluation. A try counts against the key's rate limit and quota on this control plane." }
            @if let Some(v) = verdict { (verdict_box(v)) }
            @if let Some(e) = errors.get("form") { p.error role="alert" { (e) } }
            form.card method="post" action="/console/try" #try-form {
                (layout::csrf(s))
                (layout::field("key", "Key", Some("The whole key; it is not stored or shown again"), errors, html! {
                    input type="password" #key name="key" required autocomplete="off" spellcheck="false"
                        aria-invalid=[errors.get("key").map(|_| "true")] aria-describedby="key-hint";
                }))
                @for (name, label, hint) in FACTS {
                    (layout::text_input(name, label, field(form, name), Some(hint), errors, false))
                }
                button type="submit" { "Try" }
            }
        },
    )
}

fn verdict_box(v: &VerifyResponse) -> Markup {
    let code = v.code.as_str();
    html! {
        section.card #verdict aria-labelledby="verdict-h" {
            h2 #verdict-h { "Verdict" }
            dl.facts {
                dt { "Result" }
                dd #verdict-result {
                    @if v.valid { span.badge.active { "allowed" } } @else { span.badge.revoked { "refused" } }
                }
                dt { "Code" } dd { code #verdict-code { (code) } }
                dt { "Edge answers" } dd #verdict-status { "HTTP " (v.code.http_status()) }
                @if let Some(id) = &v.key_id {
                    dt { "Key" } dd { a #verdict-key href=(format!("/console/keys/{id}")) { code { (id) } } }
                }
                @if let Some(p) = &v.project_id {
                    dt { "Project" } dd { a href=(format!("/console/projects/{p}")) { code { (p) } } }
                }
                @if let Some(e) = v.environment { dt { "Environment" } dd { (e.as_str()) } }
                @if let Some(scopes) = &v.scopes {
                    dt { "Scopes" }
                    dd { (scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")) }
                }
                @if let Some(l) = &v.limits {
                    dt { "Limit" }
                    dd #verdict-limits {
                        (l.remaining) " of " (l.limit) " left, full again in " (l.reset_seconds) " s"
                        @if let Some(r) = l.retry_after_seconds { "; retry after " (r) " s" }
                    }
                }
            }
        }
    }
}

/// GET /console/try
pub async fn page(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ConsoleError> {
    let s = session::current(&req, &state).await?;
    let empty = Form::new();
    Ok(html_response(
        StatusCode::OK,
        form_page(&s, &empty, &FieldErrors::default(), None),
    ))
}

/// POST /console/try
pub async fn submit(
    state: web::Data<AppState>,
    Posted { session, form, .. }: Posted<AnyRole>,
) -> Result<HttpResponse, ConsoleError> {
    let opt = |name: &str| Some(field(&form, name).to_owned()).filter(|v| !v.is_empty());
    let input = VerifyRequest {
        // The key as pasted, but for surrounding blanks, as an HTTP header would carry it.
        key: field(&form, "key").to_owned(),
        referrer: opt("referrer"),
        ip: opt("ip"),
        method: opt("method"),
        path: opt("path"),
        host: opt("host"),
    };
    let mut errors = FieldErrors::default();
    match decide(&state, input).await {
        Ok(v) => {
            return Ok(html_response(
                StatusCode::OK,
                form_page(&session, &form, &errors, Some(&v)),
            ))
        }
        Err(ApiError::Validation { field, message }) => {
            let name = FACTS
                .iter()
                .map(|(n, _, _)| *n)
                .chain(["key"])
                .find(|n| *n == field)
                .unwrap_or("form");
            errors.push(name, format!("{field}: {message}"));
        }
        // A path the edge cannot normalise safely: the API's 400 `invalid_path`.
        Err(ApiError::BadRequest { code, detail }) => {
            let name = if code == "invalid_path" {
                "path"
            } else {
                "form"
            };
            errors.push(name, format!("{code}: {detail}"));
        }
        Err(e) => return Err(e.into()),
    }
    Ok(html_response(
        StatusCode::UNPROCESSABLE_ENTITY,
        form_page(&session, &form, &errors, None),
    ))
}
