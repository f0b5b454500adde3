//! Builders shared by the integration tests.
#![allow(dead_code)]

use keygate_shared::snapshot::{build_shards, BuiltShards, Manifest, FORMAT_VERSION};
use keygate_shared::{
    DefaultRoutePolicy, Environment, KeyPrefix, KeyRecord, Kind, PlaintextKey, ProjectPolicy,
    Route, SnapshotSigner,
};

/// 2026-01-01T00:00:00Z.
pub const T0: i64 = 1_767_225_600_000;
pub const HOUR: i64 = 3_600_000;
pub const DAY: i64 = 24 * HOUR;

/// A key with a secret made from `n`, so that tests are reproducible.
pub fn key(prefix: &str, kind: Kind, env: Environment, n: u32) -> PlaintextKey {
    let secret: String = format!("{n:0>8}SeCrEt0123456789abcdefXYZ")
        .chars()
        .take(32)
        .collect();
    PlaintextKey::from_parts(
        &KeyPrefix::parse(prefix).expect("prefix"),
        kind,
        env,
        &secret,
    )
    .expect("key")
}

/// A live secret key with no restriction in project `proj_1`.
pub fn record(key: &PlaintextKey, key_id: &str) -> KeyRecord {
    KeyRecord {
        hash: key.hash(),
        key_id: key_id.to_owned(),
        project_id: "proj_1".to_owned(),
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

pub fn route(methods: &[&str], path: &str, scope: &str) -> Route {
    serde_json::from_value(serde_json::json!({"methods": methods, "path": path, "scope": scope}))
        .expect("route")
}

pub fn project(id: &str, routes: Vec<Route>, default: DefaultRoutePolicy) -> ProjectPolicy {
    ProjectPolicy {
        project_id: id.to_owned(),
        routes,
        default_route_policy: default,
        route_matching: Default::default(),
    }
}

pub fn signer(seed_byte: u8) -> SnapshotSigner {
    SnapshotSigner::from_seed(&[seed_byte; 32])
}

/// The fields of a manifest that tests vary.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub version: u64,
    pub issued_at_ms: i64,
    pub valid_until_ms: i64,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            version: 7,
            issued_at_ms: T0,
            valid_until_ms: T0 + DAY,
        }
    }
}

pub fn manifest(
    shards: &BuiltShards,
    mut projects: Vec<ProjectPolicy>,
    window: Window,
) -> Manifest {
    projects.sort_by(|a, b| a.project_id.cmp(&b.project_id));
    Manifest {
        format: FORMAT_VERSION,
        version: window.version,
        issued_at_ms: window.issued_at_ms,
        valid_until_ms: window.valid_until_ms,
        shard_bits: shards.shard_bits,
        key_count: shards.key_count,
        shard_digests: shards.digests(),
        projects,
    }
}

/// Builds and signs a snapshot: the wire bytes and the shards.
pub fn snapshot(
    signer: &SnapshotSigner,
    records: Vec<KeyRecord>,
    projects: Vec<ProjectPolicy>,
    shard_bits: Option<u8>,
    window: Window,
) -> (Vec<u8>, BuiltShards) {
    let shards = build_shards(records, shard_bits).expect("shards");
    let wire = signer
        .sign(&manifest(&shards, projects, window))
        .expect("sign");
    (wire, shards)
}
