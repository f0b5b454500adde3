//! Snapshot publishing at scale: a fresh full build and a revocation's publish step.
//!
//! ```text
//! cargo bench -p keygate-control-plane --bench publish
//! ```
//!
//! SQLite in a temporary directory. `KEYGATE_BENCH_KEYS` (default 1000000) keys are inserted in
//! one project, then: fresh full builds (a new snapshot service each, as after a restart), and
//! revocations through `domain::keys::revoke`, each followed by the publish step (the next
//! `SnapshotService::current`, which reads the changed keys and re-encodes their shards). Peak
//! memory is the process's `VmHWM` from `/proc/self/status`, reset before each figure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use diesel::prelude::*;
use keygate_control_plane::db::models::KeyRow;
use keygate_control_plane::db::schema::api_keys;
use keygate_control_plane::domain::keys::{self, RevokeKey};
use keygate_control_plane::domain::projects;
use keygate_control_plane::keyring::Keyring;
use keygate_control_plane::metrics::Metrics;
use keygate_control_plane::snapshot::SnapshotService;
use keygate_control_plane::{Application, Config};
use keygate_shared::shard_store::ShardStore;
use keygate_shared::KeyRecord;
use serde_json::json;

#[path = "support/seed.rs"]
mod seed;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "publish benchmark: run it with `cargo bench -p keygate-control-plane --bench publish`"
        );
        return;
    }
    let keys: usize = std::env::var("KEYGATE_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    if std::env::args().any(|a| a == "--fresh-process") {
        actix_web::rt::System::new().block_on(fresh_process());
        return;
    }
    actix_web::rt::System::new().block_on(run(keys));
}

/// A full build in a process of its own, as after a restart: its memory figures are not
/// inflated by the seeding.
async fn fresh_process() {
    let dir = std::env::var("KEYGATE_BENCH_DATA_DIR").unwrap();
    let config = Config::new(dir);
    let app = Application::build(config).await.unwrap();
    let state = app.state();
    let mut conn = state.pool.get().unwrap();
    let before = status("VmRSS:");
    let t = Instant::now();
    let p = state
        .snapshots
        .current(&mut conn, state.clock.now_ms(), &state.metrics)
        .unwrap();
    println!(
        "full build in a fresh process: {:.0} ms ({} keys); VmRSS {before} before it, VmHWM {} and VmRSS {} after",
        ms(t),
        p.key_count,
        status("VmHWM:"),
        status("VmRSS:")
    );
}

fn status(field: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .map(|l| l[field.len()..].trim().to_owned())
        })
        .unwrap_or_else(|| "?".to_owned())
}

/// Resets `VmHWM` to the current resident size (Linux `clear_refs`), so each figure is the
/// peak of its own phase.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

async fn run(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::new(dir.path());
    let app = Application::build(config.clone()).await.unwrap();
    let state = app.state();
    let now = state.clock.now_ms();
    let mut conn = state.pool.get().unwrap();
    let input = serde_json::from_value(json!({"name": "bench", "key_prefix": "bench"})).unwrap();
    let project = projects::create(&mut conn, now, "bench", input).unwrap();

    let started = Instant::now();
    let ids = seed::seed(&mut conn, &project.id, n, now, |i| {
        (format!("key_bench{i:08}"), "seeded".to_owned())
    });
    println!(
        "seeded {n} keys in {:.1} s; VmHWM {}, VmRSS {}",
        started.elapsed().as_secs_f64(),
        status("VmHWM:"),
        status("VmRSS:")
    );

    for _ in 0..2 {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--bench", "--fresh-process"])
            .env("KEYGATE_BENCH_DATA_DIR", dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }

    for run in 1..=2 {
        reset_peak();
        let fresh = SnapshotService::new(
            config.data_dir.clone(),
            config.snapshot_validity_seconds,
            Keyring::load(&config.data_dir).unwrap(),
        );
        let t = Instant::now();
        let p = fresh.current(&mut conn, now, &Metrics::default()).unwrap();
        println!(
            "fresh full build {run}: {:.0} ms ({} keys); VmHWM {}, VmRSS {}",
            ms(t),
            p.key_count,
            status("VmHWM:"),
            status("VmRSS:")
        );
    }

    // The application's own service: one full build, then revocations.
    let t = Instant::now();
    state
        .snapshots
        .current(&mut conn, now, &state.metrics)
        .unwrap();
    println!("full build of the serving service: {:.0} ms", ms(t));
    reset_peak();
    let mut revoke_ms = Vec::new();
    let mut publish_ms = Vec::new();
    for (i, id) in ids
        .iter()
        .step_by(ids.len().max(10) / 10)
        .take(10)
        .enumerate()
    {
        let at = now + 1000 * (i as i64 + 1);
        let t = Instant::now();
        keys::revoke(
            &mut conn,
            at,
            "bench",
            &keygate_control_plane::ids::KeyId::new(id.as_str()),
            RevokeKey { reason: None },
        )
        .unwrap();
        revoke_ms.push(ms(t));
        let t = Instant::now();
        let p = state
            .snapshots
            .current(&mut conn, at, &state.metrics)
            .unwrap();
        publish_ms.push(ms(t));
        assert_eq!(p.key_count as usize, n);
    }
    let summary = |mut v: Vec<f64>| {
        let list = v
            .iter()
            .map(|x| format!("{x:.1}"))
            .collect::<Vec<_>>()
            .join(", ");
        v.sort_by(f64::total_cmp);
        format!(
            "median {:.1} ms, max {:.1} ms (runs: {list})",
            v[v.len() / 2],
            v[v.len() - 1]
        )
    };
    println!("revocation transaction: {}", summary(revoke_ms));
    println!("revocation publish step: {}", summary(publish_ms));
    println!(
        "while revoking and publishing (one snapshot held): VmHWM {}, VmRSS {}",
        status("VmHWM:"),
        status("VmRSS:")
    );

    // Where the time and memory of a build from all rows at once go, phase by phase: last, so
    // that the allocator's memory from it is in no figure above.
    {
        reset_peak();
        let t = Instant::now();
        let rows: Vec<KeyRow> = api_keys::table.load(&mut conn).unwrap();
        println!(
            "  phase: read {} key rows: {:.0} ms; VmHWM {}",
            rows.len(),
            ms(t),
            status("VmHWM:")
        );
        let t = Instant::now();
        let records: Vec<KeyRecord> = rows
            .iter()
            .map(|r| keys::record_from_row(r).unwrap())
            .collect();
        println!("  phase: rows to records: {:.0} ms", ms(t));
        let t = Instant::now();
        for r in &records {
            keygate_shared::record::edge_round_trip(r).unwrap();
        }
        println!(
            "  phase: edge round-trip check of every record: {:.0} ms",
            ms(t)
        );
        drop(rows);
        let t = Instant::now();
        let store = ShardStore::build(records).unwrap();
        println!(
            "  phase: sort, encode and digest {} shards: {:.0} ms; VmHWM over the phases {}",
            store.shards().len(),
            ms(t),
            status("VmHWM:")
        );
    }
}
