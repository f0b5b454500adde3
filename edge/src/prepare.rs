//! The steps of the request pipeline that wait on nothing, shared by the fast path and the full
//! pipeline so that the two cannot drift: [`prepare`] finds the path the origin will route, the
//! key and where it came from, and the facts the evaluation needs; [`Decided::of`] reads a
//! verdict; [`conclude`] turns a decision into a refusal or a plan for forwarding.
//!
//! No I/O and no runtime types: every step is tested natively.

use std::borrow::Cow;
use std::net::IpAddr;

use keygate_shared::{Code, EnvironmentRule, LimitInfo, RequestFacts, Verdict};

use crate::config::EdgeConfig;
use crate::request::{self, KeySource};
use crate::respond::{self, Answer};

/// Reserved path of the edge's status endpoint (token-protected).
pub const STATUS_PATH: &str = "/.well-known/keygate/status";
/// Reserved path that runs the scheduled KV copy on demand (token-protected).
pub const SYNC_PATH: &str = "/.well-known/keygate/sync-kv";

/// What the pipeline reads of a request: its URL as the runtime gives it and a few headers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Incoming<'a> {
    /// The absolute URL (`request.url`).
    pub url: &'a str,
    /// The method, as sent.
    pub method: &'a str,
    /// `Authorization`.
    pub authorization: Option<&'a str>,
    /// `X-API-Key`.
    pub x_api_key: Option<&'a str>,
    /// `Origin`.
    pub origin: Option<&'a str>,
    /// `Referer`.
    pub referer: Option<&'a str>,
    /// `CF-Connecting-IP`, set by the runtime.
    pub ip: Option<&'a str>,
    /// `Host`.
    pub host: Option<&'a str>,
    /// `Access-Control-Request-Method` (preflights only).
    pub request_method: Option<&'a str>,
    /// `Access-Control-Request-Headers` (preflights only).
    pub request_headers: Option<&'a str>,
}

/// A request ready to be decided.
#[derive(Debug)]
pub struct Prepared<'a> {
    /// The normalised path: what is decided, signed and forwarded (docs/edge.md, "Paths").
    pub path: Cow<'a, str>,
    /// The raw query, as sent.
    pub query: Option<Cow<'a, str>>,
    /// The method.
    pub method: &'a str,
    /// The presented key.
    pub key: String,
    /// Where the key was found.
    pub source: KeySource,
    /// `Origin`.
    pub origin: Option<&'a str>,
    /// `Referer`.
    pub referer: Option<&'a str>,
    /// The client IP.
    pub ip: Option<IpAddr>,
    /// Which environments the receiving host serves.
    pub environment: EnvironmentRule,
}

impl Prepared<'_> {
    /// The evaluation's input.
    pub fn facts(&self) -> RequestFacts<'_> {
        RequestFacts {
            key: Some(&self.key),
            origin: self.origin,
            referer: self.referer,
            ip: self.ip,
            method: Some(self.method),
            path: Some(&self.path),
            environment: self.environment,
        }
    }
}

/// The first step's outcome.
#[derive(Debug)]
pub enum Step<'a> {
    /// Answered at once, with no snapshot: a preflight, an unusable URL or path, no key.
    Answer(Answer),
    /// One of the edge's own endpoints (the normalised path).
    Internal(Cow<'a, str>),
    /// A key to decide.
    Decide(Prepared<'a>),
}

/// The path and raw query of the runtime's URL, parsing it in full only when it is not in the
/// runtime's normal form.
fn path_and_query(url: &str) -> Option<(Cow<'_, str>, Option<Cow<'_, str>>)> {
    if let Some((path, query)) = request::split_normalised_url(url) {
        return Some((Cow::Borrowed(path), query.map(Cow::Borrowed)));
    }
    let parsed = worker::Url::parse(url).ok()?;
    Some((
        Cow::Owned(parsed.path().to_owned()),
        parsed.query().map(|q| Cow::Owned(q.to_owned())),
    ))
}

/// The host a request was sent to: `Host`, else the URL's.
fn host_of<'a>(incoming: &Incoming<'a>) -> Option<Cow<'a, str>> {
    if let Some(h) = incoming.host {
        return Some(Cow::Borrowed(h));
    }
    let parsed = worker::Url::parse(incoming.url).ok()?;
    parsed.host_str().map(|h| Cow::Owned(h.to_owned()))
}

/// Everything about a request that can be known before its key is looked up.
pub fn prepare<'a>(incoming: &Incoming<'a>, cfg: &EdgeConfig) -> Step<'a> {
    // A URL the runtime could not give in a parseable form (two `Host` headers, say) is the
    // client's fault, not an internal error.
    // Readable by any origin, as `missing_key` is: no key has been looked at.
    let readable = |mut answer: Answer| {
        if let Some(o) = incoming.origin.filter(|o| !o.is_empty()) {
            answer.headers.extend(respond::cors_headers(o));
        }
        Step::Answer(answer)
    };
    let Some((raw_path, query)) = path_and_query(incoming.url) else {
        return readable(respond::problem(
            400,
            "invalid_url",
            "Invalid URL",
            "The request URL cannot be parsed.",
        ));
    };
    let path = match keygate_shared::path::normalize(&raw_path) {
        Ok(Cow::Borrowed(_)) => raw_path,
        Ok(Cow::Owned(p)) => Cow::Owned(p),
        Err(e) => {
            return readable(respond::problem(
                400,
                "invalid_path",
                "Invalid path",
                &format!("The request path cannot be normalised safely: {e}."),
            ))
        }
    };
    if incoming.method == "OPTIONS" {
        if let (Some(o), Some(m)) = (incoming.origin, incoming.request_method) {
            return Step::Answer(respond::preflight(o, m, incoming.request_headers));
        }
    }
    if path == STATUS_PATH || path == SYNC_PATH {
        return Step::Internal(path);
    }
    let Some((key, source)) =
        request::extract_key(incoming.authorization, incoming.x_api_key, query.as_deref())
    else {
        return Step::Answer(refusal(Code::MissingKey, None, incoming.origin, true));
    };
    let host = host_of(incoming);
    Step::Decide(Prepared {
        path,
        query,
        method: incoming.method,
        key,
        source,
        origin: incoming.origin,
        referer: incoming.referer,
        ip: incoming.ip.and_then(|v| v.trim().parse().ok()),
        environment: cfg.environment_for_host(host.as_deref()),
    })
}

/// The key a decision is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIds {
    /// The key's id.
    pub key_id: String,
    /// Its project.
    pub project_id: String,
    /// Its environment (`live` or `test`).
    pub environment: &'static str,
}

/// A verdict, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    /// The outcome.
    pub code: Code,
    /// Rate-limit or quota state, to report in headers.
    pub limits: Option<LimitInfo>,
    /// The key, when it was found.
    pub key: Option<KeyIds>,
    /// Whether the response may carry CORS headers for the request's `Origin`.
    pub cors: bool,
}

impl Decided {
    /// Reads `verdict` for the request `p`.
    pub fn of(verdict: Verdict<'_>, p: &Prepared<'_>) -> Self {
        let record = verdict.record;
        Decided {
            code: verdict.code,
            limits: verdict.limits,
            key: record.map(|r| KeyIds {
                key_id: r.key_id.clone(),
                project_id: r.project_id.clone(),
                environment: r.environment.as_str(),
            }),
            cors: respond::cors_allowed(p.origin, p.referer, record.map(|r| &r.referrers[..])),
        }
    }
}

/// How to forward an accepted request. The entry module is the only forwarder: it copies the
/// request's headers, removes the key (`X-API-Key` always, `Authorization` when
/// `strip_authorization`), `Proxy-Authorization` and every client-sent `Keygate-*` header, sets
/// the four `Keygate-*` headers, sends it to `target` without following redirects, and adds
/// `response_headers` to the origin's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The key came in `Authorization: Bearer`.
    pub strip_authorization: bool,
    /// The origin URL, with the normalised path and without any `key` query parameter.
    pub target: String,
    /// `Keygate-Key-Id`.
    pub key_id: String,
    /// `Keygate-Project-Id`.
    pub project_id: String,
    /// `Keygate-Environment`.
    pub environment: &'static str,
    /// `Keygate-Signature`.
    pub signature: String,
    /// Headers the edge adds to the origin's response: rate-limit state and CORS.
    pub response_headers: Vec<(&'static str, String)>,
}

/// What to do with a decided request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Answer at the edge.
    Refuse(Answer),
    /// Forward to the origin.
    Forward(Plan),
}

/// The refusal of `code`, with CORS headers when they may be read.
pub fn refusal(code: Code, limits: Option<&LimitInfo>, origin: Option<&str>, cors: bool) -> Answer {
    let mut answer = respond::refusal(code, limits, respond::detail_for(code));
    if cors {
        if let Some(o) = origin {
            answer.headers.extend(respond::cors_headers(o));
        }
    }
    answer
}

/// The answer when no snapshot can decide: `503 snapshot_unavailable`, readable by any origin
/// (there is no key to restrict it).
pub fn unavailable(origin: Option<&str>, referer: Option<&str>) -> Answer {
    let cors = respond::cors_allowed(origin, referer, None);
    refusal(Code::SnapshotUnavailable, None, origin, cors)
}

/// A refusal, or the plan for forwarding a valid request signed at `now_ms`.
pub fn conclude(cfg: &EdgeConfig, p: &Prepared<'_>, decided: Decided, now_ms: i64) -> Outcome {
    let key = match decided.key {
        Some(key) if decided.code == Code::Valid => key,
        _ => {
            return Outcome::Refuse(refusal(
                decided.code,
                decided.limits.as_ref(),
                p.origin,
                decided.cors,
            ))
        }
    };
    let query = p.query.as_deref().and_then(|q| {
        if request::query_has_param(q, "key") {
            request::strip_key_param(q).map(Cow::Owned)
        } else {
            Some(Cow::Borrowed(q))
        }
    });
    let target = request::forward_url(&cfg.origin_url, &p.path, query.as_deref());
    let signature = cfg.origin_signer.sign(
        now_ms.div_euclid(1000),
        &keygate_shared::origin::Signed {
            method: p.method,
            path_and_query: request::url_path_and_query(&target),
            key_id: &key.key_id,
            project_id: &key.project_id,
            environment: key.environment,
        },
    );
    let mut response_headers = Vec::new();
    if let Some(info) = &decided.limits {
        response_headers.extend(respond::limit_headers(info));
    }
    if let Some(o) = p.origin.filter(|_| decided.cors) {
        response_headers.extend(respond::cors_headers(o));
    }
    Outcome::Forward(Plan {
        strip_authorization: p.source == KeySource::Authorization,
        target,
        key_id: key.key_id,
        project_id: key.project_id,
        environment: key.environment,
        signature,
        response_headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &[(&str, &str)]) -> EdgeConfig {
        let mut vars = vec![
            ("CONTROL_PLANE_URL", "http://127.0.0.1:1"),
            ("ORIGIN_URL", "https://origin.example/base"),
            ("EDGE_TOKEN", "t"),
            (
                "SNAPSHOT_PUBLIC_KEYS",
                "O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik",
            ),
            ("ORIGIN_HMAC_SECRET", "s3cret"),
        ];
        vars.extend_from_slice(extra);
        EdgeConfig::from_lookup(|name| {
            vars.iter()
                .rev()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
        .expect("config")
    }

    fn incoming(url: &str) -> Incoming<'_> {
        Incoming {
            url,
            method: "GET",
            ..Incoming::default()
        }
    }

    fn decide(step: Step<'_>) -> Prepared<'_> {
        match step {
            Step::Decide(p) => p,
            other => panic!("not a key to decide: {other:?}"),
        }
    }

    fn answer(step: Step<'_>) -> Answer {
        match step {
            Step::Answer(a) => a,
            other => panic!("not an answer: {other:?}"),
        }
    }

    #[test]
    fn the_path_decided_is_the_one_the_origin_routes() {
        let c = cfg(&[]);
        let i = Incoming {
            x_api_key: Some("kg_x"),
            ..incoming("https://edge.example//admin/./x/../?a=1")
        };
        let p = decide(prepare(&i, &c));
        assert_eq!(p.path, "/admin/");
        assert_eq!(p.query.as_deref(), Some("a=1"));
        assert_eq!(p.source, KeySource::ApiKeyHeader);
        assert_eq!(p.facts().path, Some("/admin/"));
    }

    #[test]
    fn a_key_in_the_query_is_found_and_never_forwarded() {
        let c = cfg(&[("ORIGIN_URL", "https://origin.example")]);
        let i = incoming("https://edge.example/orders/1?expand=items&key=kg_abc");
        let p = decide(prepare(&i, &c));
        assert_eq!((p.key.as_str(), p.source), ("kg_abc", KeySource::Query));
        let decided = Decided {
            code: Code::Valid,
            limits: None,
            key: Some(KeyIds {
                key_id: "key_1".into(),
                project_id: "prj_1".into(),
                environment: "live",
            }),
            cors: false,
        };
        let Outcome::Forward(plan) = conclude(&c, &p, decided, 1_700_000_000_000) else {
            panic!("refused");
        };
        assert_eq!(plan.target, "https://origin.example/orders/1?expand=items");
        assert!(!plan.strip_authorization);
        assert!(plan.response_headers.is_empty());
        // The signature covers what the origin receives (the README's known answer).
        assert!(
            plan.signature
                .ends_with("v2=ab8e238c0d8881b9ad87f9e989152257d4ee665d59c4782c4da7196f7b481dba"),
            "{}",
            plan.signature
        );
    }

    #[test]
    fn early_answers_need_no_snapshot() {
        let c = cfg(&[]);
        let a = answer(prepare(&incoming("https://edge.example/x"), &c));
        assert_eq!(a.status, 401);
        assert!(a.body.contains("\"missing_key\""), "{}", a.body);
        assert!(
            a.body.contains("urn:keygate:problem:missing_key"),
            "{}",
            a.body
        );
        let bad = Incoming {
            x_api_key: Some("kg_x"),
            ..incoming("https://edge.example/a%2fb/admin")
        };
        let a = answer(prepare(&bad, &c));
        assert_eq!(a.status, 400, "{}", a.body);
        assert!(a.body.contains("invalid_path"), "{}", a.body);
        // A browser app can read why, from any origin, as for a missing key.
        let from_app = Incoming {
            origin: Some("https://app.example"),
            ..bad
        };
        let a = answer(prepare(&from_app, &c));
        assert!(
            a.headers
                .iter()
                .any(|(n, v)| *n == "Access-Control-Allow-Origin" && v == "https://app.example"),
            "{:?}",
            a.headers
        );
        let pre = Incoming {
            method: "OPTIONS",
            origin: Some("https://app.example"),
            request_method: Some("POST"),
            ..incoming("https://edge.example/x")
        };
        assert_eq!(answer(prepare(&pre, &c)).status, 204);
        assert!(matches!(
            prepare(
                &incoming("https://edge.example/.well-known/keygate/status"),
                &c
            ),
            Step::Internal(_)
        ));
        assert_eq!(answer(prepare(&incoming("not a url"), &c)).status, 400);
    }

    #[test]
    fn the_host_comes_from_the_header_else_the_url() {
        let c = cfg(&[("HOST_ENVIRONMENTS", r#"{"api.example":"live"}"#)]);
        let with_header = Incoming {
            x_api_key: Some("k"),
            host: Some("api.example"),
            ..incoming("https://other.example/x")
        };
        assert_eq!(
            decide(prepare(&with_header, &c)).environment,
            EnvironmentRule::Only(keygate_shared::Environment::Live)
        );
        let from_url = Incoming {
            x_api_key: Some("k"),
            ..incoming("https://api.example/x")
        };
        assert_eq!(
            decide(prepare(&from_url, &c)).environment,
            EnvironmentRule::Only(keygate_shared::Environment::Live)
        );
        let unmapped = Incoming {
            x_api_key: Some("k"),
            host: Some("elsewhere.example"),
            ..incoming("https://api.example/x")
        };
        assert_eq!(
            decide(prepare(&unmapped, &c)).environment,
            EnvironmentRule::Unmapped
        );
    }

    #[test]
    fn a_refusal_or_a_plan_carries_cors_and_limit_headers() {
        let c = cfg(&[]);
        let i = Incoming {
            authorization: Some("Bearer kg_abc"),
            origin: Some("https://app.example"),
            ..incoming("https://edge.example/x")
        };
        let p = decide(prepare(&i, &c));
        let info = LimitInfo {
            limit: 5,
            remaining: 4,
            reset_seconds: 60,
            retry_after_seconds: None,
        };
        let ids = KeyIds {
            key_id: "key_1".into(),
            project_id: "prj_1".into(),
            environment: "test",
        };
        let valid = Decided {
            code: Code::Valid,
            limits: Some(info),
            key: Some(ids.clone()),
            cors: true,
        };
        let Outcome::Forward(plan) = conclude(&c, &p, valid, 0) else {
            panic!("refused");
        };
        assert!(plan.strip_authorization);
        let names: Vec<&str> = plan.response_headers.iter().map(|(n, _)| *n).collect();
        assert!(
            names.contains(&"RateLimit-Remaining")
                && names.contains(&"Access-Control-Allow-Origin")
        );
        let refused = Decided {
            code: Code::ReferrerNotAllowed,
            limits: None,
            key: Some(ids),
            cors: false,
        };
        let Outcome::Refuse(a) = conclude(&c, &p, refused, 0) else {
            panic!("forwarded");
        };
        assert_eq!(a.status, 403);
        assert!(a
            .headers
            .iter()
            .all(|(n, _)| *n != "Access-Control-Allow-Origin"));
    }
}
