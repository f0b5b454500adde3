//! `evaluate` for a valid key against 100,000 keys, beside the floor: one SHA-256 of the key
//! plus one hash-map lookup.
//!
//! ```text
//! cargo bench -p keygate-shared --bench evaluate -- --warm-up-time 1 --measurement-time 3
//! ```

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use keygate_shared::snapshot::{verify_snapshot, KeyMap};
use keygate_shared::{
    evaluate, Evaluation, KeyRecord, MemoryView, RequestFacts, SnapshotIndex, TrustedKeys,
};
use sha2::{Digest, Sha256};

#[path = "common/mod.rs"]
mod common;

const KEYS: usize = 100_000;

fn assert_valid(e: &Evaluation<'_>) {
    assert!(
        matches!(e, Evaluation::Done(v) if v.is_valid()),
        "the benchmark key must be valid: {e:?}"
    );
}

fn benches(c: &mut Criterion) {
    let (key, records) = common::records(KEYS);
    let text = key.expose().to_owned();
    let facts = RequestFacts {
        key: Some(&text),
        origin: Some(common::BENCH_ORIGIN),
        referer: Some(common::BENCH_REFERER),
        ip: Some("198.51.100.7".parse().expect("ip")),
        method: Some("GET"),
        path: Some("/orders/12345"),
        environment: keygate_shared::EnvironmentRule::Only(keygate_shared::Environment::Live),
    };

    let memory = MemoryView::new(common::projects(), records.clone());
    let signer = common::signer();
    let (wire, shards) = common::build_and_sign(&signer, records.clone());
    let mut trusted = TrustedKeys::new();
    trusted.add(signer.verifying_key());
    let manifest = verify_snapshot(&wire, &trusted, None, common::NOW_MS).expect("verifies");
    let mut index = SnapshotIndex::new(manifest);
    for (i, s) in shards.shards.iter().enumerate() {
        index.load_shard(i as u32, &s.bytes).expect("shard");
    }
    assert_valid(&evaluate(&memory, &facts, common::NOW_MS, None));
    assert_valid(&evaluate(&index, &facts, common::NOW_MS, None));

    let std_map: HashMap<[u8; 32], KeyRecord> =
        records.iter().map(|r| (r.hash.0, r.clone())).collect();
    let key_map: KeyMap = records
        .iter()
        .map(|r| (r.hash, keygate_shared::record::Entry::Usable(r.clone())))
        .collect();

    let mut g = c.benchmark_group("evaluate_100k");
    g.bench_function("floor_sha256_std_hashmap", |b| {
        b.iter(|| {
            let h: [u8; 32] = Sha256::digest(black_box(text.as_bytes())).into();
            black_box(std_map.get(&h))
        })
    });
    g.bench_function("floor_sha256_keymap", |b| {
        b.iter(|| {
            let h = keygate_shared::KeyHash(Sha256::digest(black_box(text.as_bytes())).into());
            black_box(key_map.get(&h))
        })
    });
    g.bench_function("memory_view", |b| {
        b.iter(|| {
            let e = evaluate(&memory, black_box(&facts), common::NOW_MS, None);
            black_box(matches!(e, Evaluation::Done(v) if v.is_valid()))
        })
    });
    g.bench_function("snapshot_index", |b| {
        b.iter(|| {
            let e = evaluate(&index, black_box(&facts), common::NOW_MS, None);
            black_box(matches!(e, Evaluation::Done(v) if v.is_valid()))
        })
    });
    g.finish();

    // The parts, to see where the time goes.
    let mut g = c.benchmark_group("evaluate_parts");
    g.bench_function("key_parse", |b| {
        b.iter(|| black_box(keygate_shared::key::parse(black_box(&text)).is_ok()))
    });
    g.bench_function("sha256", |b| {
        b.iter(|| {
            let h: [u8; 32] = Sha256::digest(black_box(text.as_bytes())).into();
            black_box(h)
        })
    });
    let routes = common::routes();
    g.bench_function("route_match", |b| {
        b.iter(|| {
            black_box(keygate_shared::policy::match_route(
                &routes,
                black_box("GET"),
                black_box("/orders/12345"),
            ))
        })
    });
    let record = records[0].clone();
    g.bench_function("referrer_match", |b| {
        b.iter(|| {
            black_box(keygate_shared::referrer::any_matches(
                &record.referrers,
                black_box(Some(common::BENCH_ORIGIN)),
                black_box(Some(common::BENCH_REFERER)),
            ))
        })
    });
    g.finish();
}

criterion_group!(evaluate_benches, benches);
criterion_main!(evaluate_benches);
