//! Test harness: each test gets its own control plane on port 0 with its own SQLite file in a
//! temporary directory, or its own PostgreSQL database (dropped at the end) on the server of
//! `KEYGATE_TEST_POSTGRES_URL`.
//!
//! The PostgreSQL variants are `#[ignore]`d, so that a plain `cargo test` without a server reports
//! them as ignored rather than passed; `cargo xtask test` runs them (`--include-ignored`) with the
//! variable set. A PostgreSQL variant that runs fails when the variable is unset or the server
//! cannot be reached: it never passes without having run.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

use actix_web::dev::ServerHandle;
use actix_web::http::{Method, StatusCode};
use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};
use keygate_control_plane::{Application, Clock, Config};
use serde_json::{json, Value};

pub const OWNER_TOKEN: &str = "test-owner-token-0123456789abcdefghijklmnopqrstuvwxyz";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Every log line of every control plane in this test binary.
pub static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn init_logs() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| keygate_control_plane::telemetry::init(true, || LogWriter));
}

pub fn logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}

/// A PostgreSQL database made for one test and dropped with it.
pub struct PgDatabase {
    admin_url: String,
    name: String,
    pub url: String,
}

/// The server the PostgreSQL variants use; panics, naming what is missing, when none is set.
pub fn postgres_url() -> String {
    match std::env::var("KEYGATE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "this PostgreSQL variant needs a server: set KEYGATE_TEST_POSTGRES_URL \
             (e.g. postgres://postgres@127.0.0.1:5432/test; `cargo xtask test` sets that default)"
        ),
    }
}

impl PgDatabase {
    /// Creates the database; panics when no PostgreSQL server is configured or reachable.
    pub fn create() -> PgDatabase {
        let admin_url = postgres_url();
        let name = format!(
            "kg_test_{}",
            ulid::Ulid::new().to_string().to_ascii_lowercase()
        );
        let mut conn = PgConnection::establish(&admin_url).unwrap_or_else(|e| {
            panic!("PostgreSQL is not reachable at KEYGATE_TEST_POSTGRES_URL={admin_url}: {e}")
        });
        conn.batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create test database");
        let (base, query) = match admin_url.split_once('?') {
            Some((b, q)) => (b.to_owned(), format!("?{q}")),
            None => (admin_url.clone(), String::new()),
        };
        let base = base
            .rsplit_once('/')
            .map_or(base.clone(), |(b, _)| b.to_owned());
        let url = format!("{base}/{name}{query}");
        PgDatabase {
            admin_url,
            name,
            url,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if let Ok(mut conn) = PgConnection::establish(&self.admin_url) {
            let _ = conn.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

pub struct TestApp {
    pub base: String,
    pub clock: Clock,
    pub data_dir: tempfile::TempDir,
    pub client: awc::Client,
    pub state: actix_web::web::Data<keygate_control_plane::state::AppState>,
    handle: ServerHandle,
    config: Config,
    running: Option<actix_web::rt::task::JoinHandle<std::io::Result<()>>>,
    _pg: Option<PgDatabase>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Sends the stop command; the workers wind down on their own threads.
        drop(self.handle.stop(false));
    }
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: awc::http::header::HeaderMap,
    pub body: Value,
    pub raw: Vec<u8>,
}

impl Resp {
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
    pub fn detail(&self) -> &str {
        self.body["detail"].as_str().unwrap_or("")
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

pub fn test_config(
    backend: Backend,
    data_dir: &std::path::Path,
    pg: Option<&PgDatabase>,
) -> Config {
    let mut config = Config::new(data_dir);
    config.bootstrap_token = Some(OWNER_TOKEN.to_owned());
    config.clock = Clock::manual_from_system();
    config.workers = Some(2);
    config.db_pool_size = Some(8);
    config.session_ttl_seconds = 3600;
    // Tests write to the database behind the API's back and poll at a frozen clock: every poll
    // reads the version (snapshot.rs tests the memory itself).
    config.snapshot_version_memory_ms = 0;
    config.host_environments = keygate_shared::HostEnvironments::from_pairs([
        (
            "api.example.com".to_owned(),
            keygate_shared::Environment::Live,
        ),
        (
            "sandbox.example.com".to_owned(),
            keygate_shared::Environment::Test,
        ),
    ])
    .expect("host mapping");
    if backend == Backend::Postgres {
        config.database_url = pg.map(|p| p.url.clone());
    }
    config
}

/// Starts a control plane for one test; on PostgreSQL, panics when no server is configured or
/// reachable.
pub async fn spawn(backend: Backend) -> TestApp {
    spawn_with(backend, |_| {}).await
}

pub async fn spawn_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> TestApp {
    init_logs();
    let pg = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(PgDatabase::create()),
    };
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut config = test_config(backend, data_dir.path(), pg.as_ref());
    tweak(&mut config);
    let clock = config.clock.clone();
    let app = Application::build(config.clone()).await.expect("build app");
    let port = app.port();
    let handle = app.handle();
    let state = app.state();
    let running = actix_web::rt::spawn(app.run_until_stopped());
    let client = awc::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .finish();
    TestApp {
        base: format!("http://127.0.0.1:{port}"),
        clock,
        data_dir,
        client,
        state,
        handle,
        config,
        running: Some(running),
        _pg: pg,
    }
}

impl TestApp {
    /// Stops this control plane (server and background jobs) and starts a new one on the same
    /// configuration: the same data directory or database, and the same clock.
    pub async fn restart(&mut self) {
        self.handle.stop(true).await;
        if let Some(running) = self.running.take() {
            // Returns once `run_until_stopped` has aborted the background jobs.
            running.await.expect("join").expect("server result");
        }
        let app = Application::build(self.config.clone())
            .await
            .expect("rebuild app");
        self.base = format!("http://127.0.0.1:{}", app.port());
        self.handle = app.handle();
        self.state = app.state();
        self.running = Some(actix_web::rt::spawn(app.run_until_stopped()));
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Resp {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.insert_header(("authorization", format!("Bearer {t}")));
        }
        let mut res = match body {
            Some(b) => req.send_json(b).await,
            None => req.send().await,
        }
        .expect("request");
        let raw = res
            .body()
            .limit(64 * 1024 * 1024)
            .await
            .expect("body")
            .to_vec();
        let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        Resp {
            status: res.status(),
            headers: res.headers().clone(),
            body,
            raw,
        }
    }

    /// Sends raw bytes with a content type.
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        bytes: Vec<u8>,
    ) -> Resp {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.insert_header(("authorization", format!("Bearer {t}")));
        }
        if let Some(ct) = content_type {
            req = req.insert_header(("content-type", ct));
        }
        let mut res = req.send_body(bytes).await.expect("request");
        let raw = res
            .body()
            .limit(64 * 1024 * 1024)
            .await
            .expect("body")
            .to_vec();
        let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        Resp {
            status: res.status(),
            headers: res.headers().clone(),
            body,
            raw,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.request(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.request(Method::POST, path, Some(token), Some(&body))
            .await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Resp {
        self.request(Method::PATCH, path, Some(token), Some(&body))
            .await
    }

    pub async fn create_project(&self, prefix: &str) -> Value {
        let r = self
            .post(
                "/v1/projects",
                OWNER_TOKEN,
                json!({
                    "name": format!("Project {prefix}"),
                    "key_prefix": prefix,
                    "routes": [
                        {"methods": ["GET"], "path": "/orders/*", "scope": "orders:read"},
                        {"methods": ["POST"], "path": "/orders/*", "scope": "orders:write"}
                    ],
                    "default_route_policy": "allow"
                }),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        r.body
    }

    pub async fn create_key(&self, project_id: &str, spec: Value) -> Value {
        let r = self
            .post(
                &format!("/v1/projects/{project_id}/keys"),
                OWNER_TOKEN,
                spec,
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        r.body
    }

    pub async fn secret_key(&self, project_id: &str) -> Value {
        self.create_key(
            project_id,
            json!({"name": "server", "kind": "secret", "environment": "live", "scopes": ["orders:read"]}),
        )
        .await
    }

    /// A new API token with `role`.
    pub async fn token(&self, role: &str) -> String {
        let r = self
            .post(
                "/v1/admin-tokens",
                OWNER_TOKEN,
                json!({"name": format!("{role} token"), "role": role}),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        r.body["token"].as_str().unwrap().to_owned()
    }

    pub async fn verify(&self, body: Value) -> Resp {
        let r = self.post("/v1/verify", OWNER_TOKEN, body).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        r
    }

    pub async fn verify_code(&self, key: &str) -> String {
        self.verify(json!({"key": key})).await.body["code"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

/// Generates a `sqlite` and a `postgres` test for each async test body `fn(TestApp)`; the
/// `postgres` one is ignored unless asked for (see the module's documentation).
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[actix_web::test]
                async fn sqlite() {
                    let app = $crate::helpers::spawn($crate::helpers::Backend::Sqlite).await;
                    super::$name(app).await;
                }
                #[actix_web::test]
                #[ignore = "needs PostgreSQL at KEYGATE_TEST_POSTGRES_URL; `cargo xtask test` runs it"]
                async fn postgres() {
                    let app = $crate::helpers::spawn($crate::helpers::Backend::Postgres).await;
                    super::$name(app).await;
                }
            }
        )*
    };
}
