//! Realistic snapshot contents for the benchmarks and the memory example.
#![allow(dead_code)]

use core::num::{NonZeroU32, NonZeroU64};

use keygate_shared::snapshot::{build_shards, BuiltShards, Manifest, FORMAT_VERSION};
use keygate_shared::{
    DefaultRoutePolicy, Environment, IpNet, KeyPrefix, KeyRecord, Kind, PlaintextKey,
    ProjectPolicy, Quota, QuotaPeriod, RateLimit, ReferrerPattern, Route, Scope, SnapshotSigner,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// 2026-03-01T00:00:00Z.
pub const NOW_MS: i64 = 1_772_323_200_000;
pub const PROJECTS: usize = 100;

/// The key every evaluate benchmark presents: publishable, restricted to a referrer, with a
/// route scope and no counters.
pub const BENCH_ORIGIN: &str = "https://shop.example.com";
pub const BENCH_REFERER: &str = "https://shop.example.com/checkout/cart?step=2";

fn ulid_like(rng: &mut ChaCha20Rng) -> String {
    const CROCKFORD: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    (0..26)
        .map(|_| char::from(CROCKFORD[rng.gen_range(0..32)]))
        .collect()
}

pub fn routes() -> Vec<Route> {
    let route = |methods: &[&str], path: &str, scope: &str| -> Route {
        serde_json::from_value(
            serde_json::json!({"methods": methods, "path": path, "scope": scope}),
        )
        .expect("route")
    };
    vec![
        route(&["GET", "HEAD"], "/orders/*", "orders:read"),
        route(&["POST", "PUT", "DELETE"], "/orders/*", "orders:write"),
        route(&["*"], "/orders/export", "orders:export"),
        route(&["GET"], "/customers/*", "customers:read"),
        route(&["*"], "/admin/*", "admin"),
    ]
}

pub fn projects() -> Vec<ProjectPolicy> {
    let mut v: Vec<ProjectPolicy> = (0..PROJECTS)
        .map(|i| ProjectPolicy {
            project_id: format!("proj_{i:04}"),
            routes: routes(),
            default_route_policy: if i % 2 == 0 {
                DefaultRoutePolicy::Deny
            } else {
                DefaultRoutePolicy::Allow
            },
            route_matching: Default::default(),
        })
        .collect();
    v.sort_by(|a, b| a.project_id.cmp(&b.project_id));
    v
}

/// `n` records with a realistic mix of restrictions and limits, and the plaintext of record 0,
/// which is the benchmark key.
pub fn records(n: usize) -> (PlaintextKey, Vec<KeyRecord>) {
    let mut rng = ChaCha20Rng::seed_from_u64(20_260_301);
    let prefix = KeyPrefix::parse("acme").expect("prefix");
    let scope = |s: &str| Scope::parse(s).expect("scope");
    let read = scope("orders:read");
    let write = scope("orders:write");
    let shop = ReferrerPattern::decode("https://shop.example.com/checkout/*").expect("pattern");
    let org = ReferrerPattern::decode("*.example.org").expect("pattern");
    let net = IpNet::parse("203.0.113.0/24").expect("net");
    let rate = RateLimit {
        limit: NonZeroU32::new(100).expect("nz"),
        period_seconds: NonZeroU32::new(60).expect("nz"),
    };
    let quota = Quota {
        limit: NonZeroU64::new(100_000).expect("nz"),
        period: QuotaPeriod::Month,
    };
    let mut first = None;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let publishable = i == 0 || i % 10 < 3;
        let kind = if publishable {
            Kind::Publishable
        } else {
            Kind::Secret
        };
        let env = if i % 4 == 3 {
            Environment::Test
        } else {
            Environment::Live
        };
        let key = PlaintextKey::generate(&mut rng, &prefix, kind, env);
        let bench = i == 0;
        let record = KeyRecord {
            hash: key.hash(),
            key_id: format!("key_{}", ulid_like(&mut rng)),
            project_id: format!("proj_{:04}", if bench { 0 } else { i % PROJECTS }),
            kind,
            environment: env,
            revoked: !bench && i % 100 == 99,
            expires_at_ms: (!bench && i % 20 == 7).then_some(NOW_MS + 30 * 86_400_000),
            scopes: if i % 3 == 0 {
                vec![read.clone()]
            } else {
                vec![read.clone(), write.clone()]
            },
            referrers: if publishable {
                if i % 2 == 0 {
                    vec![shop.clone(), org.clone()]
                } else {
                    vec![shop.clone()]
                }
            } else {
                Vec::new()
            },
            ips: if !bench && i % 5 == 1 {
                vec![net]
            } else {
                Vec::new()
            },
            rate_limit: (!bench && i % 2 == 1).then_some(rate),
            quota: (!bench && i % 10 >= 7).then_some(quota),
            metadata_json: (!bench && i % 10 == 5)
                .then(|| format!("{{\"customer\":\"cus_{:06}\"}}", i % 1_000_000)),
        };
        if bench {
            first = Some(key);
        }
        out.push(record);
    }
    (first.expect("n > 0"), out)
}

pub fn signer() -> SnapshotSigner {
    SnapshotSigner::from_seed(&[42; 32])
}

/// Builds the shards and signs the manifest: the control plane's publish step.
pub fn build_and_sign(signer: &SnapshotSigner, records: Vec<KeyRecord>) -> (Vec<u8>, BuiltShards) {
    let shards = build_shards(records, None).expect("shards");
    let manifest = Manifest {
        format: FORMAT_VERSION,
        version: 1,
        issued_at_ms: NOW_MS,
        valid_until_ms: NOW_MS + 86_400_000,
        shard_bits: shards.shard_bits,
        key_count: shards.key_count,
        shard_digests: shards.digests(),
        projects: projects(),
    };
    let wire = signer.sign(&manifest).expect("sign");
    (wire, shards)
}
