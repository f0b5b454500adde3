//! `cargo xtask up`: the local stack of README.md, "The local stack", until Ctrl-C.
//!
//! It installs the tools (all but the browser, which only the tests use), builds the edge Worker, then runs the `keygate-stack` binary of the
//! `tests` package, which starts the control plane on embedded SQLite, the demo origin, the
//! edge in workerd and the browser example (`examples/browser/`) on its own origin, and prints
//! their addresses, an owner token, a demo key and a link to the example with a publishable key.
//! xtask itself stays free of the control plane, so it compiles in seconds.

use std::path::Path;

use anyhow::{bail, Result};

use crate::process::cargo;
use crate::{edge, tools};

/// Runs the stack until interrupted.
pub fn up(root: &Path) -> Result<()> {
    tools::install(root, tools::Purpose::Stack)?;
    edge::build(root, true)?;
    let status = cargo()
        .current_dir(root)
        .args([
            "run",
            "--quiet",
            "-p",
            "keygate-tests",
            "--bin",
            "keygate-stack",
        ])
        .status()?;
    if !status.success() {
        bail!("the local stack exited ({status})");
    }
    Ok(())
}
