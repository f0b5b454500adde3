//! `cargo xtask build-edge`: runs worker-build on `edge/` with the wasm-bindgen CLI, `wasm-opt`
//! and `esbuild` installed by `cargo xtask install`, so that nothing is downloaded during a build.
//! Output: `edge/build/index.js`, `edge/build/worker/shim.mjs` (the entry module `edge/shim.mjs`
//! bundled with the Wasm glue) and `edge/build/worker/index.wasm`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::process::{find_tool, run, stdout_of};
use crate::tools::{locked_version, NpmTools};

/// Builds the Worker: with `release`, the release profile (what deploys, optimised by wasm-opt);
/// otherwise the dev profile.
pub fn build(root: &Path, release: bool) -> Result<()> {
    let env = worker_build_env(root)?;
    let worker_build = find_tool("worker-build")
        .with_context(|| format!("worker-build is not installed: {HINT}"))?;
    let mut cmd = Command::new(worker_build);
    // worker-build, like wasm-pack, builds in release mode unless told `--dev`.
    cmd.arg(if release { "--release" } else { "--dev" })
        .arg("edge")
        .current_dir(root)
        .envs(env)
        // The entry module (see edge/shim.mjs).
        .env("CUSTOM_SHIM", root.join("edge/shim.mjs"));
    run(&mut cmd)?;

    let wasm = root.join("edge/build/worker/index.wasm");
    let size = fs::metadata(&wasm)
        .with_context(|| format!("worker-build left no {}", wasm.display()))?
        .len();
    match gzipped_size(&wasm) {
        Some(gz) => eprintln!(
            "xtask: edge/build/worker/index.wasm: {} raw, {} gzipped (Workers allow 3 MB gzipped on the free plan, 10 MB on paid plans)",
            kib(size),
            kib(gz)
        ),
        None => eprintln!(
            "xtask: edge/build/worker/index.wasm: {} raw (gzip not found, compressed size unknown)",
            kib(size)
        ),
    }
    Ok(())
}

const HINT: &str = "run `cargo xtask install`";

/// The variables that make worker-build use the installed tools instead of downloading its own
/// (which this machine's network does not allow).
fn worker_build_env(root: &Path) -> Result<Vec<(&'static str, PathBuf)>> {
    let wasm_bindgen = find_tool("wasm-bindgen")
        .with_context(|| format!("the wasm-bindgen CLI is not installed: {HINT}"))?;
    let want = locked_version(root, "wasm-bindgen")?;
    let have = stdout_of(Command::new(&wasm_bindgen).arg("--version")).unwrap_or_default();
    if have.strip_prefix("wasm-bindgen ") != Some(want.as_str()) {
        bail!(
            "{} is {have:?}, but Cargo.lock has wasm-bindgen {want}: {HINT}",
            wasm_bindgen.display()
        );
    }
    let npm = NpmTools::locate(root);
    for tool in [&npm.wasm_opt, &npm.esbuild] {
        if !tool.is_file() {
            bail!("{} is missing: {HINT}", tool.display());
        }
    }
    Ok(vec![
        ("WASM_BINDGEN_BIN", wasm_bindgen),
        ("WASM_OPT_BIN", npm.wasm_opt),
        ("ESBUILD_BIN", npm.esbuild),
    ])
}

/// `wrangler deploy --dry-run` on the root `wrangler.toml`, as a user deploys: wrangler runs the
/// file's build command (worker-build with the entry module) and checks the configuration, the
/// bindings, the Durable Object migrations and the bundle, without a Cloudflare account. A
/// mistake in `wrangler.toml` fails here rather than in a user's first deploy.
pub fn deploy_dry_run(root: &Path) -> Result<()> {
    let env = worker_build_env(root)?;
    let wrangler = NpmTools::locate(root).wrangler;
    if !wrangler.is_file() {
        bail!("{} is missing: {HINT}", wrangler.display());
    }
    let out = root.join("target/wrangler-dry-run");
    let _ = fs::remove_dir_all(&out);
    let mut cmd = Command::new(&wrangler);
    cmd.args(["deploy", "--dry-run", "--outdir"])
        .arg(&out)
        .current_dir(root)
        .envs(env)
        .env("WRANGLER_SEND_METRICS", "false")
        // No prompt, no browser login, no colour codes in CI logs.
        .env("CI", "true")
        .env("NO_COLOR", "1");
    run(&mut cmd)?;
    let bundled = out.join("index.js");
    if !bundled.is_file() {
        bail!(
            "wrangler deploy --dry-run left no {}: the bundle was not written",
            bundled.display()
        );
    }
    eprintln!(
        "xtask: wrangler deploy --dry-run: wrangler.toml and the bundle are valid ({})",
        out.display()
    );
    Ok(())
}

fn gzipped_size(path: &Path) -> Option<u64> {
    let out = Command::new("gzip")
        .args(["-9", "-c"])
        .arg(path)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| u64::try_from(out.stdout.len()).unwrap_or(u64::MAX))
}

fn kib(bytes: u64) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}
