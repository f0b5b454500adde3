//! The edge accepts only snapshots that verify: a tampered one, one signed by an unknown key, and
//! a rolled-back (older) one are refused, and the edge keeps enforcing the last good snapshot.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keygate_shared::{Environment, KeyPrefix, KeyRecord, Kind, PlaintextKey, SnapshotSigner};
use keygate_tests::fixtures::{plain_record, SignedSnapshot};
use keygate_tests::http::{self, StubRequest, StubResponse, StubServer};
use keygate_tests::origin::Origin;
use keygate_tests::stack::{Stack, ORIGIN_SECRET};
use keygate_tests::workerd::{workspace_root, WorkerdConfig};
use serde_json::Value;

const EDGE_TOKEN: &str = "edge-token-for-the-trust-test";

#[allow(clippy::disallowed_methods)] // The test plays the control plane's clock.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

struct Published {
    snapshot: SignedSnapshot,
    etag: String,
}

fn publish(signer: &SnapshotSigner, version: u64, key: &PlaintextKey, revoked: bool) -> Published {
    publish_at(signer, version, key, revoked, now_ms())
}

fn publish_at(
    signer: &SnapshotSigner,
    version: u64,
    key: &PlaintextKey,
    revoked: bool,
    issued_at_ms: i64,
) -> Published {
    let record = KeyRecord {
        revoked,
        ..plain_record(key, "key_trust", "prj_trust")
    };
    Published {
        snapshot: SignedSnapshot::sign(signer, version, "prj_trust", vec![record], issued_at_ms),
        etag: format!("\"{version}-{}\"", u8::from(revoked)),
    }
}

/// A stub control plane serving whatever `current` holds at each request, after `before` has
/// seen the request (to count or delay it).
fn control_plane(
    current: &Arc<Mutex<Published>>,
    before: impl Fn(&StubRequest) + Send + Sync + 'static,
) -> StubServer {
    let served = Arc::clone(current);
    StubServer::start(move |req| {
        before(req);
        let Ok(p) = served.lock() else {
            return StubResponse::empty(500);
        };
        p.snapshot
            .respond(req, &p.etag)
            .unwrap_or_else(|| StubResponse::empty(404))
    })
    .expect("stub control plane")
}

/// A live secret key with a fixed secret, so that each test's snapshot is the same every run.
fn fixed_key(prefix: &str, secret: &str) -> PlaintextKey {
    PlaintextKey::from_parts(
        &KeyPrefix::parse(prefix).expect("prefix"),
        Kind::Secret,
        Environment::Live,
        secret,
    )
    .expect("key")
}

/// An edge that takes its snapshots from the stub control plane `cp` and trusts `signer`.
fn edge_config(
    state: &Path,
    cp: &StubServer,
    origin: &Origin,
    signer: &SnapshotSigner,
    refresh_seconds: &str,
) -> WorkerdConfig {
    WorkerdConfig::new(workspace_root(), state)
        .var("CONTROL_PLANE_URL", cp.url())
        .var("ORIGIN_URL", origin.url())
        .var("SNAPSHOT_REFRESH_SECONDS", refresh_seconds)
        .secret("EDGE_TOKEN", EDGE_TOKEN)
        .secret("SNAPSHOT_PUBLIC_KEYS", signer.public_key_base64url())
        .secret("ORIGIN_HMAC_SECRET", ORIGIN_SECRET)
}

#[test]
fn tampered_foreign_and_rolled_back_snapshots_are_refused() {
    let signer = SnapshotSigner::from_seed(&[11u8; 32]);
    let stranger = SnapshotSigner::from_seed(&[12u8; 32]);
    let key = fixed_key("trust", "Trust000000000000000000000000000");

    let current: Arc<Mutex<Published>> = Arc::new(Mutex::new(publish(&signer, 5, &key, false)));
    let cp = control_plane(&current, |_| {});
    let origin = Origin::start(0, ORIGIN_SECRET.as_bytes().to_vec()).expect("origin");
    let state = tempfile::tempdir().expect("temp");
    let edge = edge_config(state.path(), &cp, &origin, &signer, "0.2")
        .start()
        .expect("workerd");
    let auth = format!("Bearer {}", key.expose());
    let call = || {
        edge.get("/x", &[("Authorization", &auth)])
            .map_or(0, |r| r.status)
    };
    let version = || -> Value {
        http::get(
            &format!("{}/.well-known/keygate/status", edge.url()),
            &[("Authorization", &format!("Bearer {EDGE_TOKEN}"))],
        )
        .ok()
        .and_then(|r| serde_json::from_slice::<Value>(&r.body).ok())
        .map_or(Value::Null, |v| v["version"].clone())
    };
    assert_eq!(call(), 200, "{}", edge.logs());
    assert_eq!(version(), 5);

    let serve = |p: Published| *current.lock().expect("lock") = p;
    // Refreshes ride on requests, so keep traffic going until the edge has logged the refusal
    // (it has then fetched the bad snapshot); every request meanwhile must still pass, and the
    // held version must stay 5.
    let refused_for = |what: &str, logged: &str| {
        let before = edge.logs().matches(logged).count();
        let seen = Stack::wait_for(Duration::from_secs(10), || {
            assert_eq!(
                call(),
                200,
                "{what}: the revocation in a refused snapshot must not apply\n{}",
                edge.logs()
            );
            edge.logs().matches(logged).count() > before
        });
        assert!(seen.is_some(), "{what}: never refused\n{}", edge.logs());
        assert_eq!(call(), 200, "{what}");
        assert_eq!(version(), 5, "{what}");
    };

    // A tampered snapshot: a byte of the signed manifest changed.
    let mut tampered = publish(&signer, 6, &key, true);
    let mut doc: Value = serde_json::from_slice(&tampered.snapshot.wire).expect("json");
    let manifest = doc["manifest"].as_str().expect("manifest").to_owned();
    let flipped: String = manifest
        .char_indices()
        .map(|(i, c)| {
            if i == 10 {
                if c == 'A' {
                    'B'
                } else {
                    'A'
                }
            } else {
                c
            }
        })
        .collect();
    doc["manifest"] = Value::String(flipped);
    tampered.snapshot.wire = doc.to_string().into_bytes();
    serve(tampered);
    refused_for("tampered", "bad snapshot signature");

    // Signed by a key the edge does not trust.
    serve(publish(&stranger, 7, &key, true));
    refused_for("unknown signer", "unknown signing key id");

    // Rolled back: properly signed, but older than the snapshot held.
    serve(publish(&signer, 4, &key, true));
    refused_for("rollback", "older than the held version");

    // A good newer snapshot is taken, revocation and all.
    serve(publish(&signer, 8, &key, true));
    let revoked = Stack::wait_for(Duration::from_secs(10), || call() == 401);
    assert!(revoked.is_some(), "{}", edge.logs());
    assert_eq!(version(), 8);
}

/// A cold isolate that gets many requests at once loads the snapshot once: every request waits
/// for the same load, all are decided from it, and the control plane sees one manifest request.
#[test]
fn concurrent_first_requests_share_one_snapshot_load() {
    let signer = SnapshotSigner::from_seed(&[13u8; 32]);
    let key = fixed_key("herd", "Herd0000000000000000000000000000");
    let current = Arc::new(Mutex::new(publish(&signer, 3, &key, false)));
    let manifests = Arc::new(Mutex::new(0usize));
    let counted = Arc::clone(&manifests);
    let cp = control_plane(&current, move |req| {
        if req.path() == "/v1/snapshot" {
            if let Ok(mut n) = counted.lock() {
                *n += 1;
            }
            // Slow enough that every request below arrives while the first load runs.
            std::thread::sleep(Duration::from_millis(400));
        }
    });
    let origin = Origin::start(0, ORIGIN_SECRET.as_bytes().to_vec()).expect("origin");
    let state = tempfile::tempdir().expect("temp");
    let edge = edge_config(state.path(), &cp, &origin, &signer, "60")
        .scheduled_trigger(false)
        .start()
        .expect("workerd");

    let url = format!("{}/herd", edge.url());
    let auth = format!("Bearer {}", key.expose());
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| http::get(&url, &[("Authorization", &auth)]).map_or(0, |r| r.status))
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap_or(0)).collect()
    });
    assert_eq!(statuses, vec![200; 8], "{}", edge.logs());
    assert_eq!(
        *manifests.lock().expect("lock"),
        1,
        "one load for all the requests that arrived together\n{}",
        edge.logs()
    );
    assert_eq!(origin.count(), 8);
    // Waiting on a load another request started must not trip the runtime's checks.
    assert!(
        !edge.logs().contains("different request"),
        "{}",
        edge.logs()
    );
}

/// A snapshot the control plane has not confirmed for longer than the refresh interval is checked
/// before it decides a request: a key revoked while the isolate had no traffic is refused on the
/// very first request after. A control plane that does not answer holds that request up only for
/// the revalidation wait (1 s); then the last good snapshot decides it.
#[test]
fn an_idle_isolate_asks_the_control_plane_before_deciding() {
    /// What the README promises the request waits for a control plane that does not answer.
    const REVALIDATION_WAIT: Duration = Duration::from_secs(1);
    /// What the edge may add to that wait on a busy machine: timers, the decision, the answer.
    const MARGIN: Duration = Duration::from_millis(1500);

    let signer = SnapshotSigner::from_seed(&[14u8; 32]);
    let key = fixed_key("idle", "Idle0000000000000000000000000000");
    let current: Arc<Mutex<Published>> = Arc::new(Mutex::new(publish(&signer, 5, &key, false)));
    // While `hang` is set, the stub holds every snapshot request until `release` is set (or a
    // minute passes), and notes when the first one arrived.
    let hang = Arc::new(AtomicBool::new(false));
    let release = Arc::new(AtomicBool::new(false));
    let asked_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let cp = {
        let (hang, release, asked_at) = (
            Arc::clone(&hang),
            Arc::clone(&release),
            Arc::clone(&asked_at),
        );
        control_plane(&current, move |req| {
            if req.path() == "/v1/snapshot" && hang.load(Ordering::SeqCst) {
                if let Ok(mut at) = asked_at.lock() {
                    at.get_or_insert_with(Instant::now);
                }
                let held = Instant::now();
                while !release.load(Ordering::SeqCst) && held.elapsed() < Duration::from_secs(60) {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        })
    };
    let origin = Origin::start(0, ORIGIN_SECRET.as_bytes().to_vec()).expect("origin");
    let state = tempfile::tempdir().expect("temp");
    let edge = edge_config(state.path(), &cp, &origin, &signer, "0.5")
        .scheduled_trigger(false)
        .start()
        .expect("workerd");
    let auth = format!("Bearer {}", key.expose());
    let call = || {
        edge.get("/x", &[("Authorization", &auth)])
            .map_or(0, |r| r.status)
    };
    assert_eq!(call(), 200, "{}", edge.logs());

    // Revoked while nobody calls the edge: the first request after is refused.
    *current.lock().expect("lock") = publish(&signer, 6, &key, true);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(call(), 401, "first request after idling\n{}", edge.logs());
    assert_eq!(origin.count(), 1);

    // The control plane stops answering (and would now un-revoke the key): after an idle spell
    // the request asks it, waits for it only so long, then the held snapshot decides, while the
    // control plane still holds its answer.
    *current.lock().expect("lock") = publish(&signer, 7, &key, false);
    hang.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(1500));
    let status = call();
    let answered = Instant::now();
    release.store(true, Ordering::SeqCst);
    assert_eq!(status, 401, "decided on the held snapshot\n{}", edge.logs());
    let asked = asked_at
        .lock()
        .expect("lock")
        .expect("the edge asked the control plane before deciding");
    let waited = answered.saturating_duration_since(asked);
    eprintln!(
        "answered {waited:?} after asking a control plane that did not answer (bound {:?})",
        REVALIDATION_WAIT + MARGIN
    );
    assert!(
        waited <= REVALIDATION_WAIT + MARGIN,
        "waited {waited:?} for a control plane that does not answer, more than {:?} + {MARGIN:?}\n{}",
        REVALIDATION_WAIT,
        edge.logs()
    );
}

/// A shard whose bytes do not hash to the digest the signed manifest commits to is refused: the
/// request that needed it fails closed, and the edge serves once the right bytes come.
#[test]
fn a_shard_that_does_not_match_the_signed_manifest_is_refused() {
    let signer = SnapshotSigner::from_seed(&[15u8; 32]);
    let key = fixed_key("shard", "Shard000000000000000000000000000");
    let mut published = publish(&signer, 2, &key, false);
    let good = published.snapshot.shards.clone();
    // Still a well-formed shard, with the record in its place: only the digest tells.
    let mut forged = 0;
    for (_, bytes) in &mut published.snapshot.shards {
        if let Some(at) = bytes.windows(9).position(|w| w == b"key_trust") {
            bytes[at..at + 9].copy_from_slice(b"key_other");
            forged += 1;
        }
    }
    assert_eq!(forged, 1);
    let current = Arc::new(Mutex::new(published));
    let cp = control_plane(&current, |_| {});
    let origin = Origin::start(0, ORIGIN_SECRET.as_bytes().to_vec()).expect("origin");
    let state = tempfile::tempdir().expect("temp");
    let edge = edge_config(state.path(), &cp, &origin, &signer, "60")
        .scheduled_trigger(false)
        .start()
        .expect("workerd");
    let auth = format!("Bearer {}", key.expose());
    let call = || edge.get("/x", &[("Authorization", &auth)]);

    let r = call().expect("edge answers");
    assert_eq!(r.status, 503, "{}", edge.logs());
    let body: Value = serde_json::from_slice(&r.body).expect("problem json");
    assert_eq!(body["code"], "snapshot_unavailable");
    assert!(edge.logs().contains("shard refused"), "{}", edge.logs());
    assert_eq!(origin.count(), 0);

    current.lock().expect("lock").snapshot.shards = good;
    assert_eq!(call().expect("edge answers").status, 200, "{}", edge.logs());
    assert_eq!(origin.count(), 1);
}

#[test]
fn a_cold_isolate_refuses_a_snapshot_older_than_its_kv_copy() {
    let signer = SnapshotSigner::from_seed(&[13u8; 32]);
    let key = fixed_key("floor", "Floor000000000000000000000000000");
    // Version 5 revokes the key; version 4, older but validly signed, still has it active.
    let current: Arc<Mutex<Published>> = Arc::new(Mutex::new(publish(&signer, 5, &key, true)));
    let cp = control_plane(&current, |_| {});
    let origin = Origin::start(0, ORIGIN_SECRET.as_bytes().to_vec()).expect("origin");
    let state = tempfile::tempdir().expect("temp");
    let auth = format!("Bearer {}", key.expose());
    let edge = edge_config(state.path(), &cp, &origin, &signer, "2")
        .start()
        .expect("workerd");
    let r = edge.get("/x", &[("Authorization", &auth)]).expect("edge");
    assert_eq!(r.status, 401, "{}", edge.logs());
    // The scheduled copy puts version 5 into KV.
    let sync = http::request(
        "POST",
        &format!("{}/.well-known/keygate/sync-kv", edge.url()),
        &[("Authorization", &format!("Bearer {EDGE_TOKEN}"))],
        None,
    )
    .expect("sync");
    assert_eq!(sync.status, 200, "{}\n{}", sync.text(), edge.logs());
    drop(edge);

    // Whoever answers for the control plane now replays version 4 to a fresh isolate.
    *current.lock().expect("lock") = publish(&signer, 4, &key, false);
    let edge = edge_config(state.path(), &cp, &origin, &signer, "2")
        .start()
        .expect("workerd");
    let r = edge.get("/x", &[("Authorization", &auth)]).expect("edge");
    assert_eq!(
        r.status,
        401,
        "the replayed snapshot was used:\n{}",
        edge.logs()
    );
    assert!(edge.logs().contains("older"), "{}", edge.logs());
    assert_eq!(origin.count(), 0);
}

/// Runs the scheduled KV copy through the edge's token-protected endpoint; its report.
fn sync_kv(edge: &keygate_tests::workerd::Workerd) -> Value {
    let r = http::request(
        "POST",
        &format!("{}/.well-known/keygate/sync-kv", edge.url()),
        &[("Authorization", &format!("Bearer {EDGE_TOKEN}"))],
        None,
    )
    .expect("sync");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), edge.logs());
    serde_json::from_slice(&r.body).expect("sync report")
}

#[test]
fn the_kv_copy_is_written_only_when_the_snapshot_changes() {
    let signer = SnapshotSigner::from_seed(&[17u8; 32]);
    let key = fixed_key("kvcopy", "Kvcopy00000000000000000000000000");
    // Signed 700 s ago: past the default 600 s staleness bound if counted from its issue, so a
    // cold isolate can use the copy only because the scheduled run confirmed it just now.
    let issued = now_ms() - 700_000;
    let current: Arc<Mutex<Published>> =
        Arc::new(Mutex::new(publish_at(&signer, 5, &key, false, issued)));
    let cp = control_plane(&current, |_| {});
    let origin = Origin::start(0, ORIGIN_SECRET.as_bytes().to_vec()).expect("origin");
    let state = tempfile::tempdir().expect("temp");
    let manifest_file = state.path().join("kv").join("snapshot");
    let edge = edge_config(state.path(), &cp, &origin, &signer, "60")
        .scheduled_trigger(false)
        .start()
        .expect("workerd");

    let first = sync_kv(&edge);
    assert_eq!(first["version"], 5, "{first}");
    assert_eq!(first["complete"], true, "{first}");
    // One shard, the shard list, the manifest and the copy's record.
    assert_eq!(first["shards_copied"], 1, "{first}");
    assert_eq!(first["writes"], 4, "{first}");
    let written = std::fs::metadata(&manifest_file)
        .and_then(|m| m.modified())
        .expect("manifest copied to KV");

    // Nothing changed: nothing is written.
    std::thread::sleep(Duration::from_millis(20));
    let again = sync_kv(&edge);
    assert_eq!(again["writes"], 0, "{again}");
    let still = std::fs::metadata(&manifest_file)
        .and_then(|m| m.modified())
        .expect("manifest still in KV");
    assert_eq!(written, still, "the unchanged manifest was rewritten");

    // A new version with the same records: its shard is already there, so only the manifest
    // and the record are written.
    *current.lock().expect("lock") = publish_at(&signer, 6, &key, false, issued);
    let changed = sync_kv(&edge);
    assert_eq!(changed["version"], 6, "{changed}");
    assert_eq!(changed["shards_copied"], 0, "{changed}");
    assert_eq!(changed["writes"], 2, "{changed}");
    drop(edge);

    // The control plane goes away; a fresh isolate starts from the copy, which the scheduled run
    // confirmed moments ago although it was signed 700 s ago.
    drop(cp);
    let edge = WorkerdConfig::new(workspace_root(), state.path())
        .var("CONTROL_PLANE_URL", "http://127.0.0.1:9")
        .var("ORIGIN_URL", origin.url())
        .var("SNAPSHOT_REFRESH_SECONDS", "60")
        .secret("EDGE_TOKEN", EDGE_TOKEN)
        .secret("SNAPSHOT_PUBLIC_KEYS", signer.public_key_base64url())
        .secret("ORIGIN_HMAC_SECRET", ORIGIN_SECRET)
        .scheduled_trigger(false)
        .start()
        .expect("workerd");
    let auth = format!("Bearer {}", key.expose());
    let r = edge.get("/x", &[("Authorization", &auth)]).expect("edge");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), edge.logs());
    assert_eq!(origin.count(), 1);
}

#[test]
fn the_kv_copy_is_reconfirmed_once_half_the_staleness_bound_has_passed() {
    let signer = SnapshotSigner::from_seed(&[19u8; 32]);
    let key = fixed_key("kvbeat", "Kvbeat00000000000000000000000000");
    let current: Arc<Mutex<Published>> = Arc::new(Mutex::new(publish(&signer, 3, &key, false)));
    let cp = control_plane(&current, |_| {});
    let origin = Origin::start(0, ORIGIN_SECRET.as_bytes().to_vec()).expect("origin");
    let state = tempfile::tempdir().expect("temp");
    let edge = edge_config(state.path(), &cp, &origin, &signer, "60")
        .var("SNAPSHOT_MAX_STALENESS_SECONDS", "2")
        .scheduled_trigger(false)
        .start()
        .expect("workerd");
    assert_eq!(sync_kv(&edge)["writes"], 4);
    assert_eq!(sync_kv(&edge)["writes"], 0);
    std::thread::sleep(Duration::from_millis(1_100));
    // Half of the 2 s bound has passed: only the record is rewritten.
    let beat = sync_kv(&edge);
    assert_eq!(beat["writes"], 1, "{beat}");
    assert_eq!(beat["shards_copied"], 0, "{beat}");
}

#[test]
fn an_unreachable_origin_is_a_502_a_browser_app_can_read() {
    let signer = SnapshotSigner::from_seed(&[23u8; 32]);
    let key = fixed_key("dead", "Deadorigin000000000000000000000a");
    let record = KeyRecord {
        referrers: vec![
            keygate_shared::ReferrerPattern::decode("https://app.example").expect("pattern"),
        ],
        ..plain_record(&key, "key_dead", "prj_trust")
    };
    let snapshot = SignedSnapshot::sign(&signer, 1, "prj_trust", vec![record], now_ms());
    let current = Arc::new(Mutex::new(Published {
        snapshot,
        etag: "\"1\"".to_owned(),
    }));
    let cp = control_plane(&current, |_| {});
    let origin = Origin::start(0, ORIGIN_SECRET.as_bytes().to_vec()).expect("origin");
    let state = tempfile::tempdir().expect("temp");
    let edge = edge_config(state.path(), &cp, &origin, &signer, "60")
        .var("ORIGIN_URL", "http://127.0.0.1:9")
        .start()
        .expect("workerd");
    let auth = format!("Bearer {}", key.expose());
    let r = edge
        .get(
            "/x",
            &[("Authorization", &auth), ("Origin", "https://app.example")],
        )
        .expect("edge");
    assert_eq!(r.status, 502, "{}\n{}", r.text(), edge.logs());
    let body: Value = serde_json::from_slice(&r.body).expect("problem");
    assert_eq!(body["code"], "origin_unreachable");
    assert_eq!(body["type"], "urn:keygate:problem:origin_unreachable");
    assert_eq!(
        r.header("Access-Control-Allow-Origin"),
        Some("https://app.example"),
        "the app must be able to read why"
    );
    // From an origin the key does not allow, nothing to read.
    let r = edge
        .get(
            "/x",
            &[("Authorization", &auth), ("Origin", "https://evil.example")],
        )
        .expect("edge");
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.header("Access-Control-Allow-Origin"), None);
}
