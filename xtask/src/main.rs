//! `cargo xtask <command>`: the workspace's build, run and test entry points.
//!
//! - `install`: installs whatever is missing to build and run the edge Worker.
//! - `build-edge [--release]`: builds `edge/` with worker-build into `edge/build/`, using only
//!   local tools.
//! - `deploy-check`: `wrangler deploy --dry-run` on `wrangler.toml`, as a user deploys.
//! - `test`: every check CI runs.
//! - `fuzz [--seconds N] [TARGET...]`: a bounded fuzzing campaign (docs/fuzzing.md).
//! - `layers`: the store's and the control plane's layering (ARCHITECTURE.md).
//! - `origins`: the origin examples in other languages against the signature vectors.
//! - `check-deb`: the control plane's Debian package, one of those checks.
//! - `up`: the local stack, until Ctrl-C.
//! - `schemathesis [sqlite|postgres]`: the API fuzzing step of `test` alone.

mod check;
mod deploy;
mod edge;
mod fuzz;
mod layers;
mod origins;
mod process;
mod schemathesis;
mod stack;
mod tools;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Result};

const USAGE: &str = "\
Usage: cargo xtask <command>

Commands:
  install                 install what is missing: the wasm32 target, worker-build, the
                          wasm-bindgen CLI, the npm tools (workerd, wasm-opt, esbuild), Chromium
                          and chromedriver, cargo-deb, Go, the nightly toolchain,
                          cargo-fuzz and Schemathesis (a virtualenv in target/tools); fails if
                          any cannot be installed
  build-edge [--release]  build the edge Worker into edge/build/ with local tools only
  deploy-check            wrangler deploy --dry-run on wrangler.toml (runs its build command)
  test                    install, build the edge, then run every test, the wasm32 build of
                          keygate-shared, the API fuzzing, rustfmt, clippy, the Debian package, the origin
                          examples, the deploy check and the fuzzing campaign
  fuzz [--seconds N] [TARGET...]
                          run each fuzz target (all by default) for N seconds (default 24),
                          corpus and crashes under target/fuzz/; fails on any crash
  layers                  check the layering: no import cycle in the store's or the control
                          plane's modules, and no HTTP crate in the store's dependencies
  origins                 run the Node.js, Python and Go origin examples' tests against
                          shared/testdata/origin_signature.json
  check-deb               build the control plane's Debian package, unpack it and start its
                          service command until /healthz answers (a step of `test`)
  schemathesis [sqlite|postgres]
                          fuzz the control plane's API from its OpenAPI document with
                          Schemathesis, on both backends unless one is named
  up                      run the local stack until Ctrl-C
";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    let (cmd, rest) = match args.split_first() {
        Some((c, r)) => (c.as_str(), r),
        None => {
            eprint!("{USAGE}");
            bail!("no command given");
        }
    };
    match cmd {
        "install" => {
            no_args(cmd, rest)?;
            tools::install(&root, tools::Purpose::Tests)?;
            schemathesis::install(&root)
        }
        "build-edge" => {
            let release = match rest {
                [] => false,
                [flag] if flag == "--release" => true,
                _ => bail!("usage: cargo xtask build-edge [--release]"),
            };
            edge::build(&root, release)
        }
        "deploy-check" => {
            no_args(cmd, rest)?;
            edge::deploy_dry_run(&root)
        }
        "test" => {
            no_args(cmd, rest)?;
            check::run(&root)
        }
        "fuzz" => {
            let (seconds, targets) = fuzz::parse_args(rest)?;
            fuzz::campaign(&root, seconds, &targets)
        }
        "layers" => {
            no_args(cmd, rest)?;
            layers::check(&root)
        }
        "origins" => {
            no_args(cmd, rest)?;
            origins::run_all(&root)
        }
        "check-deb" => {
            no_args(cmd, rest)?;
            deploy::check(&root)
        }
        "schemathesis" => {
            let backends: &[schemathesis::Backend] = match rest {
                [] => &[
                    schemathesis::Backend::Sqlite,
                    schemathesis::Backend::Postgres,
                ],
                [b] if b == "sqlite" => &[schemathesis::Backend::Sqlite],
                [b] if b == "postgres" => &[schemathesis::Backend::Postgres],
                _ => bail!("usage: cargo xtask schemathesis [sqlite|postgres]"),
            };
            schemathesis::install(&root)?;
            schemathesis::run_all(&root, backends, &check::postgres_url()?)
        }
        "up" => {
            no_args(cmd, rest)?;
            stack::up(&root)
        }
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => {
            eprint!("{USAGE}");
            bail!("unknown command {other:?}")
        }
    }
}

fn no_args(cmd: &str, rest: &[String]) -> Result<()> {
    if !rest.is_empty() {
        bail!("`{cmd}` takes no arguments (got {rest:?})");
    }
    Ok(())
}

/// The directory holding the root `Cargo.toml`.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}
