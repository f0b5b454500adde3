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
    // Format 2 carries every project's matching, the exact ones' too.
    let exact_neighbour = ProjectPolicy {
        project_id: "prj_2".into(),
        routes: vec![route.clone()],
        default_route_policy: DefaultRoutePolicy::Deny,
        route_matching: RouteMatching::Exact,
    };
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
                projects: vec![project.clone(), exact_neighbour.clone()],
            })
            .expect("signs");
        let signed: SignedSnapshot = serde_json::from_slice(&wire).expect("json");
        assert_eq!(signed.format, if matching.is_exact() { 1 } else { 2 });
        let m = verify_snapshot(&wire, &trusted, None, 1).expect("verifies");
        assert_eq!(
            m.manifest().projects,
            vec![project.clone(), exact_neighbour.clone()]
        );

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

/// A key record as the wire carries it, with any text in the validated fields: what a control
/// plane with a bug, or a newer one, could write.
#[derive(serde::Serialize)]
struct RawRecord {
    hash: keygate_shared::KeyHash,
    key_id: String,
    project_id: String,
    kind: Kind,
    environment: Environment,
    revoked: bool,
    expires_at_ms: Option<i64>,
    scopes: Vec<String>,
    referrers: Vec<String>,
    ips: Vec<(Vec<u8>, u8)>,
    rate_limit: Option<(u32, u32)>,
    quota: Option<(u64, keygate_shared::QuotaPeriod)>,
    metadata_json: Option<String>,
}

#[derive(serde::Serialize)]
struct RawShard {
    format: u16,
    shard_bits: u8,
    index: u32,
    records: Vec<RawRecord>,
}

#[derive(serde::Serialize)]
struct RawProject {
    project_id: String,
    routes: Vec<(Vec<String>, String, String)>,
    default_route_policy: DefaultRoutePolicy,
}

#[derive(serde::Serialize)]
struct RawManifest {
    format: u16,
    version: u64,
    issued_at_ms: i64,
    valid_until_ms: i64,
    shard_bits: u8,
    key_count: u64,
    shard_digests: Vec<keygate_shared::snapshot::Digest32>,
    projects: Vec<RawProject>,
}

#[test]
fn one_bad_record_or_project_refuses_only_its_own_keys() {
    use ed25519_dalek::Signer as _;
    use keygate_shared::snapshot::{key_id_of, Digest32, SignedSnapshot, SIGNING_CONTEXT};
    use keygate_shared::{evaluate, Code, Evaluation, RequestFacts, SnapshotIndex};

    let prefix = KeyPrefix::parse("wb").expect("prefix");
    let key = |c: char| {
        PlaintextKey::from_parts(
            &prefix,
            Kind::Secret,
            Environment::Live,
            &c.to_string().repeat(32),
        )
        .expect("key")
    };
    let (good, bad_scope, bad_pattern, other_project) = (key('a'), key('b'), key('c'), key('d'));
    let raw = |k: &PlaintextKey, id: &str, project: &str, scopes: &[&str], referrers: &[&str]| {
        RawRecord {
            hash: k.hash(),
            key_id: id.into(),
            project_id: project.into(),
            kind: Kind::Secret,
            environment: Environment::Live,
            revoked: false,
            expires_at_ms: None,
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            referrers: referrers.iter().map(|s| (*s).to_owned()).collect(),
            ips: Vec::new(),
            rate_limit: None,
            quota: None,
            metadata_json: None,
        }
    };
    let mut records = vec![
        raw(&good, "key_good", "prj_1", &["orders:read"], &["*.test"]),
        raw(&bad_scope, "key_bad_scope", "prj_1", &["has space"], &[]),
        raw(&bad_pattern, "key_bad_pattern", "prj_1", &[], &["*"]),
        raw(&other_project, "key_other", "prj_2", &[], &[]),
    ];
    records.sort_by_key(|r| r.hash);
    let shard = postcard::to_allocvec(&RawShard {
        format: 1,
        shard_bits: 0,
        index: 0,
        records,
    })
    .expect("shard");
    let route = |path: &str| {
        (
            vec!["GET".to_owned()],
            path.to_owned(),
            "orders:read".to_owned(),
        )
    };
    let manifest = postcard::to_allocvec(&RawManifest {
        format: 1,
        version: 1,
        issued_at_ms: 0,
        valid_until_ms: i64::MAX,
        shard_bits: 0,
        key_count: 4,
        shard_digests: vec![Digest32::of(&shard)],
        projects: vec![
            RawProject {
                project_id: "prj_1".into(),
                routes: vec![route("/orders/*")],
                default_route_policy: DefaultRoutePolicy::Allow,
            },
            RawProject {
                project_id: "prj_2".into(),
                routes: vec![route("/orders*/x")],
                default_route_policy: DefaultRoutePolicy::Allow,
            },
        ],
    })
    .expect("manifest");
    let sk = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
    let mut msg = SIGNING_CONTEXT.to_vec();
    msg.extend_from_slice(&manifest);
    let b64 = |b: &[u8]| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    };
    let wire = serde_json::to_vec(&SignedSnapshot {
        format: 1,
        key_id: key_id_of(&sk.verifying_key()),
        manifest: b64(&manifest),
        signature: b64(&sk.sign(&msg).to_bytes()),
    })
    .expect("wire");
    let mut trusted = TrustedKeys::new();
    trusted.add(sk.verifying_key());
    let verified = verify_snapshot(&wire, &trusted, None, 1).expect("the manifest still verifies");
    assert_eq!(
        verified
            .unusable_projects()
            .iter()
            .map(|(id, _)| id.as_str())
            .collect::<Vec<_>>(),
        ["prj_2"]
    );
    let loaded = verified
        .verify_shard(0, &shard)
        .expect("the shard still loads");
    let mut unusable: Vec<&str> = loaded.unusable().map(|(id, _)| id).collect();
    unusable.sort_unstable();
    assert_eq!(unusable, ["key_bad_pattern", "key_bad_scope"]);
    let mut index = SnapshotIndex::new(verified);
    index.insert_shard(loaded);
    let decide = |k: &PlaintextKey| {
        let facts = RequestFacts {
            key: Some(k.expose()),
            origin: Some("https://app.test"),
            method: Some("GET"),
            path: Some("/orders/1"),
            ..RequestFacts::default()
        };
        match evaluate(&index, &facts, 1, None) {
            Evaluation::Done(v) => v.code,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(decide(&good), Code::Valid);
    assert_eq!(decide(&bad_scope), Code::KeyUnavailable);
    assert_eq!(decide(&bad_pattern), Code::KeyUnavailable);
    assert_eq!(decide(&other_project), Code::KeyUnavailable);
    assert_eq!(Code::KeyUnavailable.http_status(), 503);
}
