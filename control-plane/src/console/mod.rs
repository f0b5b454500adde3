//! The admin web console under `/console`: server-rendered pages (maud), a session cookie,
//! CSRF tokens on every form, and strict security headers. Its stylesheet and script are
//! embedded in the binary; nothing is loaded from elsewhere. Handlers call the same domain
//! functions as the JSON API, with the logged-in admin as the actor, so the audit log names
//! them. See docs/console.md.

pub mod accounts;
pub mod alerts;
pub mod keys;
pub mod layout;
pub mod projects;
pub mod session;
pub mod try_key;
pub mod usage;
pub mod webhooks;

use std::collections::HashMap;
use std::marker::PhantomData;

use actix_web::dev::Payload;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::DefaultHeaders;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use futures_util::future::LocalBoxFuture;
use maud::html;

use crate::auth::AnyRole;
use crate::domain::accounts::Login;
use crate::error::ApiError;
use crate::state::AppState;
use layout::FieldErrors;
use session::{ConsoleError, ConsoleRoles, Session, CSRF_FIELD};

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// The console's Content-Security-Policy.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

/// A submitted form's fields.
pub type Form = HashMap<String, String>;

/// Registers the console's routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/console")
            .wrap(
                DefaultHeaders::new()
                    .add((header::CONTENT_SECURITY_POLICY, CSP))
                    .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
                    .add((header::REFERRER_POLICY, "no-referrer"))
                    .add((header::X_FRAME_OPTIONS, "DENY"))
                    .add((header::CACHE_CONTROL, "no-store")),
            )
            .app_data(web::FormConfig::default().limit(64 * 1024))
            .route("", web::get().to(index))
            .route("/", web::get().to(index))
            .route("/assets/console.css", web::get().to(css))
            .route("/assets/console.js", web::get().to(js))
            .route("/login", web::get().to(login_page))
            .route("/login", web::post().to(login))
            .route("/logout", web::post().to(logout))
            .route("/projects", web::get().to(projects::list))
            .route("/projects", web::post().to(projects::create))
            .route("/projects/{id}", web::get().to(projects::show))
            .route("/projects/{id}", web::post().to(projects::update))
            .route("/projects/{id}/keys/new", web::get().to(keys::new_form))
            .route("/projects/{id}/keys", web::post().to(keys::create))
            .route("/keys/{id}", web::get().to(keys::show))
            .route("/keys/{id}", web::post().to(keys::update))
            .route("/keys/{id}/rotate", web::post().to(keys::rotate))
            .route("/keys/{id}/revoke", web::post().to(keys::revoke))
            .route("/alerts", web::get().to(alerts::list))
            .route(
                "/alerts/{id}/acknowledge",
                web::post().to(alerts::acknowledge),
            )
            .route("/projects/{id}/alert-rules", web::get().to(alerts::rules))
            .route(
                "/projects/{id}/alert-rules/{rule}",
                web::post().to(alerts::update_rule),
            )
            .route("/webhooks", web::get().to(webhooks::list))
            .route("/webhooks", web::post().to(webhooks::create))
            .route("/webhooks/{id}", web::get().to(webhooks::show))
            .route("/webhooks/{id}", web::post().to(webhooks::update))
            .route(
                "/webhooks/{id}/rotate-secret",
                web::post().to(webhooks::rotate_secret),
            )
            .route("/webhooks/{id}/enable", web::post().to(webhooks::enable))
            .route("/webhooks/{id}/disable", web::post().to(webhooks::disable))
            .route("/webhooks/{id}/delete", web::post().to(webhooks::delete))
            .route(
                "/webhooks/{id}/deliveries/{delivery_id}/retry",
                web::post().to(webhooks::retry),
            )
            .route("/try", web::get().to(try_key::page))
            .route("/try", web::post().to(try_key::submit))
            .route("/audit", web::get().to(accounts::audit))
            .route("/snapshot", web::get().to(accounts::snapshot))
            .route("/admins", web::get().to(accounts::admins))
            .route("/admins", web::post().to(accounts::create_admin))
            .route("/admins/{id}/role", web::post().to(accounts::set_role))
            .route(
                "/admins/{id}/delete",
                web::post().to(accounts::delete_admin),
            )
            .route("/account", web::get().to(accounts::account))
            .route(
                "/account/password",
                web::post().to(accounts::change_password),
            )
            .route("/tokens", web::post().to(accounts::create_token))
            .route(
                "/tokens/{id}/delete",
                web::post().to(accounts::delete_token),
            )
            .default_service(web::to(not_found)),
    );
}

/// An HTML response.
pub fn html_response(status: actix_web::http::StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(body)
}

/// A 303 to `location`.
pub fn redirect(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish()
}

/// A console form POST from a logged-in admin whose role is in `R`, its CSRF token checked.
///
/// The body is read first (a malformed one is refused as `web::Form` refuses it), then the
/// session (none: on to the login page), the CSRF token (403) and the role (403), in that order.
/// `F` is the form's shape: one value a field, or every pair when fields repeat.
#[derive(Debug)]
pub struct Posted<R, F = Form> {
    /// The logged-in admin.
    pub session: Session,
    /// The submitted fields.
    pub form: F,
    _roles: PhantomData<R>,
}

/// A form body whose CSRF token [`Posted`] can find.
pub trait FormFields: serde::de::DeserializeOwned + 'static {
    /// The submitted CSRF token (the last one, should the field repeat).
    fn csrf_token(&self) -> Option<&str>;
}

impl FormFields for Form {
    fn csrf_token(&self) -> Option<&str> {
        self.get(CSRF_FIELD).map(String::as_str)
    }
}

impl FormFields for Vec<(String, String)> {
    fn csrf_token(&self) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(k, _)| k == CSRF_FIELD)
            .map(|(_, v)| v.as_str())
    }
}

impl<R: ConsoleRoles + 'static, F: FormFields> FromRequest for Posted<R, F> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, actix_web::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let state = web::Data::<AppState>::extract(req);
        let form = web::Form::<F>::from_request(req, payload);
        let req = req.clone();
        Box::pin(async move {
            let state = state.await?;
            let form = form.await?.into_inner();
            let session = session::current(&req, &state).await?;
            session.check_csrf(form.csrf_token())?;
            session.require::<R>()?;
            Ok(Posted {
                session,
                form,
                _roles: PhantomData,
            })
        })
    }
}

/// A form field, trimmed ("" when absent).
pub fn field<'a>(form: &'a HashMap<String, String>, name: &str) -> &'a str {
    form.get(name).map_or("", |v| v.trim())
}

/// Runs a form through the API's own JSON validation (the same errors, naming the same fields)
/// and, when it passes, hands the input to `f` on the blocking pool, as the JSON routes do.
pub(crate) async fn submit<I, T, E, F>(
    state: &web::Data<AppState>,
    body: &serde_json::Value,
    f: F,
) -> Result<T, ApiError>
where
    I: serde::de::DeserializeOwned + Send + 'static,
    T: Send + 'static,
    E: Into<ApiError> + Send + 'static,
    F: FnOnce(&mut crate::db::DbConn, i64, I) -> Result<T, E> + Send + 'static,
{
    let input = crate::extract::parse_json::<I>(body.to_string().as_bytes())?;
    crate::state::db(state, move |c, now| f(c, now, input)).await
}

/// Splits a validation error into the form field it belongs to; other errors pass through.
pub fn field_error(e: ApiError, map: fn(&str) -> String) -> Result<FieldErrors, ConsoleError> {
    let mut errors = FieldErrors::default();
    match e {
        ApiError::Validation { field, message } => {
            errors.push(&map(&field), format!("{field}: {message}"));
        }
        ApiError::DuplicatePrefix(_) => errors.push("key_prefix", e.to_string()),
        ApiError::Conflict { .. } => errors.push("form", e.to_string()),
        ApiError::Unprocessable { field, .. } => errors.push(&map(field), e.to_string()),
        other => return Err(other.into()),
    }
    Ok(errors)
}

async fn index() -> HttpResponse {
    redirect("/console/projects")
}

async fn not_found() -> Result<HttpResponse, ConsoleError> {
    Err(ConsoleError::NotFound("no such console page".to_owned()))
}

async fn css() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .body(CSS)
}

async fn js() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .body(JS)
}

fn login_form(email: &str, error: Option<&str>) -> String {
    let errors = FieldErrors::default();
    layout::page(
        "Log in",
        None,
        html! {
            @if let Some(e) = error { p.error role="alert" #login-error { (e) } }
            form.card method="post" action="/console/login" {
                (layout::field("email", "Email", None, &errors, html! {
                    input type="email" id="email" name="email" value=(email) autocomplete="username" required autofocus;
                }))
                (layout::field("password", "Password", None, &errors, html! {
                    input type="password" id="password" name="password" autocomplete="current-password" required;
                }))
                button type="submit" { "Log in" }
            }
        },
    )
}

async fn login_page(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if session::current(&req, &state).await.is_ok() {
        return redirect("/console/projects");
    }
    html_response(actix_web::http::StatusCode::OK, login_form("", None))
}

async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<Form>,
) -> Result<HttpResponse, ConsoleError> {
    let email = field(&form, "email").to_owned();
    let password = form.get("password").cloned().unwrap_or_default();
    let input = Login {
        email: email.clone(),
        password,
    };
    let ttl = state.session_ttl_ms;
    let client = crate::throttle::client_address(&req, &state.trusted_proxies);
    let result = crate::auth::login(&state, input, client).await;
    match result {
        Ok(s) => {
            let cookie = session::session_cookie(&req, Some(&s.token), ttl / 1000);
            Ok(HttpResponse::SeeOther()
                .insert_header((header::LOCATION, "/console/projects"))
                .insert_header((
                    header::SET_COOKIE,
                    HeaderValue::from_str(&cookie).map_err(ApiError::internal)?,
                ))
                .finish())
        }
        Err(ApiError::InvalidCredentials) => Ok(html_response(
            actix_web::http::StatusCode::UNAUTHORIZED,
            login_form(&email, Some("Email or password is wrong.")),
        )),
        Err(ApiError::LoginThrottled { retry_after_s }) => {
            let message = format!(
                "Too many failed logins for this account or from this address. Try again in {retry_after_s} seconds."
            );
            Ok(HttpResponse::TooManyRequests()
                .content_type("text/html; charset=utf-8")
                .insert_header((header::RETRY_AFTER, retry_after_s.to_string()))
                .body(login_form(&email, Some(&message))))
        }
        Err(e) => Err(e.into()),
    }
}

async fn logout(
    req: HttpRequest,
    state: web::Data<AppState>,
    _: Posted<AnyRole>,
) -> Result<HttpResponse, ConsoleError> {
    // The cookie goes, and the token in it stops working too, should a copy of it exist.
    if let Some(token) = session::cookie_value(&req, session::COOKIE) {
        crate::auth::end_session_token(&state, &token).await?;
    }
    let cookie = session::session_cookie(&req, None, 0);
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/console/login"))
        .insert_header((
            header::SET_COOKIE,
            HeaderValue::from_str(&cookie).map_err(ApiError::internal)?,
        ))
        .finish())
}
