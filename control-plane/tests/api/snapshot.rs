use keygate_shared::snapshot::{shard_index, verify_snapshot, TrustedKeys, VerifiedManifest};
use keygate_shared::{KeyHash, KeyRecord};
use serde_json::json;

use crate::both_backends;
use crate::helpers::{TestApp, OWNER_TOKEN};

both_backends!(
    snapshot_verifies_and_holds_records,
    etag_and_resign,
    revocation_reaches_next_version,
    signing_key_rotation,
    a_row_the_edge_cannot_use_is_left_out_not_the_snapshot,
    a_hash_not_in_lowercase_hex_is_left_out_by_a_full_build
);

pub async fn trusted(app: &TestApp) -> TrustedKeys {
    let pk = app.get("/v1/snapshot/public-key", OWNER_TOKEN).await;
    assert_eq!(pk.status, 200);
    assert_eq!(pk.body["algorithm"], "Ed25519");
    TrustedKeys::from_base64url_list(pk.body["public_key"].as_str().unwrap()).unwrap()
}

pub async fn fetch_verified(app: &TestApp) -> VerifiedManifest {
    let trusted = trusted(app).await;
    let r = app.get("/v1/snapshot", OWNER_TOKEN).await;
    assert_eq!(r.status, 200);
    verify_snapshot(&r.raw, &trusted, None, app.clock.now_ms()).expect("snapshot verifies")
}

pub async fn all_records(app: &TestApp, snap: &VerifiedManifest) -> Vec<KeyRecord> {
    let mut out = Vec::new();
    for i in 0..snap.shard_count() {
        let digest = snap.shard_digest(i).unwrap().to_hex();
        let r = app
            .get(&format!("/v1/snapshot/shards/{digest}"), OWNER_TOKEN)
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/octet-stream")
        );
        assert_eq!(
            r.header("cache-control").as_deref(),
            Some("public, max-age=31536000, immutable")
        );
        let shard = snap.verify_shard(i, &r.raw).expect("shard verifies");
        out.extend(shard.into_records().expect("every record decodes"));
    }
    out
}

async fn snapshot_verifies_and_holds_records(app: TestApp) {
    let p = app.create_project("acme").await;
    let pid = p["id"].as_str().unwrap();
    let pk = app
        .create_key(
            pid,
            json!({"name": "web", "kind": "publishable", "environment": "test", "scopes": ["orders:read"],
                   "restrictions": {"referrers": ["shop.example.com"], "ips": ["10.0.0.0/8"]},
                   "rate_limit": {"limit": 5, "period_seconds": 1}, "metadata": {"tier": "gold"}}),
        )
        .await;
    let sk = app.secret_key(pid).await;
    let edge = app.token("edge").await;

    let snap = fetch_verified(&app).await;
    let m = snap.manifest();
    assert_eq!(m.key_count, 2);
    assert_eq!(m.projects.len(), 1);
    assert_eq!(m.projects[0].project_id, pid);
    assert_eq!(m.projects[0].routes.len(), 2);
    assert!(m.valid_until_ms - m.issued_at_ms == 86_400_000);

    // The edge reads the snapshot and its shards with its own token.
    let r = app.get("/v1/snapshot", &edge).await;
    assert_eq!(r.status, 200);
    let hash = KeyHash::of(pk["key"].as_str().unwrap());
    let idx = shard_index(&hash, m.shard_bits);
    let digest = snap.shard_digest(idx).unwrap().to_hex();
    let shard = app
        .get(&format!("/v1/snapshot/shards/{digest}"), &edge)
        .await;
    assert_eq!(shard.status, 200);
    let shard = snap.verify_shard(idx, &shard.raw).unwrap();
    let rec = shard
        .into_records()
        .expect("every record decodes")
        .into_iter()
        .find(|r| r.hash == hash)
        .expect("pk record");
    assert_eq!(rec.key_id, pk["id"].as_str().unwrap());
    assert_eq!(rec.project_id, pid);
    assert_eq!(rec.environment, keygate_shared::Environment::Test);
    assert_eq!(rec.referrers[0].as_str(), "shop.example.com");
    assert_eq!(rec.ips.len(), 1);
    assert_eq!(rec.rate_limit.unwrap().limit.get(), 5);
    assert_eq!(rec.metadata_json.as_deref(), Some(r#"{"tier":"gold"}"#));
    assert!(!rec.revoked);

    let records = all_records(&app, &snap).await;
    assert_eq!(records.len(), 2);
    assert!(records
        .iter()
        .any(|r| r.hash == KeyHash::of(sk["key"].as_str().unwrap())));
    // No plaintext in the snapshot.
    let wire = app.get("/v1/snapshot", OWNER_TOKEN).await;
    assert!(!String::from_utf8_lossy(&wire.raw).contains(sk["key"].as_str().unwrap()));

    let missing = app
        .get(&format!("/v1/snapshot/shards/{}", "0".repeat(64)), &edge)
        .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.code(), "shard_not_found");
    let bad = app.get("/v1/snapshot/shards/zz", &edge).await;
    assert_eq!(bad.status, 404);
    assert_eq!(bad.code(), "shard_not_found");
}

async fn etag_and_resign(app: TestApp) {
    let p = app.create_project("acme").await;
    app.secret_key(p["id"].as_str().unwrap()).await;
    let first = app.get("/v1/snapshot", OWNER_TOKEN).await;
    let etag = first.header("etag").unwrap();
    let version: u64 = first
        .header("keygate-snapshot-version")
        .unwrap()
        .parse()
        .unwrap();
    assert!(etag.starts_with(&format!("\"{version}-")), "{etag}");
    assert_eq!(etag.len(), format!("\"{version}-\"").len() + 16);

    let same = app.get("/v1/snapshot", OWNER_TOKEN).await;
    assert_eq!(same.header("etag").unwrap(), etag, "cached per version");
    assert_eq!(same.raw, first.raw);

    let mut req = app.client.get(format!("{}/v1/snapshot", app.base));
    req = req
        .insert_header(("authorization", format!("Bearer {OWNER_TOKEN}")))
        .insert_header(("if-none-match", etag.clone()));
    let mut res = req.send().await.unwrap();
    assert_eq!(res.status(), 304);
    assert!(res.body().await.unwrap().is_empty());

    // Past half of the validity the same version is re-signed with a new window.
    app.clock.advance_ms(43_200_001);
    let trusted = trusted(&app).await;
    let resigned = app.get("/v1/snapshot", OWNER_TOKEN).await;
    assert_ne!(resigned.header("etag").unwrap(), etag);
    let m = verify_snapshot(&resigned.raw, &trusted, Some(version), app.clock.now_ms()).unwrap();
    assert_eq!(m.version(), version);
    assert_eq!(m.manifest().issued_at_ms, app.clock.now_ms());

    // A change gives a higher version and a different ETag.
    app.create_project("beta").await;
    let changed = app.get("/v1/snapshot", OWNER_TOKEN).await;
    let v2: u64 = changed
        .header("keygate-snapshot-version")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(v2, version + 1);
    let m2 = verify_snapshot(&changed.raw, &trusted, Some(version), app.clock.now_ms()).unwrap();
    assert_eq!(m2.manifest().projects.len(), 2);
}

async fn revocation_reaches_next_version(app: TestApp) {
    let p = app.create_project("acme").await;
    let k = app.secret_key(p["id"].as_str().unwrap()).await;
    let key = k["key"].as_str().unwrap();
    let before = fetch_verified(&app).await;
    assert_eq!(app.verify_code(key).await, "valid");
    let r = app
        .post(
            &format!("/v1/keys/{}/revoke", k["id"].as_str().unwrap()),
            OWNER_TOKEN,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200);
    // At once in /v1/verify.
    assert_eq!(app.verify_code(key).await, "revoked_key");
    // And in the very next snapshot version.
    let after = fetch_verified(&app).await;
    assert_eq!(after.version(), before.version() + 1);
    let records = all_records(&app, &after).await;
    let rec = records.iter().find(|r| r.hash == KeyHash::of(key)).unwrap();
    assert!(rec.revoked);
    // The edge's evaluation over the snapshot says the same.
    let view = keygate_shared::MemoryView::new(after.manifest().projects.clone(), records.clone());
    let facts = keygate_shared::RequestFacts {
        key: Some(key),
        ..Default::default()
    };
    match keygate_shared::evaluate(&view, &facts, app.clock.now_ms(), None) {
        keygate_shared::Evaluation::Done(v) => assert_eq!(v.code, keygate_shared::Code::RevokedKey),
        other => panic!("unexpected {other:?}"),
    }
}

async fn signing_key_rotation(app: TestApp) {
    let old = app.get("/v1/snapshot/public-key", OWNER_TOKEN).await.body;
    let old_id = old["key_id"].as_str().unwrap().to_owned();
    // Key file and directory modes.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let dir = app.data_dir.path().join("signing-keys");
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let file = dir.join(format!("{old_id}.key"));
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(std::fs::read(&file).unwrap().len(), 32);
        let jwt = app.data_dir.path().join("jwt-secret");
        assert_eq!(
            std::fs::metadata(&jwt).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let old_trusted = trusted(&app).await;
    let v1 = fetch_verified(&app).await;

    let keyring = keygate_control_plane::keyring::Keyring::rotate(
        app.data_dir.path(),
        app.clock.now_ms(),
        7 * 86_400_000,
    )
    .unwrap();
    let new_id = keyring.active().key_id().to_owned();
    assert_ne!(new_id, old_id);
    // The running server notices within its recheck interval.
    app.clock.advance_ms(6_000);
    let list = app.get("/v1/snapshot/public-keys", OWNER_TOKEN).await;
    assert_eq!(list.status, 200);
    let items = list.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["key_id"], json!(new_id));
    assert_eq!(items[0]["status"], "active");
    assert_eq!(items[1]["key_id"], json!(old_id));
    assert_eq!(items[1]["status"], "retiring");
    assert!(items[1]["retire_after"].is_string());

    // New snapshots are signed by the new key; an edge trusting only the old one refuses them,
    // one trusting both accepts them.
    let wire = app.get("/v1/snapshot", OWNER_TOKEN).await.raw;
    assert!(verify_snapshot(&wire, &old_trusted, None, app.clock.now_ms()).is_err());
    let both = TrustedKeys::from_base64url_list(&format!(
        "{},{}",
        items[0]["public_key"].as_str().unwrap(),
        items[1]["public_key"].as_str().unwrap()
    ))
    .unwrap();
    let v2 = verify_snapshot(&wire, &both, Some(v1.version()), app.clock.now_ms()).unwrap();
    assert_eq!(v2.key_id(), new_id);
    assert_eq!(v2.version(), v1.version());
}

/// A key row the edge's decoder could not use (written behind the API's back) costs that key
/// its place in the snapshot, not every other key its next revocation.
async fn a_row_the_edge_cannot_use_is_left_out_not_the_snapshot(mut app: TestApp) {
    let p = app.create_project("acme").await;
    let pid = p["id"].as_str().unwrap();
    let bad = app
        .create_key(
            pid,
            json!({"name": "bad", "kind": "secret", "environment": "live"}),
        )
        .await;
    let bad_id = bad["id"].as_str().unwrap().to_owned();
    {
        use diesel::RunQueryDsl as _;
        let mut conn = app.state.pool.get().expect("connection");
        let query = diesel::sql_query(format!(
            "UPDATE api_keys SET policy = '{{\"scopes\": [\"has space\"]}}' WHERE id = '{bad_id}'"
        ));
        let n =
            keygate_control_plane::with_backend!(&mut *conn, |c| query.execute(c)).expect("update");
        assert_eq!(n, 1);
    }
    // A later change publishes a new version; it holds the good key and not the bad one.
    let good = app
        .create_key(
            pid,
            json!({"name": "good", "kind": "secret", "environment": "live"}),
        )
        .await;
    let snap = fetch_verified(&app).await;
    let ids: Vec<String> = all_records(&app, &snap)
        .await
        .into_iter()
        .map(|r| r.key_id)
        .collect();
    assert_eq!(ids, vec![good["id"].as_str().unwrap().to_owned()]);
    // A full build (after a restart) leaves it out the same way.
    app.restart().await;
    let snap = fetch_verified(&app).await;
    let again: Vec<String> = all_records(&app, &snap)
        .await
        .into_iter()
        .map(|r| r.key_id)
        .collect();
    assert_eq!(again, ids);
}

mod polls_from_memory {
    use crate::helpers::{spawn_with, Backend};

    #[actix_web::test]
    async fn sqlite() {
        super::polls_from_memory(
            spawn_with(Backend::Sqlite, |c| c.snapshot_version_memory_ms = 100).await,
        )
        .await;
    }

    #[actix_web::test]
    #[ignore = "needs PostgreSQL at KEYGATE_TEST_POSTGRES_URL; `cargo xtask test` runs it"]
    async fn postgres() {
        super::polls_from_memory(
            spawn_with(Backend::Postgres, |c| c.snapshot_version_memory_ms = 100).await,
        )
        .await;
    }
}

async fn version_reads(app: &TestApp) -> u64 {
    let m = app
        .request(actix_web::http::Method::GET, "/metrics", None, None)
        .await;
    let text = String::from_utf8(m.raw).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("keygate_snapshot_version_reads_total "))
        .expect("the version reads counter")
        .parse()
        .unwrap()
}

/// (status, version) of a poll that holds `etag`.
async fn poll(app: &TestApp, etag: &str) -> (u16, u64) {
    let mut res = app
        .client
        .get(format!("{}/v1/snapshot", app.base))
        .insert_header(("authorization", format!("Bearer {OWNER_TOKEN}")))
        .insert_header(("if-none-match", etag.to_owned()))
        .send()
        .await
        .unwrap();
    let _ = res.body().await;
    let version = res
        .headers()
        .get("keygate-snapshot-version")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    (res.status().as_u16(), version)
}

/// Polls are answered from memory for the configured time (the clock here is frozen, so until
/// it is advanced), except right after a write through this process; a write made elsewhere
/// (here straight through the store, as the CLI or another replica would) is seen once the
/// remembered version is older than that time.
async fn polls_from_memory(app: TestApp) {
    let p = app.create_project("acme").await;
    let pid = p["id"].as_str().unwrap();
    let a = app.secret_key(pid).await;
    let b = app.secret_key(pid).await;
    let first = app.get("/v1/snapshot", OWNER_TOKEN).await;
    let etag = first.header("etag").unwrap();
    let v1: u64 = first
        .header("keygate-snapshot-version")
        .unwrap()
        .parse()
        .unwrap();
    let reads = version_reads(&app).await;
    for _ in 0..20 {
        assert_eq!(poll(&app, &etag).await, (304, v1));
    }
    assert_eq!(
        version_reads(&app).await,
        reads,
        "no poll read the database"
    );

    // Revoked behind the API's back: not seen until the remembered version is too old.
    {
        let mut conn = app.state.pool.get().expect("connection");
        let id = keygate_control_plane::ids::KeyId::new(a["id"].as_str().unwrap().to_owned());
        let now = app.clock.now_ms();
        keygate_control_plane::domain::keys::revoke(
            &mut conn,
            now,
            "tok_elsewhere",
            &id,
            keygate_control_plane::domain::keys::RevokeKey { reason: None },
        )
        .expect("revoked");
    }
    assert_eq!(poll(&app, &etag).await, (304, v1), "remembered");
    app.clock.advance_ms(100);
    let (status, v2) = poll(&app, &etag).await;
    assert_eq!(status, 200);
    assert!(v2 > v1, "{v2} after {v1}");
    assert_eq!(version_reads(&app).await, reads + 1);

    // Revoked through the API: the very next poll sees it, at the same instant.
    let r = app
        .post(
            &format!("/v1/keys/{}/revoke", b["id"].as_str().unwrap()),
            OWNER_TOKEN,
            serde_json::json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let (status, v3) = poll(&app, &format!("\"{v2}-0000000000000000\"")).await;
    assert_eq!(status, 200);
    assert!(v3 > v2, "{v3} after {v2}");
}

/// A full build reads keys by ranges of their stored hex hash; a hash stored in another spelling
/// would fall outside its shard's range, so it is left out (as `/v1/verify`, which looks up the
/// lowercase hex, never finds it either), and every other key is published.
async fn a_hash_not_in_lowercase_hex_is_left_out_by_a_full_build(mut app: TestApp) {
    let p = app.create_project("acme").await;
    let pid = p["id"].as_str().unwrap();
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(app.secret_key(pid).await["id"].as_str().unwrap().to_owned());
    }
    {
        use diesel::RunQueryDsl as _;
        let mut conn = app.state.pool.get().expect("connection");
        let query = diesel::sql_query(format!(
            "UPDATE api_keys SET key_hash = UPPER(key_hash) WHERE id = '{}'",
            ids[0]
        ));
        let n =
            keygate_control_plane::with_backend!(&mut *conn, |c| query.execute(c)).expect("update");
        assert_eq!(n, 1);
    }
    app.restart().await;
    let snap = fetch_verified(&app).await;
    let mut published: Vec<String> = all_records(&app, &snap)
        .await
        .into_iter()
        .map(|r| r.key_id)
        .collect();
    published.sort();
    let mut expected = ids[1..].to_vec();
    expected.sort();
    assert_eq!(published, expected);
}
