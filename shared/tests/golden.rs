//! Golden vectors (`shared/testdata/`): keys, a signed snapshot and expected verdicts.
//!
//! The control plane signs snapshots and the edge verifies them; both must agree with these
//! files byte for byte. This test rebuilds every file from the inputs below and fails when the
//! encoding drifts. If a change is intended, it needs a new `FORMAT_VERSION` (and the old
//! vectors kept for the old version); then regenerate with
//!
//! ```text
//! KEYGATE_REGENERATE_GOLDEN=1 cargo test -p keygate-shared --test golden
//! ```
#![cfg(not(target_arch = "wasm32"))]

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use keygate_shared::snapshot::{build_shards, verify_snapshot, Digest32, Manifest, FORMAT_VERSION};
use keygate_shared::{
    evaluate, Code, DefaultRoutePolicy, Environment, EnvironmentRule, Evaluation, IpNet, KeyPrefix,
    KeyRecord, Kind, LimitState, PlaintextKey, ProjectPolicy, Quota, QuotaPeriod, RateLimit,
    ReferrerPattern, RequestFacts, Route, RouteMatching, Scope, SnapshotIndex, SnapshotSigner,
    TrustedKeys,
};
use serde::{Deserialize, Serialize};

/// 2026-03-01T00:00:00Z.
const ISSUED_AT: i64 = 1_772_323_200_000;
const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const VALID_UNTIL: i64 = ISSUED_AT + 24 * HOUR;
const VERSION: u64 = 42;
const SHARD_BITS: u8 = 2;
/// The Ed25519 seed of the golden signing key. Test data only: never use it anywhere else.
const SEED: [u8; 32] = *b"keygate-golden-vector-seed-00001";

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

fn regenerate() -> bool {
    std::env::var_os("KEYGATE_REGENERATE_GOLDEN").is_some_and(|v| v == "1")
}

// ---------------------------------------------------------------------------------------
// Inputs.

struct KeySpec {
    name: &'static str,
    prefix: &'static str,
    kind: Kind,
    environment: Environment,
    secret: &'static str,
}

const KEYS: &[KeySpec] = &[
    KeySpec {
        name: "live_secret",
        prefix: "acme",
        kind: Kind::Secret,
        environment: Environment::Live,
        secret: "4fQz8XcN2LmPq7RtVw9YbD3KhJ6sGa1E",
    },
    KeySpec {
        name: "live_publishable",
        prefix: "acme",
        kind: Kind::Publishable,
        environment: Environment::Live,
        secret: "Zk9mW2xR7pL4nB8vC1qT6yH3jF5dS0aG",
    },
    KeySpec {
        name: "test_secret",
        prefix: "acme",
        kind: Kind::Secret,
        environment: Environment::Test,
        secret: "00000000000000000000000000000000",
    },
    KeySpec {
        name: "revoked",
        prefix: "acme",
        kind: Kind::Secret,
        environment: Environment::Live,
        secret: "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
    },
    KeySpec {
        name: "expiring",
        prefix: "acme",
        kind: Kind::Secret,
        environment: Environment::Live,
        secret: "AbCdEfGhIjKlMnOpQrStUvWxYz012345",
    },
    KeySpec {
        name: "expired",
        prefix: "acme",
        kind: Kind::Secret,
        environment: Environment::Test,
        secret: "9876543210ZYXWVUTSRQPONMLKJIHGFE",
    },
    KeySpec {
        name: "other_project",
        prefix: "beta2",
        kind: Kind::Secret,
        environment: Environment::Live,
        secret: "q1w2e3r4t5y6u7i8o9p0A1S2D3F4G5H6",
    },
    KeySpec {
        name: "idn_publishable",
        prefix: "z9",
        kind: Kind::Publishable,
        environment: Environment::Test,
        secret: "MixedCase0123456789abcdefABCDEFx",
    },
];

fn plaintext(spec: &KeySpec) -> PlaintextKey {
    PlaintextKey::from_parts(
        &KeyPrefix::parse(spec.prefix).expect("prefix"),
        spec.kind,
        spec.environment,
        spec.secret,
    )
    .expect("key")
}

fn key_text(name: &str) -> String {
    let spec = KEYS.iter().find(|k| k.name == name).expect("key name");
    plaintext(spec).into_string()
}

fn scopes(list: &[&str]) -> Vec<Scope> {
    list.iter()
        .map(|s| Scope::parse(s).expect("scope"))
        .collect()
}

fn referrers(list: &[&str]) -> Vec<ReferrerPattern> {
    list.iter()
        .map(|s| ReferrerPattern::decode(s).expect("pattern"))
        .collect()
}

fn ips(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| IpNet::parse(s).expect("net")).collect()
}

fn rate(limit: u32, period_seconds: u32) -> Option<RateLimit> {
    serde_json::from_value(serde_json::json!({"limit": limit, "period_seconds": period_seconds}))
        .expect("rate")
}

fn quota(limit: u64, period: QuotaPeriod) -> Option<Quota> {
    serde_json::from_value(serde_json::json!({"limit": limit, "period": period})).expect("quota")
}

fn route(methods: &[&str], path: &str, scope: &str) -> Route {
    serde_json::from_value(serde_json::json!({"methods": methods, "path": path, "scope": scope}))
        .expect("route")
}

fn projects() -> Vec<ProjectPolicy> {
    vec![
        ProjectPolicy {
            project_id: "proj_acme".into(),
            routes: vec![
                route(&["GET", "HEAD"], "/orders/*", "orders:read"),
                route(&["POST", "PUT", "DELETE"], "/orders/*", "orders:write"),
                route(&["*"], "/orders/export", "orders:export"),
                route(&["*"], "/admin/*", "admin"),
            ],
            default_route_policy: DefaultRoutePolicy::Deny,
            route_matching: Default::default(),
        },
        ProjectPolicy {
            project_id: "proj_beta".into(),
            routes: vec![route(&["*"], "/private/*", "private")],
            default_route_policy: DefaultRoutePolicy::Allow,
            route_matching: Default::default(),
        },
    ]
}

fn records() -> Vec<KeyRecord> {
    let base = |name: &str, key_id: &str, project: &str| {
        let spec = KEYS.iter().find(|k| k.name == name).expect("key name");
        KeyRecord {
            hash: plaintext(spec).hash(),
            key_id: key_id.into(),
            project_id: project.into(),
            kind: spec.kind,
            environment: spec.environment,
            revoked: false,
            expires_at_ms: None,
            scopes: Vec::new(),
            referrers: Vec::new(),
            ips: Vec::new(),
            rate_limit: None,
            quota: None,
            metadata_json: None,
        }
    };
    vec![
        KeyRecord {
            scopes: scopes(&["orders:read", "orders:write"]),
            ips: ips(&["203.0.113.0/24", "2001:db8::/32"]),
            metadata_json: Some(r#"{"customer":"cus_123"}"#.into()),
            expires_at_ms: Some(ISSUED_AT + 365 * 24 * HOUR),
            ..base("live_secret", "key_01", "proj_acme")
        },
        KeyRecord {
            scopes: scopes(&["orders:read"]),
            referrers: referrers(&[
                "https://shop.example.com/checkout/*",
                "*.example.org",
                "localhost:*",
            ]),
            rate_limit: rate(2, 60),
            quota: quota(100_000, QuotaPeriod::Month),
            ..base("live_publishable", "key_02", "proj_acme")
        },
        KeyRecord {
            scopes: scopes(&["admin", "orders:read"]),
            quota: quota(2, QuotaPeriod::Day),
            ..base("test_secret", "key_03", "proj_acme")
        },
        KeyRecord {
            revoked: true,
            scopes: scopes(&["orders:read"]),
            ..base("revoked", "key_04", "proj_acme")
        },
        KeyRecord {
            // A key rotated away, in its grace period until two hours after issue.
            expires_at_ms: Some(ISSUED_AT + 2 * HOUR),
            scopes: scopes(&["orders:read"]),
            ..base("expiring", "key_05", "proj_acme")
        },
        KeyRecord {
            expires_at_ms: Some(ISSUED_AT - 24 * HOUR),
            ..base("expired", "key_06", "proj_acme")
        },
        KeyRecord {
            scopes: scopes(&["private"]),
            rate_limit: rate(1000, 1),
            ..base("other_project", "key_07", "proj_beta")
        },
        KeyRecord {
            // `bücher.example` and `https://*.bücher.example/app/*`, in the punycode form the
            // control plane stores (the edge builds without the IDN tables).
            referrers: referrers(&[
                "xn--bcher-kva.example",
                "https://*.xn--bcher-kva.example/app/*",
            ]),
            ..base("idn_publishable", "key_08", "proj_beta")
        },
    ]
}

fn manifest(shards: &keygate_shared::snapshot::BuiltShards) -> Manifest {
    Manifest {
        format: FORMAT_VERSION,
        version: VERSION,
        issued_at_ms: ISSUED_AT,
        valid_until_ms: VALID_UNTIL,
        shard_bits: shards.shard_bits,
        key_count: shards.key_count,
        shard_digests: shards.digests(),
        projects: projects(),
    }
}

/// The same snapshot with `proj_acme` matching routes case-insensitively: manifest format 2,
/// over the same shards.
fn manifest_v2(shards: &keygate_shared::snapshot::BuiltShards) -> Manifest {
    let mut m = manifest(shards);
    m.projects[0].route_matching = RouteMatching::CaseInsensitive;
    m
}

// ---------------------------------------------------------------------------------------
// File formats.

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyVector {
    name: String,
    prefix: String,
    kind: Kind,
    environment: Environment,
    secret: String,
    key: String,
    checksum: String,
    sha256: String,
    start: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublicKeyFile {
    algorithm: String,
    key_id: String,
    public_key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotInput {
    note: String,
    signing_key_seed_hex: String,
    version: u64,
    issued_at_ms: i64,
    valid_until_ms: i64,
    shard_bits: u8,
    projects: Vec<ProjectPolicy>,
    records: Vec<KeyRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Verdicts {
    note: String,
    facts: Vec<Fact>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fact {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    origin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    referer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    required_environment: Option<Environment>,
    now_ms: i64,
    /// Identical requests made just before, at the same instant, with the same counters.
    #[serde(default, skip_serializing_if = "is_zero")]
    preceding_requests: u32,
    expected: Code,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expected_key_id: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The expected verdicts, written by hand from the contract.
fn facts() -> Vec<Fact> {
    let t = ISSUED_AT + HOUR;
    let live = key_text("live_secret");
    let publishable = key_text("live_publishable");
    let f = |name: &str, key: Option<&str>, expected: Code, key_id: Option<&str>| Fact {
        name: name.into(),
        key: key.map(Into::into),
        origin: None,
        referer: None,
        ip: None,
        method: None,
        path: None,
        required_environment: None,
        now_ms: t,
        preceding_requests: 0,
        expected,
        expected_key_id: key_id.map(Into::into),
    };
    let s = |v: &str| Some(v.to_owned());
    let mut wrong_checksum = live.clone();
    wrong_checksum.pop();
    wrong_checksum.push(if live.ends_with('A') { 'B' } else { 'A' });
    let unknown = PlaintextKey::from_parts(
        &KeyPrefix::parse("acme").expect("prefix"),
        Kind::Secret,
        Environment::Live,
        "UnknownUnknownUnknownUnknown0000",
    )
    .expect("key")
    .into_string();
    vec![
        f("no key", None, Code::MissingKey, None),
        f(
            "not a key",
            s("acme_sk_live_nope").as_deref(),
            Code::MalformedKey,
            None,
        ),
        f(
            "wrong checksum",
            Some(&wrong_checksum),
            Code::MalformedKey,
            None,
        ),
        f(
            "uppercase prefix",
            Some(&live.replacen("acme", "ACME", 1)),
            Code::MalformedKey,
            None,
        ),
        f("unknown key", Some(&unknown), Code::UnknownKey, None),
        Fact {
            ip: s("203.0.113.7"),
            method: s("GET"),
            path: s("/orders/17"),
            required_environment: Some(Environment::Live),
            ..f(
                "live secret, allowed ip and scope",
                Some(&live),
                Code::Valid,
                Some("key_01"),
            )
        },
        Fact {
            ip: s("2001:db8:42::1"),
            method: s("POST"),
            path: s("/orders"),
            ..f(
                "live secret over IPv6, write scope",
                Some(&live),
                Code::Valid,
                Some("key_01"),
            )
        },
        Fact {
            ip: s("::ffff:203.0.113.200"),
            ..f(
                "live secret, IPv4-mapped address",
                Some(&live),
                Code::Valid,
                Some("key_01"),
            )
        },
        Fact {
            ip: s("198.51.100.1"),
            ..f(
                "live secret, other network",
                Some(&live),
                Code::IpNotAllowed,
                Some("key_01"),
            )
        },
        f(
            "live secret, no client ip",
            Some(&live),
            Code::IpNotAllowed,
            Some("key_01"),
        ),
        Fact {
            ip: s("203.0.113.7"),
            required_environment: Some(Environment::Test),
            ..f(
                "live key on a test host",
                Some(&live),
                Code::EnvironmentNotAllowed,
                Some("key_01"),
            )
        },
        Fact {
            ip: s("203.0.113.7"),
            method: s("GET"),
            path: s("/admin/users"),
            ..f(
                "live secret without admin scope",
                Some(&live),
                Code::InsufficientScope,
                Some("key_01"),
            )
        },
        Fact {
            ip: s("203.0.113.7"),
            method: s("GET"),
            path: s("/orders/export"),
            ..f(
                "most specific route wins",
                Some(&live),
                Code::InsufficientScope,
                Some("key_01"),
            )
        },
        Fact {
            ip: s("203.0.113.7"),
            method: s("GET"),
            path: s("/unrouted"),
            ..f(
                "unrouted path under deny",
                Some(&live),
                Code::InsufficientScope,
                Some("key_01"),
            )
        },
        Fact {
            origin: s("https://shop.example.com"),
            referer: s("https://shop.example.com/checkout/cart?x=1"),
            method: s("GET"),
            path: s("/orders/1"),
            ..f(
                "publishable from its shop",
                Some(&publishable),
                Code::Valid,
                Some("key_02"),
            )
        },
        Fact {
            origin: s("https://shop.example.com"),
            ..f(
                "publishable, Origin only vs a path pattern",
                Some(&publishable),
                Code::ReferrerNotAllowed,
                Some("key_02"),
            )
        },
        Fact {
            origin: s("https://deep.sub.example.org"),
            ..f(
                "publishable from a subdomain",
                Some(&publishable),
                Code::Valid,
                Some("key_02"),
            )
        },
        Fact {
            origin: s("http://localhost:5173"),
            ..f(
                "publishable from localhost",
                Some(&publishable),
                Code::Valid,
                Some("key_02"),
            )
        },
        Fact {
            origin: s("https://example.org"),
            ..f(
                "publishable, wildcard base",
                Some(&publishable),
                Code::ReferrerNotAllowed,
                Some("key_02"),
            )
        },
        Fact {
            origin: s("https://shop.example.com.evil.com"),
            referer: s("https://shop.example.com.evil.com/"),
            ..f(
                "publishable, suffix attack",
                Some(&publishable),
                Code::ReferrerNotAllowed,
                Some("key_02"),
            )
        },
        Fact {
            referer: s("https://shop.example.com@evil.com/"),
            ..f(
                "publishable, userinfo attack",
                Some(&publishable),
                Code::ReferrerNotAllowed,
                Some("key_02"),
            )
        },
        f(
            "publishable, no Origin or Referer",
            Some(&publishable),
            Code::ReferrerNotAllowed,
            Some("key_02"),
        ),
        Fact {
            origin: s("https://a.example.org"),
            preceding_requests: 2,
            ..f(
                "publishable, third request in a minute",
                Some(&publishable),
                Code::RateLimited,
                Some("key_02"),
            )
        },
        Fact {
            origin: s("https://a.example.org"),
            preceding_requests: 1,
            ..f(
                "publishable, second request in a minute",
                Some(&publishable),
                Code::Valid,
                Some("key_02"),
            )
        },
        Fact {
            method: s("DELETE"),
            path: s("/admin/cache"),
            required_environment: Some(Environment::Test),
            preceding_requests: 1,
            ..f(
                "test secret within its daily quota",
                Some(&key_text("test_secret")),
                Code::Valid,
                Some("key_03"),
            )
        },
        Fact {
            preceding_requests: 2,
            ..f(
                "test secret over its daily quota",
                Some(&key_text("test_secret")),
                Code::QuotaExceeded,
                Some("key_03"),
            )
        },
        Fact {
            ip: s("198.51.100.1"),
            required_environment: Some(Environment::Test),
            ..f(
                "revoked wins over everything",
                Some(&key_text("revoked")),
                Code::RevokedKey,
                Some("key_04"),
            )
        },
        f(
            "expiring key in its grace period",
            Some(&key_text("expiring")),
            Code::Valid,
            Some("key_05"),
        ),
        Fact {
            now_ms: ISSUED_AT + 2 * HOUR,
            ..f(
                "expiring key at its expiry",
                Some(&key_text("expiring")),
                Code::ExpiredKey,
                Some("key_05"),
            )
        },
        Fact {
            required_environment: Some(Environment::Live),
            ..f(
                "expired wins over environment",
                Some(&key_text("expired")),
                Code::ExpiredKey,
                Some("key_06"),
            )
        },
        Fact {
            method: s("GET"),
            path: s("/anything"),
            ..f(
                "other project allows unrouted paths",
                Some(&key_text("other_project")),
                Code::Valid,
                Some("key_07"),
            )
        },
        Fact {
            method: s("GET"),
            path: s("/private/x"),
            ..f(
                "other project route scope",
                Some(&key_text("other_project")),
                Code::Valid,
                Some("key_07"),
            )
        },
        Fact {
            origin: s("https://xn--bcher-kva.example"),
            ..f(
                "IDN pattern, punycode Origin",
                Some(&key_text("idn_publishable")),
                Code::Valid,
                Some("key_08"),
            )
        },
        Fact {
            referer: s("https://shop.XN--BCHER-KVA.example/app/page"),
            ..f(
                "IDN wildcard pattern with a path",
                Some(&key_text("idn_publishable")),
                Code::Valid,
                Some("key_08"),
            )
        },
        Fact {
            origin: s("https://bucher.example"),
            ..f(
                "IDN pattern, other host",
                Some(&key_text("idn_publishable")),
                Code::ReferrerNotAllowed,
                Some("key_08"),
            )
        },
    ]
}

// ---------------------------------------------------------------------------------------
// Building and comparing.

fn key_vectors() -> Vec<KeyVector> {
    KEYS.iter()
        .map(|spec| {
            let k = plaintext(spec);
            let text = k.expose().to_owned();
            KeyVector {
                name: spec.name.into(),
                prefix: spec.prefix.into(),
                kind: spec.kind,
                environment: spec.environment,
                secret: spec.secret.into(),
                checksum: text[text.len() - 6..].to_owned(),
                sha256: k.hash().to_hex(),
                start: k.start(),
                key: text,
            }
        })
        .collect()
}

fn pretty<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(value).expect("json");
    out.push(b'\n');
    out
}

/// Every file of the vectors, by path relative to `testdata/`.
fn expected_files() -> Vec<(String, Vec<u8>)> {
    let signer = SnapshotSigner::from_seed(&SEED);
    let shards = build_shards(records(), Some(SHARD_BITS)).expect("shards");
    let wire = signer.sign(&manifest(&shards)).expect("sign");
    let mut files = vec![
        ("keys.json".to_owned(), pretty(&key_vectors())),
        (
            "snapshot/public_key.json".to_owned(),
            pretty(&PublicKeyFile {
                algorithm: "Ed25519".into(),
                key_id: signer.key_id().into(),
                public_key: signer.public_key_base64url(),
            }),
        ),
        (
            "snapshot/input.json".to_owned(),
            pretty(&SnapshotInput {
                note: "Test data only. The inputs of snapshot.json and shards/.".into(),
                signing_key_seed_hex: hex::encode(SEED),
                version: VERSION,
                issued_at_ms: ISSUED_AT,
                valid_until_ms: VALID_UNTIL,
                shard_bits: SHARD_BITS,
                projects: projects(),
                records: records(),
            }),
        ),
        ("snapshot/snapshot.json".to_owned(), wire),
        (
            "snapshot/snapshot-v2.json".to_owned(),
            signer.sign(&manifest_v2(&shards)).expect("sign"),
        ),
        (
            "verdicts.json".to_owned(),
            pretty(&Verdicts {
                note: "Evaluate each fact against snapshot/ at now_ms, after preceding_requests \
                       identical requests with the same fresh counters."
                    .into(),
                facts: facts(),
            }),
        ),
    ];
    for s in &shards.shards {
        files.push((
            format!("snapshot/shards/{}.bin", s.digest.to_hex()),
            s.bytes.clone(),
        ));
    }
    files
}

fn write_all(files: &[(String, Vec<u8>)]) {
    let root = testdata();
    let shard_dir = root.join("snapshot/shards");
    if shard_dir.exists() {
        fs::remove_dir_all(&shard_dir).expect("clear shards");
    }
    fs::create_dir_all(&shard_dir).expect("mkdir");
    for (path, bytes) in files {
        fs::write(root.join(path), bytes).expect("write");
    }
}

/// Writes the files first when `KEYGATE_REGENERATE_GOLDEN=1`, once per run.
fn read(path: &str) -> Vec<u8> {
    static REGENERATED: std::sync::Once = std::sync::Once::new();
    if regenerate() {
        REGENERATED.call_once(|| write_all(&expected_files()));
    }
    let full = testdata().join(path);
    let bytes = fs::read(&full);
    assert!(
        bytes.is_ok(),
        "{} is missing; run with KEYGATE_REGENERATE_GOLDEN=1 to create it",
        full.display()
    );
    bytes.expect("checked")
}

/// (a) Rebuilding from the inputs gives the stored bytes: the encoding has not drifted.
#[test]
fn rebuilt_files_equal_the_stored_ones() {
    let files = expected_files();
    for (path, bytes) in &files {
        let stored = read(path);
        assert!(
            stored == *bytes,
            "testdata/{path} differs from what this code produces. An encoding change needs a \
             new FORMAT_VERSION; if the change is intended, regenerate with \
             KEYGATE_REGENERATE_GOLDEN=1"
        );
    }
    // No stray shard files.
    let expected: BTreeSet<String> = files
        .iter()
        .filter_map(|(p, _)| p.strip_prefix("snapshot/shards/").map(str::to_owned))
        .collect();
    let present: BTreeSet<String> = fs::read_dir(testdata().join("snapshot/shards"))
        .expect("shards dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(present, expected);
}

/// The stored snapshot, verified with the stored public key and fully loaded.
fn stored_index(now_ms: i64) -> SnapshotIndex {
    let pk: PublicKeyFile = serde_json::from_slice(&read("snapshot/public_key.json")).expect("pk");
    assert_eq!(pk.algorithm, "Ed25519");
    let trusted = TrustedKeys::from_base64url_list(&pk.public_key).expect("public key");
    let wire = read("snapshot/snapshot.json");
    let manifest = verify_snapshot(&wire, &trusted, Some(VERSION), now_ms).expect("verifies");
    assert_eq!(manifest.key_id(), pk.key_id);
    let mut index = SnapshotIndex::new(manifest);
    for i in 0..index.manifest().shard_count() {
        let digest: Digest32 = index.manifest().shard_digest(i).expect("digest");
        let bytes = read(&format!("snapshot/shards/{}.bin", digest.to_hex()));
        index.load_shard(i, &bytes).expect("shard verifies");
    }
    index
}

/// (b) The stored files verify with the stored public key, and hold the stored inputs.
#[test]
fn stored_snapshot_verifies() {
    let index = stored_index(ISSUED_AT + MINUTE);
    let m = index.manifest();
    assert_eq!(m.version(), VERSION);
    assert_eq!(m.manifest().issued_at_ms, ISSUED_AT);
    assert_eq!(m.manifest().valid_until_ms, VALID_UNTIL);
    assert_eq!(m.shard_count(), 1 << SHARD_BITS);
    assert_eq!(index.loaded_shards(), 1 << SHARD_BITS);
    let input: SnapshotInput = serde_json::from_slice(&read("snapshot/input.json")).expect("input");
    assert_eq!(m.manifest().key_count, input.records.len() as u64);
    assert_eq!(m.manifest().projects, input.projects);
    // A stranger's public key does not verify it.
    let stranger = SnapshotSigner::from_seed(&[7; 32]);
    let trusted = TrustedKeys::from_base64url_list(&stranger.public_key_base64url()).expect("pk");
    assert!(verify_snapshot(&read("snapshot/snapshot.json"), &trusted, None, ISSUED_AT).is_err());
}

/// (b') The format-2 file verifies too, carries the route matching, and uses the same shards.
#[test]
fn stored_format_2_snapshot_verifies() {
    let pk: PublicKeyFile = serde_json::from_slice(&read("snapshot/public_key.json")).expect("pk");
    let trusted = TrustedKeys::from_base64url_list(&pk.public_key).expect("public key");
    let wire = read("snapshot/snapshot-v2.json");
    let signed: keygate_shared::SignedSnapshot = serde_json::from_slice(&wire).expect("json");
    assert_eq!(signed.format, 2);
    let m = verify_snapshot(&wire, &trusted, None, ISSUED_AT + MINUTE).expect("verifies");
    assert_eq!(m.manifest().format, 2);
    let matching: Vec<RouteMatching> = m
        .manifest()
        .projects
        .iter()
        .map(|p| p.route_matching)
        .collect();
    assert_eq!(
        matching,
        [RouteMatching::CaseInsensitive, RouteMatching::Exact]
    );
    let v1 = stored_index(ISSUED_AT + MINUTE);
    assert_eq!(
        m.manifest().shard_digests,
        v1.manifest().manifest().shard_digests
    );
}

/// (c) Each fact gets its expected code.
#[test]
fn stored_verdicts() {
    let verdicts: Verdicts = serde_json::from_slice(&read("verdicts.json")).expect("verdicts");
    let mut covered = BTreeSet::new();
    let mut index_at: HashMap<i64, SnapshotIndex> = HashMap::new();
    for fact in &verdicts.facts {
        let index = index_at
            .entry(fact.now_ms)
            .or_insert_with(|| stored_index(fact.now_ms));
        let ip = fact.ip.as_deref().map(|s| s.parse().expect("ip"));
        let facts = RequestFacts {
            key: fact.key.as_deref(),
            origin: fact.origin.as_deref(),
            referer: fact.referer.as_deref(),
            ip,
            method: fact.method.as_deref(),
            path: fact.path.as_deref(),
            environment: fact
                .required_environment
                .map_or(EnvironmentRule::Any, EnvironmentRule::Only),
        };
        let mut counters = LimitState::default();
        for _ in 0..fact.preceding_requests {
            evaluate(&*index, &facts, fact.now_ms, Some(&mut counters));
        }
        let verdict = match evaluate(&*index, &facts, fact.now_ms, Some(&mut counters)) {
            Evaluation::Done(v) => v,
            other => panic!("{}: not decided: {other:?}", fact.name),
        };
        assert_eq!(verdict.code, fact.expected, "{}", fact.name);
        assert_eq!(
            verdict.record.map(|r| r.key_id.clone()),
            fact.expected_key_id,
            "{}",
            fact.name
        );
        covered.insert(fact.expected.as_str());
    }
    // The vectors exercise every code that evaluation can give.
    let all = [
        Code::Valid,
        Code::MissingKey,
        Code::MalformedKey,
        Code::UnknownKey,
        Code::ExpiredKey,
        Code::RevokedKey,
        Code::EnvironmentNotAllowed,
        Code::ReferrerNotAllowed,
        Code::IpNotAllowed,
        Code::InsufficientScope,
        Code::RateLimited,
        Code::QuotaExceeded,
    ];
    for code in all {
        assert!(
            covered.contains(code.as_str()),
            "no vector for {}",
            code.as_str()
        );
    }
}

/// CRC-32 (IEEE), bit by bit: an implementation independent of the crate's.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn base62_6(mut n: u32) -> String {
    let alphabet = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = vec![b'0'; 6];
    for slot in out.iter_mut().rev() {
        *slot = alphabet[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out).expect("ascii")
}

/// (d) Each stored key's checksum, hash and start, derived again from its parts.
#[test]
fn stored_keys_rederive() {
    use sha2::{Digest, Sha256};
    let keys: Vec<KeyVector> = serde_json::from_slice(&read("keys.json")).expect("keys");
    assert_eq!(keys.len(), KEYS.len());
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    for k in &keys {
        let body = format!(
            "{}_{}_{}_{}",
            k.prefix,
            k.kind.code(),
            k.environment.as_str(),
            k.secret
        );
        let checksum = base62_6(crc32(body.as_bytes()));
        assert_eq!(k.checksum, checksum, "{}", k.name);
        assert_eq!(k.key, format!("{body}{checksum}"), "{}", k.name);
        assert_eq!(
            k.sha256,
            hex::encode(Sha256::digest(k.key.as_bytes())),
            "{}",
            k.name
        );
        assert_eq!(
            k.start,
            format!(
                "{}_{}_{}_{}",
                k.prefix,
                k.kind.code(),
                k.environment.as_str(),
                &k.secret[..4]
            ),
            "{}",
            k.name
        );
        let parsed = keygate_shared::key::parse(&k.key).expect("parses");
        assert_eq!(parsed.prefix(), k.prefix);
        assert_eq!(parsed.kind(), k.kind);
        assert_eq!(parsed.environment(), k.environment);
        assert_eq!(parsed.hash().to_hex(), k.sha256);
    }
}
