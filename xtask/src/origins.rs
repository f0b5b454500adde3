//! `cargo xtask origins`: the origin examples in other languages (`examples/origins/`, docs/origins.md)
//! against the shared known-answer vectors (`shared/testdata/origin_signature.json`, which
//! `keygate-shared`'s `origin_vectors` test holds to the Rust code), each also serving real
//! requests through its middleware:
//!
//! - Node.js: `node --test` in `examples/origins/node`;
//! - Python: `python3 -m unittest` in `examples/origins/python`;
//! - Go: `go vet` and `go test` in `examples/origins/go` (`golang-go`, installed by
//!   `cargo xtask install`).
//!
//! A runtime that is not on the machine fails its step, naming what to install: a skipped
//! example would let it drift from the vectors unnoticed.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Result};

use crate::process::{find_tool, run};

/// The examples: (name, directory under `examples/origins`, runtime, commands).
const EXAMPLES: &[(&str, &str, &str, &[&[&str]])] = &[
    ("Node.js", "node", "node", &[&["node", "--test"]]),
    (
        "Python",
        "python",
        "python3",
        &[&["python3", "-m", "unittest", "-v"]],
    ),
    (
        "Go",
        "go",
        "go",
        // `-count=1`: the test reads the vectors from outside its module, which Go's test cache
        // does not watch.
        &[
            &["go", "vet", "./..."],
            &["go", "test", "-count=1", "./..."],
        ],
    ),
];

/// Runs every example's tests; fails naming each that failed or could not run.
pub fn run_all(root: &Path) -> Result<()> {
    let mut failed = Vec::new();
    for (name, dir, runtime, commands) in EXAMPLES {
        if find_tool(runtime).is_none() {
            eprintln!("xtask: {runtime} is not installed: the {name} origin example cannot run");
            failed.push(format!(
                "{name} ({runtime} not installed; cargo xtask install)"
            ));
            continue;
        }
        let cwd = root.join("examples/origins").join(dir);
        for args in *commands {
            let mut cmd = Command::new(args[0]);
            cmd.args(&args[1..])
                .current_dir(&cwd)
                // Keeps `__pycache__` out of the source tree.
                .env("PYTHONDONTWRITEBYTECODE", "1");
            if let Err(e) = run(&mut cmd) {
                eprintln!("xtask: {e:#}");
                failed.push(format!("{name} ({})", args.join(" ")));
                break;
            }
        }
    }
    if !failed.is_empty() {
        bail!("origin examples failed: {}", failed.join(", "));
    }
    eprintln!("xtask: the origin examples agree with the vectors");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_example_directory_exists() {
        let root = crate::workspace_root();
        for (name, dir, _, _) in EXAMPLES {
            assert!(
                root.join("examples/origins").join(dir).is_dir(),
                "{name}: examples/origins/{dir}"
            );
        }
        assert!(root.join("shared/testdata/origin_signature.json").is_file());
    }
}
