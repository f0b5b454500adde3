//! Background jobs. Each is a loop on the actix runtime, started by
//! `Application::run_until_stopped` and stopped with the server; its work is a plain function
//! of the state and `now`, which tests call directly instead of waiting for a tick.
//!
//! Several replicas may share one database, each running every job's loop. Time is cut into
//! windows of the job's interval, and a replica runs a tick only after claiming its window in
//! the `job_runs` table ([`claim_tick`]): each window's work runs once across all replicas,
//! whether or not their loops overlap, and when one replica stops another carries on.

use std::time::Duration;

use actix_web::rt::task::JoinHandle;
use actix_web::web;
use diesel::prelude::*;

use crate::db::schema::job_runs;
use crate::db::DbConn;
use crate::state::AppState;

/// One unit of a job's work.
pub type Tick = fn(&AppState, i64) -> anyhow::Result<()>;

/// Starts every job of the control plane.
pub(crate) fn spawn_all(state: &web::Data<AppState>) -> Vec<JoinHandle<()>> {
    let jobs: Vec<(&'static str, Duration, Tick)> = vec![
        ("alerts.evaluate", state.alert_interval, alerts_evaluate),
        ("usage.prune", Duration::from_secs(600), usage_prune),
        ("webhook-expiring", Duration::from_secs(60), key_expiring),
    ];
    let mut handles: Vec<JoinHandle<()>> = jobs
        .into_iter()
        .map(|(name, interval, tick)| every(state.clone(), name, interval, tick))
        .collect();
    // Sends HTTP requests, so it is an async loop of its own rather than a blocking tick.
    handles.push(crate::delivery::spawn(state.clone()));
    handles
}

// The ticks: each a domain function with a pooled connection, so that the domain never names
// the application's state.

/// The `alerts.evaluate` job.
pub fn alerts_evaluate(state: &AppState, now: i64) -> anyhow::Result<()> {
    let mut conn = state.pool.get()?;
    crate::domain::alerts::evaluate(&mut conn, now).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// The `usage.prune` job: [`crate::domain::usage::prune`] with the configured retention.
pub fn usage_prune(state: &AppState, now: i64) -> anyhow::Result<()> {
    let mut conn = state.pool.get()?;
    let pruned = crate::domain::usage::prune(&mut conn, now, &state.usage_retention)?;
    if pruned != crate::domain::usage::Pruned::default() {
        tracing::info!(
            minutes = pruned.minutes,
            hours = pruned.hours,
            days = pruned.days,
            sightings = pruned.sightings,
            "pruned usage past its retention"
        );
    }
    Ok(())
}
/// The `key.expiring` job's tick.
pub fn key_expiring(state: &AppState, now: i64) -> anyhow::Result<()> {
    let mut conn = state.pool.get()?;
    let queued = crate::domain::webhooks::queue_expiring(&mut conn, now)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if queued > 0 {
        tracing::info!(queued, "queued key.expiring deliveries");
    }
    Ok(())
}

/// Claims the run of job `name` for the window of `interval_ms` that holds `now` (windows are
/// aligned on multiples of the interval since the epoch). Returns whether this caller won it:
/// of several callers in the same window, on any number of replicas, exactly one does. The
/// claim is one conditional `UPDATE` (PostgreSQL re-checks its condition after waiting for a
/// concurrent claim's row lock, and SQLite writes one at a time), so there is no lock to leak.
pub fn claim_tick(
    conn: &mut DbConn,
    name: &str,
    interval_ms: i64,
    now: i64,
) -> Result<bool, diesel::result::Error> {
    let interval_ms = interval_ms.max(1);
    let window_end = now
        .div_euclid(interval_ms)
        .saturating_add(1)
        .saturating_mul(interval_ms);
    let seed = diesel::insert_into(job_runs::table)
        .values((
            job_runs::name.eq(name),
            job_runs::next_run_at.eq(i64::MIN),
            job_runs::last_run_at.eq(0),
        ))
        .on_conflict_do_nothing();
    crate::with_backend!(conn, |c| seed.execute(c))?;
    let won = diesel::update(
        job_runs::table
            .filter(job_runs::name.eq(name))
            .filter(job_runs::next_run_at.le(now)),
    )
    .set((
        job_runs::next_run_at.eq(window_end),
        job_runs::last_run_at.eq(now),
    ))
    .execute(conn)?;
    Ok(won == 1)
}

/// One tick of job `name` at `now`: runs `tick` if this replica claims the window (see
/// [`claim_tick`]); returns whether it ran. A tick that fails after its claim is not retried
/// within its window: the next window runs as usual.
pub fn run_tick(
    state: &AppState,
    name: &str,
    interval: Duration,
    tick: Tick,
    now: i64,
) -> anyhow::Result<bool> {
    let interval_ms = i64::try_from(interval.as_millis()).unwrap_or(i64::MAX);
    let claimed = {
        let mut conn = state.pool.get()?;
        claim_tick(&mut conn, name, interval_ms, now)?
    };
    if claimed {
        tick(state, now)?;
    }
    Ok(claimed)
}

/// Runs `tick` every `interval` on the blocking pool (jobs use the database), once per window
/// across replicas ([`run_tick`]). A failed tick is logged and the next one runs as usual.
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
            match web::block(move || run_tick(&s, name, interval, tick, now)).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => tracing::debug!(job = name, "tick run by another replica"),
                Ok(Err(e)) => tracing::warn!(job = name, error = %e, "background job failed"),
                Err(e) => tracing::warn!(job = name, error = %e, "background job did not run"),
            }
        }
    })
}
