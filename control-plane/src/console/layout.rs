//! The page frame, shared widgets and small formatting helpers.

use maud::{html, Markup, PreEscaped, DOCTYPE};

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use super::session::{ConsoleError, Session, CSRF_FIELD};
use crate::error::ApiError;

/// A whole page.
pub fn page(title: &str, session: Option<&Session>, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Keygate console" }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/console/projects" { "Keygate" }
                    @if let Some(s) = session {
                        nav aria-label="Main" {
                            a href="/console/projects" { "Projects" }
                            a href="/console/alerts" { "Alerts" }
                            a href="/console/webhooks" { "Webhooks" }
                            a href="/console/try" { "Try a key" }
                            a href="/console/audit" { "Audit log" }
                            a href="/console/snapshot" { "Snapshot" }
                            @if s.is_owner() {
                                a href="/console/admins" { "Admins" }
                            }
                        }
                        div.who {
                            a #account href="/console/account" { (s.email) } span { " (" (s.role.as_str()) ")" }
                            form method="post" action="/console/logout" {
                                (csrf(s))
                                button.link type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main #main tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
    .into_string()
}

/// An error page.
pub fn error_page(status: u16, title: &str, detail: &str) -> String {
    page(
        title,
        None,
        html! {
            p.error role="alert" { (status) ": " (detail) }
            p { a href="/console/projects" { "Back to the console" } }
        },
    )
}

/// The hidden CSRF field of a form.
pub fn csrf(s: &Session) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(s.csrf); }
}

/// Field-level error messages of a form: (field, message).
#[derive(Debug, Default, Clone)]
pub struct FieldErrors(pub Vec<(String, String)>);

impl FieldErrors {
    /// The message for `field`, if any.
    pub fn get(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(f, _)| f == field)
            .map(|(_, m)| m.as_str())
    }

    /// Adds a message.
    pub fn push(&mut self, field: &str, message: impl Into<String>) {
        self.0.push((field.to_owned(), message.into()));
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The id of a field's error message element.
fn err_id(id: &str) -> String {
    format!("{id}-error")
}

/// A labelled control with its inline error. `control` gets `aria-describedby` from the caller.
pub fn field(
    id: &str,
    label: &str,
    hint: Option<&str>,
    errors: &FieldErrors,
    control: Markup,
) -> Markup {
    let err = errors.get(id);
    html! {
        div.field.invalid[err.is_some()] {
            label for=(id) { (label) }
            @if let Some(h) = hint { small.hint id=(format!("{id}-hint")) { (h) } }
            (control)
            @if let Some(e) = err {
                p.field-error id=(err_id(id)) role="alert" { (e) }
            }
        }
    }
}

/// A labelled text input.
pub fn text_input(
    id: &str,
    label: &str,
    value: &str,
    hint: Option<&str>,
    errors: &FieldErrors,
    required: bool,
) -> Markup {
    let described = describedby(id, hint.is_some(), errors.get(id).is_some());
    field(
        id,
        label,
        hint,
        errors,
        html! {
            input type="text" id=(id) name=(id) value=(value) required[required]
                aria-invalid=[errors.get(id).map(|_| "true")] aria-describedby=[described];
        },
    )
}

/// A labelled textarea (one item per line).
pub fn textarea(
    id: &str,
    label: &str,
    value: &str,
    hint: Option<&str>,
    errors: &FieldErrors,
) -> Markup {
    let described = describedby(id, hint.is_some(), errors.get(id).is_some());
    field(
        id,
        label,
        hint,
        errors,
        html! {
            textarea id=(id) name=(id) rows="3"
                aria-invalid=[errors.get(id).map(|_| "true")] aria-describedby=[described] { (value) }
        },
    )
}

/// A labelled select.
pub fn select(
    id: &str,
    label: &str,
    options: &[(&str, &str)],
    selected: &str,
    errors: &FieldErrors,
) -> Markup {
    let described = describedby(id, false, errors.get(id).is_some());
    field(
        id,
        label,
        None,
        errors,
        html! {
            select id=(id) name=(id) aria-describedby=[described] {
                @for (value, text) in options {
                    option value=(value) selected[*value == selected] { (text) }
                }
            }
        },
    )
}

fn describedby(id: &str, hint: bool, err: bool) -> Option<String> {
    let mut parts = Vec::new();
    if hint {
        parts.push(format!("{id}-hint"));
    }
    if err {
        parts.push(err_id(id));
    }
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// A timestamp (Unix milliseconds) as RFC 3339.
pub fn ts(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// A key's last use: its minute, or "never".
pub fn last_used(ms: Option<i64>) -> String {
    ms.map_or_else(|| "never".to_owned(), ts)
}

/// A notice box (success or warning).
pub fn notice(kind: &str, text: &str) -> Markup {
    html! { p class=(format!("notice {kind}")) role="status" { (text) } }
}

/// Raw, already-escaped markup (the SVG chart).
pub fn raw(s: String) -> Markup {
    PreEscaped(s)
}

// Here rather than beside `ConsoleError`, so that sessions do not depend on page layout.
impl ResponseError for ConsoleError {
    fn status_code(&self) -> StatusCode {
        match self {
            ConsoleError::LoginRequired => StatusCode::SEE_OTHER,
            ConsoleError::Forbidden(_) => StatusCode::FORBIDDEN,
            ConsoleError::NotFound(_) => StatusCode::NOT_FOUND,
            ConsoleError::Api(e) => e.status(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ConsoleError::LoginRequired = self {
            return HttpResponse::SeeOther()
                .insert_header((header::LOCATION, HeaderValue::from_static("/console/login")))
                .finish();
        }
        let (title, detail) = match self {
            ConsoleError::Forbidden(why) => ("Forbidden", (*why).to_owned()),
            ConsoleError::NotFound(why) => ("Not found", why.clone()),
            ConsoleError::Api(e) => {
                if let ApiError::Internal(inner) = e {
                    tracing::error!(error = format!("{inner:#}"), "console internal error");
                }
                ("Error", e.problem().detail)
            }
            ConsoleError::LoginRequired => ("Log in", String::new()),
        };
        let body = error_page(self.status_code().as_u16(), title, &detail);
        HttpResponse::build(self.status_code())
            .content_type("text/html; charset=utf-8")
            .body(body)
    }
}
