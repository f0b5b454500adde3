//! What the edge's build of this crate (`--no-default-features`, as `edge/Cargo.toml` takes it)
//! must accept of what the control plane's build writes. Runs in every build: natively, and
//! compiled for wasm32 in Node (`cargo xtask test` runs both).

use keygate_shared::key::PlaintextKey;
use keygate_shared::record::Entry;
use keygate_shared::snapshot::{build_shards, verify_snapshot, Manifest, FORMAT_VERSION};
use keygate_shared::{
    DefaultRoutePolicy, Environment, KeyPrefix, KeyRecord, Kind, ProjectPolicy, ReferrerPattern,
    SnapshotSigner, TrustedKeys,
};

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

/// Written by the control plane's parser (`pattern_corpus.rs` keeps it current).
const PATTERNS: &str = include_str!("../testdata/patterns.txt");

/// A live secret key of project `prj_1` with no restriction.
fn record(key: &PlaintextKey, key_id: &str) -> KeyRecord {
    KeyRecord {
        hash: key.hash(),
        key_id: key_id.into(),
        project_id: "prj_1".into(),
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
}

#[test]
fn every_pattern_the_control_plane_accepts_decodes() {
    let mut n = 0;
    for line in PATTERNS.lines() {
        let p = ReferrerPattern::decode(line);
        assert_eq!(
            p.as_ref().map(ReferrerPattern::as_str),
            Ok(line),
            "{line:?}"
        );
        n += 1;
    }
    assert!(n > 500, "{n}");
}

#[test]
fn a_signed_snapshot_of_those_patterns_decodes_record_by_record() {
    let prefix = KeyPrefix::parse("wb").expect("prefix");
    let all: Vec<ReferrerPattern> = PATTERNS
        .lines()
        .map(|l| ReferrerPattern::decode(l).expect("decodes"))
        .collect();
    let records: Vec<KeyRecord> = all
        .chunks(7)
        .enumerate()
        .map(|(i, chunk)| {
            let secret = format!("{i:0>32}");
            let key =
                PlaintextKey::from_parts(&prefix, Kind::Publishable, Environment::Live, &secret)
                    .expect("key");
            KeyRecord {
                kind: Kind::Publishable,
                referrers: chunk.to_vec(),
                ..record(&key, &format!("key_{i}"))
            }
        })
        .collect();
    let shards = build_shards(records.clone(), Some(2)).expect("shards");
    let signer = SnapshotSigner::from_seed(&[7; 32]);
    let wire = signer
        .sign(&Manifest {
            format: FORMAT_VERSION,
            version: 1,
            issued_at_ms: 0,
            valid_until_ms: i64::MAX,
            shard_bits: shards.shard_bits,
            key_count: shards.key_count,
            shard_digests: shards.digests(),
            projects: vec![ProjectPolicy {
                project_id: "prj_1".into(),
                routes: Vec::new(),
                default_route_policy: DefaultRoutePolicy::Allow,
                route_matching: Default::default(),
            }],
        })
        .expect("signs");
    let mut trusted = TrustedKeys::new();
    trusted.add(signer.verifying_key());
    let manifest = verify_snapshot(&wire, &trusted, None, 1).expect("verifies");
    assert!(manifest.unusable_projects().is_empty());
    let mut decoded = Vec::new();
    for (i, s) in shards.shards.iter().enumerate() {
        let shard = manifest
            .verify_shard(i as u32, &s.bytes)
            .expect("shard verifies");
        for (hash, entry) in shard.entries {
            match entry {
                Entry::Usable(r) => decoded.push((hash, r)),
                Entry::Unusable { key_id, reason } => panic!("{key_id}: {reason}"),
            }
        }
    }
    assert_eq!(decoded.len(), records.len());
    for (hash, r) in decoded {
        let original = records.iter().find(|o| o.hash == hash).expect("same key");
        assert_eq!(&r, original);
    }
}

#[test]
fn paths_normalise_the_same() {
    use keygate_shared::path::{normalize, PathError};
    assert_eq!(
        normalize("/orders/%2e%2e/admin/users").as_deref(),
        Ok("/admin/users")
    );
    assert_eq!(normalize("//admin;x").as_deref(), Ok("/admin"));
    assert_eq!(normalize("/a%2fb"), Err(PathError::EncodedSeparator));
}

#[test]
fn route_matching_rides_in_format_2_and_only_when_used() {
    use keygate_shared::snapshot::SignedSnapshot;
    use keygate_shared::{evaluate, Code, Evaluation, MemoryView, RequestFacts, RouteMatching};
    let signer = SnapshotSigner::from_seed(&[9; 32]);
    let mut trusted = TrustedKeys::new();
    trusted.add(signer.verifying_key());
    let route: keygate_shared::Route = serde_json::from_value(serde_json::json!(
        {"methods": ["*"], "path": "/admin/*", "scope": "admin"}
    ))
    .expect("route");
    for matching in [RouteMatching::Exact, RouteMatching::CaseInsensitive] {
        let project = ProjectPolicy {
            project_id: "prj_1".into(),
            routes: vec![route.clone()],
            default_route_policy: DefaultRoutePolicy::Allow,
            route_matching: matching,
        };
        let wire = signer
            .sign(&Manifest {
                format: FORMAT_VERSION,
                version: 1,
                issued_at_ms: 0,
                valid_until_ms: i64::MAX,
                shard_bits: 0,
                key_count: 0,
                shard_digests: vec![build_shards(Vec::new(), Some(0)).expect("shard").digests()[0]],
                projects: vec![project.clone()],
            })
            .expect("signs");
        let signed: SignedSnapshot = serde_json::from_slice(&wire).expect("json");
        assert_eq!(signed.format, if matching.is_exact() { 1 } else { 2 });
        let m = verify_snapshot(&wire, &trusted, None, 1).expect("verifies");
        assert_eq!(m.manifest().projects, vec![project.clone()]);

        // `/ADMIN` needs the admin scope only when routes match case-insensitively.
        let prefix = KeyPrefix::parse("wb").expect("prefix");
        let key =
            PlaintextKey::from_parts(&prefix, Kind::Secret, Environment::Live, &"a".repeat(32))
                .expect("key");
        let view = MemoryView::new(m.manifest().projects.clone(), vec![record(&key, "key_1")]);
        let facts = RequestFacts {
            key: Some(key.expose()),
            method: Some("GET"),
            path: Some("/ADMIN/users"),
            ..RequestFacts::default()
        };
        let Evaluation::Done(v) = evaluate(&view, &facts, 1, None) else {
            panic!("decided");
        };
        let expected = if matching.is_exact() {
            Code::Valid
        } else {
            Code::InsufficientScope
        };
        assert_eq!(v.code, expected, "{matching:?}");
    }
}
