//! Snapshot and shard decoding on arbitrary bytes: nothing panics, and nothing unsigned or
//! out of place is accepted.
//!
//! The first input byte picks what the rest is:
//! - 0: signed-snapshot wire bytes (JSON), verified against a trusted key;
//! - 1: manifest bytes, signed here with the trusted key, so decoding past the signature check
//!   is reached;
//! - 2: shard bytes, checked against a fixed verified manifest, and decoded directly;
//! - 3: shard bytes committed to by a freshly signed manifest, so the decoded shard's placement
//!   checks and the index are reached.
#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey};
use keygate_shared::record::Entry;
use keygate_shared::snapshot::{
    build_shards, key_id_of, shard_index, verify_snapshot, Digest32, Manifest, Shard,
    SignedSnapshot, VerifiedShard, FORMAT_VERSION, SIGNING_CONTEXT,
};
use keygate_shared::{
    Environment, KeyPrefix, KeyRecord, Kind, Lookup, PlaintextKey, SnapshotIndex, SnapshotView,
    TrustedKeys, VerifiedManifest,
};
use libfuzzer_sys::fuzz_target;

const NOW_MS: i64 = 1_772_323_200_000;

struct Fixture {
    signing: SigningKey,
    trusted: TrustedKeys,
    manifest: VerifiedManifest,
}

fn manifest_with(shard_bits: u8, shard_digests: Vec<Digest32>, key_count: u64) -> Manifest {
    Manifest {
        format: FORMAT_VERSION,
        version: 1,
        issued_at_ms: NOW_MS,
        valid_until_ms: NOW_MS + 60_000,
        shard_bits,
        key_count,
        shard_digests,
        projects: Vec::new(),
    }
}

fn sign_raw(signing: &SigningKey, manifest_bytes: &[u8]) -> Vec<u8> {
    let mut msg = SIGNING_CONTEXT.to_vec();
    msg.extend_from_slice(manifest_bytes);
    serde_json::to_vec(&SignedSnapshot {
        format: FORMAT_VERSION,
        key_id: key_id_of(&signing.verifying_key()),
        manifest: URL_SAFE_NO_PAD.encode(manifest_bytes),
        signature: URL_SAFE_NO_PAD.encode(signing.sign(&msg).to_bytes()),
    })
    .expect("json")
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let signing = SigningKey::from_bytes(&[7; 32]);
        let mut trusted = TrustedKeys::new();
        trusted.add(signing.verifying_key());
        let prefix = KeyPrefix::parse("fuzz").expect("prefix");
        let records: Vec<KeyRecord> = (0..16u32)
            .map(|i| {
                let key = PlaintextKey::from_parts(
                    &prefix,
                    Kind::Secret,
                    Environment::Live,
                    &format!("{i:0>32}"),
                )
                .expect("key");
                KeyRecord {
                    hash: key.hash(),
                    key_id: format!("key_{i}"),
                    project_id: "proj".into(),
                    kind: Kind::Secret,
                    environment: Environment::Live,
                    revoked: false,
                    expires_at_ms: None,
                    scopes: Vec::new(),
                    referrers: Vec::new(),
                    ips: Vec::new(),
                    rate_limit: None,
                    quota: None,
                    metadata_json: None,
                }
            })
            .collect();
        let shards = build_shards(records, Some(2)).expect("shards");
        let m = manifest_with(2, shards.digests(), shards.key_count);
        let bytes = postcard::to_allocvec(&m).expect("encode");
        let manifest =
            verify_snapshot(&sign_raw(&signing, &bytes), &trusted, None, NOW_MS).expect("valid");
        Fixture {
            signing,
            trusted,
            manifest,
        }
    })
}

fn check_index(manifest: VerifiedManifest, index: u32, shard: &VerifiedShard, bytes: &[u8]) {
    let bits = manifest.manifest().shard_bits;
    assert_eq!(shard.index, index);
    assert!(shard
        .entries
        .iter()
        .all(|(hash, _)| shard_index(hash, bits) == index));
    let mut snapshot = SnapshotIndex::new(manifest);
    snapshot
        .load_shard(index, bytes)
        .expect("a verified shard loads");
    // Every key of the shard is found, usable or refused alone: none goes missing.
    for (hash, entry) in &shard.entries {
        match (snapshot.key(hash), entry) {
            (Lookup::Found(_), _) | (Lookup::Unusable { .. }, Entry::Unusable { .. }) => {}
            (Lookup::Unusable { .. }, Entry::Usable(_)) => {
                // Only when the same hash is also in the shard as an unusable record.
                assert!(shard
                    .entries
                    .iter()
                    .any(|(h, e)| h == hash && matches!(e, Entry::Unusable { .. })));
            }
            (other, _) => panic!("a key of a loaded shard is {other:?}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => {
            if let Ok(m) = verify_snapshot(rest, &f.trusted, None, NOW_MS) {
                // Only a correct signature by the trusted key gets here.
                assert_eq!(m.key_id(), key_id_of(&f.signing.verifying_key()));
            }
        }
        1 => {
            let wire = sign_raw(&f.signing, rest);
            if let Ok(m) = verify_snapshot(&wire, &f.trusted, Some(1), NOW_MS) {
                assert_eq!(m.shard_count() as usize, 1 << m.manifest().shard_bits);
                assert!(m.version() >= 1);
                let index = SnapshotIndex::new(m);
                assert_eq!(index.loaded_shards(), 0);
            }
        }
        2 => {
            let index = rest.first().map_or(0, |b| u32::from(*b) % 5);
            if let Ok(shard) = f.manifest.verify_shard(index, rest) {
                check_index(f.manifest.clone(), index, &shard, rest);
            }
            let _ = postcard::from_bytes::<Shard>(rest);
            let _ = postcard::from_bytes::<Manifest>(rest);
        }
        _ => {
            let bits = rest.first().map_or(0, |b| b % 3);
            let count = 1usize << bits;
            let index = rest.get(1).map_or(0, |b| u32::from(*b) % count as u32);
            let mut digests = vec![Digest32([0; 32]); count];
            digests[index as usize] = Digest32::of(rest);
            let m = manifest_with(bits, digests, 0);
            let bytes = postcard::to_allocvec(&m).expect("encode");
            let wire = sign_raw(&f.signing, &bytes);
            let verified = verify_snapshot(&wire, &f.trusted, None, NOW_MS).expect("valid");
            if let Ok(shard) = verified.verify_shard(index, rest) {
                check_index(verified, index, &shard, rest);
            }
        }
    }
});
