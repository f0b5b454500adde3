//! Per-application state shared by the workers. Nothing here is global: two `Application`s in
//! one process (tests) never share state.

use std::collections::HashMap;
use std::sync::Mutex;

use keygate_shared::LimitState;

use crate::clock::Clock;
use crate::credentials::{JwtKeys, TokenCache};
use crate::db::Pool;
use crate::metrics::Metrics;
use crate::snapshot::SnapshotService;

/// Shared state.
#[derive(Debug)]
pub struct AppState {
    /// Connection pool.
    pub pool: Pool,
    /// The database (for `/readyz`, which opens a connection of its own).
    pub db_target: crate::db::DbTarget,
    /// The clock.
    pub clock: Clock,
    /// Session token keys.
    pub jwt: JwtKeys,
    /// Session lifetime.
    pub session_ttl_ms: i64,
    /// `/v1/verify` host to environment.
    pub host_environments: keygate_shared::HostEnvironments,
    /// Snapshot publishing.
    pub snapshots: SnapshotService,
    /// Rate-limit and quota counters of `/v1/verify`, per key id, in this process only.
    pub counters: Mutex<HashMap<String, LimitState>>,
    /// Recently resolved API tokens.
    pub token_cache: TokenCache,
    /// Parsed project policies of `/v1/verify`, by project id, with the `updated_at` they
    /// were parsed at.
    pub policy_cache: Mutex<HashMap<String, (i64, std::sync::Arc<keygate_shared::ProjectPolicy>)>>,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// How often the alert rules are evaluated.
    pub alert_interval: std::time::Duration,
    /// How long usage rows are kept (the `usage.prune` job).
    pub usage_retention: crate::domain::usage::Retention,
    /// Webhook delivery settings.
    pub webhooks: crate::config::WebhookSettings,
    /// Failed-login counters.
    pub login_throttle: crate::throttle::LoginThrottle,
    /// Bounds concurrent Argon2id work (logins, new passwords) to the number of cores.
    pub password_hashing: tokio::sync::Semaphore,
    /// Reverse proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<keygate_shared::IpNet>,
}

/// Runs `f` with a pooled connection and the current time on the blocking pool.
pub(crate) async fn db<T, E, F>(
    state: &actix_web::web::Data<crate::state::AppState>,
    f: F,
) -> Result<T, crate::error::ApiError>
where
    T: Send + 'static,
    E: Into<crate::error::ApiError> + Send + 'static,
    F: FnOnce(&mut crate::db::DbConn, i64) -> Result<T, E> + Send + 'static,
{
    let st = state.clone();
    let now = st.clock.now_ms();
    crate::error::blocking(move || -> Result<T, crate::error::ApiError> {
        let mut conn = st.pool.get()?;
        f(&mut conn, now).map_err(Into::into)
    })
    .await
}
