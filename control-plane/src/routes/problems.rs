//! The problem responses routes share, declared once for the OpenAPI document. A route lists
//! the sets whose causes it has, after its success response:
//! `responses((status = 200, body = KeyView), AuthErrors, ByIdErrors)`.
//!
//! A tuple written after a set replaces that set's entry for its status, which is how a route
//! names the codes of its own (`(status = 409, description = "already_revoked", ...)`).

use std::collections::BTreeMap;

use utoipa::openapi::{Content, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{IntoResponses, ToSchema as _};

use crate::error::Problem;

/// `application/problem+json` responses with a [`Problem`] body, one per (status, description).
fn problems(entries: &[(u16, &str)]) -> BTreeMap<String, RefOr<Response>> {
    entries
        .iter()
        .map(|&(status, description)| {
            let content = Content::new(Some(Ref::from_schema_name(Problem::name())));
            let response = ResponseBuilder::new()
                .description(description)
                .content("application/problem+json", content)
                .build();
            (status.to_string(), response.into())
        })
        .collect()
}

/// A route for some roles (`Authed<Readers>`, `Authed<Writers>`, ...): no or a bad token, a
/// role that may not, and the opaque 500 of any route that reaches the database.
#[derive(Debug)]
pub struct AuthErrors;

impl IntoResponses for AuthErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        problems(&[
            (401, "unauthorized"),
            (403, "forbidden"),
            (500, "internal_error"),
        ])
    }
}

/// A route open to every role (`Authed<AnyRole>`): as [`AuthErrors`] without the 403.
#[derive(Debug)]
pub struct AnyRoleErrors;

impl IntoResponses for AnyRoleErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        problems(&[(401, "unauthorized"), (500, "internal_error")])
    }
}

/// A JSON request body (`extract::Json`): not JSON, too large, not `application/json`, or a
/// field that is invalid.
#[derive(Debug)]
pub struct BodyErrors;

impl IntoResponses for BodyErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        problems(&[
            (400, "malformed_json"),
            (413, "payload_too_large"),
            (415, "unsupported_media_type"),
            (422, "validation_failed"),
        ])
    }
}

/// Query parameters (`extract::Query`): a parameter that is invalid.
#[derive(Debug)]
pub struct QueryErrors;

impl IntoResponses for QueryErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        problems(&[(422, "validation_failed")])
    }
}

/// A resource named by an id in the path that may not exist.
#[derive(Debug)]
pub struct ByIdErrors;

impl IntoResponses for ByIdErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        problems(&[(404, "not_found")])
    }
}
