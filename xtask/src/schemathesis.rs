//! `cargo xtask schemathesis`: fuzzes the control plane's HTTP API from its own OpenAPI document
//! with Schemathesis, on SQLite and on PostgreSQL. `cargo xtask test` runs it too.
//!
//! For each backend it makes a fresh data directory (and, for PostgreSQL, a fresh database on
//! the server of `KEYGATE_TEST_POSTGRES_URL`, dropped at the end), migrates it, creates an owner
//! admin and an owner API token with the `keygate` CLI, starts the real `keygate serve` on a
//! port the system picks, seeds a project, two keys and some usage so that the paths have
//! something real behind them, then runs `schemathesis run <base>/openapi.json` with every check
//! and a bounded number of examples per operation.
//!
//! The budget ([`MAX_EXAMPLES`] per operation and phase, one worker, a fixed seed) keeps both
//! backends together under three minutes on a two-core machine; [`HARD_LIMIT`] stops a hung
//! run. Figures of a run are in docs/fuzzing.md ("API fuzzing").

use std::fs;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::process::{cargo, run, show};

/// The Schemathesis release `cargo xtask install` puts into [`venv_dir`].
pub const VERSION: &str = "4.32.5";

/// Examples generated per operation and phase.
const MAX_EXAMPLES: &str = "5";

/// A run on one backend that takes longer than this is stopped and fails: the budget above
/// takes about a minute, so only a hang gets here.
const HARD_LIMIT: Duration = Duration::from_secs(150);

/// The role of the API token the run uses: owner, so that every operation is reachable.
const ROLE: &str = "owner";

/// The two backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded SQLite file in the data directory.
    Sqlite,
    /// A database of its own on the PostgreSQL server.
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The virtualenv holding Schemathesis.
pub fn venv_dir(root: &Path) -> PathBuf {
    root.join("target/tools/schemathesis")
}

fn executable(root: &Path) -> PathBuf {
    venv_dir(root).join("bin/schemathesis")
}

/// The installed version, if Schemathesis is installed in the virtualenv.
fn installed_version(root: &Path) -> Option<String> {
    let out = crate::process::stdout_of(Command::new(executable(root)).arg("--version"))?;
    // "schemathesis, version 4.32.5"
    out.rsplit(' ').next().map(str::to_owned)
}

/// Installs Schemathesis [`VERSION`] from PyPI into [`venv_dir`] with `python3 -m venv` and pip,
/// unless it is there already.
pub fn install(root: &Path) -> Result<()> {
    if installed_version(root).as_deref() == Some(VERSION) {
        return Ok(());
    }
    let venv = venv_dir(root);
    let python = crate::process::find_tool("python3").ok_or_else(|| {
        anyhow::anyhow!(
            "python3 is not installed: Schemathesis {VERSION} (the API fuzzing of `cargo xtask \
             test`) needs Python 3.9 or later with the venv module (Debian: python3 python3-venv)"
        )
    })?;
    if !venv.join("bin/pip").is_file() {
        if venv.exists() {
            fs::remove_dir_all(&venv)
                .with_context(|| format!("cannot remove the broken {}", venv.display()))?;
        }
        run(Command::new(&python)
            .args(["-m", "venv"])
            .arg(&venv)
            .current_dir(root))
        .with_context(|| {
            format!(
                "cannot make a Python virtualenv at {} for Schemathesis (Debian: apt-get install \
                 python3-venv)",
                venv.display()
            )
        })?;
    }
    run(Command::new(venv.join("bin/pip"))
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &format!("schemathesis=={VERSION}"),
        ])
        .current_dir(root))
    .with_context(|| format!("cannot install schemathesis=={VERSION} from PyPI with pip"))?;
    match installed_version(root) {
        Some(v) if v == VERSION => Ok(()),
        other => bail!(
            "after pip install, {} reports version {other:?}, not {VERSION}",
            executable(root).display()
        ),
    }
}

/// Fuzzes the API on each of `backends`; fails if Schemathesis finds anything on any.
pub fn run_all(root: &Path, backends: &[Backend], postgres_url: &str) -> Result<()> {
    if installed_version(root).as_deref() != Some(VERSION) {
        bail!(
            "Schemathesis {VERSION} is not installed in {} (cargo xtask install)",
            venv_dir(root).display()
        );
    }
    run(cargo().current_dir(root).args([
        "build",
        "--quiet",
        "-p",
        "keygate-control-plane",
        "--bin",
        "keygate",
    ]))?;
    let keygate = root.join("target/debug/keygate");
    let mut failed = Vec::new();
    for &backend in backends {
        let started = Instant::now();
        let result = run_one(root, &keygate, backend, postgres_url);
        eprintln!(
            "xtask: schemathesis on {} took {:.0} s",
            backend.name(),
            started.elapsed().as_secs_f64()
        );
        if let Err(e) = result {
            eprintln!("xtask: schemathesis on {}: {e:#}", backend.name());
            failed.push(backend.name());
        }
    }
    if !failed.is_empty() {
        bail!("schemathesis found problems on {}", failed.join(" and "));
    }
    Ok(())
}

/// A scratch directory under `target/`, removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A PostgreSQL database made with `psql` and dropped on drop.
struct PgDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl PgDatabase {
    fn create(admin_url: &str, name: String) -> Result<PgDatabase> {
        psql(
            admin_url,
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        )?;
        psql(admin_url, &format!("CREATE DATABASE {name}"))?;
        let (base, query) = match admin_url.split_once('?') {
            Some((b, q)) => (b, format!("?{q}")),
            None => (admin_url, String::new()),
        };
        let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
        Ok(PgDatabase {
            admin_url: admin_url.to_owned(),
            url: format!("{base}/{name}{query}"),
            name,
        })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if let Err(e) = psql(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        ) {
            eprintln!("xtask: {e:#}");
        }
    }
}

fn psql(url: &str, sql: &str) -> Result<()> {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .stdin(Stdio::null())
        .output()
        .context(
            "cannot run psql, which makes and drops the fuzzed PostgreSQL database \
             (Debian: postgresql-client)",
        )?;
    if !out.status.success() {
        bail!(
            "psql `{sql}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The running `keygate serve`, killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_one(root: &Path, keygate: &Path, backend: Backend, postgres_url: &str) -> Result<()> {
    // Unique among running processes; a leftover of an earlier process with the same id is
    // removed first (directory here, database in `PgDatabase::create`).
    let unique = std::process::id();
    let dir = root
        .join("target/schemathesis")
        .join(format!("{}_{unique}", backend.name()));
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let scratch = Scratch(dir);
    let data_dir = scratch.0.join("data");
    let db = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(PgDatabase::create(
            postgres_url,
            format!("kg_schemathesis_{unique}"),
        )?),
    };
    let cli = || {
        let mut cmd = Command::new(keygate);
        cmd.arg("--data-dir").arg(&data_dir).current_dir(&scratch.0);
        match &db {
            Some(db) => cmd.env("DATABASE_URL", &db.url),
            None => cmd.env_remove("DATABASE_URL"),
        };
        cmd.env_remove("KEYGATE_BOOTSTRAP_TOKEN");
        cmd
    };

    run(cli().arg("migrate"))?;
    let mut create_admin = cli();
    create_admin.args([
        "admin",
        "create",
        "--email",
        "owner@schemathesis.example",
        "--role",
        ROLE,
    ]);
    with_stdin(&mut create_admin, "correct horse battery staple\n")?;
    let mut create_token = cli();
    create_token.args(["token", "create", "--name", "schemathesis", "--role", ROLE]);
    let token = with_stdin(&mut create_token, "")?;
    let token = token.trim().to_owned();
    if token.is_empty() {
        bail!("`keygate token create` printed no token");
    }

    let log_path = scratch.0.join("serve.log");
    let log = fs::File::create(&log_path)?;
    let child = cli()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("KEYGATE_LOG_FORMAT", "json")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start keygate serve")?;
    let mut server = Server(child);
    let port = wait_for_port(&log_path, &mut server)?;
    let base = format!("http://127.0.0.1:{port}");
    eprintln!("xtask: keygate serve ({}) at {base}", backend.name());
    seed(port, &token).context("cannot seed the control plane")?;

    fs::write(scratch.0.join("hooks.py"), HOOKS)?;
    let mut st = Command::new(executable(root));
    st.current_dir(&scratch.0)
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env("PYTHONPATH", &scratch.0)
        .env("NO_COLOR", "1")
        .args(["run", &format!("{base}/openapi.json")])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--checks", "all"])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--workers", "1"])
        .args(["--request-timeout", "10"])
        .args(["--seed", "1"])
        .args(["--generation-database", ":memory:"])
        .args(["--suppress-health-check", "all"])
        .args(EXCLUDES);
    let shown = show(&st).replace(&token, "<token>");
    eprintln!("$ {shown}");
    let mut child = st
        .spawn()
        .with_context(|| format!("cannot run `{shown}`"))?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > HARD_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "schemathesis ran past its hard limit of {} s on {}",
                HARD_LIMIT.as_secs(),
                backend.name()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    drop(server);
    if !status.success() {
        let tail = fs::read_to_string(&log_path).unwrap_or_default();
        let errors: Vec<&str> = tail
            .lines()
            .filter(|l| l.contains("\"ERROR\"") || l.contains("panicked"))
            .take(20)
            .collect();
        if !errors.is_empty() {
            eprintln!("xtask: server errors:\n{}", errors.join("\n"));
        }
        bail!("schemathesis failed ({status})");
    }
    Ok(())
}

/// Operations left out, each with the reason it must be: none.
const EXCLUDES: &[&str] = &[];

/// Schemathesis hooks (a Python module): schema-valid cases are kept within the rules the
/// document states in prose only (see the module's docstring).
const HOOKS: &str = include_str!("schemathesis_hooks.py");

/// Runs a command with `input` on its standard input; its standard output, if it succeeded.
fn with_stdin(cmd: &mut Command, input: &str) -> Result<String> {
    let shown = show(cmd);
    eprintln!("$ {shown}");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run `{shown}`"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("`{shown}` failed ({})", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The port `keygate serve` logged it listens on.
fn wait_for_port(log: &Path, server: &mut Server) -> Result<u16> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = server.0.try_wait() {
            bail!(
                "keygate serve exited ({status}) before listening; its log:\n{}",
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        let text = fs::read_to_string(log).unwrap_or_default();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let fields = v.get("fields").unwrap_or(&v);
            if fields["message"] == "control plane listening" {
                if let Some(port) = fields["port"].as_u64().and_then(|p| u16::try_from(p).ok()) {
                    return Ok(port);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "keygate serve did not report its port within 60 s; its log:\n{}",
        fs::read_to_string(log).unwrap_or_default()
    )
}

/// One HTTP/1.1 request on a fresh connection: the status and the body.
fn request(
    port: u16,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&serde_json::Value>,
) -> Result<(u16, serde_json::Value)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.map(serde_json::Value::to_string).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in the answer to {method} {path}: {head:?}"))?;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        bail!("{method} {path}: chunked answers are not read here");
    }
    Ok((status, serde_json::from_str(body).unwrap_or_default()))
}

/// A project with routes, a secret and a publishable key, and some usage on the first.
fn seed(port: u16, token: &str) -> Result<()> {
    let expect = |(status, body): (u16, serde_json::Value), want: u16, what: &str| {
        if status == want {
            Ok(body)
        } else {
            Err(anyhow::anyhow!("{what}: {status} {body}"))
        }
    };
    let project = expect(
        request(
            port,
            "POST",
            "/v1/projects",
            token,
            Some(&serde_json::json!({
                "name": "Shop",
                "key_prefix": "shop",
                "routes": [
                    {"methods": ["GET"], "path": "/orders/*", "scope": "orders:read"},
                    {"methods": ["POST"], "path": "/orders/*", "scope": "orders:write"}
                ],
                "default_route_policy": "allow"
            })),
        )?,
        201,
        "POST /v1/projects",
    )?;
    let project_id = project["id"].as_str().context("project without id")?;
    let keys = format!("/v1/projects/{project_id}/keys");
    let secret = expect(
        request(
            port,
            "POST",
            &keys,
            token,
            Some(&serde_json::json!({
                "name": "server", "kind": "secret", "environment": "live",
                "scopes": ["orders:read", "orders:write"],
                "rate_limit": {"limit": 100, "period_seconds": 60},
                "metadata": {"customer": "cus_123"}
            })),
        )?,
        201,
        "POST keys (secret)",
    )?;
    expect(
        request(
            port,
            "POST",
            &keys,
            token,
            Some(&serde_json::json!({
                "name": "browser", "kind": "publishable", "environment": "test",
                "scopes": ["orders:read"],
                "restrictions": {"referrers": ["https://shop.example.com/*"]}
            })),
        )?,
        201,
        "POST keys (publishable)",
    )?;
    let key = secret["key"].as_str().context("created key without key")?;
    // Counted verifications give the usage and sightings endpoints rows to return.
    for _ in 0..3 {
        expect(
            request(
                port,
                "POST",
                "/v1/verify",
                token,
                Some(
                    &serde_json::json!({"key": key, "ip": "203.0.113.7", "method": "GET", "path": "/orders/1"}),
                ),
            )?,
            200,
            "POST /v1/verify",
        )?;
    }
    Ok(())
}
