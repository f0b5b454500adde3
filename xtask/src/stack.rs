//! `cargo xtask up`: the local stack (contract section 6), until Ctrl-C.
//!
//! Today it installs the tools, builds the edge Worker and runs it in workerd on
//! `KEYGATE_EDGE_PORT` (default 8787), with the cron triggers of `wrangler.toml` running on their
//! schedule and the state (KV, Durable Objects, logs) in `.stack/edge/`.
//!
//! Still to come here: the control plane on embedded SQLite (`KEYGATE_PORT`, default 8080; it
//! will provide the edge's `EDGE_TOKEN` and `SNAPSHOT_PUBLIC_KEYS`), the demo origin
//! (`KEYGATE_ORIGIN_PORT`, default 8788, not started when `KEYGATE_ORIGIN_URL` is set), and the
//! printed owner token and demo key.

use std::fs;
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};
use keygate_tests::workerd::{Output, WorkerdConfig};

use crate::{edge, tools};

/// Default ports of contract section 6.
const DEFAULT_PORT: u16 = 8080;
const DEFAULT_EDGE_PORT: u16 = 8787;
const DEFAULT_ORIGIN_PORT: u16 = 8788;

/// Runs the stack until interrupted.
pub fn up(root: &Path) -> Result<()> {
    let port = env_port("KEYGATE_PORT", DEFAULT_PORT)?;
    let edge_port = env_port("KEYGATE_EDGE_PORT", DEFAULT_EDGE_PORT)?;
    let origin_url = match std::env::var("KEYGATE_ORIGIN_URL") {
        Ok(url) if !url.trim().is_empty() => url.trim().trim_end_matches('/').to_owned(),
        _ => format!(
            "http://127.0.0.1:{}",
            env_port("KEYGATE_ORIGIN_PORT", DEFAULT_ORIGIN_PORT)?
        ),
    };
    let control_plane_url = format!("http://127.0.0.1:{port}");

    tools::install(root)?;
    edge::build(root, true)?;

    let crons = wrangler_crons(root);
    let state = root.join(".stack/edge");
    // Until the control plane runs here, the edge gets fresh secrets of its own and no snapshot
    // key, so it answers `edge_misconfigured` to keyed requests.
    let edge = WorkerdConfig::new(root, &state)
        .port(edge_port)
        .output(Output::Inherit)
        .crons(crons.clone())
        .var("CONTROL_PLANE_URL", &control_plane_url)
        .var("ORIGIN_URL", &origin_url)
        .var("SNAPSHOT_REFRESH_SECONDS", "2")
        .secret("EDGE_TOKEN", random_hex(32)?)
        .secret("ORIGIN_HMAC_SECRET", random_hex(32)?);
    let mut edge = edge.start()?;

    println!();
    println!("Keygate local stack");
    println!("  edge (workerd)   {}", edge.url());
    println!("  control plane    {control_plane_url}  (not started by `up` yet)");
    println!("  origin           {origin_url}  (not started by `up` yet)");
    if let Some(url) = edge.scheduled_url() {
        println!("  cron trigger     {url}/__scheduled?cron=*+*+*+*+*");
    }
    println!("  crons            {crons:?}");
    println!("  edge state       {}", edge.state_dir().display());
    println!("Press Ctrl-C to stop.");
    println!();

    let status = edge.wait()?;
    bail!("workerd exited ({status})")
}

fn env_port(name: &str, default: u16) -> Result<u16> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .with_context(|| format!("{name}={v:?} is not a port number")),
        _ => Ok(default),
    }
}

/// The `crons` of `[triggers]` in `wrangler.toml`, so that the local stack runs what deploys.
fn wrangler_crons(root: &Path) -> Vec<String> {
    let Ok(text) = fs::read_to_string(root.join("wrangler.toml")) else {
        return Vec::new();
    };
    text.lines()
        .map(str::trim)
        .find_map(|line| {
            let (key, value) = line.split_once('=')?;
            (key.trim() == "crons").then(|| {
                value
                    .split('"')
                    .skip(1)
                    .step_by(2)
                    .map(str::to_owned)
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// `bytes` random bytes from the operating system, in hex.
fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("cannot read /dev/urandom")?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_crons_from_wrangler_toml() {
        let dir = std::env::temp_dir().join(format!("xtask-crons-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        fs::write(
            dir.join("wrangler.toml"),
            "[triggers]\ncrons = [\"* * * * *\", \"0 0 * * *\"]\n",
        )
        .expect("write");
        assert_eq!(wrangler_crons(&dir), ["* * * * *", "0 0 * * *"]);
        fs::remove_dir_all(&dir).expect("clean up");
    }
}
