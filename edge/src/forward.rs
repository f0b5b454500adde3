//! The boundary with the entry module (`edge/shim.mjs`), which is the only forwarder: a plan
//! crosses into JavaScript as a typed object, and answers made at the edge as runtime responses.

use wasm_bindgen::prelude::*;
use worker::{web_sys, Headers, Response, Result};

use crate::prepare::Plan;
use crate::respond::{self, Answer};

/// [`Plan`] as the entry module reads it. Each field is read once (`getter_with_clone`), after
/// which the entry module calls `free()`.
#[wasm_bindgen(getter_with_clone)]
#[derive(Debug)]
pub struct ForwardPlan {
    /// Remove `Authorization` (the key came in it).
    pub strip_authorization: bool,
    /// The origin URL.
    pub target: String,
    /// `Keygate-Key-Id`.
    pub key_id: String,
    /// `Keygate-Project-Id`.
    pub project_id: String,
    /// `Keygate-Environment`.
    pub environment: String,
    /// `Keygate-Signature`.
    pub signature: String,
    /// Headers to set on the origin's response (rate-limit state, CORS); absent when none, so
    /// the origin's response is handed back as it is.
    pub response_headers: Option<web_sys::Headers>,
}

impl ForwardPlan {
    /// The plan, with its response headers made runtime headers.
    pub fn new(plan: Plan) -> Result<Self> {
        let response_headers = if plan.response_headers.is_empty() {
            None
        } else {
            let h = Headers::new();
            for (k, v) in &plan.response_headers {
                h.set(k, v)?;
            }
            Some(h.0)
        };
        Ok(ForwardPlan {
            strip_authorization: plan.strip_authorization,
            target: plan.target,
            key_id: plan.key_id,
            project_id: plan.project_id,
            environment: plan.environment.to_owned(),
            signature: plan.signature,
            response_headers,
        })
    }
}

/// An answer made at the edge, as a runtime response.
pub fn to_response(answer: Answer) -> Result<Response> {
    let headers = Headers::new();
    for (k, v) in &answer.headers {
        headers.append(k, v)?;
    }
    let resp = if answer.body.is_empty() {
        Response::empty()?
    } else {
        Response::ok(answer.body)?
    };
    Ok(resp.with_status(answer.status).with_headers(headers))
}

/// `502 origin_unreachable`, for the entry module when its `fetch` to the origin fails.
pub fn origin_unreachable() -> Result<Response> {
    to_response(respond::problem(
        502,
        "origin_unreachable",
        "Origin unreachable",
        "The origin could not be reached.",
    ))
}
