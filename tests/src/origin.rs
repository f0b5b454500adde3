//! The demo origin of the local stack and the end-to-end tests: it records every request, checks
//! the edge's `Keygate-Signature` with the shared crate as a real origin would (refusing a bad
//! one with 401), and answers with a JSON echo of what the edge told it.

use serde_json::json;

use crate::http::{StubRequest, StubResponse, StubServer};

/// One request as the origin saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The request.
    pub request: StubRequest,
    /// Whether `Keygate-Signature` verified.
    pub signature_valid: Option<bool>,
}

impl Recorded {
    /// A header, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.request.header(name)
    }
    /// Path and query as received.
    pub fn target(&self) -> &str {
        &self.request.target
    }
}

/// A running origin; stops when dropped.
#[derive(Debug)]
pub struct Origin {
    server: StubServer,
    secret: Vec<u8>,
}

#[allow(clippy::disallowed_methods)] // The origin is its own process boundary.
fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn signature_valid(secret: &[u8], req: &StubRequest) -> bool {
    let (Some(sig), Some(key_id), Some(project_id), Some(environment)) = (
        req.header("keygate-signature"),
        req.header("keygate-key-id"),
        req.header("keygate-project-id"),
        req.header("keygate-environment"),
    ) else {
        return false;
    };
    // Version 2 only: every field the origin relies on is covered.
    keygate_shared::origin::verify_v2(
        secret,
        sig,
        &keygate_shared::origin::Signed {
            method: &req.method,
            path_and_query: &req.target,
            key_id,
            project_id,
            environment,
        },
        now_s(),
        keygate_shared::origin::DEFAULT_TOLERANCE_SECONDS,
    )
    .is_ok()
}

impl Origin {
    /// Starts on `127.0.0.1:port` (0: any free port), verifying signatures with `secret`.
    pub fn start(port: u16, secret: Vec<u8>) -> std::io::Result<Origin> {
        let key = secret.clone();
        let server = StubServer::start_on(port, move |req| {
            if !signature_valid(&key, req) {
                return StubResponse::json(
                    401,
                    json!({"error": "missing or bad Keygate-Signature"}).to_string(),
                );
            }
            let body = json!({
                "origin": "keygate-demo",
                "method": req.method,
                "path": req.path(),
                "key_id": req.header("keygate-key-id"),
                "project_id": req.header("keygate-project-id"),
                "environment": req.header("keygate-environment"),
            });
            // `Vary` as origins that compress send it: the edge adds to it, never replaces it.
            StubResponse::json(200, body.to_string())
                .with_header("X-Demo-Origin", "1")
                .with_header("Vary", "Accept-Encoding")
        })?;
        Ok(Origin { server, secret })
    }

    /// The base URL.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Everything received so far, oldest first.
    pub fn recorded(&self) -> Vec<Recorded> {
        self.server
            .received()
            .into_iter()
            .map(|request| Recorded {
                signature_valid: Some(signature_valid(&self.secret, &request)),
                request,
            })
            .collect()
    }

    /// Number of requests received so far.
    pub fn count(&self) -> usize {
        self.server.received().len()
    }
}
