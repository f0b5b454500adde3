//! Incremental publishing: after each kind of change the control plane publishes, byte for byte,
//! what a fresh build of the same database publishes, and a change touches only its own shard.

use keygate_control_plane::domain::keys::StoredPolicy;
use keygate_control_plane::ids::{KeyId, ProjectId};
use keygate_control_plane::keyring::Keyring;
use keygate_control_plane::metrics::Metrics;
use keygate_control_plane::snapshot::SnapshotService;
use keygate_shared::snapshot::Digest32;
use keygate_shared::{KeyPrefix, Scope};
use keygate_store::seed::{insert_keys, Seed};
use serde_json::json;

use crate::both_backends;
use crate::helpers::{TestApp, OWNER_TOKEN};
use crate::snapshot::fetch_verified;

both_backends!(each_change_publishes_what_a_fresh_build_does);

/// Inserts `n` keys behind the API's back, before the first snapshot (they are then part of
/// the first full build).
fn seed(app: &TestApp, project_id: &str, n: usize) {
    let policy = StoredPolicy {
        scopes: vec![Scope::parse("orders:read").unwrap()],
        ..Default::default()
    };
    let seed = Seed {
        project_id: &ProjectId::new(project_id),
        prefix: &KeyPrefix::parse("acme").unwrap(),
        policy: &policy,
        now: app.clock.now_ms(),
    };
    let mut conn = app.state.pool.get().unwrap();
    insert_keys(&mut conn, &seed, n, |i| {
        (KeyId::new(format!("key_seeded{i:06}")), "seeded".to_owned())
    })
    .unwrap();
}

/// Fetches the snapshot (publishing the latest change), checks it against a fresh build by a
/// new service over the same database at the same time, and gives its shard digests.
async fn publish_and_compare(app: &TestApp) -> Vec<Digest32> {
    let snap = fetch_verified(app).await;
    let digests: Vec<Digest32> = (0..snap.shard_count())
        .map(|i| snap.shard_digest(i).unwrap())
        .collect();
    let st = app.state.clone();
    let now = app.clock.now_ms();
    let dir = app.data_dir.path().to_owned();
    let wanted = digests.clone();
    actix_web::web::block(move || {
        let mut c = st.pool.get().unwrap();
        let held = st.snapshots.current(&mut c, now, &st.metrics).unwrap();
        let validity = (held.valid_until_ms - held.issued_at_ms) / 1000;
        let fresh = SnapshotService::new(dir.clone(), validity, Keyring::load(&dir).unwrap());
        let full = fresh.current(&mut c, now, &Metrics::default()).unwrap();
        assert_eq!(held.version, full.version);
        assert_eq!(held.key_count, full.key_count);
        assert!(held.wire == full.wire, "the signed manifests differ");
        for d in &wanted {
            let ours = st.snapshots.shard(d).expect("published shard is served");
            assert!(
                fresh.shard(d).as_ref() == Some(&ours),
                "shard {d:?} differs"
            );
        }
    })
    .await
    .unwrap();
    digests
}

fn differing(a: &[Digest32], b: &[Digest32]) -> usize {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).filter(|(x, y)| x != y).count()
}

async fn each_change_publishes_what_a_fresh_build_does(app: TestApp) {
    let p = app.create_project("acme").await;
    let pid = p["id"].as_str().unwrap();
    // 2040 keys: two shards; the keys created below take it past 2049, to four.
    seed(&app, pid, 2040);
    let spec =
        json!({"name": "k", "kind": "secret", "environment": "live", "scopes": ["orders:read"]});
    let k1 = app.create_key(pid, spec.clone()).await;
    let k2 = app.create_key(pid, spec.clone()).await;
    let k3 = app.create_key(pid, spec.clone()).await;
    let soon = keygate_control_plane::timefmt::format_ms(app.clock.now_ms() + 3_600_000);
    let k4 = app
        .create_key(
            pid,
            json!({"name": "k4", "kind": "secret", "environment": "live", "expires_at": soon}),
        )
        .await;
    let mut held = publish_and_compare(&app).await;
    assert_eq!(held.len(), 2);

    // Revoking one key re-encodes its shard only.
    let r = app
        .post(
            &format!("/v1/keys/{}/revoke", k1["id"].as_str().unwrap()),
            OWNER_TOKEN,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200);
    let now = publish_and_compare(&app).await;
    assert_eq!(differing(&held, &now), 1);
    held = now;

    // A key's policy.
    let r = app
        .patch(
            &format!("/v1/keys/{}", k2["id"].as_str().unwrap()),
            OWNER_TOKEN,
            json!({"scopes": ["orders:read", "orders:write"]}),
        )
        .await;
    assert_eq!(r.status, 200);
    let now = publish_and_compare(&app).await;
    assert_eq!(differing(&held, &now), 1);
    held = now;

    // A project's policy is in the manifest: no shard changes.
    let r = app
        .patch(
            &format!("/v1/projects/{pid}"),
            OWNER_TOKEN,
            json!({"default_route_policy": "deny", "routes": []}),
        )
        .await;
    assert_eq!(r.status, 200);
    let now = publish_and_compare(&app).await;
    assert_eq!(differing(&held, &now), 0);
    held = now;

    // A rotation changes the old key and adds the new one.
    let r = app
        .post(
            &format!("/v1/keys/{}/rotate", k3["id"].as_str().unwrap()),
            OWNER_TOKEN,
            json!({"grace_seconds": 60}),
        )
        .await;
    assert_eq!(r.status, 201);
    let now = publish_and_compare(&app).await;
    assert!((1..=2).contains(&differing(&held, &now)));
    held = now;

    // Past the retention after its expiry, a key leaves the snapshot with the next change.
    app.clock.advance_ms(31 * 86_400_000);
    let k5 = app.create_key(pid, spec.clone()).await;
    let now = publish_and_compare(&app).await;
    assert!(differing(&held, &now) >= 1);
    let key_count = |app: &TestApp| {
        let st = app.state.clone();
        let now = app.clock.now_ms();
        async move {
            actix_web::web::block(move || {
                let mut c = st.pool.get().unwrap();
                st.snapshots
                    .current(&mut c, now, &st.metrics)
                    .unwrap()
                    .key_count
            })
            .await
            .unwrap()
        }
    };
    // 2040 seeded + k1, k2, the rotated-in key and k5; k4 and the rotated-out k3 (its grace
    // period ended with it) have left.
    assert_eq!(key_count(&app).await, 2044);
    assert!(k4["id"].is_string() && k5["id"].is_string());

    // Past 2049 keys the shard bits grow: every shard is rebuilt, still as a fresh build.
    for _ in 0..6 {
        app.create_key(pid, spec.clone()).await;
        publish_and_compare(&app).await;
    }
    assert_eq!(key_count(&app).await, 2050);
    let grown = publish_and_compare(&app).await;
    assert_eq!(grown.len(), 4);
}
