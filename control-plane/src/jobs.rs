//! Background jobs. Each is a loop on the actix runtime, started by
//! `Application::run_until_stopped` and stopped with the server; its work is a plain function
//! of the state and `now`, which tests call directly instead of waiting for a tick.

use std::time::Duration;

use actix_web::rt::task::JoinHandle;
use actix_web::web;

use crate::state::AppState;

/// One unit of a job's work.
pub type Tick = fn(&AppState, i64) -> anyhow::Result<()>;

/// Starts every job of the control plane.
pub(crate) fn spawn_all(state: &web::Data<AppState>) -> Vec<JoinHandle<()>> {
    let jobs: Vec<(&'static str, Duration, Tick)> = vec![
        (
            "alerts.evaluate",
            state.alert_interval,
            crate::domain::alerts::tick,
        ),
        (
            "usage.prune",
            Duration::from_secs(600),
            crate::domain::usage::prune_tick,
        ),
        (
            "webhook-expiring",
            Duration::from_secs(60),
            crate::domain::webhooks::expiring_tick,
        ),
    ];
    let mut handles: Vec<JoinHandle<()>> = jobs
        .into_iter()
        .map(|(name, interval, tick)| every(state.clone(), name, interval, tick))
        .collect();
    // Sends HTTP requests, so it is an async loop of its own rather than a blocking tick.
    handles.push(crate::delivery::spawn(state.clone()));
    handles
}

/// Runs `tick` every `interval` on the blocking pool (jobs use the database). A failed tick is
/// logged and the next one runs as usual.
pub fn every(
    state: web::Data<AppState>,
    name: &'static str,
    interval: Duration,
    tick: Tick,
) -> JoinHandle<()> {
    actix_web::rt::spawn(async move {
        loop {
            actix_web::rt::time::sleep(interval).await;
            let s = state.clone();
            let now = s.clock.now_ms();
            match web::block(move || tick(&s, now)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(job = name, error = %e, "background job failed"),
                Err(e) => tracing::warn!(job = name, error = %e, "background job did not run"),
            }
        }
    })
}
