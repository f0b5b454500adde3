//! Incremental shard publishing gives byte-for-byte what a fresh build of the same records gives.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(not(target_arch = "wasm32"))]

use std::collections::BTreeMap;

use keygate_shared::policy::{KeyRecord, Scope};
use keygate_shared::shard_store::{Applied, ShardChange, ShardStore, ShardStoreBuilder};
use keygate_shared::snapshot::build_shards;
use keygate_shared::{Environment, KeyHash, KeyPrefix, Kind, PlaintextKey};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

const NOW: i64 = 1_800_000_000_000;

fn record(rng: &mut ChaCha20Rng, n: u64) -> KeyRecord {
    let prefix = KeyPrefix::parse("acme").unwrap();
    let key = PlaintextKey::generate(rng, &prefix, Kind::Secret, Environment::Live);
    KeyRecord {
        hash: key.hash(),
        key_id: format!("key_{n:08}"),
        project_id: format!("proj_{}", n % 3),
        kind: Kind::Secret,
        environment: Environment::Live,
        revoked: false,
        expires_at_ms: n.is_multiple_of(7).then_some(NOW + (n as i64 % 50) * 1000),
        scopes: vec![Scope::parse("orders:read").unwrap()],
        referrers: Vec::new(),
        ips: Vec::new(),
        rate_limit: None,
        quota: None,
        metadata_json: None,
    }
}

/// Checks `store` against a fresh build of `model`, and that exactly the shards `applied` names
/// changed since `before`.
fn check(
    store: &ShardStore,
    model: &BTreeMap<KeyHash, KeyRecord>,
    before: &[[u8; 32]],
    applied: &Applied,
) {
    let fresh = build_shards(model.values().cloned().collect(), None).unwrap();
    assert_eq!(store.shard_bits(), fresh.shard_bits);
    assert_eq!(store.key_count(), fresh.key_count);
    assert_eq!(store.shards().len(), fresh.shards.len());
    for (held, built) in store.shards().iter().zip(&fresh.shards) {
        assert_eq!(held.digest, built.digest);
        assert_eq!(&*held.bytes, &built.bytes[..]);
    }
    if let Applied::Shards(changed) = applied {
        assert_eq!(before.len(), store.shards().len(), "shard count kept");
        let differ: Vec<u32> = (0..before.len() as u32)
            .filter(|&i| before[i as usize] != store.shards()[i as usize].digest.0)
            .collect();
        assert_eq!(&differ, changed);
    } else {
        assert_ne!(
            before.len(),
            store.shards().len(),
            "a rebuild changes the shard count"
        );
    }
}

#[test]
fn random_changes_match_a_fresh_build() {
    let mut rng = ChaCha20Rng::seed_from_u64(18);
    let mut next = 0u64;
    // Sizes around the 1024- and 2048-key boundaries, where the shard bits move.
    for start in [0usize, 3, 1000, 1030, 2040, 2100] {
        let mut model: BTreeMap<KeyHash, KeyRecord> = BTreeMap::new();
        for _ in 0..start {
            next += 1;
            let r = record(&mut rng, next);
            model.insert(r.hash, r);
        }
        let mut store = ShardStore::build(model.values().cloned().collect()).unwrap();
        check(&store, &model, &[], &Applied::Rebuilt);
        let mut rebuilt = 0;
        for round in 0..40 {
            let before: Vec<[u8; 32]> = store.shards().iter().map(|s| s.digest.0).collect();
            let mut changes = Vec::new();
            for _ in 0..rng.gen_range(0..6) {
                let existing: Option<KeyRecord> = if model.is_empty() {
                    None
                } else {
                    let i = rng.gen_range(0..model.len());
                    model.values().nth(i).cloned()
                };
                match (rng.gen_range(0..5), existing) {
                    (1, Some(mut r)) => {
                        r.revoked = true;
                        changes.push(ShardChange::Upsert(r));
                    }
                    (2, Some(r)) => changes.push(ShardChange::Remove(r.hash)),
                    (3, Some(mut r)) => {
                        r.scopes.push(Scope::parse("orders:write").unwrap());
                        r.rate_limit = None;
                        changes.push(ShardChange::Upsert(r));
                    }
                    (4, _) => {
                        // Removing a hash that is not there changes nothing.
                        next += 1;
                        changes.push(ShardChange::Remove(record(&mut rng, next).hash));
                    }
                    _ => {
                        next += 1;
                        changes.push(ShardChange::Upsert(record(&mut rng, next)));
                    }
                }
            }
            // Occasionally a burst of new keys, to cross a shard-bits boundary.
            if round % 13 == 12 {
                for _ in 0..rng.gen_range(100..200) {
                    next += 1;
                    changes.push(ShardChange::Upsert(record(&mut rng, next)));
                }
            }
            let cut = (round % 4 == 3).then(|| NOW + round * 1000);
            for c in &changes {
                match c {
                    ShardChange::Upsert(r) => {
                        model.insert(r.hash, r.clone());
                    }
                    ShardChange::Remove(h) => {
                        model.remove(h);
                    }
                }
            }
            if let Some(cut) = cut {
                model.retain(|_, r| r.expires_at_ms.is_none_or(|e| e > cut));
            }
            let applied = store.apply(changes, cut).unwrap();
            if applied == Applied::Rebuilt {
                rebuilt += 1;
            }
            check(&store, &model, &before, &applied);
        }
        if start == 1030 || start == 2040 {
            assert!(
                rebuilt > 0,
                "the shard bits moved at least once from {start} keys"
            );
        }
    }
}

#[test]
fn one_revocation_changes_one_shard() {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let records: Vec<KeyRecord> = (0..5000).map(|n| record(&mut rng, n)).collect();
    let mut store = ShardStore::build(records.clone()).unwrap();
    assert_eq!(store.shards().len(), 8);
    let before = store.digests();
    let mut revoked = records[17].clone();
    revoked.revoked = true;
    let applied = store
        .apply(vec![ShardChange::Upsert(revoked)], None)
        .unwrap();
    let Applied::Shards(changed) = applied else {
        panic!("no rebuild expected")
    };
    assert_eq!(changed.len(), 1);
    let after = store.digests();
    let differ = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    assert_eq!(differ, 1);
}

/// Records added one at a time, in any order, give byte for byte the store of a build of all of
/// them at once, around the key counts where the shard bits move, with varied records.
#[test]
fn a_build_record_by_record_matches_a_build_at_once() {
    let mut rng = ChaCha20Rng::seed_from_u64(20);
    let mut next = 0u64;
    for count in [0usize, 1, 5, 1024, 1025, 2049, 5000] {
        let mut records: Vec<KeyRecord> = (0..count)
            .map(|_| {
                next += 1;
                let mut r = record(&mut rng, next);
                if next.is_multiple_of(5) {
                    r.metadata_json = Some(format!("{{\"n\":{next}}}"));
                    r.revoked = true;
                }
                r
            })
            .collect();
        let at_once = ShardStore::build(records.clone()).unwrap();
        records.reverse();
        let builder = builder_of(&records);
        assert_eq!(builder.key_count(), count as u64);
        let streamed = builder.finish().unwrap();
        assert_eq!(streamed.shard_bits(), at_once.shard_bits(), "{count}");
        assert_eq!(streamed.key_count(), at_once.key_count());
        assert_eq!(streamed.digests(), at_once.digests(), "{count}");
        for (a, b) in streamed.shards().iter().zip(at_once.shards()) {
            assert_eq!(&*a.bytes, &*b.bytes);
        }
        // And it changes like a store built at once.
        let mut streamed = streamed;
        let mut at_once = at_once;
        if let Some(r) = records.first() {
            let changes = vec![ShardChange::Remove(r.hash)];
            assert_eq!(
                streamed.apply(changes.clone(), Some(NOW)).unwrap(),
                at_once.apply(changes, Some(NOW)).unwrap()
            );
            assert_eq!(streamed.digests(), at_once.digests());
        }
    }
}

/// Hashes that share their first 8 bytes are still put in hash order, and a hash added twice
/// is published once.
#[test]
fn a_build_record_by_record_orders_hashes_alike_in_their_first_bytes() {
    let mut rng = ChaCha20Rng::seed_from_u64(23);
    let mut records: Vec<KeyRecord> = (0..3000u64)
        .map(|n| {
            let mut r = record(&mut rng, n);
            if n.is_multiple_of(3) {
                r.hash.0[..8].copy_from_slice(&[0x5a; 8]);
            }
            r
        })
        .collect();
    let at_once = ShardStore::build(records.clone()).unwrap();
    records.reverse();
    let mut builder = builder_of(&records);
    builder.add(&records[0]).unwrap();
    let streamed = builder.finish().unwrap();
    assert_eq!(streamed.key_count(), 3000);
    assert_eq!(streamed.digests(), at_once.digests());
}

/// A builder given `records` one by one, in the order given.
fn builder_of(records: &[KeyRecord]) -> ShardStoreBuilder {
    let mut builder = ShardStore::builder();
    for r in records {
        builder.add(r).unwrap();
    }
    builder
}
