//! `cargo xtask build-edge`: runs worker-build on `edge/` with the wasm-bindgen CLI, `wasm-opt`
//! and `esbuild` installed by `cargo xtask install`, so that nothing is downloaded during a build.
//! Output: `edge/build/index.js`, `edge/build/worker/shim.mjs` (the entry module `edge/shim.mjs`
//! bundled with the Wasm glue) and `edge/build/worker/index.wasm`.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::process::{find_tool, run, stdout_of};
use crate::tools::{locked_version, NpmTools};

/// Builds the Worker: with `release`, the release profile (what deploys, optimised by wasm-opt);
/// otherwise the dev profile.
pub fn build(root: &Path, release: bool) -> Result<()> {
    const HINT: &str = "run `cargo xtask install`";
    let worker_build = find_tool("worker-build")
        .with_context(|| format!("worker-build is not installed: {HINT}"))?;
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

    let mut cmd = Command::new(worker_build);
    // worker-build, like wasm-pack, builds in release mode unless told `--dev`.
    cmd.arg(if release { "--release" } else { "--dev" })
        .arg("edge")
        .current_dir(root)
        .env("WASM_BINDGEN_BIN", &wasm_bindgen)
        .env("WASM_OPT_BIN", &npm.wasm_opt)
        .env("ESBUILD_BIN", &npm.esbuild)
        // The entry module with the fast path (see edge/shim.mjs).
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
