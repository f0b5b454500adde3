//! Runs the built edge Worker in `workerd`, the open-source runtime behind Cloudflare Workers,
//! taken from the npm package pinned in the workspace's `package.json`.
//!
//! [`WorkerdConfig`] writes a `workerd` configuration (Cap'n Proto text) for what `worker-build`
//! left in `edge/build/`, starts `workerd serve` on it, waits until it listens on its ports,
//! and [`Workerd`] stops the process when dropped.
//!
//! `cargo xtask build-edge` runs `worker-build` 0.8.7 with the entry module `edge/shim.mjs`
//! (`CUSTOM_SHIM`), which emits `build/index.js` (it only re-exports `./worker/shim.mjs`),
//! `build/worker/shim.mjs` (the entry module bundled by esbuild, which imports `./index.wasm`) and
//! `build/worker/index.wasm`. Those three modules ([`WORKER_MODULES`]) are copied into the state
//! directory next to the configuration, because `embed` paths are relative to the configuration
//! file, and so that a rebuild does not change a running process underneath it.
//!
//! The configuration gives the Worker:
//!
//! - every var and secret as a text binding (`env.var` and `env.secret` both read them);
//! - `SNAPSHOT_KV`: a KV namespace served by a writable directory, `kv/` in the state directory
//!   (one file per key; no listing, metadata or expiry);
//! - `LIMITER`: the Durable Object namespace of class `Limiter`, SQLite-backed, stored on disk in
//!   `durable-objects/`;
//! - as `globalOutbound`, a network service that allows `public`, `private` and `local`
//!   addresses, so that `fetch` reaches services on `127.0.0.1`.
//!
//! The state directory keeps KV and Durable Object data across restarts of the same directory.
//!
//! **Scheduled events.** `workerd` has no HTTP route that runs a Worker's `scheduled` handler
//! (wrangler's `/__scheduled` and Miniflare's `/cdn-cgi/mf/scheduled` belong to those tools). What
//! `workerd` has is `Fetcher.scheduled()` on a service binding, behind the experimental
//! compatibility flag `service_binding_extra_handlers`, which needs `workerd serve --experimental`.
//! With [`WorkerdConfig::scheduled_trigger`] (on by default) a second socket serves a small
//! trigger Worker bound to the edge: `GET /__scheduled?cron=<expression>&time=<unix ms>` runs the
//! edge's `scheduled` handler once and answers `{"outcome":"ok","noRetry":false}` (status 200 when
//! the outcome is `ok`, else 500). [`Workerd::trigger_scheduled`] calls it.
//!
//! With [`WorkerdConfig::crons`], `workerd` also runs the cron expressions on their schedule,
//! like Cloudflare does, through its bundled `/workerd/cron.js` Worker (experimental as well).

use std::collections::{BTreeMap, HashSet};
use std::fmt::{self, Write as _};
use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::http;

/// The Worker's modules in the build directory, as `worker-build` leaves them.
pub const WORKER_MODULES: [&str; 3] = ["index.js", "worker/shim.mjs", "worker/index.wasm"];

/// Compatibility date used when `wrangler.toml` does not name one.
pub const DEFAULT_COMPATIBILITY_DATE: &str = "2026-04-26";
/// Name of the Durable Object class the edge exports.
pub const LIMITER_CLASS: &str = "Limiter";
/// Binding of the Durable Object namespace.
pub const LIMITER_BINDING: &str = "LIMITER";
/// Binding of the KV namespace.
pub const SNAPSHOT_KV_BINDING: &str = "SNAPSHOT_KV";
/// Path of the trigger Worker's endpoint.
pub const SCHEDULED_PATH: &str = "/__scheduled";

const TRIGGER_WORKER: &str = r#"// Runs the edge Worker's scheduled() handler on request, as a cron trigger would:
// GET /__scheduled?cron=<expression>&time=<unix ms>. Needs service_binding_extra_handlers.
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname !== "/__scheduled") {
      return new Response("use GET /__scheduled?cron=<expression>\n", { status: 404 });
    }
    const cron = url.searchParams.get("cron") ?? "* * * * *";
    const time = Number(url.searchParams.get("time") ?? Date.now());
    const result = await env.EDGE.scheduled({ scheduledTime: new Date(time), cron });
    return Response.json(result, { status: result.outcome === "ok" ? 200 : 500 });
  },
};
"#;

/// The workspace root (the directory holding the root `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The `workerd` binary installed by `npm ci`. The platform package's binary is preferred to
/// `node_modules/.bin/workerd`, which may be a Node launcher: stopping the launcher would leave
/// the runtime running.
pub fn workerd_binary(workspace: &Path) -> PathBuf {
    let platform = match (std::env::consts::OS, std::env::consts::ARCH) {
        ("linux", "x86_64") => Some("linux-64"),
        ("linux", "aarch64") => Some("linux-arm64"),
        ("macos", "x86_64") => Some("darwin-64"),
        ("macos", "aarch64") => Some("darwin-arm64"),
        _ => None,
    };
    if let Some(p) = platform {
        let native = workspace
            .join("node_modules/@cloudflare")
            .join(format!("workerd-{p}"))
            .join("bin/workerd");
        if native.is_file() {
            return native;
        }
    }
    workspace.join("node_modules/.bin/workerd")
}

/// The `compatibility_date` in the workspace's `wrangler.toml`, so that the local runtime and a
/// deployment agree; [`DEFAULT_COMPATIBILITY_DATE`] if there is none.
pub fn compatibility_date(workspace: &Path) -> String {
    wrangler_value(workspace, "compatibility_date")
        .map(|v| v.trim_matches('"').to_owned())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| DEFAULT_COMPATIBILITY_DATE.to_owned())
}

/// The `crons` of `[triggers]` in `wrangler.toml`, so that the local stack runs what deploys.
pub fn wrangler_crons(workspace: &Path) -> Vec<String> {
    wrangler_value(workspace, "crons")
        .map(|v| v.split('"').skip(1).step_by(2).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The raw value of the first `key = value` line of `wrangler.toml`.
fn wrangler_value(workspace: &Path, key: &str) -> Option<String> {
    let text = fs::read_to_string(workspace.join("wrangler.toml")).ok()?;
    text.lines().find_map(|line| {
        let (k, value) = line.split_once('=')?;
        (k.trim() == key).then(|| value.trim().to_owned())
    })
}

/// Where `workerd`'s standard output and error go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Appended to `workerd.log` in the state directory (see [`Workerd::logs`]).
    LogFile,
    /// This process's standard output and error.
    Inherit,
}

/// How to run the edge Worker in `workerd`.
#[derive(Clone)]
pub struct WorkerdConfig {
    workspace: PathBuf,
    build_dir: PathBuf,
    state_dir: PathBuf,
    host: Ipv4Addr,
    port: u16,
    vars: BTreeMap<String, String>,
    secrets: BTreeMap<String, String>,
    scheduled_trigger: bool,
    crons: Vec<String>,
    compatibility_date: Option<String>,
    output: Output,
    startup_timeout: Duration,
    cache_service: Option<String>,
}

impl fmt::Debug for WorkerdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerdConfig")
            .field("workspace", &self.workspace)
            .field("build_dir", &self.build_dir)
            .field("state_dir", &self.state_dir)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("vars", &self.vars)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("scheduled_trigger", &self.scheduled_trigger)
            .field("crons", &self.crons)
            .field("compatibility_date", &self.compatibility_date)
            .field("cache_service", &self.cache_service)
            .field("output", &self.output)
            .finish_non_exhaustive()
    }
}

impl WorkerdConfig {
    /// Runs `workspace/edge/build` with its state (configuration, KV, Durable Objects, log) in
    /// `state_dir`, on `127.0.0.1` and a free port.
    pub fn new(workspace: impl Into<PathBuf>, state_dir: impl Into<PathBuf>) -> Self {
        let workspace = workspace.into();
        WorkerdConfig {
            build_dir: workspace.join("edge/build"),
            workspace,
            state_dir: state_dir.into(),
            host: Ipv4Addr::LOCALHOST,
            port: 0,
            vars: BTreeMap::new(),
            secrets: BTreeMap::new(),
            scheduled_trigger: true,
            crons: Vec::new(),
            compatibility_date: None,
            output: Output::LogFile,
            startup_timeout: Duration::from_secs(30),
            cache_service: None,
        }
    }

    /// The directory `worker-build` wrote (default: `edge/build` in the workspace).
    pub fn build_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.build_dir = dir.into();
        self
    }

    /// Where its state (KV, Durable Objects, logs) lives.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = dir.into();
        self
    }

    /// The address to listen on (default `127.0.0.1`).
    pub fn host(mut self, host: Ipv4Addr) -> Self {
        self.host = host;
        self
    }

    /// The port to listen on; 0 (the default) picks a free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// A plain-text var (`[vars]` in `wrangler.toml`).
    pub fn var(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.vars.insert(name.into(), value.into());
        self
    }

    /// Several vars.
    pub fn vars<K: Into<String>, V: Into<String>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.vars
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// A secret (`wrangler secret put`). Its value never appears in `Debug` output.
    pub fn secret(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.secrets.insert(name.into(), value.into());
        self
    }

    /// Several secrets.
    pub fn secrets<K: Into<String>, V: Into<String>>(
        mut self,
        secrets: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.secrets
            .extend(secrets.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Whether to serve the `/__scheduled` trigger on a second port (default: yes).
    pub fn scheduled_trigger(mut self, on: bool) -> Self {
        self.scheduled_trigger = on;
        self
    }

    /// Cron expressions that `workerd` runs on their schedule (default: none).
    pub fn crons<S: Into<String>>(mut self, crons: impl IntoIterator<Item = S>) -> Self {
        self.crons = crons.into_iter().map(Into::into).collect();
        self
    }

    /// The compatibility date (default: the one in `wrangler.toml`).
    pub fn compatibility_date(mut self, date: impl Into<String>) -> Self {
        self.compatibility_date = Some(date.into());
        self
    }

    /// The Cache API's backend: an HTTP service at `address` (`host:port`, e.g.
    /// [`crate::cache::CacheService::address`]) as the Worker's `cacheApiOutbound`. Without one
    /// (the default), every Cache API call throws "No Cache was configured".
    pub fn cache_service(mut self, address: impl Into<String>) -> Self {
        self.cache_service = Some(address.into());
        self
    }

    /// Where `workerd`'s output goes (default: [`Output::LogFile`]).
    pub fn output(mut self, output: Output) -> Self {
        self.output = output;
        self
    }

    /// How long to wait for the port to accept connections (default 30 s).
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    fn needs_experimental(&self) -> bool {
        self.scheduled_trigger || !self.crons.is_empty()
    }

    /// Writes the configuration and starts `workerd`, returning once it accepts connections.
    /// When a port was picked automatically and another process took it meanwhile, tries again
    /// with another.
    pub fn start(&self) -> io::Result<Workerd> {
        let auto_port = self.port == 0;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_start() {
                Ok(w) => return Ok(w),
                Err(StartError::AddressInUse(_)) if auto_port && attempt < 5 => {}
                Err(StartError::AddressInUse(msg) | StartError::Other(msg)) => {
                    return Err(io::Error::other(msg))
                }
                Err(StartError::Io(e)) => return Err(e),
            }
        }
    }

    fn try_start(&self) -> Result<Workerd, StartError> {
        let binary = workerd_binary(&self.workspace);
        if !binary.exists() {
            return Err(StartError::Other(format!(
                "{} is missing: run `npm ci` (or `cargo xtask install`) in {}",
                binary.display(),
                self.workspace.display()
            )));
        }
        fs::create_dir_all(&self.state_dir)?;
        let state_dir = self.state_dir.canonicalize()?;
        let worker_dir = state_dir.join("worker");
        fs::create_dir_all(&worker_dir)?;
        fs::create_dir_all(worker_dir.join("worker"))?;
        for module in WORKER_MODULES {
            let from = self.build_dir.join(module);
            fs::copy(&from, worker_dir.join(module)).map_err(|e| {
                StartError::Other(format!(
                    "cannot copy {}: {e} (build the Worker first: `cargo xtask build-edge`)",
                    from.display()
                ))
            })?;
        }
        for dir in ["kv", "durable-objects", "cron"] {
            fs::create_dir_all(state_dir.join(dir))?;
        }
        if self.scheduled_trigger {
            fs::write(state_dir.join("trigger.mjs"), TRIGGER_WORKER)?;
        }

        // Both ports are held until both are picked, so that they differ; they are released
        // just before `workerd` binds them.
        let (main, port) = match self.port {
            0 => reserve_port(self.host)?,
            p => {
                // Taken already: say so now rather than through a runtime that cannot bind it.
                let held = TcpListener::bind((self.host, p)).map_err(|e| {
                    StartError::Other(format!("cannot listen on {}:{p}: {e}", self.host))
                })?;
                (held, p)
            }
        };
        let scheduled = match self.scheduled_trigger {
            true => Some(reserve_port(Ipv4Addr::LOCALHOST)?),
            false => None,
        };
        let scheduled_port = scheduled.as_ref().map(|(_, p)| *p);
        drop((main, scheduled));
        let compat = self
            .compatibility_date
            .clone()
            .unwrap_or_else(|| compatibility_date(&self.workspace));
        let config_path = state_dir.join("workerd.capnp");
        fs::write(
            &config_path,
            self.capnp(&state_dir, &compat, port, scheduled_port),
        )?;

        let log_path = state_dir.join("workerd.log");
        let mut cmd = Command::new(&binary);
        cmd.arg("serve");
        if self.needs_experimental() {
            cmd.arg("--experimental");
        }
        cmd.arg(&config_path)
            .current_dir(&state_dir)
            .stdin(Stdio::null());
        let log_start = match self.output {
            Output::LogFile => {
                let mut log = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log_path)?;
                writeln!(log, "--- workerd serve on port {port} ---")?;
                let start = log.metadata()?.len();
                cmd.stdout(log.try_clone()?).stderr(log);
                start
            }
            Output::Inherit => {
                cmd.stdout(Stdio::inherit()).stderr(Stdio::inherit());
                0
            }
        };
        let child = cmd
            .spawn()
            .map_err(|e| StartError::Other(format!("cannot start {}: {e}", binary.display())))?;
        let mut workerd = Workerd {
            child: Some(child),
            addr: SocketAddr::from((self.host, port)),
            scheduled_addr: scheduled_port.map(|p| SocketAddr::from((Ipv4Addr::LOCALHOST, p))),
            state_dir,
            log_path,
            log_start,
            output: self.output,
        };
        workerd.wait_ready(self.startup_timeout)?;
        Ok(workerd)
    }

    fn capnp(
        &self,
        state_dir: &Path,
        compat: &str,
        port: u16,
        scheduled_port: Option<u16>,
    ) -> String {
        let path = |p: &str| text(&state_dir.join(p).to_string_lossy());
        let mut c = String::new();
        let mut w = |line: String| {
            c.push_str(&line);
            c.push('\n');
        };
        w("# Written by keygate-tests (tests/src/workerd.rs); rewritten on every start.".into());
        w("using Workerd = import \"/workerd/workerd.capnp\";".into());
        w(String::new());
        w("const config :Workerd.Config = (".into());
        w("  services = [".into());
        w("    (name = \"keygate-edge\", worker = .edge),".into());
        w(
            "    (name = \"outbound\", network = (allow = [\"public\", \"private\", \"local\"])),"
                .into(),
        );
        w(format!(
            "    (name = \"snapshot-kv\", disk = (path = {}, writable = true)),",
            path("kv")
        ));
        w(format!(
            "    (name = \"durable-objects\", disk = (path = {}, writable = true)),",
            path("durable-objects")
        ));
        if let Some(address) = &self.cache_service {
            w(format!(
                "    (name = \"cache\", external = (address = {}, http = ())),",
                text(address)
            ));
        }
        if scheduled_port.is_some() {
            w("    (name = \"scheduled-trigger\", worker = .trigger),".into());
        }
        if !self.crons.is_empty() {
            w("    (name = \"cron\", worker = .cron),".into());
            w(format!(
                "    (name = \"cron-storage\", disk = (path = {}, writable = true)),",
                path("cron")
            ));
        }
        w("  ],".into());
        w("  sockets = [".into());
        w(format!(
            "    (name = \"http\", address = {}, http = (), service = \"keygate-edge\"),",
            text(&format!("{}:{port}", self.host))
        ));
        if let Some(p) = scheduled_port {
            w(format!(
                "    (name = \"scheduled\", address = \"127.0.0.1:{p}\", http = (), service = \"scheduled-trigger\"),"
            ));
        }
        w("  ],".into());
        w(");".into());
        w(String::new());
        w("const edge :Workerd.Worker = (".into());
        w("  modules = [".into());
        w("    (name = \"index.js\", esModule = embed \"worker/index.js\"),".into());
        w("    (name = \"worker/shim.mjs\", esModule = embed \"worker/worker/shim.mjs\"),".into());
        w("    (name = \"worker/index.wasm\", wasm = embed \"worker/worker/index.wasm\"),".into());
        w("  ],".into());
        w(format!("  compatibilityDate = {},", text(compat)));
        w("  bindings = [".into());
        for (name, value) in self.vars.iter().chain(&self.secrets) {
            w(format!(
                "    (name = {}, text = {}),",
                text(name),
                text(value)
            ));
        }
        w(format!(
            "    (name = {}, kvNamespace = \"snapshot-kv\"),",
            text(SNAPSHOT_KV_BINDING)
        ));
        w(format!(
            "    (name = {}, durableObjectNamespace = {}),",
            text(LIMITER_BINDING),
            text(LIMITER_CLASS)
        ));
        w("  ],".into());
        w(format!(
            "  durableObjectNamespaces = [(className = {}, uniqueKey = \"keygate-limiter\", enableSql = true)],",
            text(LIMITER_CLASS)
        ));
        w("  durableObjectStorage = (localDisk = \"durable-objects\"),".into());
        w("  globalOutbound = \"outbound\",".into());
        if self.cache_service.is_some() {
            w("  cacheApiOutbound = \"cache\",".into());
        }
        w(");".into());
        if scheduled_port.is_some() {
            w(String::new());
            w("const trigger :Workerd.Worker = (".into());
            w("  modules = [(name = \"trigger.mjs\", esModule = embed \"trigger.mjs\")],".into());
            w(format!("  compatibilityDate = {},", text(compat)));
            w("  compatibilityFlags = [\"service_binding_extra_handlers\"],".into());
            w("  bindings = [(name = \"EDGE\", service = \"keygate-edge\")],".into());
            w(");".into());
        }
        if !self.crons.is_empty() {
            let crons = format!(
                "{{\"EDGE\":[{}]}}",
                self.crons
                    .iter()
                    .map(|c| json_string(c))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            w(String::new());
            w("const cron :Workerd.Worker = (".into());
            w("  modules = [(name = \"cron.js\", bundled = \"/workerd/cron.js\")],".into());
            w(format!("  compatibilityDate = {},", text(compat)));
            w("  compatibilityFlags = [\"service_binding_extra_handlers\"],".into());
            w("  bindings = [".into());
            w("    (name = \"SCHEDULE\", durableObjectNamespace = \"Schedule\"),".into());
            w(format!("    (name = \"CRONS\", json = {}),", text(&crons)));
            w("    (name = \"EDGE\", service = \"keygate-edge\"),".into());
            w("  ],".into());
            w("  durableObjectNamespaces = [(className = \"Schedule\", uniqueKey = \"keygate-cron\", enableSql = true)],".into());
            w("  durableObjectStorage = (localDisk = \"cron-storage\"),".into());
            w(");".into());
        }
        c
    }
}

enum StartError {
    AddressInUse(String),
    Other(String),
    Io(io::Error),
}

impl From<io::Error> for StartError {
    fn from(e: io::Error) -> Self {
        StartError::Io(e)
    }
}

/// A Cap'n Proto text literal.
fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A free port, held by the returned listener until it is dropped.
fn reserve_port(host: Ipv4Addr) -> io::Result<(TcpListener, u16)> {
    let listener = TcpListener::bind((host, 0))?;
    let port = listener.local_addr()?.port();
    Ok((listener, port))
}

/// The TCP ports process `pid` listens on, or `None` where `/proc` cannot tell (not Linux).
///
/// A port picked by [`reserve_port`] is released before `workerd` binds it, so another process may
/// take it meanwhile. Then `workerd` exits with "Address already in use", but a probe that only
/// connects would be answered by the other listener and pass for ready. So where `/proc` tells,
/// the listening socket must belong to `workerd` itself; a process that has exited holds none.
fn listening_ports(pid: u32) -> Option<HashSet<u16>> {
    const LISTEN: &str = "0A";
    if !Path::new("/proc/self/net/tcp").exists() {
        return None;
    }
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Some(HashSet::new());
    };
    let inodes: HashSet<String> = fds
        .filter_map(|entry| fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?;
            let inode = target.strip_prefix("socket:[")?.strip_suffix(']')?;
            Some(inode.to_owned())
        })
        .collect();
    let mut ports = HashSet::new();
    for table in ["tcp", "tcp6"] {
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        // Columns: sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.get(3) != Some(&LISTEN)
                || !cols.get(9).is_some_and(|inode| inodes.contains(*inode))
            {
                continue;
            }
            let local_port = cols
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            ports.extend(local_port);
        }
    }
    Some(ports)
}

/// The outcome of one scheduled event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledOutcome {
    /// HTTP status of the trigger: 200 when the handler's outcome was `ok`.
    pub status: u16,
    /// The runtime's answer, e.g. `{"outcome":"ok","noRetry":false}`.
    pub body: String,
}

impl ScheduledOutcome {
    /// Whether the handler completed.
    pub fn is_ok(&self) -> bool {
        self.status == 200
    }
}

/// A running `workerd`. Dropping it kills the process.
#[derive(Debug)]
pub struct Workerd {
    child: Option<Child>,
    addr: SocketAddr,
    scheduled_addr: Option<SocketAddr>,
    state_dir: PathBuf,
    log_path: PathBuf,
    log_start: u64,
    output: Output,
}

impl Workerd {
    /// The port the Worker listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://HOST:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `GET` on `path` here; a request that gets no answer fails with the runtime's log.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Result<http::Response, String> {
        http::get(&format!("{}{path}", self.url()), headers)
            .map_err(|e| format!("{e}\n{}", self.logs()))
    }

    /// The trigger's base URL, if it runs.
    pub fn scheduled_url(&self) -> Option<String> {
        self.scheduled_addr.map(|a| format!("http://{a}"))
    }

    /// The state directory (configuration, `kv/`, `durable-objects/`, `workerd.log`).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Runs the Worker's `scheduled` handler once, as the cron `cron` would.
    pub fn trigger_scheduled(&self, cron: &str) -> io::Result<ScheduledOutcome> {
        let base = self.scheduled_url().ok_or_else(|| {
            io::Error::other("the scheduled trigger is off (WorkerdConfig::scheduled_trigger)")
        })?;
        let url = format!("{base}{SCHEDULED_PATH}?cron={}", query_escape(cron));
        let resp = http::get(&url, &[])?;
        Ok(ScheduledOutcome {
            status: resp.status,
            body: resp.text(),
        })
    }

    /// What `workerd` printed since this process started (with [`Output::LogFile`]).
    pub fn logs(&self) -> String {
        match self.output {
            Output::Inherit => String::new(),
            Output::LogFile => fs::read(&self.log_path)
                .map(|b| {
                    let start = usize::try_from(self.log_start).unwrap_or(0).min(b.len());
                    String::from_utf8_lossy(&b[start..]).into_owned()
                })
                .unwrap_or_default(),
        }
    }

    /// Waits for the process to exit by itself (e.g. on Ctrl-C), returning its status.
    pub fn wait(&mut self) -> io::Result<std::process::ExitStatus> {
        match self.child.as_mut() {
            Some(c) => {
                let status = c.wait();
                self.child = None;
                status
            }
            None => Err(io::Error::other("workerd is not running")),
        }
    }

    /// Kills the process and waits for it.
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), StartError> {
        let deadline = Instant::now() + timeout;
        let mut pending: Vec<SocketAddr> = std::iter::once(self.addr)
            .chain(self.scheduled_addr)
            .map(|a| match a {
                // A wildcard listener is reached through loopback.
                SocketAddr::V4(v4) if v4.ip().is_unspecified() => {
                    SocketAddr::from((Ipv4Addr::LOCALHOST, v4.port()))
                }
                other => other,
            })
            .collect();
        loop {
            match self.pid().and_then(listening_ports) {
                Some(ports) => pending.retain(|a| !ports.contains(&a.port())),
                None => pending
                    .retain(|a| TcpStream::connect_timeout(a, Duration::from_millis(200)).is_err()),
            }
            if pending.is_empty() {
                return Ok(());
            }
            let exited = match self.child.as_mut() {
                Some(c) => c.try_wait()?,
                None => None,
            };
            if let Some(status) = exited {
                self.child = None;
                let logs = self.logs();
                let msg = format!(
                    "workerd exited ({status}) before listening on {}:\n{logs}",
                    self.addr
                );
                return Err(if logs.contains("Address already in use") {
                    StartError::AddressInUse(msg)
                } else {
                    StartError::Other(msg)
                });
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(StartError::Other(format!(
                    "workerd did not listen on {} within {timeout:?}:\n{}",
                    self.addr,
                    self.logs()
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Workerd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn a_port_counts_as_ready_only_when_the_runtime_itself_listens_on_it() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let addr = listener.local_addr().expect("address");
        // Another process, standing in for a runtime that lost the port to this listener.
        let mut other = Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let other_pid = other.id();

        let ours = listening_ports(std::process::id()).expect("/proc on Linux");
        assert!(ours.contains(&addr.port()));
        let theirs = listening_ports(other_pid).expect("/proc on Linux");
        assert!(!theirs.contains(&addr.port()));
        assert!(
            TcpStream::connect(addr).is_ok(),
            "the port accepts connections"
        );

        // A process that has exited holds nothing, whatever answers on the port.
        let _ = other.kill();
        let _ = other.wait();
        assert_eq!(listening_ports(other_pid), Some(HashSet::new()));
    }

    #[test]
    fn capnp_text_escapes() {
        assert_eq!(text("a\"b\\c\nd"), "\"a\\\"b\\\\c\\nd\"");
        assert_eq!(text("\u{1}"), "\"\\x01\"");
        assert_eq!(json_string("* * \"x\""), "\"* * \\\"x\\\"\"");
        assert_eq!(query_escape("*/5 * * * *"), "%2A%2F5+%2A+%2A+%2A+%2A");
    }

    #[test]
    fn config_names_every_binding() {
        let cfg = WorkerdConfig::new("/w", "/s")
            .var("ORIGIN_URL", "http://127.0.0.1:1")
            .secret("EDGE_TOKEN", "t\"ok")
            .crons(["* * * * *"])
            .cache_service("127.0.0.1:7000");
        let text = cfg.capnp(Path::new("/s"), "2026-11-01", 8787, Some(9000));
        for needle in [
            "(name = \"ORIGIN_URL\", text = \"http://127.0.0.1:1\")",
            "(name = \"EDGE_TOKEN\", text = \"t\\\"ok\")",
            "(name = \"SNAPSHOT_KV\", kvNamespace = \"snapshot-kv\")",
            "(name = \"LIMITER\", durableObjectNamespace = \"Limiter\")",
            "address = \"127.0.0.1:8787\"",
            "address = \"127.0.0.1:9000\"",
            "allow = [\"public\", \"private\", \"local\"]",
            "(name = \"CRONS\", json = \"{\\\"EDGE\\\":[\\\"* * * * *\\\"]}\")",
            "(name = \"cache\", external = (address = \"127.0.0.1:7000\", http = ()))",
            "cacheApiOutbound = \"cache\"",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        assert!(
            !format!("{cfg:?}").contains("t\"ok"),
            "Debug shows a secret"
        );
    }
}
