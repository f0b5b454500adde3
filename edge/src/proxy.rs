//! The request pipeline of contract section 4: take the key, decide with the shared evaluation
//! function against the isolate's snapshot, answer refusals at the edge, forward the rest.

use std::cell::RefCell;
use std::net::IpAddr;
use std::rc::Rc;

use keygate_shared::{
    evaluate, Code, Evaluation, LimitDecision, LimitInfo, RequestFacts, SnapshotIndex,
};
use worker::{
    console_error, console_log, Context, Env, Fetch, Headers, Method, Request, RequestInit,
    RequestRedirect, Response, Result,
};

use worker::web_sys;

use crate::config::EdgeConfig;
use crate::holder::{self, Plan};
use crate::request::{self, KeySource};
use crate::respond::{self, Answer};
use crate::usage::{Batch, Caller, UsageBuffer};

thread_local! {
    static CONFIG: RefCell<Option<Rc<EdgeConfig>>> = const { RefCell::new(None) };
    static USAGE: RefCell<UsageBuffer> = RefCell::new(UsageBuffer::default());
}

/// Reserved path prefix for the edge's own endpoints (token-protected).
pub const STATUS_PATH: &str = "/.well-known/keygate/status";
/// Runs the scheduled KV copy on demand (token-protected).
pub const SYNC_PATH: &str = "/.well-known/keygate/sync-kv";

/// Unix milliseconds from the runtime's clock.
pub fn now_ms() -> i64 {
    // The static `Date.now()`: no Date object per call.
    worker::js_sys::Date::now() as i64
}

/// The isolate's configuration, read once.
pub fn config(env: &Env) -> std::result::Result<Rc<EdgeConfig>, String> {
    if let Some(c) = CONFIG.with(|c| c.borrow().clone()) {
        return Ok(c);
    }
    let lookup = |name: &str| {
        env.var(name)
            .map(|v| v.to_string())
            .or_else(|_| env.secret(name).map(|v| v.to_string()))
            .ok()
    };
    let cfg = Rc::new(EdgeConfig::from_lookup(lookup).map_err(|e| e.to_string())?);
    CONFIG.with(|c| *c.borrow_mut() = Some(Rc::clone(&cfg)));
    Ok(cfg)
}

fn to_response(answer: Answer) -> Result<Response> {
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

fn problem(status: u16, code: &str, title: &str, detail: &str) -> Result<Response> {
    to_response(Answer {
        status,
        headers: vec![("Content-Type", "application/problem+json".to_owned())],
        body: serde_json::json!({
            "type": format!("https://keygate.dev/problems/{code}"),
            "title": title, "status": status, "detail": detail, "code": code,
        })
        .to_string(),
    })
}

/// Handles one request; never panics, and an internal failure becomes a problem+json 5xx.
pub async fn handle(req: Request, env: Env, ctx: Context) -> Result<Response> {
    let cfg = match config(&env) {
        Ok(c) => c,
        Err(e) => {
            console_error!("keygate-edge: configuration error: {e}");
            return problem(
                500,
                "edge_misconfigured",
                "Edge misconfigured",
                "The edge's configuration is invalid; see its logs.",
            );
        }
    };
    match handle_inner(req, &env, &ctx, &cfg).await {
        Ok(r) => Ok(r),
        Err(e) => {
            console_error!("keygate-edge: internal error: {e}");
            problem(
                500,
                "internal_error",
                "Internal error",
                "The edge failed to handle this request.",
            )
        }
    }
}

struct Decided {
    code: Code,
    limits: Option<LimitInfo>,
    /// `(key_id, project_id, environment)` when the key was found.
    key: Option<(String, String, &'static str)>,
    cors: bool,
}

async fn handle_inner(
    req: Request,
    env: &Env,
    ctx: &Context,
    cfg: &Rc<EdgeConfig>,
) -> Result<Response> {
    let now = now_ms();
    // The runtime builds the URL from the request line and `Host`; one it cannot parse (two
    // `Host` headers, say) is the client's fault, not an internal error.
    let Ok(url) = req.url() else {
        return problem(
            400,
            "invalid_url",
            "Invalid URL",
            "The request URL cannot be parsed.",
        );
    };
    // Decided and forwarded on the path the origin will route (docs/edge.md, "Paths").
    let path = match keygate_shared::path::normalize(url.path()) {
        Ok(p) => p.into_owned(),
        Err(e) => return invalid_path(e),
    };
    let query = url.query().map(str::to_owned);
    let method = req.method();
    let h = req.headers();
    let origin_h = h.get("Origin")?;
    let referer_h = h.get("Referer")?;

    if method == Method::Options {
        if let (Some(o), Some(m)) = (origin_h.as_deref(), h.get("Access-Control-Request-Method")?) {
            let req_headers = h.get("Access-Control-Request-Headers")?;
            return to_response(respond::preflight(o, &m, req_headers.as_deref()));
        }
    }
    if path == STATUS_PATH || path == SYNC_PATH {
        return internal_endpoint(&req, &path, env, cfg, now).await;
    }

    let Some((key, source)) = request::extract_key(
        h.get("Authorization")?.as_deref(),
        h.get("X-API-Key")?.as_deref(),
        query.as_deref(),
    ) else {
        return refuse(Code::MissingKey, None, origin_h.as_deref(), true);
    };
    let ip: Option<IpAddr> = h
        .get("CF-Connecting-IP")?
        .and_then(|v| v.trim().parse().ok());
    let host = h.get("Host")?.or_else(|| url.host_str().map(str::to_owned));
    let method_s = method.to_string();
    let facts = RequestFacts {
        key: Some(&key),
        origin: origin_h.as_deref(),
        referer: referer_h.as_deref(),
        ip,
        method: Some(&method_s),
        path: Some(&path),
        environment: cfg.environment_for_host(host.as_deref()),
    };

    let mut index: Rc<SnapshotIndex> = match holder::plan(cfg, now) {
        Plan::Use { index, refresh } => {
            if refresh {
                let (c, e) = (Rc::clone(cfg), env.clone());
                ctx.wait_until(async move { holder::refresh(&c, &e, now).await });
            }
            index
        }
        Plan::Revalidate {
            index,
            start,
            deadline_ms,
        } => holder::revalidate(cfg, env, ctx, now, index, start, deadline_ms).await,
        Plan::RefreshNow => {
            holder::load_now(cfg, env, now).await;
            match holder::current(cfg, now) {
                Some(i) => i,
                None => return unavailable(origin_h.as_deref(), referer_h.as_deref()),
            }
        }
        Plan::Unavailable => return unavailable(origin_h.as_deref(), referer_h.as_deref()),
    };

    let decided = decide(&mut index, &facts, now, env, cfg).await;
    let decided = match decided {
        Ok(d) => d,
        Err(Failure::Shard(e)) => {
            console_error!("keygate-edge: {e}");
            return unavailable(origin_h.as_deref(), referer_h.as_deref());
        }
        Err(Failure::Limiter(e)) => {
            console_error!("keygate-edge: limiter failed: {e}");
            return problem(
                503,
                "limiter_unavailable",
                "Rate limiter unavailable",
                "The rate limiter could not be reached; retry shortly.",
            );
        }
    };

    if let Some((key_id, _, _)) = &decided.key {
        let caller = Caller {
            ip,
            origin: origin_h.as_deref(),
            referer: referer_h.as_deref(),
        };
        record_usage(key_id, decided.code, &caller, now, cfg, ctx);
    }
    if decided.code != Code::Valid {
        return refuse(
            decided.code,
            decided.limits.as_ref(),
            origin_h.as_deref(),
            decided.cors,
        );
    }
    let Some((key_id, project_id, environment)) = decided.key else {
        return problem(
            500,
            "internal_error",
            "Internal error",
            "A valid verdict without a key.",
        );
    };

    // Forward, with the key removed from all three places whichever it was taken from, and no
    // client-sent `Keygate-*` header. Copying the header list in one call and deleting a few
    // names keeps the hot path to a handful of crossings into JavaScript.
    let fwd = Headers(web_sys::Headers::new_with_headers(
        req.inner().headers().as_ref(),
    )?);
    if source == KeySource::Authorization {
        fwd.delete("Authorization")?;
    }
    fwd.delete("X-API-Key")?;
    for name in request::FORWARD_STRIPPED {
        fwd.delete(name)?;
    }
    let client_keygate: Vec<String> = fwd
        .keys()
        .filter(|n| request::is_keygate_header(n))
        .collect();
    for name in client_keygate {
        fwd.delete(&name)?;
    }
    let fwd_query = query.as_deref().and_then(request::strip_key_param);
    let (target, signature) = signed_target(
        cfg,
        &path,
        fwd_query.as_deref(),
        &method_s,
        (&key_id, &project_id, environment),
        now,
    );
    // `set` replaces any value a client sent, so these cannot be forged.
    fwd.set("Keygate-Key-Id", &key_id)?;
    fwd.set("Keygate-Project-Id", &project_id)?;
    fwd.set("Keygate-Environment", environment)?;
    fwd.set("Keygate-Signature", &signature)?;
    // The body streams through untouched.
    let body = match method {
        Method::Get | Method::Head => None,
        _ => req.inner().body().map(Into::into),
    };
    let mut init = RequestInit::new();
    init.with_method(method)
        .with_headers(fwd)
        .with_body(body)
        .with_redirect(RequestRedirect::Manual);
    let upstream = match Fetch::Request(Request::new_with_init(&target, &init)?)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => {
            console_error!("keygate-edge: origin unreachable: {e}");
            return problem(
                502,
                "origin_unreachable",
                "Origin unreachable",
                "The origin could not be reached.",
            );
        }
    };
    let cors_origin = origin_h.as_deref().filter(|_| decided.cors);
    if decided.limits.is_none() && cors_origin.is_none() {
        // Nothing to add: hand the origin's response back as it is.
        return Ok(upstream);
    }
    let status = upstream.status_code();
    let headers = Headers(web_sys::Headers::new_with_headers(
        upstream.headers().0.as_ref(),
    )?);
    if let Some(info) = &decided.limits {
        for (k, v) in respond::limit_headers(info) {
            headers.set(k, &v)?;
        }
    }
    if let Some(o) = cors_origin {
        for (k, v) in respond::cors_headers(o) {
            headers.set(k, &v)?;
        }
    }
    let (_, body) = upstream.into_parts();
    Ok(Response::from_body(body)?
        .with_status(status)
        .with_headers(headers))
}

enum Failure {
    Shard(String),
    Limiter(String),
}

/// Runs the evaluation, loading a shard or consulting the key's limiter when it asks.
async fn decide(
    index: &mut Rc<SnapshotIndex>,
    facts: &RequestFacts<'_>,
    now: i64,
    env: &Env,
    cfg: &EdgeConfig,
) -> std::result::Result<Decided, Failure> {
    // The first pass may need the key's shard; the second cannot.
    for _ in 0..2 {
        let current = Rc::clone(index);
        let verdict = match evaluate(&*current, facts, now, None) {
            Evaluation::Done(v) => v,
            Evaluation::NeedsShard(shard) => {
                *index = holder::load_shard(cfg, env, current, shard)
                    .await
                    .map_err(Failure::Shard)?;
                continue;
            }
            Evaluation::NeedsCounters(pending) => {
                let decision = consult_limiter(env, &pending.record().key_id, &pending.limits())
                    .await
                    .map_err(Failure::Limiter)?;
                pending.finish(decision)
            }
        };
        let record = verdict.record;
        return Ok(Decided {
            code: verdict.code,
            limits: verdict.limits,
            key: record.map(|r| {
                (
                    r.key_id.clone(),
                    r.project_id.clone(),
                    r.environment.as_str(),
                )
            }),
            cors: respond::cors_allowed(
                facts.origin,
                facts.referer,
                record.map(|r| &r.referrers[..]),
            ),
        });
    }
    Err(Failure::Shard(
        "shard still missing after loading it".into(),
    ))
}

async fn consult_limiter(
    env: &Env,
    key_id: &str,
    limits: &keygate_shared::Limits,
) -> std::result::Result<LimitDecision, String> {
    let run = async {
        let ns = env.durable_object("LIMITER")?;
        let stub = ns.id_from_name(key_id)?.get_stub()?;
        let headers = Headers::new();
        headers.set("Content-Type", "application/json")?;
        let body =
            serde_json::to_string(limits).map_err(|e| worker::Error::RustError(e.to_string()))?;
        let mut init = RequestInit::new();
        init.with_method(Method::Post)
            .with_headers(headers)
            .with_body(Some(body.into()));
        let mut resp = stub
            .fetch_with_request(Request::new_with_init("https://limiter/admit", &init)?)
            .await?;
        resp.json::<LimitDecision>().await
    };
    run.await.map_err(|e: worker::Error| e.to_string())
}

fn refuse(
    code: Code,
    limits: Option<&LimitInfo>,
    origin: Option<&str>,
    cors: bool,
) -> Result<Response> {
    let mut answer = respond::refusal(code, limits, respond::detail_for(code));
    if cors {
        if let Some(o) = origin {
            answer.headers.extend(respond::cors_headers(o));
        }
    }
    to_response(answer)
}

fn invalid_path(e: keygate_shared::path::PathError) -> Result<Response> {
    problem(
        400,
        "invalid_path",
        "Invalid path",
        &format!("The request path cannot be normalised safely: {e}."),
    )
}

fn unavailable(origin: Option<&str>, referer: Option<&str>) -> Result<Response> {
    let cors = respond::cors_allowed(origin, referer, None);
    refuse(Code::SnapshotUnavailable, None, origin, cors)
}

fn record_usage(
    key_id: &str,
    code: Code,
    caller: &Caller<'_>,
    now: i64,
    cfg: &Rc<EdgeConfig>,
    ctx: &Context,
) {
    let due = USAGE.with(|u| {
        let mut u = u.borrow_mut();
        u.record(key_id, code, caller, now);
        u.take_if_due(now, cfg.usage_flush_ms)
    });
    if let Some(batch) = due {
        let c = Rc::clone(cfg);
        ctx.wait_until(async move { post_usage(&c, batch, now).await });
    }
}

/// Whether a post that got `status` may succeed later: not for a request the control plane
/// refuses as such (400, 413, 422), which would otherwise be retried forever.
fn worth_retrying(status: u16) -> bool {
    !matches!(status, 400 | 413 | 422)
}

async fn post_usage(cfg: &EdgeConfig, batch: Batch, now: i64) {
    if batch.dropped > 0 {
        console_log!(
            "keygate-edge: {} sighting values over the cap of {} per key and kind were not reported",
            batch.dropped,
            crate::usage::MAX_VALUES_PER_KIND
        );
    }
    let send = async {
        let headers = Headers::new();
        headers.set("Authorization", &format!("Bearer {}", cfg.edge_token))?;
        headers.set("Content-Type", "application/json")?;
        let body =
            serde_json::to_string(&batch).map_err(|e| worker::Error::RustError(e.to_string()))?;
        let mut init = RequestInit::new();
        init.with_method(Method::Post)
            .with_headers(headers)
            .with_body(Some(body.into()));
        let req = Request::new_with_init(&format!("{}/v1/usage", cfg.control_plane_url), &init)?;
        let resp = Fetch::Request(req).send().await?;
        Ok::<u16, worker::Error>(resp.status_code())
    };
    match send.await {
        Ok(status) if status < 300 => {}
        Ok(status) if !worth_retrying(status) => {
            console_error!(
                "keygate-edge: control plane refused a usage report ({status}); dropped it"
            );
        }
        Ok(status) => {
            console_error!("keygate-edge: usage post answered {status}, keeping counts");
            USAGE.with(|u| u.borrow_mut().restore(batch, now));
        }
        Err(e) => {
            console_error!("keygate-edge: usage post failed, keeping counts: {e}");
            USAGE.with(|u| u.borrow_mut().restore(batch, now));
        }
    }
}

async fn internal_endpoint(
    req: &Request,
    path: &str,
    env: &Env,
    cfg: &EdgeConfig,
    now: i64,
) -> Result<Response> {
    let auth = req.headers().get("Authorization")?.unwrap_or_default();
    let expected = format!("Bearer {}", cfg.edge_token);
    let ok: bool = subtle_eq(auth.as_bytes(), expected.as_bytes());
    if !ok {
        return problem(
            401,
            "unauthorized",
            "Unauthorized",
            "This endpoint needs the edge token.",
        );
    }
    if path == SYNC_PATH {
        return match holder::sync_kv(cfg, env, now).await {
            Ok(msg) => Response::from_json(&serde_json::json!({ "ok": true, "message": msg })),
            Err(e) => problem(502, "sync_failed", "KV sync failed", &e),
        };
    }
    let status = match holder::current(cfg, now) {
        Some(i) => {
            let m = i.manifest();
            serde_json::json!({
                "version": m.version(),
                "key_id": m.key_id(),
                "key_count": m.manifest().key_count,
                "shards": m.shard_count(),
                "loaded_shards": i.loaded_shards(),
                "issued_at_ms": m.manifest().issued_at_ms,
                "valid_until_ms": m.manifest().valid_until_ms,
                "unusable_keys": holder::unusable_keys().0,
                "unusable_records_seen": holder::unusable_keys().1,
                "unusable_projects": m.unusable_projects().iter().map(|(id, _)| id).collect::<Vec<_>>(),
            })
        }
        None => serde_json::json!({ "version": null }),
    };
    Response::from_json(&status)
}

fn subtle_eq(a: &[u8], b: &[u8]) -> bool {
    // Constant time in the contents; the length of the edge token is not a secret.
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The origin URL of a forwarded request and its `Keygate-Signature` (version 2: the method,
/// the path and query the origin receives, the key, its project and environment).
fn signed_target(
    cfg: &EdgeConfig,
    path: &str,
    query: Option<&str>,
    method: &str,
    (key_id, project_id, environment): (&str, &str, &str),
    now: i64,
) -> (String, String) {
    let target = request::forward_url(&cfg.origin_url, path, query);
    let signature = cfg.origin_signer.sign(
        now.div_euclid(1000),
        &keygate_shared::origin::Signed {
            method,
            path_and_query: request::url_path_and_query(&target),
            key_id,
            project_id,
            environment,
        },
    );
    (target, signature)
}

/// How the entry module forwards a request that [`fast_forward`] accepted: newline-separated
/// `source` (`authorization` when that header held the key and is removed; `X-API-Key` and
/// client-sent `Keygate-*` headers are removed in any case), the origin URL (without any `key`
/// query parameter), the key id,
/// the project id, the environment and the `Keygate-Signature` value.
pub type ForwardPlan = String;

/// The common case decided in one synchronous call, so that the entry module can forward with
/// the runtime's own `fetch`: a key in a header, a verdict of `valid` from the held snapshot with
/// no shard to load and no counter to consult, no CORS headers to add. Anything else returns
/// `None` before any side effect, and the request takes [`handle`], which decides it the same
/// way. Usage is recorded and a due snapshot refresh or usage post is started exactly as there.
#[allow(clippy::too_many_arguments)]
pub fn fast_forward(
    url: &str,
    method: &str,
    authorization: Option<&str>,
    x_api_key: Option<&str>,
    origin_h: Option<&str>,
    referer_h: Option<&str>,
    ip_h: Option<&str>,
    host_h: Option<&str>,
    env: &Env,
    ctx: &Context,
) -> Option<ForwardPlan> {
    let cfg = CONFIG.with(|c| c.borrow().clone())?;
    if method == "OPTIONS" {
        return None;
    }
    let now = now_ms();
    let index = holder::decidable(&cfg, now)?;
    // The runtime hands over an absolute URL, so its path and query are plain slices.
    let (raw_path, query) = request::split_normalised_url(url)?;
    // A path that cannot be normalised is refused by the full handler.
    let path = keygate_shared::path::normalize(raw_path).ok()?;
    if path == STATUS_PATH || path == SYNC_PATH {
        return None;
    }
    let (key, source) = request::extract_key(authorization, x_api_key, None)?;
    let ip: Option<IpAddr> = ip_h.and_then(|v| v.trim().parse().ok());
    // Without a Host header the host comes from the URL: the full handler parses it.
    let host = host_h?;
    let facts = RequestFacts {
        key: Some(&key),
        origin: origin_h,
        referer: referer_h,
        ip,
        method: Some(method),
        path: Some(&path),
        environment: cfg.environment_for_host(Some(host)),
    };
    let Evaluation::Done(verdict) = evaluate(&*index, &facts, now, None) else {
        return None;
    };
    let record = verdict.record?;
    if verdict.code != Code::Valid || verdict.limits.is_some() {
        return None;
    }
    if origin_h.is_some() && respond::cors_allowed(origin_h, referer_h, Some(&record.referrers[..]))
    {
        return None;
    }
    // Decided: from here on, the same side effects as `handle`.
    if let Plan::Use { refresh: true, .. } = holder::plan(&cfg, now) {
        let (c, e) = (Rc::clone(&cfg), env.clone());
        ctx.wait_until(async move { holder::refresh(&c, &e, now).await });
    }
    let caller = Caller {
        ip,
        origin: origin_h,
        referer: referer_h,
    };
    record_usage(&record.key_id, Code::Valid, &caller, now, &cfg, ctx);
    let fwd_query = query.and_then(|q| {
        if request::query_has_param(q, "key") {
            request::strip_key_param(q).map(std::borrow::Cow::Owned)
        } else {
            Some(std::borrow::Cow::Borrowed(q))
        }
    });
    let (target, signature) = signed_target(
        &cfg,
        &path,
        fwd_query.as_deref(),
        method,
        (
            &record.key_id,
            &record.project_id,
            record.environment.as_str(),
        ),
        now,
    );
    let source = match source {
        KeySource::Authorization => "authorization",
        _ => "x-api-key",
    };
    Some(
        [
            source,
            &target,
            &record.key_id,
            &record.project_id,
            record.environment.as_str(),
            &signature,
        ]
        .join("\n"),
    )
}
