//! `cargo xtask test`: everything CI checks, in one command.
//!
//! Installs what is missing (Chromium and chromedriver included), builds the edge Worker (release,
//! as deployed; the end-to-end tests run it in workerd), then runs each check and reports every
//! failure, not only the first: `cargo fmt --check`, `cargo test --workspace --no-fail-fast --
//! --include-ignored`, `keygate-shared`'s tests with the Worker's feature set natively and on
//! wasm32 (in Node), the control plane's Debian package built, unpacked and started
//! (`crate::deploy`), the API fuzzing of [`crate::schemathesis`] on SQLite and PostgreSQL after
//! the tests, `cargo clippy --workspace --all-targets -- -D warnings`,
//! `wrangler deploy --dry-run` on the root `wrangler.toml`, the origin examples in Node.js,
//! Python and Go against the signature vectors (`cargo xtask origins`), and last a bounded
//! fuzzing campaign (`cargo xtask fuzz`: each target for [`fuzz::DEFAULT_SECONDS`], about three
//! minutes in all).
//!
//! `--workspace` takes in `keygate-edge`, which is not a default member, so its native unit tests
//! run too. `--include-ignored` runs the tests that a plain `cargo test` reports as ignored
//! because they need something outside Rust: the console's browser tests (Chromium and
//! chromedriver) and the control plane's PostgreSQL variants. Those fail, naming what is missing,
//! when it is; so does this command. PostgreSQL is the server of `KEYGATE_TEST_POSTGRES_URL`, by
//! default [`DEFAULT_POSTGRES_URL`].

use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::process::{cargo, run as run_cmd};
use crate::tools::WASM_TARGET;
use crate::{edge, fuzz, origins, schemathesis, tools};

/// The PostgreSQL server the tests use unless `KEYGATE_TEST_POSTGRES_URL` says otherwise.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The PostgreSQL server of the tests: `KEYGATE_TEST_POSTGRES_URL`, else
/// [`DEFAULT_POSTGRES_URL`].
pub fn postgres_url() -> Result<String> {
    match std::env::var("KEYGATE_TEST_POSTGRES_URL") {
        Err(_) => Ok(DEFAULT_POSTGRES_URL.to_owned()),
        Ok(url) if url.is_empty() => bail!(
            "KEYGATE_TEST_POSTGRES_URL is empty: the PostgreSQL tests need a server; \
             leave it unset for {DEFAULT_POSTGRES_URL}"
        ),
        Ok(url) => Ok(url),
    }
}

/// Runs every check; fails if any fails.
pub fn run(root: &Path) -> Result<()> {
    tools::install(root, tools::Purpose::Tests)?;
    schemathesis::install(root)?;
    edge::build(root, true)?;

    let postgres_url = postgres_url()?;
    eprintln!("xtask: PostgreSQL tests use KEYGATE_TEST_POSTGRES_URL={postgres_url}");
    // Named up front and again at the end; the tests that need it fail on their own too.
    let mut missing = Vec::new();
    if let Err(e) = postgres_reachable(&postgres_url) {
        eprintln!("xtask: {e:#}");
        missing.push(format!("{e:#}"));
    }
    let browser = tools::missing_files(&[tools::CHROMIUM, tools::CHROMEDRIVER]);
    if !browser.is_empty() {
        missing.push(format!("{} (browser tests)", browser.join(" and ")));
    }

    let with_root = |mut cmd: Command| {
        cmd.current_dir(root);
        cmd
    };
    let mut fmt = with_root(cargo());
    fmt.args(["fmt", "--all", "--check"]);
    let mut test = with_root(cargo());
    test.args([
        "test",
        "--workspace",
        "--no-fail-fast",
        "--",
        "--include-ignored",
    ])
    .env("KEYGATE_TEST_POSTGRES_URL", &postgres_url);
    // `keygate-shared` as the Worker builds it: its feature set (`edge/Cargo.toml` takes no
    // default features), natively and compiled for wasm32, run in Node by wasm-bindgen's test
    // runner (installed with the wasm-bindgen CLI). `cargo test --workspace` unifies features,
    // so these are the only runs of the Worker's build of the shared code.
    let mut worker_native = with_root(cargo());
    worker_native.args(["test", "-p", "keygate-shared", "--no-default-features"]);
    let runner = crate::process::find_tool("wasm-bindgen-test-runner").ok_or_else(|| {
        anyhow::anyhow!("wasm-bindgen-test-runner is not installed (cargo xtask install)")
    })?;
    let mut wasm = with_root(cargo());
    wasm.args([
        "test",
        "-p",
        "keygate-shared",
        "--no-default-features",
        "--target",
        WASM_TARGET,
        "--test",
        "worker_build",
    ])
    .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER", runner);
    let mut clippy = with_root(cargo());
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);

    // After the tests, whose debug build of the control plane it reuses (crate::deploy).
    let deb = {
        let mut c = std::process::Command::new(std::env::current_exe()?);
        c.arg("check-deb").current_dir(root);
        c
    };

    let mut failed = Vec::new();
    // The sources are also checked by xtask's unit tests; the store's dependency tree only here.
    if let Err(e) = crate::layers::check(root) {
        eprintln!("xtask: {e:#}");
        failed.push("the workspace's layering");
    }
    for (name, mut cmd) in [
        ("rustfmt", fmt),
        ("tests", test),
        ("keygate-shared as the Worker builds it", worker_native),
        (
            "keygate-shared as the Worker builds it, on wasm32 in Node",
            wasm,
        ),
        ("the control plane's Debian package", deb),
        ("clippy", clippy),
    ] {
        if let Err(e) = run_cmd(&mut cmd) {
            eprintln!("xtask: {e:#}");
            failed.push(name);
        }
        // The API fuzzing runs after the tests, whose build of the control plane it reuses.
        if name == "tests" {
            let both = [
                schemathesis::Backend::Sqlite,
                schemathesis::Backend::Postgres,
            ];
            if let Err(e) = schemathesis::run_all(root, &both, &postgres_url) {
                eprintln!("xtask: {e:#}");
                failed.push("schemathesis");
            }
        }
    }
    // After the tests: it rebuilds `edge/build` the way a user's deploy does.
    if let Err(e) = edge::deploy_dry_run(root) {
        eprintln!("xtask: {e:#}");
        failed.push("wrangler deploy --dry-run");
    }
    if let Err(e) = origins::run_all(root) {
        eprintln!("xtask: {e:#}");
        failed.push("origin examples");
    }
    if let Err(e) = fuzz::campaign(root, fuzz::DEFAULT_SECONDS, &fuzz::TARGETS) {
        eprintln!("xtask: {e:#}");
        failed.push("fuzzing campaign");
    }
    match (failed.is_empty(), missing.is_empty()) {
        (true, true) => {}
        (_, true) => bail!("failed: {}", failed.join(", ")),
        (true, false) => bail!("missing: {}", missing.join("; ")),
        (false, false) => bail!(
            "failed: {}; missing: {}",
            failed.join(", "),
            missing.join("; ")
        ),
    }
    eprintln!("xtask: every check passed");
    Ok(())
}

/// Whether the PostgreSQL server of `url` accepts TCP connections. A URL without a TCP host (a
/// Unix socket) is left to the tests.
fn postgres_reachable(url: &str) -> Result<()> {
    let Some((host, port)) = postgres_host(url) else {
        return Ok(());
    };
    let what = || format!("PostgreSQL at {host}:{port} (KEYGATE_TEST_POSTGRES_URL={url})");
    let addrs: Vec<_> = (host.as_str(), port)
        .to_socket_addrs()
        .with_context(|| format!("{} cannot be resolved", what()))?
        .collect();
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    match last {
        Some(e) => Err(e).with_context(|| format!("{} is not reachable", what())),
        None => bail!("{} has no address", what()),
    }
}

/// The TCP host and port of a `postgres://` URL (port 5432 unless given); `None` without a host.
fn postgres_host(url: &str) -> Option<(String, u16)> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))?;
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => 5432,
    };
    Some((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_hosts() {
        let host = |u: &str| postgres_host(u);
        assert_eq!(
            host(DEFAULT_POSTGRES_URL),
            Some(("127.0.0.1".to_owned(), 5432))
        );
        assert_eq!(
            host("postgresql://u:p@db.example:6543/x?sslmode=require"),
            Some(("db.example".to_owned(), 6543))
        );
        assert_eq!(host("postgres://db"), Some(("db".to_owned(), 5432)));
        assert_eq!(
            host("postgres://[::1]:5433/t"),
            Some(("::1".to_owned(), 5433))
        );
        assert_eq!(host("postgres:///t?host=/run/postgresql"), None);
        assert_eq!(host("mysql://db/t"), None);
    }

    #[test]
    fn an_unreachable_server_is_named() {
        // Port 1 on the loopback: nothing listens there.
        let url = "postgres://postgres@127.0.0.1:1/test";
        let err = postgres_reachable(url).expect_err("nothing listens on port 1");
        let msg = format!("{err:#}");
        assert!(msg.contains("PostgreSQL at 127.0.0.1:1"), "{msg}");
        assert!(msg.contains("not reachable"), "{msg}");
    }
}
