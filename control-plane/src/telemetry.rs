//! Structured logs and the request middleware.
//!
//! Each request gets an id (a valid incoming `X-Request-Id`, else a new ULID), echoed in the
//! response and attached to every log line of the request. Logged: method, path, matched
//! route, status, latency and the actor id. Never logged: headers, query strings or bodies,
//! where keys, tokens and passwords travel.

use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse, ResponseError};
use tracing::Instrument as _;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::error::ApiError;
use crate::state::AppState;

/// `X-Request-Id`.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Installs the global subscriber: JSON lines (or human-readable text when `json` is false),
/// filtered by `RUST_LOG` (default `info`). Returns quietly if one is installed already.
pub fn init<W>(json: bool, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = if json {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.try_init()
    };
}

fn request_id(req: &ServiceRequest) -> String {
    req.headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map_or_else(|| ulid::Ulid::new().to_string(), str::to_owned)
}

/// Request id, span, access log, metrics, and problem+json for errors that did not come from
/// a handler (unknown route, wrong method).
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let id = request_id(&req);
    let method = req.method().to_string();
    let path = req.path().to_owned();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let span = tracing::info_span!("request", request_id = %id, method = %method, path = %path);
    let started = Instant::now();
    let may_write = !matches!(
        *req.method(),
        actix_web::http::Method::GET
            | actix_web::http::Method::HEAD
            | actix_web::http::Method::OPTIONS
    );
    let res = next.call(req).instrument(span.clone()).await;
    if may_write {
        // After the handler, so after its transaction committed: the next snapshot poll reads
        // the version again instead of answering from memory.
        if let Some(s) = &state {
            s.snapshots.note_write();
        }
    }
    let mut res = res?.map_into_boxed_body();
    let status = res.status();
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    let mut allow = None;
    // The console (/console) renders its own HTML error pages.
    if (status.is_client_error() || status.is_server_error())
        && !is_problem
        && !path.starts_with("/console")
    {
        let err = match status.as_u16() {
            404 => match res
                .request()
                .app_data::<web::Data<crate::routes::RouteTable>>()
                .and_then(|t| t.allowed_methods(&path))
            {
                Some(allowed) => {
                    allow = Some(allowed.join(", "));
                    ApiError::MethodNotAllowed
                }
                None => ApiError::NotFound(format!("no route for {method} {path}")),
            },
            405 => ApiError::MethodNotAllowed,
            413 => ApiError::PayloadTooLarge(crate::extract::BODY_LIMIT),
            415 => ApiError::UnsupportedMediaType("unsupported content type".to_owned()),
            400 => ApiError::MalformedJson("the request could not be read".to_owned()),
            _ if status.is_server_error() => {
                ApiError::Internal(anyhow::anyhow!("{status} from the framework"))
            }
            _ => ApiError::NotFound(format!("no route for {method} {path}")),
        };
        let mut fallback: HttpResponse = err.error_response();
        if let Some(v) = allow.and_then(|a| HeaderValue::from_str(&a).ok()) {
            fallback.headers_mut().insert(header::ALLOW, v);
        }
        res = res.into_response(fallback.map_into_boxed_body());
    }
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let actor = crate::auth::actor_of(res.request());
    let elapsed = started.elapsed();
    if let Some(state) = state {
        state
            .metrics
            .observe_request(&method, &route, status.as_u16(), elapsed.as_secs_f64());
    }
    span.in_scope(|| {
        tracing::info!(
            status = res.status().as_u16(),
            route = %route,
            actor = actor.as_deref().unwrap_or("-"),
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "request"
        );
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(REQUEST_ID, v);
    }
    Ok(res)
}
