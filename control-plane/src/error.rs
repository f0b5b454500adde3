//! The API's one error type and its rule: every error is `application/problem+json` with a
//! stable `code`. Each variant has one status (table in [`ApiError::status`]); 401 carries
//! `WWW-Authenticate: Bearer`; anything unexpected is an opaque 500 whose detail goes only to
//! the log.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

/// The problem+json body (RFC 9457).
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type: `urn:keygate:problem:<code>`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Short summary of the problem type.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What went wrong in this request.
    pub detail: String,
    /// Stable machine-readable code (snake_case).
    pub code: String,
}

/// Every error an endpoint can answer with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No token, or a token that is unknown, expired or deleted.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// A valid token whose role may not do this.
    #[error("this token's role may not do this")]
    Forbidden,
    /// No such resource (or route).
    #[error("{0}")]
    NotFound(String),
    /// The body is not JSON.
    #[error("{0}")]
    MalformedJson(String),
    /// The body is not `application/json`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The body exceeds the limit.
    #[error("request body exceeds {0} bytes")]
    PayloadTooLarge(usize),
    /// A field is invalid; `field` is its path in the body or query.
    #[error("{field}: {message}")]
    Validation {
        /// Path of the field (`restrictions.referrers[1]`).
        field: String,
        /// Why.
        message: String,
    },
    /// The key prefix is taken by another project.
    #[error("key_prefix: {0:?} is already used by another project")]
    DuplicatePrefix(String),
    /// No current or recent snapshot has this shard.
    #[error("no current or recent snapshot has shard {0}")]
    ShardNotFound(String),
    /// The request conflicts with the resource's state.
    #[error("{detail}")]
    Conflict {
        /// Stable code (`key_not_active`, `already_revoked`, ...).
        code: &'static str,
        /// Why.
        detail: String,
    },
    /// The request cannot apply to what it names (a logout with an API token).
    #[error("{detail}")]
    BadRequest {
        /// Stable code (`not_a_session`).
        code: &'static str,
        /// Why.
        detail: String,
    },
    /// A well-formed request that is refused for what it asks (a webhook URL on a private
    /// address): 422 with its own code.
    #[error("{field}: {detail}")]
    Unprocessable {
        /// Stable code (`webhook_target_forbidden`).
        code: &'static str,
        /// The offending field.
        field: &'static str,
        /// Why.
        detail: String,
    },
    /// A dependency (the database) cannot be reached: 503.
    #[error("{detail}")]
    ServiceUnavailable {
        /// Stable code (`database_unavailable`).
        code: &'static str,
        /// Why.
        detail: String,
    },
    /// Wrong email or password.
    #[error("email or password is wrong")]
    InvalidCredentials,
    /// Too many failed logins for this account or from this client; retry after the delay.
    #[error("too many failed logins for this account or from this address; try again in {retry_after_s} seconds")]
    LoginThrottled {
        /// Seconds to wait (the `Retry-After` header).
        retry_after_s: u64,
    },
    /// The method is not allowed on this path.
    #[error("this path does not accept this method; see the Allow header")]
    MethodNotAllowed,
    /// Anything unexpected. Logged, never shown.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// A validation error on `field`.
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Validation {
            field: field.into(),
            message: message.into(),
        }
    }

    /// A 404 for a resource kind and id.
    pub fn not_found(what: &str, id: &str) -> Self {
        ApiError::NotFound(format!("{what} {id:?} does not exist"))
    }

    /// Wraps an unexpected error.
    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        ApiError::Internal(e.into())
    }

    /// The variant-to-status table.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) | ApiError::InvalidCredentials => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) | ApiError::ShardNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MalformedJson(_) | ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Validation { .. }
            | ApiError::DuplicatePrefix(_)
            | ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::LoginThrottled { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::ServiceUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::ShardNotFound(_) => "shard_not_found",
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::Validation { .. } => "validation_failed",
            ApiError::DuplicatePrefix(_) => "duplicate_prefix",
            ApiError::Conflict { code, .. }
            | ApiError::BadRequest { code, .. }
            | ApiError::Unprocessable { code, .. }
            | ApiError::ServiceUnavailable { code, .. } => code,
            ApiError::InvalidCredentials => "invalid_credentials",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::LoginThrottled { .. } => "login_throttled",
            ApiError::Internal(_) => "internal_error",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "Unauthorized",
            ApiError::Forbidden => "Forbidden",
            ApiError::NotFound(_) | ApiError::ShardNotFound(_) => "Not found",
            ApiError::MalformedJson(_) => "Malformed JSON",
            ApiError::UnsupportedMediaType(_) => "Unsupported media type",
            ApiError::PayloadTooLarge(_) => "Payload too large",
            ApiError::Validation { .. } => "Validation failed",
            ApiError::DuplicatePrefix(_) => "Duplicate key prefix",
            ApiError::Unprocessable { .. } => "Unprocessable request",
            ApiError::Conflict { .. } => "Conflict",
            ApiError::BadRequest { .. } => "Bad request",
            ApiError::InvalidCredentials => "Invalid credentials",
            ApiError::MethodNotAllowed => "Method not allowed",
            ApiError::LoginThrottled { .. } => "Too many login attempts",
            ApiError::ServiceUnavailable { .. } => "Service unavailable",
            ApiError::Internal(_) => "Internal server error",
        }
    }

    /// The problem body.
    pub fn problem(&self) -> Problem {
        Problem {
            type_: keygate_shared::problem::problem_type(self.code()),
            title: self.title().to_owned(),
            status: self.status().as_u16(),
            detail: match self {
                ApiError::Internal(_) => "the server failed to handle this request".to_owned(),
                other => other.to_string(),
            },
            code: self.code().to_owned(),
        }
    }
}

/// The one mapping from the store's errors to the API's.
impl From<keygate_store::StoreError> for ApiError {
    fn from(e: keygate_store::StoreError) -> Self {
        use keygate_store::StoreError;
        match e {
            StoreError::NotFound(detail) => ApiError::NotFound(detail),
            StoreError::Validation { field, message } => ApiError::Validation { field, message },
            StoreError::DuplicatePrefix(prefix) => ApiError::DuplicatePrefix(prefix),
            StoreError::Conflict { code, detail } => ApiError::Conflict {
                code: code.as_str(),
                detail,
            },
            StoreError::Internal(cause) => ApiError::Internal(cause),
        }
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(e: diesel::result::Error) -> Self {
        ApiError::Internal(e.into())
    }
}

impl From<r2d2::Error> for ApiError {
    fn from(e: r2d2::Error) -> Self {
        ApiError::Internal(e.into())
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(e: actix_web::error::BlockingError) -> Self {
        ApiError::Internal(anyhow::anyhow!("blocking task failed: {e}"))
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(e) = self {
            tracing::error!(error = format!("{e:#}"), "internal error");
        }
        let mut resp = HttpResponse::build(self.status());
        resp.insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        ));
        if let ApiError::LoginThrottled { retry_after_s } = self {
            resp.insert_header((header::RETRY_AFTER, retry_after_s.to_string()));
        }
        if self.status() == StatusCode::UNAUTHORIZED {
            resp.insert_header((
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"keygate\""),
            ));
        }
        resp.body(serde_json::to_vec(&self.problem()).unwrap_or_default())
    }
}

/// Runs a blocking closure on the blocking pool, flattening the error.
pub async fn blocking<T, E, F>(f: F) -> Result<T, ApiError>
where
    F: FnOnce() -> Result<T, E> + Send + 'static,
    E: Into<ApiError> + Send + 'static,
    T: Send + 'static,
{
    actix_web::web::block(f).await?.map_err(Into::into)
}
