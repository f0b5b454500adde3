//! The boundary with the entry module (`edge/shim.mjs`), which is the only forwarder: a plan
//! crosses into JavaScript as a typed object, and answers made at the edge as runtime responses.

use wasm_bindgen::prelude::*;
use worker::{web_sys, Headers, Response, Result};

use crate::prepare::Plan;
use crate::respond::{self, Answer};

// The plan is made on the JavaScript side in one call: a class whose fields the entry module
// reads as plain properties. A Wasm-exported struct would cost the forwarder a call into Wasm,
// an allocation and a free per field, and a finalizer registration per plan.
#[wasm_bindgen(inline_js = r#"
export class ForwardPlan {
  constructor(stripAuthorization, target, keyId, projectId, environment, signature, responseHeaders) {
    this.stripAuthorization = stripAuthorization;
    this.target = target;
    this.keyId = keyId;
    this.projectId = projectId;
    this.environment = environment;
    this.signature = signature;
    this.responseHeaders = responseHeaders;
  }
}
"#)]
extern "C" {
    /// [`Plan`] as the entry module reads it: `stripAuthorization`, `target`, `keyId`,
    /// `projectId`, `environment`, `signature` and `responseHeaders` (a `Headers`, or
    /// `undefined` when there are none, so the origin's response is handed back as it is).
    #[derive(Debug)]
    pub type ForwardPlan;

    #[wasm_bindgen(constructor)]
    #[allow(clippy::too_many_arguments)]
    fn construct(
        strip_authorization: bool,
        target: &str,
        key_id: &str,
        project_id: &str,
        environment: &str,
        signature: &str,
        response_headers: Option<web_sys::Headers>,
    ) -> ForwardPlan;
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
        Ok(ForwardPlan::construct(
            plan.strip_authorization,
            &plan.target,
            &plan.key_id,
            &plan.project_id,
            plan.environment,
            &plan.signature,
            response_headers,
        ))
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
