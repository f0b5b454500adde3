//! The full request pipeline (docs/edge.md): every request the fast path does not take. It
//! prepares the request, waits for a snapshot when it must (loading, revalidating, a shard, the
//! key's limiter), decides, and answers at the edge or returns the plan for the entry module to
//! forward.

use std::rc::Rc;

use keygate_shared::{evaluate, Evaluation, SnapshotIndex};
use worker::{console_error, Context, Env, Request, Response, Result};

use crate::config::EdgeConfig;
use crate::forward::{to_response, ForwardPlan};
use crate::holder::{self, Plan as Freshness};
use crate::isolate::{self, now_ms};
use crate::prepare::{self, Decided, Incoming, Outcome, Prepared, Step};
use crate::report;
use crate::respond::problem;
use crate::usage::Caller;

/// What the pipeline made of a request.
#[derive(Debug)]
pub enum Handled {
    /// Answer with this response.
    Respond(Response),
    /// Forward as planned.
    Forward(ForwardPlan),
}

fn answer(a: crate::respond::Answer) -> Result<Handled> {
    Ok(Handled::Respond(to_response(a)?))
}

/// Handles one request; never panics, and an internal failure becomes a problem+json 5xx.
pub async fn handle(req: &Request, env: &Env, ctx: &Context) -> Result<Handled> {
    let cfg = match isolate::config(env) {
        Ok(c) => c,
        Err(e) => {
            console_error!("keygate-edge: configuration error: {e}");
            return answer(problem(
                500,
                "edge_misconfigured",
                "Edge misconfigured",
                "The edge's configuration is invalid; see its logs.",
            ));
        }
    };
    match handle_inner(req, env, ctx, &cfg).await {
        Ok(r) => Ok(r),
        Err(e) => {
            console_error!("keygate-edge: internal error: {e}");
            answer(problem(
                500,
                "internal_error",
                "Internal error",
                "The edge failed to handle this request.",
            ))
        }
    }
}

async fn handle_inner(
    req: &Request,
    env: &Env,
    ctx: &Context,
    cfg: &Rc<EdgeConfig>,
) -> Result<Handled> {
    let now = now_ms();
    let url = req.inner().url();
    let method = req.inner().method();
    let h = req.headers();
    let (authorization, x_api_key) = (h.get("Authorization")?, h.get("X-API-Key")?);
    let (origin, referer) = (h.get("Origin")?, h.get("Referer")?);
    let (ip, host) = (h.get("CF-Connecting-IP")?, h.get("Host")?);
    let (request_method, request_headers) = if method == "OPTIONS" {
        (
            h.get("Access-Control-Request-Method")?,
            h.get("Access-Control-Request-Headers")?,
        )
    } else {
        (None, None)
    };
    let incoming = Incoming {
        url: &url,
        method: &method,
        authorization: authorization.as_deref(),
        x_api_key: x_api_key.as_deref(),
        origin: origin.as_deref(),
        referer: referer.as_deref(),
        ip: ip.as_deref(),
        host: host.as_deref(),
        request_method: request_method.as_deref(),
        request_headers: request_headers.as_deref(),
    };
    let p = match prepare::prepare(&incoming, cfg) {
        Step::Answer(a) => return answer(a),
        Step::Internal(path) => {
            return Ok(Handled::Respond(
                crate::status::endpoint(req, &path, env, cfg, now).await?,
            ))
        }
        Step::Decide(p) => p,
    };

    let mut index: Rc<SnapshotIndex> = match holder::plan(cfg, now) {
        Freshness::Use { index, refresh } => {
            if refresh {
                start_refresh(cfg, env, ctx, now);
            }
            index
        }
        Freshness::Revalidate {
            index,
            start,
            deadline_ms,
        } => holder::revalidate(cfg, env, ctx, now, index, start, deadline_ms).await,
        Freshness::RefreshNow => {
            holder::load_now(cfg, env, now).await;
            match holder::current(cfg, now) {
                Some(i) => i,
                None => return answer(prepare::unavailable(p.origin, p.referer)),
            }
        }
        Freshness::Unavailable => return answer(prepare::unavailable(p.origin, p.referer)),
    };

    let decided = match decide(&mut index, &p, now, env, ctx, cfg).await {
        Ok(d) => d,
        Err(Failure::Shard(e)) => {
            console_error!("keygate-edge: {e}");
            return answer(prepare::unavailable(p.origin, p.referer));
        }
        Err(Failure::Limiter(e)) => {
            console_error!("keygate-edge: limiter failed: {e}");
            return answer(problem(
                503,
                "limiter_unavailable",
                "Rate limiter unavailable",
                "The rate limiter could not be reached; retry shortly.",
            ));
        }
    };
    match conclude(cfg, ctx, &p, decided, now) {
        Outcome::Refuse(a) => answer(a),
        Outcome::Forward(plan) => Ok(Handled::Forward(ForwardPlan::new(plan)?)),
    }
}

/// Starts a background refresh of the snapshot.
pub fn start_refresh(cfg: &Rc<EdgeConfig>, env: &Env, ctx: &Context, now: i64) {
    let (c, e) = (Rc::clone(cfg), env.clone());
    ctx.wait_until(async move { holder::refresh(&c, &e, now).await });
}

/// [`prepare::conclude`], after counting the verdict for the key's usage report.
pub fn conclude(
    cfg: &Rc<EdgeConfig>,
    ctx: &Context,
    p: &Prepared<'_>,
    decided: Decided,
    now: i64,
) -> Outcome {
    if let Some(key) = &decided.key {
        let caller = Caller {
            ip: p.ip,
            origin: p.origin,
            referer: p.referer,
        };
        report::record(&key.key_id, decided.code, &caller, now, cfg, ctx);
    }
    prepare::conclude(cfg, p, decided, now)
}

enum Failure {
    Shard(String),
    Limiter(String),
}

/// Runs the evaluation, loading a shard or consulting the key's limiter when it asks.
async fn decide(
    index: &mut Rc<SnapshotIndex>,
    p: &Prepared<'_>,
    now: i64,
    env: &Env,
    ctx: &Context,
    cfg: &EdgeConfig,
) -> std::result::Result<Decided, Failure> {
    let facts = p.facts();
    // The first pass may need the key's shard; the second cannot.
    for _ in 0..2 {
        let current = Rc::clone(index);
        let verdict = match evaluate(&*current, &facts, now, None) {
            Evaluation::Done(v) => v,
            Evaluation::NeedsShard(shard) => {
                *index = holder::load_shard(cfg, env, ctx, current, shard)
                    .await
                    .map_err(Failure::Shard)?;
                continue;
            }
            Evaluation::NeedsCounters(pending) => {
                let decision =
                    crate::limiter::consult(env, &pending.record().key_id, &pending.limits())
                        .await
                        .map_err(Failure::Limiter)?;
                pending.finish(decision)
            }
        };
        return Ok(Decided::of(verdict, p));
    }
    Err(Failure::Shard(
        "shard still missing after loading it".into(),
    ))
}
