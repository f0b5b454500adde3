//! Snapshot verification refuses each kind of bad snapshot with its own error, and accepts
//! what it must (same version, either key during a signing-key rotation).
#![cfg(not(target_arch = "wasm32"))]

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::{key, project, record, route, Window, DAY, T0};
use ed25519_dalek::Signer as _;
use keygate_shared::snapshot::{
    build_shards, key_id_of, parse_public_key, shard_index, verify_snapshot, Digest32, Shard,
    SignedSnapshot, FORMAT_VERSION, MAX_CLOCK_SKEW_MS, SIGNING_CONTEXT,
};
use keygate_shared::{
    DefaultRoutePolicy, Environment, KeyRecord, Kind, Lookup, PlaintextKey, SnapshotError,
    SnapshotIndex, SnapshotSigner, SnapshotView, TrustedKeys,
};

fn keys(n: u32) -> Vec<PlaintextKey> {
    (0..n)
        .map(|i| key("acme", Kind::Secret, Environment::Live, i))
        .collect()
}

fn records(keys: &[PlaintextKey]) -> Vec<KeyRecord> {
    keys.iter()
        .enumerate()
        .map(|(i, k)| record(k, &format!("key_{i}")))
        .collect()
}

fn projects() -> Vec<keygate_shared::ProjectPolicy> {
    vec![project(
        "proj_1",
        vec![route(&["*"], "/orders/*", "orders:read")],
        DefaultRoutePolicy::Deny,
    )]
}

fn trusting(signers: &[&SnapshotSigner]) -> TrustedKeys {
    let mut t = TrustedKeys::new();
    for s in signers {
        t.add(s.verifying_key());
    }
    t
}

/// A signed snapshot of 40 keys in 4 shards.
fn fixture(
    signer: &SnapshotSigner,
    window: Window,
) -> (Vec<u8>, keygate_shared::snapshot::BuiltShards) {
    common::snapshot(signer, records(&keys(40)), projects(), Some(2), window)
}

fn signed(wire: &[u8]) -> SignedSnapshot {
    serde_json::from_slice(wire).expect("wire json")
}

fn to_wire(s: &SignedSnapshot) -> Vec<u8> {
    serde_json::to_vec(s).expect("json")
}

/// Signs arbitrary manifest bytes the way the control plane does.
fn sign_raw(signer_seed: u8, manifest_bytes: &[u8]) -> Vec<u8> {
    let sk = ed25519_dalek::SigningKey::from_bytes(&[signer_seed; 32]);
    let mut msg = SIGNING_CONTEXT.to_vec();
    msg.extend_from_slice(manifest_bytes);
    to_wire(&SignedSnapshot {
        format: FORMAT_VERSION,
        key_id: key_id_of(&sk.verifying_key()),
        manifest: URL_SAFE_NO_PAD.encode(manifest_bytes),
        signature: URL_SAFE_NO_PAD.encode(sk.sign(&msg).to_bytes()),
    })
}

#[test]
fn a_good_snapshot_verifies_and_loads() {
    let signer = common::signer(1);
    let (wire, shards) = fixture(&signer, Window::default());
    let trusted = trusting(&[&signer]);
    let m = verify_snapshot(&wire, &trusted, None, T0).expect("verifies");
    assert_eq!(m.version(), 7);
    assert_eq!(m.key_id(), signer.key_id());
    assert_eq!(m.shard_count(), 4);
    assert_eq!(m.manifest().key_count, 40);
    assert_eq!(m.manifest().projects, projects());
    assert!(m.is_valid_at(T0 + DAY - 1));
    assert!(!m.is_valid_at(T0 + DAY));
    for (i, s) in shards.shards.iter().enumerate() {
        assert_eq!(m.shard_digest(i as u32), Some(s.digest));
        assert_eq!(s.digest, Digest32::of(&s.bytes));
    }
    assert_eq!(m.shard_digest(4), None);
    // The wire form is JSON with exactly the documented fields.
    let json: serde_json::Value = serde_json::from_slice(&wire).expect("json");
    let mut fields: Vec<&str> = json
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(fields, ["format", "key_id", "manifest", "signature"]);
    assert_eq!(json["format"], 1);
}

#[test]
fn a_flipped_signature_byte_is_a_bad_signature() {
    let signer = common::signer(1);
    let (wire, _) = fixture(&signer, Window::default());
    let trusted = trusting(&[&signer]);
    let original = signed(&wire);
    let sig = URL_SAFE_NO_PAD.decode(&original.signature).expect("b64");
    for i in [0, 17, 31, 32, 50, 63] {
        for bit in [0x01u8, 0x80] {
            let mut bad = sig.clone();
            bad[i] ^= bit;
            let mut s = original.clone();
            s.signature = URL_SAFE_NO_PAD.encode(&bad);
            assert_eq!(
                verify_snapshot(&to_wire(&s), &trusted, None, T0),
                Err(SnapshotError::BadSignature),
                "byte {i} bit {bit:#x}"
            );
        }
    }
    // A signature of the wrong length, or none.
    for b in [&sig[..63], &[][..], &[sig.as_slice(), &[0]].concat()[..]] {
        let mut s = original.clone();
        s.signature = URL_SAFE_NO_PAD.encode(b);
        assert_eq!(
            verify_snapshot(&to_wire(&s), &trusted, None, T0),
            Err(SnapshotError::BadSignature)
        );
    }
}

#[test]
fn a_flipped_manifest_byte_is_a_bad_signature() {
    let signer = common::signer(1);
    let (wire, _) = fixture(&signer, Window::default());
    let trusted = trusting(&[&signer]);
    let original = signed(&wire);
    let manifest = URL_SAFE_NO_PAD.decode(&original.manifest).expect("b64");
    // Every third byte, and the last: each part of the manifest is covered.
    for i in (0..manifest.len()).step_by(3).chain([manifest.len() - 1]) {
        let mut bad = manifest.clone();
        bad[i] ^= 0x01;
        let mut s = original.clone();
        s.manifest = URL_SAFE_NO_PAD.encode(&bad);
        assert_eq!(
            verify_snapshot(&to_wire(&s), &trusted, None, T0),
            Err(SnapshotError::BadSignature),
            "byte {i}"
        );
    }
    // Truncated or extended manifests too.
    for bad in [
        &manifest[..manifest.len() - 1],
        &[manifest.as_slice(), &[0]].concat()[..],
    ] {
        let mut s = original.clone();
        s.manifest = URL_SAFE_NO_PAD.encode(bad);
        assert_eq!(
            verify_snapshot(&to_wire(&s), &trusted, None, T0),
            Err(SnapshotError::BadSignature)
        );
    }
}

#[test]
fn a_signature_under_a_trusted_key_id_by_another_key_is_refused() {
    let trusted_signer = common::signer(1);
    let forger = common::signer(2);
    let (wire, _) = fixture(&forger, Window::default());
    let mut s = signed(&wire);
    s.key_id = trusted_signer.key_id().to_owned();
    assert_eq!(
        verify_snapshot(&to_wire(&s), &trusting(&[&trusted_signer]), None, T0),
        Err(SnapshotError::BadSignature)
    );
}

#[test]
fn an_unknown_key_id_is_refused() {
    let signer = common::signer(1);
    let other = common::signer(2);
    let (wire, _) = fixture(&other, Window::default());
    assert_eq!(
        verify_snapshot(&wire, &trusting(&[&signer]), None, T0),
        Err(SnapshotError::UnknownKeyId(other.key_id().to_owned()))
    );
    assert_eq!(
        verify_snapshot(&wire, &TrustedKeys::new(), None, T0),
        Err(SnapshotError::UnknownKeyId(other.key_id().to_owned()))
    );
}

#[test]
fn versions_older_than_held_are_rollbacks_and_equal_is_accepted() {
    let signer = common::signer(1);
    let trusted = trusting(&[&signer]);
    let (wire, _) = fixture(
        &signer,
        Window {
            version: 41,
            ..Window::default()
        },
    );
    assert_eq!(
        verify_snapshot(&wire, &trusted, Some(42), T0),
        Err(SnapshotError::Rollback {
            held: 42,
            offered: 41
        })
    );
    assert_eq!(
        verify_snapshot(&wire, &trusted, Some(u64::MAX), T0),
        Err(SnapshotError::Rollback {
            held: u64::MAX,
            offered: 41
        })
    );
    for held in [None, Some(0), Some(40), Some(41)] {
        let m = verify_snapshot(&wire, &trusted, held, T0).expect("accepted");
        assert_eq!(m.version(), 41);
    }
}

#[test]
fn validity_window() {
    let signer = common::signer(1);
    let trusted = trusting(&[&signer]);
    let window = Window {
        version: 1,
        issued_at_ms: T0,
        valid_until_ms: T0 + 60_000,
    };
    let (wire, _) = fixture(&signer, window);
    assert!(verify_snapshot(&wire, &trusted, None, T0 + 59_999).is_ok());
    for now in [T0 + 60_000, T0 + DAY] {
        assert_eq!(
            verify_snapshot(&wire, &trusted, None, now),
            Err(SnapshotError::Expired {
                valid_until_ms: T0 + 60_000
            })
        );
    }
    // Issued in the future: accepted within the clock-skew allowance, refused beyond it.
    assert!(verify_snapshot(&wire, &trusted, None, T0 - MAX_CLOCK_SKEW_MS).is_ok());
    assert_eq!(
        verify_snapshot(&wire, &trusted, None, T0 - MAX_CLOCK_SKEW_MS - 1),
        Err(SnapshotError::NotYetValid { issued_at_ms: T0 })
    );
}

#[test]
fn unsupported_formats() {
    let signer = common::signer(1);
    let trusted = trusting(&[&signer]);
    let (wire, shards) = fixture(&signer, Window::default());
    // On the wire.
    let mut s = signed(&wire);
    s.format = FORMAT_VERSION + 1;
    assert_eq!(
        verify_snapshot(&to_wire(&s), &trusted, None, T0),
        Err(SnapshotError::UnsupportedFormat(FORMAT_VERSION + 1))
    );
    // Inside a correctly signed manifest, a format other than the envelope's.
    let mut m = common::manifest(&shards, projects(), Window::default());
    m.format = FORMAT_VERSION + 1;
    let bytes = postcard::to_allocvec(&m).expect("encode");
    assert!(matches!(
        verify_snapshot(&sign_raw(1, &bytes), &trusted, None, T0),
        Err(SnapshotError::Malformed(_))
    ));
    // Inside a shard the manifest commits to.
    let good = verify_snapshot(&wire, &trusted, None, T0).expect("verifies");
    let index = 0;
    let mut shard: Shard = postcard::from_bytes(&shards.shards[0].bytes).expect("shard");
    shard.format = 9;
    let bytes = postcard::to_allocvec(&shard).expect("encode");
    let mut m = good.manifest().clone();
    m.shard_digests[index] = Digest32::of(&bytes);
    let v = verify_snapshot(&signer.sign(&m).expect("sign"), &trusted, None, T0).expect("ok");
    assert_eq!(
        v.verify_shard(0, &bytes),
        Err(SnapshotError::UnsupportedFormat(9))
    );
}

#[test]
fn malformed_input() {
    let signer = common::signer(1);
    let trusted = trusting(&[&signer]);
    let (wire, shards) = fixture(&signer, Window::default());
    let malformed = |bytes: &[u8]| {
        matches!(
            verify_snapshot(bytes, &trusted, None, T0),
            Err(SnapshotError::Malformed(_))
        )
    };
    assert!(malformed(b""));
    assert!(malformed(b"{}"));
    assert!(malformed(&wire[..wire.len() - 1]));
    // Unknown fields are refused.
    let mut v: serde_json::Value = serde_json::from_slice(&wire).expect("json");
    v["extra"] = serde_json::json!(1);
    assert!(malformed(&serde_json::to_vec(&v).expect("json")));
    // A manifest that is not base64url.
    let mut s = signed(&wire);
    s.manifest.push('!');
    assert!(malformed(&to_wire(&s)));
    // Signed garbage decodes to nothing.
    assert!(malformed(&sign_raw(1, b"not a manifest")));
    // A signed manifest whose shard count does not match its shard bits.
    let mut m = common::manifest(&shards, projects(), Window::default());
    m.shard_digests.pop();
    assert!(malformed(&signer.sign(&m).expect("sign")));
    let mut m = common::manifest(&shards, projects(), Window::default());
    m.shard_bits = 13;
    m.shard_digests = vec![Digest32([0; 32]); 1 << 13];
    assert!(malformed(&signer.sign(&m).expect("sign")));
}

#[test]
fn shard_digest_mismatch() {
    let signer = common::signer(1);
    let (wire, shards) = fixture(&signer, Window::default());
    let m = verify_snapshot(&wire, &trusting(&[&signer]), None, T0).expect("verifies");
    for (i, s) in shards.shards.iter().enumerate() {
        let i = i as u32;
        assert!(m.verify_shard(i, &s.bytes).is_ok());
        let mut bad = s.bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x40;
        assert_eq!(
            m.verify_shard(i, &bad),
            Err(SnapshotError::ShardDigestMismatch { index: i })
        );
        assert_eq!(
            m.verify_shard(i, &s.bytes[..last]),
            Err(SnapshotError::ShardDigestMismatch { index: i })
        );
        // Another index's (valid) shard in this slot.
        let j = (i + 1) % 4;
        assert_eq!(
            m.verify_shard(j, &s.bytes),
            Err(SnapshotError::ShardDigestMismatch { index: j })
        );
    }
    // With the digest computed by the caller, the digest given is what is checked.
    let s0 = &shards.shards[0].bytes;
    assert!(m.verify_shard_hashed(0, s0, Digest32::of(s0)).is_ok());
    assert_eq!(
        m.verify_shard_hashed(0, s0, Digest32::of(&shards.shards[1].bytes)),
        Err(SnapshotError::ShardDigestMismatch { index: 0 })
    );
    // Loading goes through the same check and leaves the index unchanged.
    let mut index = SnapshotIndex::new(m);
    assert_eq!(
        index.load_shard(0, &shards.shards[1].bytes),
        Err(SnapshotError::ShardDigestMismatch { index: 0 })
    );
    let s1 = &shards.shards[1].bytes;
    assert_eq!(
        index.load_shard_hashed(0, s1, Digest32::of(s1)),
        Err(SnapshotError::ShardDigestMismatch { index: 0 })
    );
    assert_eq!(index.loaded_shards(), 0);
    assert_eq!(index.load_shard_hashed(0, s0, Digest32::of(s0)), Ok(()));
    assert!(index.is_loaded(0));
}

#[test]
fn misplaced_shards() {
    let signer = common::signer(1);
    let trusted = trusting(&[&signer]);
    let ks = keys(40);
    let (wire, shards) = fixture(&signer, Window::default());
    let m = verify_snapshot(&wire, &trusted, None, T0).expect("verifies");
    // An index beyond the manifest.
    assert_eq!(
        m.verify_shard(4, &shards.shards[0].bytes),
        Err(SnapshotError::ShardMisplaced { index: 4 })
    );
    assert_eq!(
        m.verify_shard(u32::MAX, &shards.shards[0].bytes),
        Err(SnapshotError::ShardMisplaced { index: u32::MAX })
    );

    // A signer that commits to shards that are out of place is caught too: a record in the
    // wrong shard, a shard that names another index, a shard cut with other shard bits.
    let good = m.manifest().clone();
    let stray = ks
        .iter()
        .find(|k| shard_index(&k.hash(), 2) == 1)
        .expect("a key in shard 1");
    let mut wrong_record: Shard = postcard::from_bytes(&shards.shards[0].bytes).expect("shard");
    wrong_record.records.push(record(stray, "stray"));
    let mut wrong_index: Shard = postcard::from_bytes(&shards.shards[0].bytes).expect("shard");
    wrong_index.index = 1;
    let mut wrong_bits: Shard = postcard::from_bytes(&shards.shards[0].bytes).expect("shard");
    wrong_bits.shard_bits = 3;
    for bad in [wrong_record, wrong_index, wrong_bits] {
        let bytes = postcard::to_allocvec(&bad).expect("encode");
        let mut manifest = good.clone();
        manifest.shard_digests[0] = Digest32::of(&bytes);
        let v = verify_snapshot(&signer.sign(&manifest).expect("sign"), &trusted, None, T0)
            .expect("verifies");
        assert_eq!(
            v.verify_shard(0, &bytes),
            Err(SnapshotError::ShardMisplaced { index: 0 }),
            "{bad:?}"
        );
    }
    // A shard whose bytes the manifest commits to but that does not decode.
    let mut manifest = good;
    manifest.shard_digests[0] = Digest32::of(b"garbage");
    let v = verify_snapshot(&signer.sign(&manifest).expect("sign"), &trusted, None, T0)
        .expect("verifies");
    assert!(matches!(
        v.verify_shard(0, b"garbage"),
        Err(SnapshotError::Malformed(_))
    ));
}

#[test]
fn key_rotation_trusts_both_keys() {
    let old = common::signer(1);
    let new = common::signer(2);
    let list = format!(
        "{}, {}\n",
        old.public_key_base64url(),
        new.public_key_base64url()
    );
    let both = TrustedKeys::from_base64url_list(&list).expect("list");
    assert!(!both.is_empty());
    let (wire_old, _) = fixture(&old, Window::default());
    let (wire_new, _) = fixture(
        &new,
        Window {
            version: 8,
            ..Window::default()
        },
    );
    let m_old = verify_snapshot(&wire_old, &both, None, T0).expect("old key");
    assert_eq!(m_old.key_id(), old.key_id());
    let m_new = verify_snapshot(&wire_new, &both, Some(7), T0).expect("new key");
    assert_eq!(m_new.key_id(), new.key_id());
    // Once the old key is dropped, its snapshots are refused.
    let only_new = TrustedKeys::from_base64url_list(&new.public_key_base64url()).expect("list");
    assert_eq!(
        verify_snapshot(&wire_old, &only_new, None, T0),
        Err(SnapshotError::UnknownKeyId(old.key_id().to_owned()))
    );
    assert!(verify_snapshot(&wire_new, &only_new, None, T0).is_ok());
    // Adding a key twice trusts it once; the id is derived from the key itself.
    let mut t = TrustedKeys::new();
    t.add(old.verifying_key());
    t.add(old.verifying_key());
    assert_eq!(key_id_of(&old.verifying_key()), old.key_id());
    assert_eq!(old.key_id().len(), 16);
    assert_ne!(old.key_id(), new.key_id());
}

#[test]
fn public_key_parsing() {
    let s = common::signer(5);
    let b64 = s.public_key_base64url();
    assert_eq!(parse_public_key(&b64).expect("key"), s.verifying_key());
    // Padding and whitespace are tolerated.
    assert_eq!(
        parse_public_key(&format!(" {b64}= ")).expect("key"),
        s.verifying_key()
    );
    for bad in ["", "not base64!", &b64[..40], "AAAA"] {
        assert!(
            matches!(parse_public_key(bad), Err(SnapshotError::Malformed(_))),
            "{bad:?}"
        );
    }
    assert!(TrustedKeys::from_base64url_list("abc,def").is_err());
    // The seed round trips, and gives the same key id.
    let again = SnapshotSigner::from_seed(&s.seed());
    assert_eq!(again.key_id(), s.key_id());
}

#[test]
fn refresh_adopts_unchanged_shards() {
    let signer = common::signer(1);
    let trusted = trusting(&[&signer]);
    let ks = keys(40);
    let (wire1, shards1) = fixture(&signer, Window::default());
    let mut first = SnapshotIndex::new(verify_snapshot(&wire1, &trusted, None, T0).expect("v1"));
    for (i, s) in shards1.shards.iter().enumerate() {
        first.load_shard(i as u32, &s.bytes).expect("load");
    }
    // Revoke one key: only its shard changes.
    let mut recs = records(&ks);
    recs[0].revoked = true;
    let changed = shard_index(&ks[0].hash(), 2);
    let (wire2, shards2) = common::snapshot(
        &signer,
        recs,
        projects(),
        Some(2),
        Window {
            version: 8,
            ..Window::default()
        },
    );
    for i in 0..4 {
        assert_eq!(
            shards1.shards[i].digest == shards2.shards[i].digest,
            i as u32 != changed
        );
    }
    let mut second =
        SnapshotIndex::new(verify_snapshot(&wire2, &trusted, Some(7), T0).expect("v2"));
    second.adopt_unchanged(&first);
    assert_eq!(second.loaded_shards(), 3);
    assert!(!second.is_loaded(changed));
    assert!(matches!(
        second.key(&ks[0].hash()),
        Lookup::NotLoaded { shard } if shard == changed
    ));
    second
        .load_shard(changed, &shards2.shards[changed as usize].bytes)
        .expect("load");
    match second.key(&ks[0].hash()) {
        Lookup::Found(r) => assert!(r.revoked),
        other => panic!("{other:?}"),
    }
    // The first index still answers from its own snapshot.
    match first.key(&ks[0].hash()) {
        Lookup::Found(r) => assert!(!r.revoked),
        other => panic!("{other:?}"),
    }
}

#[test]
fn shards_are_deterministic_and_sorted() {
    let ks = keys(200);
    let mut recs = records(&ks);
    let a = build_shards(recs.clone(), Some(3)).expect("a");
    recs.reverse();
    let b = build_shards(recs, Some(3)).expect("b");
    assert_eq!(a, b, "input order must not change the bytes");
    let mut seen = 0;
    for (i, s) in a.shards.iter().enumerate() {
        let shard: Shard = postcard::from_bytes(&s.bytes).expect("shard");
        assert_eq!(shard.index as usize, i);
        assert!(shard.records.windows(2).all(|w| w[0].hash < w[1].hash));
        assert!(shard
            .records
            .iter()
            .all(|r| shard_index(&r.hash, 3) as usize == i));
        seen += shard.records.len();
    }
    assert_eq!(seen, 200);
    // Default shard bits give about a thousand keys per shard.
    assert_eq!(keygate_shared::snapshot::shard_bits_for(0), 0);
    assert_eq!(keygate_shared::snapshot::shard_bits_for(1024), 0);
    assert_eq!(keygate_shared::snapshot::shard_bits_for(1025), 1);
    assert_eq!(keygate_shared::snapshot::shard_bits_for(100_000), 7);
    assert_eq!(keygate_shared::snapshot::shard_bits_for(1_000_000), 10);
    assert_eq!(keygate_shared::snapshot::shard_bits_for(u64::MAX), 12);
}

#[test]
fn an_unloaded_shard_is_asked_for_again_and_can_be_reloaded() {
    let signer = common::signer(1);
    let trusted = trusting(&[&signer]);
    let ks = keys(40);
    let (wire, shards) = fixture(&signer, Window::default());
    let mut index = SnapshotIndex::new(verify_snapshot(&wire, &trusted, None, T0).expect("v"));
    for (i, s) in shards.shards.iter().enumerate() {
        index.load_shard(i as u32, &s.bytes).expect("load");
    }
    let shard = shard_index(&ks[0].hash(), 2);
    let before = index.loaded_shards();
    assert!(index.unload_shard(shard));
    assert!(!index.unload_shard(shard), "already unloaded");
    assert!(!index.unload_shard(99), "no such shard");
    assert_eq!(index.loaded_shards(), before - 1);
    assert!(matches!(
        index.key(&ks[0].hash()),
        Lookup::NotLoaded { shard: s } if s == shard
    ));
    index
        .load_shard(shard, &shards.shards[shard as usize].bytes)
        .expect("reload");
    assert_eq!(index.loaded_shards(), before);
    assert!(matches!(index.key(&ks[0].hash()), Lookup::Found(_)));
}
