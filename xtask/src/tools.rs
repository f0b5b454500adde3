//! `cargo xtask install`: installs, only where missing or at the wrong version, what building and
//! running the edge needs. Versions come from the workspace's lockfiles, so the tools always
//! match the libraries:
//!
//! - the `wasm32-unknown-unknown` Rust target;
//! - `worker-build` at the version of the `worker` crate in `Cargo.lock`;
//! - the wasm-bindgen CLI at the version of the `wasm-bindgen` crate in `Cargo.lock` (the two must
//!   be equal, or the generated glue does not match the library);
//! - `workerd`, `wasm-opt` (binaryen) and `esbuild` from `package-lock.json`, with `npm ci`;
//! - Chromium and chromedriver from apt (`chromium`, `chromium-driver`), for the browser tests,
//!   when `/usr/bin/chromium` or `/usr/bin/chromedriver` is missing. Failing that, the install
//!   fails and names what is missing: the browser tests cannot run without them;
//! - `cargo-deb` at [`crate::deploy::CARGO_DEB_VERSION`] (with `--locked`), which builds the
//!   control plane's Debian package; like the browser, not for `up`.
//! - Go from apt (`golang-go`) when `go` is missing, for the Go origin example
//!   (`cargo xtask origins`); Node.js and Python 3 are already needed by the rest;
//! - for the fuzzing campaign (`cargo xtask fuzz`): the nightly toolchain (cargo-fuzz needs
//!   `-Z` flags) and `cargo-fuzz` at [`CARGO_FUZZ_VERSION`], `--locked`.
//!
//! `cargo xtask install` and `cargo xtask test` also install Schemathesis (see
//! [`crate::schemathesis::install`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::{cargo, find_tool, run, stdout_of};
use anyhow::{bail, Context, Result};

/// The Rust target of the Worker.
pub const WASM_TARGET: &str = "wasm32-unknown-unknown";

/// Where the browser tests look for Chromium.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Where the browser tests look for chromedriver.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The cargo-fuzz release `cargo xtask fuzz` is run with.
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// What the tools are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Every check: also Chromium and chromedriver (the console's tests drive them), the
    /// nightly toolchain and cargo-fuzz; fail if any cannot be installed.
    Tests,
    /// The local stack: the edge's build tools only.
    Stack,
}

/// Installs what is missing.
pub fn install(root: &Path, purpose: Purpose) -> Result<()> {
    wasm_target(root)?;
    worker_build(root)?;
    wasm_bindgen(root)?;
    npm_tools(root)?;
    if purpose == Purpose::Tests {
        chromium()?;
        // Like the browser, only the tests (and packagers) need it; `up` does not.
        crate::deploy::install_cargo_deb()?;
        go()?;
        nightly(root)?;
        cargo_fuzz()?;
    }
    eprintln!("xtask: every tool is installed");
    Ok(())
}

/// The version of `package` in `Cargo.lock`; an error if it is absent or there are several.
pub fn locked_version(root: &Path, package: &str) -> Result<String> {
    let path = root.join("Cargo.lock");
    let lock =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut found = Vec::new();
    let mut name: Option<&str> = None;
    for line in lock.lines().map(str::trim) {
        if line == "[[package]]" {
            name = None;
        } else if let Some(n) = toml_string(line, "name") {
            name = Some(n);
        } else if let Some(v) = toml_string(line, "version") {
            if name == Some(package) {
                found.push(v.to_owned());
            }
        }
    }
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("{package} is not in Cargo.lock"),
        many => bail!("Cargo.lock has several versions of {package}: {many:?}"),
    }
}

fn toml_string<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let (k, v) = line.split_once('=')?;
    (k.trim() == key).then(|| v.trim().trim_matches('"'))
}

fn wasm_target(root: &Path) -> Result<()> {
    let installed = stdout_of(
        Command::new("rustup")
            .args(["target", "list", "--installed"])
            .current_dir(root),
    );
    match installed {
        Some(list) if list.lines().any(|l| l.trim() == WASM_TARGET) => Ok(()),
        Some(_) => run(Command::new("rustup")
            .args(["target", "add", WASM_TARGET])
            .current_dir(root)),
        None => {
            eprintln!("xtask: rustup not found; make sure the {WASM_TARGET} target is installed");
            Ok(())
        }
    }
}

fn installed_version(tool: &str, strip: &str) -> Option<String> {
    let path = find_tool(tool)?;
    let out = stdout_of(Command::new(path).arg("--version"))?;
    Some(out.strip_prefix(strip).unwrap_or(&out).trim().to_owned())
}

fn worker_build(root: &Path) -> Result<()> {
    let want = locked_version(root, "worker")?;
    if installed_version("worker-build", "worker-build").as_deref() == Some(want.as_str()) {
        return Ok(());
    }
    run(cargo().args(["install", "worker-build", "--version", &want]))
}

fn wasm_bindgen(root: &Path) -> Result<()> {
    let want = locked_version(root, "wasm-bindgen")?;
    if installed_version("wasm-bindgen", "wasm-bindgen").as_deref() == Some(want.as_str()) {
        return Ok(());
    }
    // Not `--locked`: the CLI's own lockfile pins a crate version that crates.io no longer has.
    run(cargo().args(["install", "wasm-bindgen-cli", "--version", &want]))
}

/// The nightly toolchain, for cargo-fuzz; whichever nightly is installed will do.
fn nightly(root: &Path) -> Result<()> {
    let toolchain = crate::fuzz::TOOLCHAIN;
    let have = stdout_of(
        Command::new("rustup")
            .args(["run", toolchain, "rustc", "--version"])
            .current_dir(root),
    );
    if have.is_some() {
        return Ok(());
    }
    run(Command::new("rustup").args(["toolchain", "install", toolchain, "--profile", "minimal"]))
        .with_context(|| format!("cannot install the {toolchain} toolchain for the fuzz targets"))
}

fn cargo_fuzz() -> Result<()> {
    if installed_version("cargo-fuzz", "cargo-fuzz").as_deref() == Some(CARGO_FUZZ_VERSION) {
        return Ok(());
    }
    run(cargo().args([
        "install",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
        "--locked",
    ]))
}

/// The npm tools `build-edge` and the runtime use.
#[derive(Debug, Clone)]
pub struct NpmTools {
    /// The workerd binary.
    pub workerd: PathBuf,
    /// binaryen's `wasm-opt`.
    pub wasm_opt: PathBuf,
    /// `esbuild`.
    pub esbuild: PathBuf,
    /// `wrangler`, pinned to the last release that runs on Node 20.
    pub wrangler: PathBuf,
}

impl NpmTools {
    /// Where `npm ci` puts them.
    pub fn locate(root: &Path) -> NpmTools {
        let bin = root.join("node_modules/.bin");
        NpmTools {
            workerd: bin.join("workerd"),
            wasm_opt: bin.join("wasm-opt"),
            esbuild: bin.join("esbuild"),
            wrangler: bin.join("wrangler"),
        }
    }

    fn all_present(&self) -> bool {
        [&self.workerd, &self.wasm_opt, &self.esbuild, &self.wrangler]
            .iter()
            .all(|p| p.is_file())
    }
}

/// Why `node_modules` needs `npm ci`, if it does: a package missing or at another version than
/// `package.json` pins, or a tool missing.
fn npm_stale(root: &Path) -> Result<Option<String>> {
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(root.join("package.json")).context("cannot read package.json")?,
    )
    .context("package.json is not JSON")?;
    let pinned = manifest["devDependencies"]
        .as_object()
        .context("package.json has no devDependencies")?;
    for (name, want) in pinned {
        let want = want.as_str().unwrap_or_default();
        let installed = fs::read(root.join("node_modules").join(name).join("package.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
        let have = installed.as_ref().and_then(|m| m["version"].as_str());
        if have != Some(want) {
            return Ok(Some(format!(
                "{name} is {} in node_modules, package.json pins {want}",
                have.unwrap_or("missing")
            )));
        }
    }
    if !NpmTools::locate(root).all_present() {
        return Ok(Some("a tool is missing from node_modules".into()));
    }
    Ok(None)
}

fn npm_tools(root: &Path) -> Result<()> {
    let Some(reason) = npm_stale(root)? else {
        return Ok(());
    };
    eprintln!("xtask: {reason}");
    if find_tool("npm").is_none() {
        bail!("npm is not installed: install Node.js 20 or later with npm");
    }
    run(Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(root))?;
    if let Some(still) = npm_stale(root)? {
        bail!("after `npm ci`: {still}");
    }
    Ok(())
}

/// The browser files among `paths` that are missing (not a regular file).
pub fn missing_files<'a>(paths: &[&'a str]) -> Vec<&'a str> {
    paths
        .iter()
        .copied()
        .filter(|p| !Path::new(p).is_file())
        .collect()
}

fn chromium() -> Result<()> {
    let missing = missing_files(&[CHROMIUM, CHROMEDRIVER]);
    if !missing.is_empty() {
        let what = missing.join(" and ");
        eprintln!("xtask: {what} missing: installing chromium and chromium-driver");
        if find_tool("apt-get").is_none() {
            bail!(
                "{what} missing and apt-get is not available: install Chromium and chromedriver \
                 (Debian packages chromium and chromium-driver) so that {CHROMIUM} and \
                 {CHROMEDRIVER} exist; the console's browser tests need them"
            );
        }
        apt_install(&["chromium", "chromium-driver"])
            .with_context(|| format!("cannot install {what} for the browser tests"))?;
        let still = missing_files(&[CHROMIUM, CHROMEDRIVER]);
        if !still.is_empty() {
            bail!(
                "{} still missing after installing chromium and chromium-driver",
                still.join(" and ")
            );
        }
    }
    // chromedriver drives only the Chromium of its own major version.
    let chromium = browser_version(CHROMIUM)?;
    let driver = browser_version(CHROMEDRIVER)?;
    if major(&chromium) != major(&driver) {
        bail!("{CHROMIUM} is {chromium:?} but {CHROMEDRIVER} is {driver:?}: their major versions must match (reinstall chromium and chromium-driver together)");
    }
    Ok(())
}

/// `apt-get update` and `apt-get install -y` of `packages`, through sudo unless root.
fn apt_install(packages: &[&str]) -> Result<()> {
    let root_user = stdout_of(Command::new("id").arg("-u")).as_deref() == Some("0");
    let apt = |args: &[&str]| -> Result<()> {
        let mut cmd = if root_user {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        };
        run(cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive"))
    };
    apt(&["update"]).and_then(|()| apt(&[&["install", "-y"][..], packages].concat()))
}

/// Go, for the Go origin example; any Go from 1.19 on builds it (its `go.mod`).
fn go() -> Result<()> {
    if find_tool("go").is_some() {
        return Ok(());
    }
    eprintln!("xtask: go missing: installing golang-go");
    if find_tool("apt-get").is_none() {
        bail!(
            "go is missing and apt-get is not available: install Go 1.19 or later (Debian \
             package golang-go); the Go origin example (cargo xtask origins) needs it"
        );
    }
    apt_install(&["golang-go"]).context("cannot install golang-go for the Go origin example")?;
    if find_tool("go").is_none() {
        bail!("go still missing after installing golang-go");
    }
    Ok(())
}

/// The version a browser binary reports, e.g. `131.0.6778.139`.
fn browser_version(path: &str) -> Result<String> {
    let out = stdout_of(Command::new(path).arg("--version"))
        .with_context(|| format!("`{path} --version` failed"))?;
    version_in(&out)
        .map(str::to_owned)
        .with_context(|| format!("no version in the output of `{path} --version`: {out:?}"))
}

/// The first word of `text` that looks like a dotted version number.
fn version_in(text: &str) -> Option<&str> {
    text.split_whitespace().find(|w| {
        w.contains('.')
            && w.split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    })
}

fn major(version: &str) -> &str {
    version.split('.').next().unwrap_or(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_versions_from_the_lockfile() {
        let root = crate::workspace_root();
        let v = locked_version(&root, "wasm-bindgen").expect("wasm-bindgen is locked");
        assert!(v.starts_with("0.2."), "{v}");
        assert!(locked_version(&root, "no-such-crate-here").is_err());
    }

    #[test]
    fn browser_versions() {
        assert_eq!(
            version_in("Chromium 131.0.6778.139 built on Debian GNU/Linux 12 (bookworm)"),
            Some("131.0.6778.139")
        );
        assert_eq!(
            version_in("ChromeDriver 131.0.6778.139 (a3c0b3e5d4b2-refs/branch-heads/6778@{#2603})"),
            Some("131.0.6778.139")
        );
        assert_eq!(version_in("no version here."), None);
        assert_eq!(major("131.0.6778.139"), "131");
    }

    #[test]
    fn missing_browser_files_are_named() {
        let root = crate::workspace_root();
        let lock = root.join("Cargo.lock");
        let present = lock.to_str().expect("utf-8 path");
        assert_eq!(
            missing_files(&[present, "/nonexistent/chromedriver"]),
            vec!["/nonexistent/chromedriver"]
        );
        // A directory is not a browser.
        let dir = root.to_str().expect("utf-8 path");
        assert_eq!(missing_files(&[dir]), vec![dir]);
    }

    #[test]
    fn toml_strings() {
        assert_eq!(toml_string("name = \"worker\"", "name"), Some("worker"));
        assert_eq!(toml_string("version = \"0.8.7\"", "name"), None);
    }
}
