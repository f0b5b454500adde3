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
