//! Snapshot publish (build shards + sign) and load (verify manifest + verify every shard +
//! index) for 100,000 and 1,000,000 keys.
//!
//! ```text
//! cargo bench -p keygate-shared --bench snapshot -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Peak memory is measured by `examples/snapshot_mem.rs` (see `docs/benchmarks.md`).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use keygate_shared::snapshot::verify_snapshot;
use keygate_shared::{SnapshotIndex, TrustedKeys};

#[path = "common/mod.rs"]
mod common;

fn benches(c: &mut Criterion) {
    let signer = common::signer();
    let mut trusted = TrustedKeys::new();
    trusted.add(signer.verifying_key());
    let mut g = c.benchmark_group("snapshot");
    g.sample_size(10);
    for n in [100_000usize, 1_000_000] {
        let (_, records) = common::records(n);
        let (wire, shards) = common::build_and_sign(&signer, records.clone());
        let shard_bytes: usize = shards.shards.iter().map(|s| s.bytes.len()).sum();
        eprintln!(
            "snapshot of {n} keys: {} shards, manifest {} B, shards {} B, {:.1} B per key",
            shards.shards.len(),
            wire.len(),
            shard_bytes,
            (wire.len() + shard_bytes) as f64 / n as f64
        );

        g.bench_function(format!("build_sign/{n}"), |b| {
            b.iter_batched(
                || records.clone(),
                |r| common::build_and_sign(&signer, r),
                BatchSize::PerIteration,
            )
        });

        g.bench_function(format!("verify_load/{n}"), |b| {
            b.iter_with_large_drop(|| {
                let manifest = verify_snapshot(black_box(&wire), &trusted, None, common::NOW_MS)
                    .expect("verifies");
                let mut index = SnapshotIndex::new(manifest);
                for (i, s) in shards.shards.iter().enumerate() {
                    index.load_shard(i as u32, &s.bytes).expect("shard");
                }
                index
            })
        });

        // What one request on a cold isolate pays: the manifest, then one shard.
        let first = &shards.shards[0].bytes;
        g.bench_function(format!("verify_manifest_and_one_shard/{n}"), |b| {
            b.iter_with_large_drop(|| {
                let manifest = verify_snapshot(black_box(&wire), &trusted, None, common::NOW_MS)
                    .expect("verifies");
                let mut index = SnapshotIndex::new(manifest);
                index.load_shard(0, first).expect("shard");
                index
            })
        });
    }
    g.finish();
}

criterion_group!(snapshot_benches, benches);
criterion_main!(snapshot_benches);
