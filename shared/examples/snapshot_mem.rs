//! Peak memory (VmHWM, Linux) of building and of loading a snapshot.
//!
//! ```text
//! cargo run --release -p keygate-shared --example snapshot_mem -- build 1000000 /tmp/kg-snap
//! cargo run --release -p keygate-shared --example snapshot_mem -- load /tmp/kg-snap
//! ```
//!
//! `build` generates the records, then resets the peak and builds and signs the snapshot, writing
//! `snapshot.json` and `shards/<digest>.bin` to the directory. `load` reads those files, verifies
//! the manifest and every shard and builds the index, as an edge isolate that loads everything
//! would. Each prints its figures as `name: value` lines.

use std::fs;
use std::path::Path;
use std::time::Instant;

use keygate_shared::snapshot::verify_snapshot;
use keygate_shared::{SnapshotIndex, TrustedKeys};

#[path = "../benches/common/mod.rs"]
mod common;

/// A `kB` field of /proc/self/status, in MiB.
fn status_mib(field: &str) -> f64 {
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("status field");
    kb / 1024.0
}

/// Resets VmHWM to the current RSS (Linux 4.0+).
fn reset_peak() {
    fs::write("/proc/self/clear_refs", "5").expect("reset peak RSS");
}

fn build(n: usize, dir: &Path) {
    let (_, records) = common::records(n);
    let rss_records = status_mib("VmRSS");
    reset_peak();
    let signer = common::signer();
    let started = Instant::now();
    let (wire, shards) = common::build_and_sign(&signer, records);
    let elapsed = started.elapsed();
    let peak = status_mib("VmHWM");
    let shard_dir = dir.join("shards");
    fs::create_dir_all(&shard_dir).expect("mkdir");
    for old in fs::read_dir(&shard_dir).expect("read dir") {
        fs::remove_file(old.expect("entry").path()).expect("remove old shard");
    }
    fs::write(dir.join("snapshot.json"), &wire).expect("write snapshot");
    fs::write(dir.join("public_key"), signer.public_key_base64url()).expect("write key");
    let mut shard_bytes = 0;
    for s in &shards.shards {
        shard_bytes += s.bytes.len();
        fs::write(
            shard_dir.join(format!("{}.bin", s.digest.to_hex())),
            &s.bytes,
        )
        .expect("write shard");
    }
    println!("keys: {n}");
    println!("shards: {}", shards.shards.len());
    println!("manifest_bytes: {}", wire.len());
    println!("shard_bytes: {shard_bytes}");
    println!(
        "bytes_per_key: {:.1}",
        (wire.len() + shard_bytes) as f64 / n as f64
    );
    println!("build_sign_seconds: {:.3}", elapsed.as_secs_f64());
    println!("rss_with_records_mib: {rss_records:.1}");
    println!("peak_rss_during_build_mib: {peak:.1}");
}

fn load(dir: &Path) {
    let baseline = status_mib("VmRSS");
    let key = fs::read_to_string(dir.join("public_key")).expect("read key");
    let trusted = TrustedKeys::from_base64url_list(&key).expect("key");
    let wire = fs::read(dir.join("snapshot.json")).expect("read snapshot");
    let started = Instant::now();
    let manifest = verify_snapshot(&wire, &trusted, None, common::NOW_MS).expect("verifies");
    let mut index = SnapshotIndex::new(manifest);
    let mut shard_bytes = 0;
    for i in 0..index.manifest().shard_count() {
        let digest = index.manifest().shard_digest(i).expect("digest");
        // One shard in memory at a time, as an edge fetching shards would hold them.
        let bytes = fs::read(dir.join("shards").join(format!("{}.bin", digest.to_hex())))
            .expect("read shard");
        shard_bytes += bytes.len();
        index.load_shard(i, &bytes).expect("shard verifies");
    }
    let elapsed = started.elapsed();
    let keys = index.manifest().manifest().key_count;
    println!("keys: {keys}");
    println!("shard_bytes: {shard_bytes}");
    println!(
        "verify_load_seconds (incl. reading files): {:.3}",
        elapsed.as_secs_f64()
    );
    println!("baseline_rss_mib: {baseline:.1}");
    println!("rss_with_index_mib: {:.1}", status_mib("VmRSS"));
    println!("peak_rss_mib: {:.1}", status_mib("VmHWM"));
    println!(
        "index_bytes_per_key (rss growth): {:.0}",
        (status_mib("VmRSS") - baseline) * 1024.0 * 1024.0 / keys as f64
    );
    drop(index);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["build", n, dir] => build(n.parse().expect("key count"), Path::new(dir)),
        ["load", dir] => load(Path::new(dir)),
        _ => {
            eprintln!("usage: snapshot_mem build <keys> <dir> | snapshot_mem load <dir>");
            std::process::exit(2);
        }
    }
}
