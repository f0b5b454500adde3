//! Configuration. Nothing global: every `Application` gets its own `Config`, so tests and the
//! end-to-end suite can run many control planes side by side.

use std::path::PathBuf;

use crate::clock::Clock;

/// Default snapshot validity: one day.
pub const DEFAULT_SNAPSHOT_VALIDITY_SECONDS: i64 = 86_400;
/// Default session (JWT) lifetime: twelve hours.
pub const DEFAULT_SESSION_TTL_SECONDS: i64 = 12 * 3600;
/// Default interval of the alert rules' evaluation.
pub const DEFAULT_ALERT_INTERVAL_SECONDS: u64 = 15;
/// Default retention of per-minute usage counts, in days.
pub const DEFAULT_USAGE_MINUTE_RETENTION_DAYS: i64 = 7;
/// Default retention of per-hour usage counts, in days.
pub const DEFAULT_USAGE_HOUR_RETENTION_DAYS: i64 = 90;
/// Default retention of per-day usage counts, in days.
pub const DEFAULT_USAGE_DAY_RETENTION_DAYS: i64 = 730;
/// Default retention of key sightings (client IPs, referrer origins), in days since last seen.
pub const DEFAULT_SIGHTING_RETENTION_DAYS: i64 = 90;
/// Shortest accepted `KEYGATE_BOOTSTRAP_TOKEN`.
pub const MIN_BOOTSTRAP_TOKEN_LEN: usize = 32;

pub use crate::domain::webhooks::WebhookSettings;

/// Control plane configuration.
#[derive(Clone)]
pub struct Config {
    /// Listen address, `127.0.0.1:8080`; port 0 picks a free port.
    pub listen: String,
    /// Holds the SQLite file, the signing keys and the JWT secret.
    pub data_dir: PathBuf,
    /// `None`: SQLite at `<data_dir>/keygate.db`. A `postgres://` URL: PostgreSQL.
    pub database_url: Option<String>,
    /// Ensures an owner API token with exactly this value exists (>= 32 characters).
    pub bootstrap_token: Option<String>,
    /// HS256 secret for session tokens; generated into `<data_dir>/jwt-secret` if `None`.
    pub jwt_secret: Option<String>,
    /// Session token lifetime.
    pub session_ttl_seconds: i64,
    /// How long a signed snapshot stays valid.
    pub snapshot_validity_seconds: i64,
    /// How long a snapshot version read from the database answers polls without another read
    /// (by `clock`); writes through this process are seen at once. 0 reads on every poll.
    pub snapshot_version_memory_ms: i64,
    /// `/v1/verify`'s `host` to the environment it serves.
    pub host_environments: keygate_shared::HostEnvironments,
    /// The clock (system in production; manual in tests).
    pub clock: Clock,
    /// HTTP workers; `None` = one per core.
    pub workers: Option<usize>,
    /// Largest number of pooled database connections (`KEYGATE_DB_POOL_SIZE`). `None` picks by
    /// backend: two per core for PostgreSQL (each connection is a server process competing for
    /// the same cores when the database is local), four per core for SQLite.
    pub db_pool_size: Option<u32>,
    /// How often the alert rules are evaluated (`KEYGATE_ALERT_INTERVAL_SECONDS`, default 15).
    pub alert_interval_ms: u64,
    /// Days per-minute usage counts are kept (`KEYGATE_USAGE_MINUTE_RETENTION_DAYS`).
    pub usage_minute_retention_days: i64,
    /// Days per-hour usage counts are kept (`KEYGATE_USAGE_HOUR_RETENTION_DAYS`).
    pub usage_hour_retention_days: i64,
    /// Days per-day usage counts are kept (`KEYGATE_USAGE_DAY_RETENTION_DAYS`).
    pub usage_day_retention_days: i64,
    /// Days a key sighting is kept after it was last seen (`KEYGATE_SIGHTING_RETENTION_DAYS`).
    pub sighting_retention_days: i64,
    /// Webhook delivery: retries, timeout, polling.
    pub webhooks: WebhookSettings,
    /// Reverse proxies whose `X-Forwarded-For` names the client (`KEYGATE_TRUSTED_PROXIES`,
    /// comma-separated addresses or CIDRs). Empty: the client is the connection's peer.
    pub trusted_proxies: Vec<keygate_shared::IpNet>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets and database credentials stay out of logs.
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("database_url", &self.database_url.as_ref().map(|_| "<set>"))
            .field(
                "bootstrap_token",
                &self.bootstrap_token.as_ref().map(|_| "<set>"),
            )
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| "<set>"))
            .field("session_ttl_seconds", &self.session_ttl_seconds)
            .field("snapshot_validity_seconds", &self.snapshot_validity_seconds)
            .field(
                "snapshot_version_memory_ms",
                &self.snapshot_version_memory_ms,
            )
            .field("host_environments", &self.host_environments)
            .field("workers", &self.workers)
            .field("alert_interval_ms", &self.alert_interval_ms)
            .field(
                "usage_minute_retention_days",
                &self.usage_minute_retention_days,
            )
            .field("usage_hour_retention_days", &self.usage_hour_retention_days)
            .field("usage_day_retention_days", &self.usage_day_retention_days)
            .field("sighting_retention_days", &self.sighting_retention_days)
            .field("webhooks", &self.webhooks)
            .field("trusted_proxies", &self.trusted_proxies)
            .finish()
    }
}

impl Config {
    /// Defaults with the given data directory, listening on `127.0.0.1:0`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            listen: "127.0.0.1:0".to_owned(),
            data_dir: data_dir.into(),
            database_url: None,
            bootstrap_token: None,
            jwt_secret: None,
            session_ttl_seconds: DEFAULT_SESSION_TTL_SECONDS,
            snapshot_validity_seconds: DEFAULT_SNAPSHOT_VALIDITY_SECONDS,
            snapshot_version_memory_ms: crate::snapshot::VERSION_MEMORY_MS,
            host_environments: keygate_shared::HostEnvironments::default(),
            clock: Clock::system(),
            workers: None,
            db_pool_size: None,
            alert_interval_ms: DEFAULT_ALERT_INTERVAL_SECONDS * 1000,
            usage_minute_retention_days: DEFAULT_USAGE_MINUTE_RETENTION_DAYS,
            usage_hour_retention_days: DEFAULT_USAGE_HOUR_RETENTION_DAYS,
            usage_day_retention_days: DEFAULT_USAGE_DAY_RETENTION_DAYS,
            sighting_retention_days: DEFAULT_SIGHTING_RETENTION_DAYS,
            webhooks: WebhookSettings::default(),
            trusted_proxies: Vec::new(),
        }
    }

    /// Reads the optional settings that have no CLI flag from the environment:
    /// `KEYGATE_BOOTSTRAP_TOKEN`, `KEYGATE_JWT_SECRET`, `KEYGATE_SESSION_TTL_SECONDS`,
    /// `KEYGATE_SNAPSHOT_VALIDITY_SECONDS`, `KEYGATE_HOST_ENVIRONMENTS`, `KEYGATE_WORKERS`,
    /// `KEYGATE_DB_POOL_SIZE`, `KEYGATE_ALERT_INTERVAL_SECONDS`, `KEYGATE_USAGE_MINUTE_RETENTION_DAYS`,
    /// `KEYGATE_USAGE_HOUR_RETENTION_DAYS`, `KEYGATE_USAGE_DAY_RETENTION_DAYS`,
    /// `KEYGATE_SIGHTING_RETENTION_DAYS`, `KEYGATE_WEBHOOK_RETRY_BASE_SECONDS`,
    /// `KEYGATE_WEBHOOK_RETRY_CAP_SECONDS`, `KEYGATE_WEBHOOK_MAX_ATTEMPTS`,
    /// `KEYGATE_WEBHOOK_TIMEOUT_SECONDS`, `KEYGATE_WEBHOOK_ALLOW_PRIVATE`, `KEYGATE_TRUSTED_PROXIES`.
    pub fn apply_env(mut self) -> anyhow::Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if let Some(v) = var("KEYGATE_BOOTSTRAP_TOKEN") {
            self.bootstrap_token = Some(v);
        }
        if let Some(v) = var("KEYGATE_TRUSTED_PROXIES") {
            self.trusted_proxies = v
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| {
                    keygate_shared::IpNet::parse(p).map_err(|e| {
                        anyhow::anyhow!("KEYGATE_TRUSTED_PROXIES: {e} (use addresses or CIDRs, comma-separated)")
                    })
                })
                .collect::<anyhow::Result<_>>()?;
        }
        if let Some(v) = var("KEYGATE_JWT_SECRET") {
            self.jwt_secret = Some(v);
        }
        if let Some(v) = var("KEYGATE_SESSION_TTL_SECONDS") {
            self.session_ttl_seconds = parse_positive("KEYGATE_SESSION_TTL_SECONDS", &v)?;
        }
        if let Some(v) = var("KEYGATE_SNAPSHOT_VALIDITY_SECONDS") {
            self.snapshot_validity_seconds =
                parse_positive("KEYGATE_SNAPSHOT_VALIDITY_SECONDS", &v)?;
        }
        if let Some(v) = var("KEYGATE_HOST_ENVIRONMENTS") {
            self.host_environments = keygate_shared::HostEnvironments::from_json(&v)
                .map_err(|e| anyhow::anyhow!("KEYGATE_HOST_ENVIRONMENTS {e}"))?;
        }
        if let Some(v) = var("KEYGATE_DB_POOL_SIZE") {
            self.db_pool_size = Some(
                u32::try_from(parse_positive("KEYGATE_DB_POOL_SIZE", &v)?)
                    .map_err(|_| anyhow::anyhow!("KEYGATE_DB_POOL_SIZE is too large"))?,
            );
        }
        if let Some(v) = var("KEYGATE_ALERT_INTERVAL_SECONDS") {
            self.alert_interval_ms =
                parse_positive("KEYGATE_ALERT_INTERVAL_SECONDS", &v)? as u64 * 1000;
        }
        if let Some(v) = var("KEYGATE_WORKERS") {
            self.workers = Some(parse_positive("KEYGATE_WORKERS", &v)? as usize);
        }
        for (name, field) in [
            (
                "KEYGATE_USAGE_MINUTE_RETENTION_DAYS",
                &mut self.usage_minute_retention_days,
            ),
            (
                "KEYGATE_USAGE_HOUR_RETENTION_DAYS",
                &mut self.usage_hour_retention_days,
            ),
            (
                "KEYGATE_USAGE_DAY_RETENTION_DAYS",
                &mut self.usage_day_retention_days,
            ),
            (
                "KEYGATE_SIGHTING_RETENTION_DAYS",
                &mut self.sighting_retention_days,
            ),
        ] {
            if let Some(v) = var(name) {
                *field = parse_positive(name, &v)?;
            }
        }
        if let Some(v) = var("KEYGATE_WEBHOOK_RETRY_BASE_SECONDS") {
            self.webhooks.retry_base_seconds =
                parse_positive("KEYGATE_WEBHOOK_RETRY_BASE_SECONDS", &v)?;
        }
        if let Some(v) = var("KEYGATE_WEBHOOK_RETRY_CAP_SECONDS") {
            self.webhooks.retry_cap_seconds =
                parse_positive("KEYGATE_WEBHOOK_RETRY_CAP_SECONDS", &v)?;
        }
        if let Some(v) = var("KEYGATE_WEBHOOK_MAX_ATTEMPTS") {
            self.webhooks.max_attempts = parse_positive("KEYGATE_WEBHOOK_MAX_ATTEMPTS", &v)?;
        }
        if let Some(v) = var("KEYGATE_WEBHOOK_ALLOW_PRIVATE") {
            self.webhooks.allow_private_targets = match v.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                _ => {
                    anyhow::bail!("KEYGATE_WEBHOOK_ALLOW_PRIVATE must be true or false, not {v:?}")
                }
            };
        }
        if let Some(v) = var("KEYGATE_WEBHOOK_TIMEOUT_SECONDS") {
            self.webhooks.timeout_seconds = parse_positive("KEYGATE_WEBHOOK_TIMEOUT_SECONDS", &v)?;
        }
        Ok(self)
    }

    /// The usage retention in force, for the `usage.prune` job.
    pub fn usage_retention(&self) -> crate::domain::usage::Retention {
        const DAY_MS: i64 = 86_400_000;
        crate::domain::usage::Retention {
            minute_ms: self.usage_minute_retention_days * DAY_MS,
            hour_ms: self.usage_hour_retention_days * DAY_MS,
            day_ms: self.usage_day_retention_days * DAY_MS,
            sighting_ms: self.sighting_retention_days * DAY_MS,
        }
    }

    /// Checks settings that would otherwise fail later and less clearly.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(t) = &self.bootstrap_token {
            if t.chars().count() < MIN_BOOTSTRAP_TOKEN_LEN {
                anyhow::bail!(
                    "KEYGATE_BOOTSTRAP_TOKEN must be at least {MIN_BOOTSTRAP_TOKEN_LEN} characters"
                );
            }
            if t.chars()
                .any(|c| c.is_whitespace() || c == '.' || c.is_control())
            {
                anyhow::bail!("KEYGATE_BOOTSTRAP_TOKEN must not contain whitespace or dots");
            }
        }
        if let Some(s) = &self.jwt_secret {
            if s.len() < 32 {
                anyhow::bail!("KEYGATE_JWT_SECRET must be at least 32 characters");
            }
        }
        if self.snapshot_validity_seconds < 10 {
            anyhow::bail!("KEYGATE_SNAPSHOT_VALIDITY_SECONDS must be at least 10");
        }
        for (name, days) in [
            (
                "KEYGATE_USAGE_MINUTE_RETENTION_DAYS",
                self.usage_minute_retention_days,
            ),
            (
                "KEYGATE_USAGE_HOUR_RETENTION_DAYS",
                self.usage_hour_retention_days,
            ),
            (
                "KEYGATE_USAGE_DAY_RETENTION_DAYS",
                self.usage_day_retention_days,
            ),
            (
                "KEYGATE_SIGHTING_RETENTION_DAYS",
                self.sighting_retention_days,
            ),
        ] {
            // Beyond 100 years the milliseconds would only risk overflow, not keep more.
            if !(1..=36_500).contains(&days) {
                anyhow::bail!("{name} must be between 1 and 36500 days");
            }
        }
        let w = &self.webhooks;
        if w.retry_base_seconds < 1 || w.retry_cap_seconds < w.retry_base_seconds {
            anyhow::bail!(
                "KEYGATE_WEBHOOK_RETRY_CAP_SECONDS must be at least KEYGATE_WEBHOOK_RETRY_BASE_SECONDS (at least 1)"
            );
        }
        // Beyond a week between attempts a retry is no longer a retry.
        if w.retry_cap_seconds > 7 * 86_400 {
            anyhow::bail!("KEYGATE_WEBHOOK_RETRY_CAP_SECONDS must be at most 604800 (7 days)");
        }
        if !(1..=100).contains(&w.max_attempts) {
            anyhow::bail!("KEYGATE_WEBHOOK_MAX_ATTEMPTS must be between 1 and 100");
        }
        if !(1..=300).contains(&w.timeout_seconds) {
            anyhow::bail!("KEYGATE_WEBHOOK_TIMEOUT_SECONDS must be between 1 and 300");
        }
        if w.poll_interval.is_zero() {
            anyhow::bail!("the webhook poll interval must not be zero");
        }
        Ok(())
    }
}

fn parse_positive(name: &str, v: &str) -> anyhow::Result<i64> {
    match v.trim().parse::<i64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => anyhow::bail!("{name} must be a positive integer, not {v:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_retention_defaults_and_bounds() {
        let mut c = Config::new("/tmp/x");
        let r = c.usage_retention();
        assert_eq!(r.minute_ms, 7 * 86_400_000);
        assert_eq!(r.hour_ms, 90 * 86_400_000);
        assert_eq!(r.day_ms, 730 * 86_400_000);
        assert_eq!(r.sighting_ms, 90 * 86_400_000);
        assert!(c.validate().is_ok());
        c.usage_hour_retention_days = 0;
        assert!(c.validate().is_err());
        c.usage_hour_retention_days = 36_501;
        assert!(c.validate().is_err());
    }
}
