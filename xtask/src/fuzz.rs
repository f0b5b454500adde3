//! `cargo xtask fuzz [--seconds N] [TARGET...]`: a bounded campaign over the cargo-fuzz targets
//! in `fuzz/` (docs/fuzzing.md), one after the other, each for `N` seconds.
//!
//! The targets are all built once with `cargo fuzz build` on the nightly toolchain, into
//! `target/fuzz/`, and their binaries are run directly, so that everything a run writes stays
//! under `target/`: the corpus grows in `target/fuzz/corpus/<target>/` (kept between runs, which
//! then start from it), seeded from the small committed `fuzz/seeds/<target>/`; a crashing or
//! too slow input is saved in `target/fuzz/artifacts/<target>/` and fails the campaign; each
//! target's libFuzzer output is in `target/fuzz/logs/<target>.log`. At the end a table of each
//! target's executions, coverage and time is printed, the figures docs/fuzzing.md records.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::process::{run, show, stdout_of};

/// Every target in `fuzz/Cargo.toml`, in the order the campaign runs them.
pub const TARGETS: [&str; 7] = [
    "key_parse",
    "path_normalize",
    "referrer_pattern",
    "request_origin",
    "host_environments",
    "origin_signature",
    "snapshot_decode",
];

/// Seconds per target in `cargo xtask test`: seven targets, with each one's start-up, stay
/// within three minutes.
pub const DEFAULT_SECONDS: u64 = 24;

/// The toolchain cargo-fuzz needs (`-Z` sanitizer-coverage flags).
pub const TOOLCHAIN: &str = "nightly";

/// Longest time one input may take, in seconds, before it counts as a failure: every target
/// handles an input in microseconds, so a slow one is a bug (quadratic parsing, say).
const INPUT_TIMEOUT_SECONDS: u64 = 10;

/// Parses `[--seconds N] [TARGET...]`.
pub fn parse_args(args: &[String]) -> Result<(u64, Vec<&'static str>)> {
    let mut seconds = DEFAULT_SECONDS;
    let mut targets = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "--seconds" {
            let n = it.next().context("--seconds needs a number")?;
            seconds = n
                .parse()
                .ok()
                .filter(|&s| s > 0)
                .with_context(|| format!("--seconds {n:?} is not a positive number"))?;
        } else if let Some(t) = TARGETS.iter().find(|t| **t == arg.as_str()) {
            targets.push(*t);
        } else {
            bail!(
                "unknown fuzz target {arg:?}; the targets are {}",
                TARGETS.join(", ")
            );
        }
    }
    if targets.is_empty() {
        targets = TARGETS.to_vec();
    }
    Ok((seconds, targets))
}

/// What one target's run showed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Figures {
    /// Inputs executed.
    pub execs: u64,
    /// Coverage counters (libFuzzer's `cov`: edges reached).
    pub cov: u64,
    /// Features (libFuzzer's `ft`: edges with hit counts, comparisons).
    pub ft: u64,
    /// Inputs in the corpus at the end.
    pub corpus: u64,
    /// Executions per second, as libFuzzer reports them.
    pub execs_per_sec: u64,
}

/// Reads the figures from libFuzzer's output (`-print_final_stats=1`): the last status line
/// (`#N DONE cov: C ft: F corp: K/...`) and the final `stat::` lines.
pub fn figures(log: &str) -> Figures {
    let mut f = Figures::default();
    for line in log.lines() {
        if line.starts_with('#') && line.contains(" cov: ") {
            let mut words = line.split_whitespace();
            while let Some(w) = words.next() {
                let next = |ws: &mut std::str::SplitWhitespace<'_>| {
                    ws.next()
                        .and_then(|v| v.split('/').next())
                        .and_then(|v| v.parse().ok())
                };
                match w {
                    "cov:" => f.cov = next(&mut words).unwrap_or(f.cov),
                    "ft:" => f.ft = next(&mut words).unwrap_or(f.ft),
                    "corp:" => f.corpus = next(&mut words).unwrap_or(f.corpus),
                    _ => {}
                }
            }
        } else if let Some((k, v)) = line.rsplit_once(':') {
            let v = v.trim().parse().ok();
            match k.trim() {
                "stat::number_of_executed_units" => f.execs = v.unwrap_or(f.execs),
                "stat::average_exec_per_sec" => f.execs_per_sec = v.unwrap_or(f.execs_per_sec),
                _ => {}
            }
        }
    }
    f
}

/// Builds the targets and runs each for `seconds`; fails, naming the saved inputs, if any
/// target crashed, timed out or could not run.
pub fn campaign(root: &Path, seconds: u64, targets: &[&str]) -> Result<()> {
    let fuzz_dir = root.join("fuzz");
    let out = root.join("target").join("fuzz");
    let host = nightly_host()?;
    let mut build = nightly_cargo();
    build
        .args(["fuzz", "build", "--sanitizer", "none", "--target-dir"])
        .arg(&out)
        .current_dir(&fuzz_dir);
    run(&mut build).context("cannot build the fuzz targets")?;

    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for &target in targets {
        let corpus = out.join("corpus").join(target);
        let artifacts = out.join("artifacts").join(target);
        let logs = out.join("logs");
        for dir in [&corpus, &artifacts, &logs] {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let log_path = logs.join(format!("{target}.log"));
        let log = fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let mut cmd = Command::new(out.join(&host).join("release").join(target));
        cmd.arg(format!("-max_total_time={seconds}"))
            .arg(format!("-timeout={INPUT_TIMEOUT_SECONDS}"))
            .arg("-print_final_stats=1")
            // libFuzzer joins the prefix and the file name as strings.
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .arg(&corpus);
        let seeds = fuzz_dir.join("seeds").join(target);
        if seeds.is_dir() {
            cmd.arg(&seeds);
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().context("log file")?)
            .stderr(log);
        eprintln!("$ {}  (output in {})", show(&cmd), log_path.display());
        // libFuzzer names a saved input by its hash: what is new is what this run found.
        let before = files_in(&artifacts);
        let started = Instant::now();
        let status = cmd
            .status()
            .with_context(|| format!("cannot run the {target} fuzz target"))?;
        let elapsed = started.elapsed().as_secs_f64();
        let text = fs::read_to_string(&log_path).unwrap_or_default();
        let found: Vec<PathBuf> = files_in(&artifacts)
            .into_iter()
            .filter(|p| !before.contains(p))
            .collect();
        if !status.success() || !found.is_empty() {
            for line in failure_excerpt(&text) {
                eprintln!("  {line}");
            }
            eprintln!(
                "xtask: fuzz target {target} failed ({status}); saved inputs: {}; replay one \
                 with `{}`",
                if found.is_empty() {
                    format!("none new (see {})", log_path.display())
                } else {
                    found
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                },
                out.join(&host).join("release").join(target).display()
            );
            failed.push(target);
        }
        rows.push((target, figures(&text), elapsed));
    }

    eprintln!("\nxtask: fuzzing campaign, {seconds} s per target ({TOOLCHAIN}, no sanitizer):\n");
    eprintln!("| target | executions | execs/s | cov | ft | corpus | seconds |");
    eprintln!("|---|---:|---:|---:|---:|---:|---:|");
    for (target, f, secs) in &rows {
        eprintln!(
            "| `{target}` | {} | {} | {} | {} | {} | {secs:.0} |",
            f.execs, f.execs_per_sec, f.cov, f.ft, f.corpus
        );
    }
    let total: f64 = rows.iter().map(|(_, _, secs)| secs).sum();
    eprintln!("\nxtask: {} targets fuzzed in {total:.0} s\n", rows.len());
    if !failed.is_empty() {
        bail!("fuzz targets failed: {}", failed.join(", "));
    }
    Ok(())
}

/// What to show of a failed run's output: the panic message (a failed property says there
/// what broke), without the backtrace that follows it, then libFuzzer's last lines, which name
/// the saved input.
fn failure_excerpt(log: &str) -> Vec<&str> {
    let lines: Vec<&str> = log.lines().collect();
    let mut out = Vec::new();
    if let Some(i) = lines.iter().position(|l| l.contains("panicked at")) {
        out.extend(
            lines[i..]
                .iter()
                .take_while(|l| !l.starts_with("stack backtrace:"))
                .take(20),
        );
        out.push("...");
    }
    let tail = lines.len().saturating_sub(12);
    out.extend(&lines[tail..]);
    out
}

/// The files in `dir`, sorted.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    found.sort();
    found
}

/// `cargo` on the nightly toolchain, whatever `rust-toolchain.toml` says, and without the
/// variables `cargo xtask` itself runs with (they name the stable tools).
fn nightly_cargo() -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", TOOLCHAIN, "cargo"]);
    for var in [
        "CARGO",
        "RUSTC",
        "RUSTDOC",
        "RUSTC_WRAPPER",
        "RUSTUP_TOOLCHAIN",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// The host triple of the nightly toolchain, which `cargo fuzz build` builds for.
fn nightly_host() -> Result<String> {
    let out = stdout_of(Command::new("rustup").args(["run", TOOLCHAIN, "rustc", "-vV"]))
        .with_context(|| {
            format!("the {TOOLCHAIN} toolchain is not installed (cargo xtask install)")
        })?;
    out.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .context("`rustc -vV` names no host")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_figures() {
        let log = "\
#2	INITED cov: 10 ft: 11 corp: 1/1b exec/s: 0 rss: 30Mb
#773418	DONE   cov: 2682 ft: 6662 corp: 2456/68Kb lim: 571 exec/s: 36829 rss: 41Mb
Done 773418 runs in 21 second(s)
stat::number_of_executed_units: 773418
stat::average_exec_per_sec:     36829
stat::new_units_added:          2456
";
        assert_eq!(
            figures(log),
            Figures {
                execs: 773_418,
                cov: 2682,
                ft: 6662,
                corpus: 2456,
                execs_per_sec: 36829,
            }
        );
        assert_eq!(figures(""), Figures::default());
    }

    #[test]
    fn a_failure_shows_the_panic_and_the_saved_input() {
        let mut log = String::from("INFO: Seed: 1\n");
        log.push_str("thread '<unnamed>' panicked at fuzz_targets/x.rs:3:5:\n\"/a\" is wrong\n");
        log.push_str("stack backtrace:\n");
        for i in 0..40 {
            log.push_str(&format!("  {i}: frame\n"));
        }
        log.push_str("Test unit written to target/fuzz/artifacts/x/crash-1\n");
        let shown = failure_excerpt(&log);
        assert_eq!(
            shown[0],
            "thread '<unnamed>' panicked at fuzz_targets/x.rs:3:5:"
        );
        assert_eq!(shown[1], "\"/a\" is wrong");
        assert!(!shown.contains(&"stack backtrace:"));
        assert_eq!(
            shown.last(),
            Some(&"Test unit written to target/fuzz/artifacts/x/crash-1")
        );
        assert!(shown.len() < 20, "{shown:?}");
    }

    #[test]
    fn arguments() {
        let args = |a: &[&str]| {
            parse_args(&a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                .map_err(|e| e.to_string())
        };
        assert_eq!(args(&[]), Ok((DEFAULT_SECONDS, TARGETS.to_vec())));
        assert_eq!(
            args(&["--seconds", "5", "key_parse"]),
            Ok((5, vec!["key_parse"]))
        );
        assert!(args(&["--seconds", "0"]).is_err());
        assert!(args(&["--seconds"]).is_err());
        assert!(args(&["no_such_target"])
            .expect_err("unknown")
            .contains("key_parse"));
    }

    #[test]
    fn every_target_is_in_the_fuzz_manifest() {
        let manifest = fs::read_to_string(crate::workspace_root().join("fuzz/Cargo.toml"))
            .expect("fuzz/Cargo.toml");
        let bins = manifest
            .lines()
            .filter_map(|l| l.trim().strip_prefix("name = \""))
            .filter_map(|l| l.strip_suffix('"'))
            .filter(|n| *n != "keygate-fuzz")
            .count();
        for t in TARGETS {
            assert!(
                manifest.contains(&format!("name = \"{t}\"")),
                "{t} is not a target"
            );
        }
        assert_eq!(bins, TARGETS.len(), "a target is missing from TARGETS");
    }
}
