//! Incremental publishing seen from the edge: with a snapshot of several shards, one revocation
//! changes one shard's digest, and the edge fetches that shard again and no other.

use std::time::Duration;

use keygate_shared::snapshot::{shard_index, verify_snapshot, Digest32, TrustedKeys};
use keygate_shared::KeyHash;
use keygate_tests::http;
use keygate_tests::stack::{Stack, StackOptions};
use serde_json::json;

const HOST: &str = "api.shards.test";

/// Shard requests the control plane has answered, from its `/metrics`.
fn shard_requests(stack: &Stack) -> u64 {
    let r = http::get(&format!("{}/metrics", stack.control_plane_url), &[]).expect("metrics");
    r.text()
        .lines()
        .filter(|l| {
            l.starts_with("keygate_http_requests_total{")
                && l.contains("route=\"/v1/snapshot/shards/{digest_hex}\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The digests of the control plane's current snapshot, verified.
fn digests(stack: &Stack, trusted: &TrustedKeys) -> (u64, Vec<Digest32>) {
    let auth = format!("Bearer {}", stack.edge_token);
    let r = http::get(
        &format!("{}/v1/snapshot", stack.control_plane_url),
        &[("Authorization", &auth)],
    )
    .expect("snapshot");
    assert_eq!(r.status, 200);
    #[allow(clippy::disallowed_methods)] // Checks a snapshot signed moments ago.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let m = verify_snapshot(&r.body, trusted, None, now).expect("snapshot verifies");
    let d = (0..m.shard_count())
        .map(|i| m.shard_digest(i).expect("digest"))
        .collect();
    (m.version(), d)
}

fn status(stack: &Stack, key: &str) -> u16 {
    let auth = format!("Bearer {key}");
    stack
        .edge(
            "GET",
            "/x",
            &[("Host", HOST), ("Authorization", &auth)],
            None,
        )
        .status
}

#[test]
fn one_revocation_refetches_only_the_shard_it_changed() {
    let stack = Stack::start(StackOptions {
        host_environments: json!({ HOST: "live" }).to_string(),
        ..StackOptions::default()
    })
    .expect("stack starts (run `cargo xtask build-edge` first)");
    let p = stack.api(
        "POST",
        "/v1/projects",
        Some(&json!({"name": "Shards", "key_prefix": "shrd", "routes": [], "default_route_policy": "allow"})),
    );
    assert_eq!(p.status, 201, "{}", p.body);
    let project = p.body["id"].as_str().expect("id").to_owned();
    // Over 1024 keys: two shards.
    let spec = json!({"name": "k", "kind": "secret", "environment": "live"});
    let keys: Vec<(String, String)> = (0..1100)
        .map(|_| stack.create_key(&project, &spec))
        .collect();
    let pk = stack.api("GET", "/v1/snapshot/public-key", None);
    let trusted = TrustedKeys::from_base64url_list(pk.body["public_key"].as_str().expect("key"))
        .expect("trusted");
    let (version, before) = digests(&stack, &trusted);
    assert_eq!(before.len(), 2);
    let bits = 1;

    // One key in each shard; the edge loads both to decide them.
    let in_shard = |i: u32| {
        keys.iter()
            .find(|(_, k)| shard_index(&KeyHash::of(k), bits) == i)
            .expect("a key in each shard")
            .clone()
    };
    let (revoked_id, revoked) = in_shard(0);
    let (_, kept) = in_shard(1);
    let loaded = Stack::wait_for(Duration::from_secs(20), || {
        // Requests first: the status page reports the snapshot, it does not load one.
        status(&stack, &revoked) == 200
            && status(&stack, &kept) == 200
            && stack.edge_status()["version"].as_u64() == Some(version)
    });
    assert!(
        loaded.is_some(),
        "version {version}, status {} {}, edge {}\n{}",
        status(&stack, &revoked),
        status(&stack, &kept),
        stack.edge_status(),
        stack.edge_logs()
    );
    assert_eq!(
        stack.edge_status()["loaded_shards"],
        2,
        "{}",
        stack.edge_logs()
    );
    let fetched_before = shard_requests(&stack);

    let r = stack.api(
        "POST",
        &format!("/v1/keys/{revoked_id}/revoke"),
        Some(&json!({})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let (new_version, after) = digests(&stack, &trusted);
    assert!(new_version > version);
    assert_ne!(after[0], before[0], "the revoked key's shard changed");
    assert_eq!(after[1], before[1], "the other shard kept its digest");

    let enforced = Stack::wait_for(Duration::from_secs(20), || status(&stack, &revoked) == 401);
    assert!(enforced.is_some(), "{}", stack.edge_logs());
    assert_eq!(status(&stack, &kept), 200);
    assert_eq!(stack.edge_status()["version"].as_u64(), Some(new_version));
    assert_eq!(
        stack.edge_status()["loaded_shards"],
        2,
        "{}",
        stack.edge_logs()
    );
    assert_eq!(
        shard_requests(&stack) - fetched_before,
        1,
        "only the changed shard is fetched again\n{}",
        stack.edge_logs()
    );
}
