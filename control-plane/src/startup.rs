//! `Application::build` binds the listener (port 0 picks a free one), connects and migrates the
//! database, loads or creates the signing key and the JWT secret, and reports its port; tests
//! and the end-to-end suite start control planes in-process this way.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::Mutex;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use utoipa_actix_web::AppExt as _;

use crate::auth::JwtKeys;
use crate::config::Config;
use crate::db::{self, DbTarget};
use crate::domain::accounts;
use crate::files::{ensure_private_dir, load_or_create_jwt_secret};
use crate::keyring::Keyring;
use crate::metrics::Metrics;
use crate::routes::{self, system::OpenApiJson};
use crate::snapshot::SnapshotService;
use crate::state::AppState;

/// A built, not yet running, control plane.
pub struct Application {
    addr: std::net::SocketAddr,
    port: u16,
    server: Server,
    state: web::Data<AppState>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// Opens the database of `config` and applies pending migrations.
pub fn open_database(config: &Config) -> anyhow::Result<db::Pool> {
    let target = DbTarget::from_config(config.database_url.as_deref(), &config.data_dir)?;
    let pool = db::connect(&target, config.db_pool_size)?;
    let mut conn = pool.get()?;
    let applied = db::migrate(&mut conn)?;
    if applied > 0 {
        tracing::info!(applied, database = %target.describe(), "applied migrations");
    }
    Ok(pool)
}

impl Application {
    /// Builds the application: everything but serving requests. Blocks briefly (database
    /// connection, migrations, key files).
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        config.validate()?;
        ensure_private_dir(&config.data_dir)?;
        let pool = open_database(&config)?;
        let db_target = DbTarget::from_config(config.database_url.as_deref(), &config.data_dir)?;
        let now = config.clock.now_ms();
        if let Some(token) = &config.bootstrap_token {
            let mut conn = pool.get()?;
            accounts::ensure_bootstrap_token(&mut conn, now, token)
                .map_err(|e| anyhow::anyhow!("cannot store the bootstrap token: {e}"))?;
        }
        let keyring = Keyring::load_or_create(&config.data_dir)?;
        let jwt_secret = match &config.jwt_secret {
            Some(s) => s.as_bytes().to_vec(),
            None => load_or_create_jwt_secret(&config.data_dir)?,
        };
        let state = web::Data::new(AppState {
            pool,
            db_target,
            clock: config.clock.clone(),
            jwt: JwtKeys::new(&jwt_secret),
            session_ttl_ms: config.session_ttl_seconds * 1000,
            host_environments: config.host_environments.clone(),
            snapshots: SnapshotService::new(
                config.data_dir.clone(),
                config.snapshot_validity_seconds,
                keyring,
            )
            .with_version_memory_ms(config.snapshot_version_memory_ms),
            counters: Mutex::new(HashMap::new()),
            token_cache: Default::default(),
            policy_cache: Mutex::new(HashMap::new()),
            metrics: Metrics::default(),
            alert_interval: std::time::Duration::from_millis(config.alert_interval_ms.max(100)),
            usage_retention: config.usage_retention(),
            webhooks: config.webhooks.clone(),
            login_throttle: Default::default(),
            password_hashing: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
            ),
            trusted_proxies: config.trusted_proxies.clone(),
        });
        let listener = TcpListener::bind(&config.listen)
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
        let addr = listener.local_addr()?;
        let port = addr.port();
        let openapi = routes::openapi();
        let route_table = web::Data::new(routes::RouteTable::from_openapi(&openapi));
        let doc = OpenApiJson(serde_json::to_string(&openapi)?);
        let app_state = state.clone();
        let mut server = HttpServer::new(move || {
            let (app, _) = App::new()
                .into_utoipa_app()
                .configure(routes::configure)
                .split_for_parts();
            app.configure(crate::console::configure)
                .app_data(app_state.clone())
                .app_data(web::Data::new(doc.clone()))
                .app_data(route_table.clone())
                .wrap(from_fn(crate::auth::authenticate))
                .wrap(from_fn(crate::telemetry::middleware))
        })
        .listen(listener)?
        .shutdown_timeout(5);
        if let Some(w) = config.workers {
            server = server.workers(w);
        }
        tracing::info!(port, "control plane listening");
        Ok(Application {
            addr,
            port,
            server: server.run(),
            state,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The bound address (with the port picked for port 0).
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// A handle that stops the server.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// The shared state (tests read the clock and pool through it).
    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// Serves until stopped; the background jobs run as long as the server does.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let jobs = crate::jobs::spawn_all(&self.state);
        let result = self.server.await;
        for job in jobs {
            job.abort();
        }
        result
    }
}
