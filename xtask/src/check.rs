//! `cargo xtask test`: everything CI checks, in one command.
//!
//! Installs what is missing, builds the edge Worker (release, as deployed; the end-to-end tests run
//! it in workerd), then runs each check and reports every failure, not only the first:
//! `cargo fmt --check`, `cargo test --workspace`, `cargo build -p keygate-shared` for wasm32 and
//! `cargo clippy --workspace --all-targets -- -D warnings`.
//!
//! The tests run on SQLite and, through `KEYGATE_TEST_POSTGRES_URL`, on PostgreSQL too: when the
//! variable is unset it defaults to [`DEFAULT_POSTGRES_URL`]; set it to an empty string to skip
//! PostgreSQL.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Result};

use crate::process::{cargo, run as run_cmd};
use crate::tools::WASM_TARGET;
use crate::{edge, tools};

/// The PostgreSQL server the tests use unless `KEYGATE_TEST_POSTGRES_URL` says otherwise.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Runs every check; fails if any fails.
pub fn run(root: &Path) -> Result<()> {
    tools::install(root, tools::Browser::Required)?;
    edge::build(root, true)?;

    let postgres_url = std::env::var("KEYGATE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
    let with_root = |mut cmd: Command| {
        cmd.current_dir(root);
        cmd
    };
    let mut fmt = with_root(cargo());
    fmt.args(["fmt", "--all", "--check"]);
    let mut test = with_root(cargo());
    test.args(["test", "--workspace"])
        .env("KEYGATE_TEST_POSTGRES_URL", &postgres_url);
    let mut wasm = with_root(cargo());
    wasm.args(["build", "-p", "keygate-shared", "--target", WASM_TARGET]);
    let mut clippy = with_root(cargo());
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);

    if postgres_url.is_empty() {
        eprintln!("xtask: KEYGATE_TEST_POSTGRES_URL is empty: the PostgreSQL variants are skipped");
    } else {
        eprintln!("xtask: PostgreSQL tests use KEYGATE_TEST_POSTGRES_URL={postgres_url}");
    }
    let mut failed = Vec::new();
    for (name, mut cmd) in [
        ("rustfmt", fmt),
        ("tests", test),
        ("keygate-shared on wasm32", wasm),
        ("clippy", clippy),
    ] {
        if let Err(e) = run_cmd(&mut cmd) {
            eprintln!("xtask: {e:#}");
            failed.push(name);
        }
    }
    if !failed.is_empty() {
        bail!("failed: {}", failed.join(", "));
    }
    eprintln!("xtask: every check passed");
    Ok(())
}
