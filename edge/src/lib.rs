//! keygate-edge: the Cloudflare Worker that verifies Keygate keys and enforces their
//! restrictions in front of an origin, from a signed snapshot held in isolate memory.
//!
//! This file is only glue around the runtime's events; the logic lives in plain modules.

pub mod config;
pub mod holder;
pub mod limiter;
pub mod proxy;
pub mod request;
pub mod respond;
pub mod usage;

pub use limiter::Limiter;

use worker::{
    console_error, console_log, event, Context, Env, Request, Response, Result, ScheduleContext,
    ScheduledEvent,
};

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> Result<Response> {
    proxy::handle(req, env, ctx).await
}

/// The fast path of the entry module (`edge/shim.mjs`): one synchronous call that decides the
/// common case and returns how to forward it, or `undefined` to take `fetch`. See
/// [`proxy::fast_forward`].
#[allow(clippy::too_many_arguments)]
#[worker::wasm_bindgen::prelude::wasm_bindgen]
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
) -> Option<String> {
    proxy::fast_forward(
        &url,
        &method,
        authorization.as_deref(),
        x_api_key.as_deref(),
        origin.as_deref(),
        referer.as_deref(),
        ip.as_deref(),
        host.as_deref(),
        &env,
        &Context::new(ctx),
    )
}

/// The cron trigger keeps a copy of the snapshot in KV, so a cold isolate can start while the
/// control plane is unreachable.
#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    let cfg = match proxy::config(&env) {
        Ok(c) => c,
        Err(e) => {
            console_error!("keygate-edge: configuration error: {e}");
            return;
        }
    };
    match holder::sync_kv(&cfg, &env, proxy::now_ms()).await {
        Ok(msg) => console_log!("keygate-edge: {msg}"),
        Err(e) => console_error!("keygate-edge: KV sync failed: {e}"),
    }
}
