//! keygate-edge: the Cloudflare Worker that verifies Keygate keys and enforces their
//! restrictions in front of an origin, from a signed snapshot held in isolate memory.
//!
//! This file is only the glue the entry module (`edge/shim.mjs`) calls; the logic lives in
//! plain modules (ARCHITECTURE.md maps them).

pub mod config;
pub mod control_plane;
pub mod fast;
pub mod forward;
pub mod freshness;
pub mod holder;
pub mod isolate;
pub mod kv_copy;
pub mod limiter;
pub mod pipeline;
pub mod prepare;
pub mod report;
pub mod request;
pub mod respond;
pub mod shard_cache;
pub mod status;
pub mod usage;

pub use limiter::Limiter;

use wasm_bindgen::prelude::*;
use worker::{
    console_error, console_log, event, web_sys, Context, Env, ScheduleContext, ScheduledEvent,
};

use crate::pipeline::Handled;
use crate::prepare::Incoming;

/// The fast path: one synchronous call that decides the common case and returns how to forward
/// it, or `undefined` to take [`keygate_handle`]. See [`fast::forward`].
#[allow(clippy::too_many_arguments)]
#[wasm_bindgen]
pub fn keygate_forward(
    url: String,
    method: String,
    authorization: Option<String>,
    x_api_key: Option<String>,
    origin: Option<String>,
    referer: Option<String>,
    ip: Option<String>,
    host: Option<String>,
    env: Env,
    ctx: worker::worker_sys::Context,
) -> Option<forward::ForwardPlan> {
    let incoming = Incoming {
        url: &url,
        method: &method,
        authorization: authorization.as_deref(),
        x_api_key: x_api_key.as_deref(),
        origin: origin.as_deref(),
        referer: referer.as_deref(),
        ip: ip.as_deref(),
        host: host.as_deref(),
        request_method: None,
        request_headers: None,
    };
    fast::forward(&incoming, &env, &Context::new(ctx))
}

/// The full pipeline: resolves to a `Response` to send, or a [`forward::ForwardPlan`] for the
/// entry module to forward.
#[wasm_bindgen]
pub async fn keygate_handle(
    req: web_sys::Request,
    env: Env,
    ctx: worker::worker_sys::Context,
) -> Result<JsValue, JsValue> {
    let req = worker::Request::from(req);
    let ctx = Context::new(ctx);
    match pipeline::handle(&req, &env, &ctx).await {
        Ok(Handled::Respond(r)) => Ok(web_sys::Response::from(r).into()),
        Ok(Handled::Forward(plan)) => Ok(plan.into()),
        Err(e) => Err(e.into()),
    }
}

/// `502 origin_unreachable`, built where every other problem body is.
#[wasm_bindgen]
pub fn keygate_origin_unreachable() -> Result<web_sys::Response, JsValue> {
    forward::origin_unreachable()
        .map(Into::into)
        .map_err(Into::into)
}

/// The cron trigger keeps a copy of the snapshot in KV, so a cold isolate can start while the
/// control plane is unreachable.
#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    let cfg = match isolate::config(&env) {
        Ok(c) => c,
        Err(e) => {
            console_error!("keygate-edge: configuration error: {e}");
            return;
        }
    };
    match kv_copy::sync(&cfg, &env, isolate::now_ms()).await {
        Ok(report) => console_log!("keygate-edge: {report}"),
        Err(e) => console_error!("keygate-edge: KV sync failed: {e}"),
    }
}
