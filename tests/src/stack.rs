//! The whole Keygate stack for end-to-end tests and the local stack: the control plane
//! in-process (its own data directory, SQLite, port 0), a recording origin, and the edge Worker
//! in `workerd` pointed at both.

use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use keygate_control_plane::{Application, Config};
use serde_json::{json, Value};

use crate::http;
use crate::origin::Origin;
use crate::workerd::{workspace_root, Output, Workerd, WorkerdConfig};

/// Settings of a stack.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// `SNAPSHOT_REFRESH_SECONDS` for the edge.
    pub refresh_seconds: f64,
    /// How long control-plane snapshots stay valid.
    pub snapshot_validity_seconds: i64,
    /// `HOST_ENVIRONMENTS` for the edge (JSON).
    pub host_environments: String,
    /// `USAGE_FLUSH_SECONDS` for the edge.
    pub usage_flush_seconds: f64,
    /// Control-plane port (0: any free one).
    pub control_plane_port: u16,
    /// Edge port (0: any free one).
    pub edge_port: u16,
    /// Origin: start the recording origin on this port (0: any), or use this URL.
    pub origin: OriginChoice,
    /// Owner token to bootstrap (generated when `None`).
    pub bootstrap_token: Option<String>,
    /// Data directory (a temporary one when `None`).
    pub data_dir: Option<PathBuf>,
    /// Send workerd's output to this process instead of a log file.
    pub inherit_edge_output: bool,
    /// Cron expressions workerd runs on their schedule.
    pub crons: Vec<String>,
    /// Where the edge keeps its KV and Durable Object state (a temporary one when `None`).
    pub edge_state_dir: Option<PathBuf>,
    /// How often the control plane evaluates the alert rules (its own default when `None`).
    pub alert_interval: Option<Duration>,
    /// The control plane's `DATABASE_URL` (SQLite in the data directory when `None`).
    pub database_url: Option<String>,
}

/// Which origin the edge forwards to.
#[derive(Debug, Clone)]
pub enum OriginChoice {
    /// Start the recording origin on this port.
    Recording(u16),
    /// Forward to this URL; start nothing.
    External(String),
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            refresh_seconds: 0.5,
            snapshot_validity_seconds: 3600,
            host_environments: String::new(),
            usage_flush_seconds: 1.0,
            control_plane_port: 0,
            edge_port: 0,
            origin: OriginChoice::Recording(0),
            bootstrap_token: None,
            data_dir: None,
            inherit_edge_output: false,
            crons: Vec::new(),
            edge_state_dir: None,
            alert_interval: None,
            database_url: None,
        }
    }
}

/// The secret the edge and the origin share in a stack.
pub const ORIGIN_SECRET: &str = "local-origin-hmac-secret-0123456789";

/// A running control plane in a thread of this process.
#[derive(Debug)]
pub struct ControlPlane {
    /// Base URL.
    pub url: String,
    handle: ServerHandle,
    thread: Option<JoinHandle<()>>,
}

impl ControlPlane {
    /// Starts a control plane with `config`.
    pub fn start(config: Config) -> Result<ControlPlane, String> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                match Application::build(config).await {
                    Ok(app) => {
                        let _ = tx.send(Ok((app.port(), app.handle())));
                        let _ = app.run_until_stopped().await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(format!("{e:#}")));
                    }
                }
            });
        });
        let (port, handle) = rx
            .recv_timeout(Duration::from_secs(60))
            .map_err(|e| format!("control plane did not start: {e}"))??;
        Ok(ControlPlane {
            url: format!("http://127.0.0.1:{port}"),
            handle,
            thread: Some(thread),
        })
    }

    /// Stops it and waits until its port is closed.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let handle = self.handle.clone();
        actix_web::rt::System::new().block_on(handle.stop(false));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.shutdown();
        }
    }
}

/// A JSON API response.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    /// Status.
    pub status: u16,
    /// Body parsed as JSON (`Null` when empty or not JSON).
    pub body: Value,
}

/// Calls the control plane's JSON API.
pub fn api(base: &str, token: &str, method: &str, path: &str, body: Option<&Value>) -> ApiResponse {
    let auth = format!("Bearer {token}");
    let payload = body.map(Value::to_string);
    let mut headers = vec![("Authorization", auth.as_str())];
    if payload.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    match http::request(
        method,
        &format!("{base}{path}"),
        &headers,
        payload.as_deref().map(str::as_bytes),
    ) {
        Ok(r) => ApiResponse {
            status: r.status,
            body: serde_json::from_slice(&r.body).unwrap_or(Value::Null),
        },
        Err(e) => ApiResponse {
            status: 0,
            body: json!({ "transport_error": e.to_string() }),
        },
    }
}

/// The three processes of the local stack.
#[derive(Debug)]
pub struct Stack {
    /// The control plane (None once stopped).
    pub control_plane: Option<ControlPlane>,
    /// Its base URL (kept after it stops).
    pub control_plane_url: String,
    /// The recording origin, if started.
    pub origin: Option<Origin>,
    /// Where the edge forwards.
    pub origin_url: String,
    /// The edge in workerd (None only while it restarts).
    pub edge: Option<Workerd>,
    /// The edge's base URL (its port is kept across restarts).
    pub edge_url: String,
    /// An owner token.
    pub owner_token: String,
    /// The edge's token (role `edge`).
    pub edge_token: String,
    /// Options used.
    pub options: StackOptions,
    config: Config,
    edge_config: WorkerdConfig,
    _dirs: Vec<tempfile::TempDir>,
}

/// Name of the edge's API token; a restart replaces the previous one.
const EDGE_TOKEN_NAME: &str = "local-stack-edge";

/// Creates the edge's token, deleting the ones earlier runs made.
fn edge_token(cp_url: &str, owner: &str) -> ApiResponse {
    let old = api(cp_url, owner, "GET", "/v1/admin-tokens", None);
    for t in old.body["items"].as_array().into_iter().flatten() {
        if t["name"] == EDGE_TOKEN_NAME {
            if let Some(id) = t["id"].as_str() {
                api(
                    cp_url,
                    owner,
                    "DELETE",
                    &format!("/v1/admin-tokens/{id}"),
                    None,
                );
            }
        }
    }
    api(
        cp_url,
        owner,
        "POST",
        "/v1/admin-tokens",
        Some(&json!({"name": EDGE_TOKEN_NAME, "role": "edge"})),
    )
}

/// A random token for the owner, in the control plane's format.
pub fn random_token() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    let body: String = (0..40)
        .map(|_| keygate_shared::key::BASE62[rng.gen_range(0..62)] as char)
        .collect();
    format!("kgt_{body}")
}

impl Stack {
    /// Starts the stack.
    pub fn start(options: StackOptions) -> Result<Stack, String> {
        let mut dirs = Vec::new();
        let data_dir = match &options.data_dir {
            Some(d) => d.clone(),
            None => {
                let d = tempfile::tempdir().map_err(|e| e.to_string())?;
                let p = d.path().join("keygate-data");
                dirs.push(d);
                p
            }
        };
        let owner_token = options.bootstrap_token.clone().unwrap_or_else(random_token);
        let mut config = Config::new(&data_dir);
        config.listen = format!("127.0.0.1:{}", options.control_plane_port);
        config.bootstrap_token = Some(owner_token.clone());
        config.snapshot_validity_seconds = options.snapshot_validity_seconds;
        config.workers = Some(2);
        // The local stack's webhook receivers (the tests', a developer's) run on this machine.
        config.webhooks.allow_private_targets = true;
        // `/v1/verify` maps hosts as the edge does.
        config.host_environments =
            keygate_shared::HostEnvironments::from_json(&options.host_environments)
                .map_err(|e| format!("host_environments: {e}"))?;
        if let Some(interval) = options.alert_interval {
            config.alert_interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        }
        config.database_url = options.database_url.clone();
        let control_plane = ControlPlane::start(config.clone())?;
        let cp_url = control_plane.url.clone();
        // Restarts keep the port, so the edge's CONTROL_PLANE_URL stays right.
        config.listen = cp_url.trim_start_matches("http://").to_owned();

        let edge_token = edge_token(&cp_url, &owner_token);
        let edge_token = edge_token.body["token"]
            .as_str()
            .ok_or_else(|| format!("cannot create the edge token: {:?}", edge_token.body))?
            .to_owned();
        let keys = api(
            &cp_url,
            &owner_token,
            "GET",
            "/v1/snapshot/public-keys",
            None,
        );
        let public_keys: Vec<String> = keys.body["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|k| k["public_key"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if public_keys.is_empty() {
            return Err(format!("no snapshot public key: {:?}", keys.body));
        }

        let (origin, origin_url) = match &options.origin {
            OriginChoice::Recording(port) => {
                let o = Origin::start(*port, ORIGIN_SECRET.as_bytes().to_vec())
                    .map_err(|e| format!("origin: {e}"))?;
                let url = o.url();
                (Some(o), url)
            }
            OriginChoice::External(url) => (None, url.clone()),
        };

        let edge_state = match &options.edge_state_dir {
            Some(d) => d.clone(),
            None => {
                let d = tempfile::tempdir().map_err(|e| e.to_string())?;
                let p = d.path().join("workerd");
                dirs.push(d);
                p
            }
        };
        let mut edge_config = WorkerdConfig::new(workspace_root(), edge_state)
            .crons(options.crons.clone())
            .port(options.edge_port)
            .var("CONTROL_PLANE_URL", cp_url.clone())
            .var("ORIGIN_URL", origin_url.clone())
            .var(
                "SNAPSHOT_REFRESH_SECONDS",
                options.refresh_seconds.to_string(),
            )
            .var(
                "USAGE_FLUSH_SECONDS",
                options.usage_flush_seconds.to_string(),
            )
            .var("HOST_ENVIRONMENTS", options.host_environments.clone())
            .secret("EDGE_TOKEN", edge_token.clone())
            .secret("SNAPSHOT_PUBLIC_KEYS", public_keys.join(","))
            .secret("ORIGIN_HMAC_SECRET", ORIGIN_SECRET);
        if options.inherit_edge_output {
            edge_config = edge_config.output(Output::Inherit);
        }
        let edge = edge_config.start().map_err(|e| format!("workerd: {e}"))?;
        let edge_url = edge.url();
        // Restarts keep the port.
        let edge_config = edge_config.port(edge.port());
        Ok(Stack {
            control_plane: Some(control_plane),
            control_plane_url: cp_url,
            origin,
            origin_url,
            edge: Some(edge),
            edge_url,
            owner_token,
            edge_token,
            options,
            config,
            edge_config,
            _dirs: dirs,
        })
    }

    /// Creates a key in `project` through the API; `(key id, plaintext)`. Panics (with the
    /// answer) unless the API creates it: for tests.
    pub fn create_key(&self, project: &str, spec: &Value) -> (String, String) {
        let r = self.api("POST", &format!("/v1/projects/{project}/keys"), Some(spec));
        assert_eq!(r.status, 201, "create key {spec}: {}", r.body);
        let text = |field: &str| r.body[field].as_str().unwrap_or_default().to_owned();
        (text("id"), text("key"))
    }

    /// Starts another control plane on the same configuration (database, data directory, so
    /// the same signing keys and session secret) on a free port: a second replica. For a stack
    /// on PostgreSQL (`StackOptions::database_url`); the edge keeps polling the first one.
    pub fn start_replica(&self) -> Result<ControlPlane, String> {
        let mut config = self.config.clone();
        config.listen = "127.0.0.1:0".to_owned();
        ControlPlane::start(config)
    }

    /// Calls the control plane as the owner.
    pub fn api(&self, method: &str, path: &str, body: Option<&Value>) -> ApiResponse {
        api(
            &self.control_plane_url,
            &self.owner_token,
            method,
            path,
            body,
        )
    }

    /// Starts another edge with the same configuration from another `worker-build` output,
    /// on a free port with its own state, e.g. to compare a candidate build with this one.
    pub fn start_another_edge(
        &self,
        build_dir: impl Into<PathBuf>,
        state_dir: impl Into<PathBuf>,
    ) -> Result<Workerd, String> {
        self.edge_config
            .clone()
            .build_dir(build_dir)
            .state_dir(state_dir)
            .port(0)
            .start()
            .map_err(|e| format!("workerd: {e}"))
    }

    /// Sends a request to the edge.
    pub fn edge(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> http::Response {
        match http::request(method, &format!("{}{path}", self.edge_url), headers, body) {
            Ok(r) => r,
            Err(e) => http::Response {
                status: 0,
                headers: Vec::new(),
                body: e.to_string().into_bytes(),
            },
        }
    }

    /// The edge's own status (`version` is null while it holds no snapshot).
    pub fn edge_status(&self) -> Value {
        let auth = format!("Bearer {}", self.edge_token);
        self.edge(
            "GET",
            "/.well-known/keygate/status",
            &[("Authorization", &auth)],
            None,
        )
        .text()
        .parse()
        .unwrap_or(Value::Null)
    }

    /// The control plane's current snapshot version.
    pub fn snapshot_version(&self) -> Option<u64> {
        let auth = format!("Bearer {}", self.edge_token);
        let r = http::get(
            &format!("{}/v1/snapshot", self.control_plane_url),
            &[("Authorization", &auth)],
        )
        .ok()?;
        let etag = r.header("ETag")?.trim_matches('"').to_owned();
        etag.split('-').next()?.parse().ok()
    }

    /// Waits until `check` holds, polling every 25 ms, for at most `timeout`. Returns how long
    /// it took, or `None` on timeout.
    pub fn wait_for(timeout: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if check() {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        None
    }

    /// Stops the control plane (the edge keeps running).
    pub fn stop_control_plane(&mut self) {
        if let Some(cp) = self.control_plane.take() {
            cp.stop();
        }
    }

    /// Starts the control plane again on the same port and data directory.
    pub fn restart_control_plane(&mut self) -> Result<(), String> {
        self.stop_control_plane();
        self.control_plane = Some(ControlPlane::start(self.config.clone())?);
        Ok(())
    }

    /// Restarts the edge runtime: a cold isolate with the same KV and Durable Object storage.
    pub fn restart_edge(&mut self) -> Result<(), String> {
        if let Some(old) = self.edge.take() {
            old.stop();
        }
        self.edge = Some(
            self.edge_config
                .start()
                .map_err(|e| format!("workerd: {e}"))?,
        );
        Ok(())
    }

    /// What the edge runtime logged.
    pub fn edge_logs(&self) -> String {
        self.edge.as_ref().map(Workerd::logs).unwrap_or_default()
    }
}
