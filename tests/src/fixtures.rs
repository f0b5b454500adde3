//! Signed snapshots made in tests, for stub control planes that play the real one.

use keygate_shared::snapshot::{build_shards, Manifest, FORMAT_VERSION};
use keygate_shared::{
    DefaultRoutePolicy, Environment, KeyRecord, Kind, PlaintextKey, ProjectPolicy, SnapshotSigner,
};

use crate::http::{StubRequest, StubResponse};

/// A signed manifest and its shards, as a control plane serves them.
#[derive(Debug, Clone)]
pub struct SignedSnapshot {
    /// The wire bytes of `GET /v1/snapshot`.
    pub wire: Vec<u8>,
    /// `(digest hex, bytes)` of each shard.
    pub shards: Vec<(String, Vec<u8>)>,
}

impl SignedSnapshot {
    /// Signs `records` of `project_id` (no routes, default allow) as `version`, valid for an
    /// hour from `now_ms`.
    pub fn sign(
        signer: &SnapshotSigner,
        version: u64,
        project_id: &str,
        records: Vec<KeyRecord>,
        now_ms: i64,
    ) -> SignedSnapshot {
        let shards = build_shards(records, None).unwrap_or_else(|e| unreachable_shards(&e));
        let manifest = Manifest {
            format: FORMAT_VERSION,
            version,
            issued_at_ms: now_ms,
            valid_until_ms: now_ms + 3_600_000,
            shard_bits: shards.shard_bits,
            key_count: shards.key_count,
            shard_digests: shards.digests(),
            projects: vec![ProjectPolicy {
                project_id: project_id.to_owned(),
                routes: Vec::new(),
                default_route_policy: DefaultRoutePolicy::Allow,
                route_matching: Default::default(),
            }],
        };
        SignedSnapshot {
            wire: signer.sign(&manifest).unwrap_or_default(),
            shards: shards
                .shards
                .iter()
                .map(|s| (s.digest.to_hex(), s.bytes.clone()))
                .collect(),
        }
    }

    /// Answers `GET /v1/snapshot` (with `etag`, and 304 on a match) and
    /// `GET /v1/snapshot/shards/{digest}`; `None` for any other path.
    pub fn respond(&self, req: &StubRequest, etag: &str) -> Option<StubResponse> {
        let path = req.path();
        if path == "/v1/snapshot" {
            if req.header("if-none-match") == Some(etag) {
                return Some(StubResponse::empty(304));
            }
            return Some(StubResponse::json(200, self.wire.clone()).with_header("ETag", etag));
        }
        let hex = path.strip_prefix("/v1/snapshot/shards/")?;
        Some(match self.shards.iter().find(|(d, _)| d == hex) {
            Some((_, b)) => StubResponse::new(200, "application/octet-stream", b.clone()),
            None => StubResponse::empty(404),
        })
    }
}

fn unreachable_shards(e: &keygate_shared::SnapshotError) -> keygate_shared::snapshot::BuiltShards {
    // Encoding plain records cannot fail; an empty snapshot makes any such bug visible in tests.
    eprintln!("building test shards failed: {e}");
    keygate_shared::snapshot::BuiltShards {
        shard_bits: 0,
        key_count: 0,
        shards: Vec::new(),
    }
}

/// A live secret key record with no restrictions.
pub fn plain_record(key: &PlaintextKey, key_id: &str, project_id: &str) -> KeyRecord {
    KeyRecord {
        hash: key.hash(),
        key_id: key_id.to_owned(),
        project_id: project_id.to_owned(),
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
