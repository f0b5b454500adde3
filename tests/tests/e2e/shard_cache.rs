//! Shards through the Cache API (docs/edge.md, "Shards in the Cache API"): fresh runtimes
//! sharing one cache service, as the isolates of one location share its cache, fetch a shard
//! from the control plane once between them; what the cache returns is verified like a shard
//! from the network; a cache that fails leaves the edge deciding from the network; and an
//! isolate keeps a bounded number of shards decoded, loading an evicted one again when needed.

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use keygate_shared::{Environment, KeyPrefix, KeyRecord, Kind, PlaintextKey, SnapshotSigner};
use keygate_tests::cache::{CacheService, Entry};
use keygate_tests::fixtures::{plain_record, SignedSnapshot};
use keygate_tests::http::{self, StubResponse, StubServer};
use keygate_tests::origin::Origin;
use keygate_tests::stack::{Stack, ORIGIN_SECRET};
use keygate_tests::workerd::{workspace_root, Workerd, WorkerdConfig};
use serde_json::Value;

const EDGE_TOKEN: &str = "edge-token-for-the-shard-cache-test";
/// The edge's cache (`caches.open`) and the host of its keys, as docs/edge.md gives them.
const CACHE_NAME: &str = "keygate-shards";
const KEY_HOST: &str = "keygate-shards.invalid";

#[allow(clippy::disallowed_methods)] // The test plays the control plane's clock.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn key(prefix: &str, secret: &str) -> PlaintextKey {
    PlaintextKey::from_parts(
        &KeyPrefix::parse(prefix).expect("prefix"),
        Kind::Secret,
        Environment::Live,
        secret,
    )
    .expect("key")
}

fn snapshot(
    signer: &SnapshotSigner,
    version: u64,
    key: &PlaintextKey,
    revoked: bool,
) -> SignedSnapshot {
    let record = KeyRecord {
        revoked,
        ..plain_record(key, "key_cached", "prj_cached")
    };
    SignedSnapshot::sign(signer, version, "prj_cached", vec![record], now_ms())
}

/// A stub control plane serving `snapshot`.
fn control_plane(snapshot: SignedSnapshot) -> StubServer {
    StubServer::start(move |req| {
        snapshot
            .respond(req, "\"cached\"")
            .unwrap_or_else(|| StubResponse::empty(404))
    })
    .expect("stub control plane")
}

fn shard_requests(cp: &StubServer) -> usize {
    cp.received()
        .iter()
        .filter(|r| r.path().starts_with("/v1/snapshot/shards/"))
        .count()
}

fn edge(
    state: &Path,
    cp: &StubServer,
    origin: &Origin,
    signer: &SnapshotSigner,
    cache: Option<String>,
) -> Workerd {
    let mut config = WorkerdConfig::new(workspace_root(), state)
        .scheduled_trigger(false)
        .var("CONTROL_PLANE_URL", cp.url())
        .var("ORIGIN_URL", origin.url())
        .secret("EDGE_TOKEN", EDGE_TOKEN)
        .secret("SNAPSHOT_PUBLIC_KEYS", signer.public_key_base64url())
        .secret("ORIGIN_HMAC_SECRET", ORIGIN_SECRET);
    if let Some(address) = cache {
        config = config.cache_service(address);
    }
    config.start().expect("workerd")
}

fn call(edge: &Workerd, key: &PlaintextKey) -> u16 {
    let auth = format!("Bearer {}", key.expose());
    edge.get("/x", &[("Authorization", &auth)])
        .map_or(0, |r| r.status)
}

/// What the edge's status endpoint reports of its shard cache.
fn cache_counts(edge: &Workerd) -> Value {
    http::get(
        &format!("{}/.well-known/keygate/status", edge.url()),
        &[("Authorization", &format!("Bearer {EDGE_TOKEN}"))],
    )
    .ok()
    .and_then(|r| serde_json::from_slice::<Value>(&r.body).ok())
    .map_or(Value::Null, |v| v["shard_cache"].clone())
}

fn cache_url(hex: &str) -> String {
    format!("https://{KEY_HOST}/{hex}")
}

/// Waits until the cache holds `bytes` for `hex` (stores run after the verdict).
fn wait_stored(cache: &CacheService, hex: &str, bytes: &[u8]) -> bool {
    Stack::wait_for(Duration::from_secs(10), || {
        cache
            .entry(Some(CACHE_NAME), &cache_url(hex))
            .is_some_and(|e| e.body == bytes)
    })
    .is_some()
}

#[test]
fn runtimes_sharing_a_cache_fetch_a_shard_from_the_control_plane_once() {
    let signer = SnapshotSigner::from_seed(&[21u8; 32]);
    let key = key("shared", "Shared00000000000000000000000000");
    let snap = snapshot(&signer, 1, &key, false);
    assert_eq!(snap.shards.len(), 1, "one key, one shard");
    let (hex, bytes) = snap.shards[0].clone();
    let cp = control_plane(snap);
    let origin = Origin::start(0, ORIGIN_SECRET.as_bytes().to_vec()).expect("origin");
    let cache = CacheService::start().expect("cache service");

    let first_state = tempfile::tempdir().expect("temp");
    let first = edge(
        first_state.path(),
        &cp,
        &origin,
        &signer,
        Some(cache.address()),
    );
    assert_eq!(call(&first, &key), 200, "{}", first.logs());
    assert_eq!(shard_requests(&cp), 1, "{}", first.logs());
    assert!(
        wait_stored(&cache, &hex, &bytes),
        "the verified shard was never stored\n{}",
        first.logs()
    );
    assert_eq!(cache_counts(&first)["misses"], 1, "{}", first.logs());
    assert_eq!(cache_counts(&first)["stored"], 1, "{}", first.logs());
    first.stop();

    // A fresh runtime (its own state, so no KV copy either): its cold load of the shard is
    // served by the cache, and the control plane sees only the manifest request.
    let second_state = tempfile::tempdir().expect("temp");
    let second = edge(
        second_state.path(),
        &cp,
        &origin,
        &signer,
        Some(cache.address()),
    );
    assert_eq!(call(&second, &key), 200, "{}", second.logs());
    assert_eq!(
        shard_requests(&cp),
        1,
        "the second runtime fetched the shard again\n{}",
        second.logs()
    );
    assert_eq!(cache_counts(&second)["hits"], 1, "{}", second.logs());

    // The cache sees the digest on a synthetic URL in the Worker's own cache, and never the
    // edge token (the control-plane request is not what is cached).
    let seen = cache.received();
    assert!(seen.iter().any(|r| r.method == "GET"), "{seen:?}");
    for r in &seen {
        assert_eq!(r.header("cf-cache-namespace"), Some(CACHE_NAME), "{r:?}");
        assert!(r.target.ends_with(&format!("/{hex}")), "{r:?}");
        assert!(r.header("authorization").is_none(), "{r:?}");
        let text = format!("{r:?}");
        assert!(
            !text.contains(EDGE_TOKEN),
            "the edge token reached the cache: {text}"
        );
    }
}

#[test]
fn a_cached_shard_that_does_not_match_the_manifest_is_refused_and_replaced() {
    let signer = SnapshotSigner::from_seed(&[22u8; 32]);
    let key = key("poison", "Poison00000000000000000000000000");
    // The control plane serves the key revoked; the cache holds, under that shard's digest, the
    // well-formed shard of an earlier snapshot where the key was still valid.
    let current = snapshot(&signer, 2, &key, true);
    let (hex, good) = current.shards[0].clone();
    let (_, stale) = snapshot(&signer, 1, &key, false).shards[0].clone();
    assert_ne!(good, stale);
    let cp = control_plane(current);
    let origin = Origin::start(0, ORIGIN_SECRET.as_bytes().to_vec()).expect("origin");
    let cache = CacheService::start().expect("cache service");
    cache.insert(
        Some(CACHE_NAME),
        &cache_url(&hex),
        Entry {
            status: 200,
            headers: vec![(
                "Content-Type".to_owned(),
                "application/octet-stream".to_owned(),
            )],
            body: stale,
        },
    );

    let state = tempfile::tempdir().expect("temp");
    let edge = edge(state.path(), &cp, &origin, &signer, Some(cache.address()));
    assert_eq!(
        call(&edge, &key),
        401,
        "a cached shard that is not the signed one was used\n{}",
        edge.logs()
    );
    assert_eq!(origin.count(), 0);
    assert_eq!(shard_requests(&cp), 1, "{}", edge.logs());
    assert!(edge.logs().contains("cached shard"), "{}", edge.logs());
    assert_eq!(cache_counts(&edge)["refused"], 1, "{}", edge.logs());
    assert!(
        wait_stored(&cache, &hex, &good),
        "the refused entry was not replaced by the verified shard\n{}",
        edge.logs()
    );
}

#[test]
fn without_a_working_cache_shards_come_from_the_control_plane() {
    let signer = SnapshotSigner::from_seed(&[23u8; 32]);
    let key = key("nocache", "Nocache0000000000000000000000000");
    let origin = Origin::start(0, ORIGIN_SECRET.as_bytes().to_vec()).expect("origin");
    // A cache service that accepts no connection (its port was free a moment ago), and none at
    // all (the runtime's Cache API then throws).
    let closed = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    for cache in [Some(closed.to_string()), None] {
        let cp = control_plane(snapshot(&signer, 1, &key, false));
        let state = tempfile::tempdir().expect("temp");
        let edge = edge(state.path(), &cp, &origin, &signer, cache.clone());
        assert_eq!(call(&edge, &key), 200, "cache {cache:?}\n{}", edge.logs());
        assert_eq!(shard_requests(&cp), 1, "cache {cache:?}");
        let counts = cache_counts(&edge);
        assert_eq!(counts["hits"], 0, "cache {cache:?}: {counts}");
        assert_eq!(counts["misses"], 0, "cache {cache:?}: {counts}");
        assert!(
            counts["failures"].as_u64() >= Some(1),
            "cache {cache:?}: {counts}"
        );
    }
}

/// `MAX_LOADED_SHARDS` in edge/src/holder.rs.
const MAX_LOADED_SHARDS: u64 = 128;

#[test]
fn an_isolate_keeps_at_most_the_bounded_number_of_shards_loaded() {
    use keygate_shared::snapshot::shard_index;
    let signer = SnapshotSigner::from_seed(&[24u8; 32]);
    let prefix = KeyPrefix::parse("many").expect("prefix");
    let mut rng = rand::thread_rng();
    // Over 128 shards of 1,024 keys: the snapshot has 256.
    let keys: Vec<PlaintextKey> = (0..140_000)
        .map(|_| PlaintextKey::generate(&mut rng, &prefix, Kind::Secret, Environment::Live))
        .collect();
    let records = keys
        .iter()
        .enumerate()
        .map(|(i, k)| plain_record(k, &format!("key_{i:06}"), "prj_cached"))
        .collect();
    let snap = SignedSnapshot::sign(&signer, 1, "prj_cached", records, now_ms());
    let shards = snap.shards.len();
    assert_eq!(shards, 256);
    let bits = shards.trailing_zeros() as u8;
    let first_hex = snap.shards[0].0.clone();
    // One key per shard, in shard order.
    let mut per_shard: Vec<Option<&PlaintextKey>> = vec![None; shards];
    for k in &keys {
        per_shard[shard_index(&k.hash(), bits) as usize].get_or_insert(k);
    }
    let per_shard: Vec<&PlaintextKey> = per_shard
        .into_iter()
        .map(|k| k.expect("a key in each shard"))
        .collect();

    let cp = control_plane(snap);
    let origin = Origin::start(0, ORIGIN_SECRET.as_bytes().to_vec()).expect("origin");
    let cache = CacheService::start().expect("cache service");
    let state = tempfile::tempdir().expect("temp");
    let edge = edge(state.path(), &cp, &origin, &signer, Some(cache.address()));
    let status = || -> Value {
        http::get(
            &format!("{}/.well-known/keygate/status", edge.url()),
            &[("Authorization", &format!("Bearer {EDGE_TOKEN}"))],
        )
        .ok()
        .and_then(|r| serde_json::from_slice::<Value>(&r.body).ok())
        .unwrap_or_default()
    };
    for (i, k) in per_shard.iter().enumerate() {
        assert_eq!(call(&edge, k), 200, "shard {i}\n{}", edge.logs());
        let loaded = status()["loaded_shards"].as_u64().expect("loaded_shards");
        assert_eq!(
            loaded,
            (i as u64 + 1).min(MAX_LOADED_SHARDS),
            "after shard {i}"
        );
    }
    assert_eq!(status()["max_loaded_shards"], MAX_LOADED_SHARDS);
    assert_eq!(shard_requests(&cp), shards);
    // The first shard was evicted long ago: its key is still decided, from the shard loaded
    // again (here from the cache, which every shard went into).
    let stored = Stack::wait_for(Duration::from_secs(10), || {
        cache
            .entry(Some(CACHE_NAME), &cache_url(&first_hex))
            .is_some()
    });
    assert!(stored.is_some(), "{}", edge.logs());
    assert_eq!(call(&edge, per_shard[0]), 200, "{}", edge.logs());
    assert_eq!(status()["loaded_shards"], MAX_LOADED_SHARDS);
    assert_eq!(
        shard_requests(&cp),
        shards,
        "the evicted shard came from the cache"
    );
}
