//! Several replicas on one PostgreSQL database: two `keygate serve` processes started together
//! (migrations take turns under an advisory lock), a revocation through one is in the other's
//! next snapshot at once, an API token deleted through one stops working on the other once
//! that one's token cache has expired, and each background job's tick runs once across
//! replicas.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use diesel::Connection as _;
use keygate_control_plane::auth::TOKEN_CACHE_TTL;
use keygate_control_plane::jobs::claim_tick;
use keygate_shared::snapshot::{verify_snapshot, TrustedKeys};
use keygate_shared::KeyHash;
use serde_json::{json, Value};

use crate::helpers::{PgDatabase, OWNER_TOKEN};

const JWT_SECRET: &str = "replicas-share-this-jwt-secret-0123456789abcdef";

/// One `keygate serve` process, killed on drop.
struct Replica {
    child: Child,
    base: String,
    client: awc::Client,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data_dir: &std::path::Path, database_url: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_keygate"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", database_url)
        .env("KEYGATE_BOOTSTRAP_TOKEN", OWNER_TOKEN)
        .env("KEYGATE_JWT_SECRET", JWT_SECRET)
        .env("KEYGATE_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn keygate serve")
}

/// Waits for the process's "listening" log line and keeps draining its output.
fn ready(mut child: Child) -> Replica {
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let port = loop {
        let Some(Ok(line)) = lines.next() else {
            let status = child.wait();
            panic!("keygate serve ended before listening: {status:?}");
        };
        if line.contains("control plane listening") {
            let v: Value = serde_json::from_str(&line).expect("a JSON log line");
            let port = v["fields"]["port"]
                .as_u64()
                .or_else(|| v["port"].as_u64())
                .unwrap_or_else(|| panic!("no port in {line}"));
            break port;
        }
    };
    std::thread::spawn(move || for _ in lines.by_ref() {});
    Replica {
        child,
        base: format!("http://127.0.0.1:{port}"),
        client: awc::Client::builder()
            .timeout(Duration::from_secs(60))
            .finish(),
    }
}

impl Replica {
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value, Vec<u8>) {
        let req = self
            .client
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .insert_header(("authorization", format!("Bearer {token}")));
        let mut res = match body {
            Some(b) => req.send_json(&b).await,
            None => req.send().await,
        }
        .expect("request");
        let raw = res.body().limit(64 * 1024 * 1024).await.unwrap().to_vec();
        (
            res.status().as_u16(),
            serde_json::from_slice(&raw).unwrap_or(Value::Null),
            raw,
        )
    }

    /// This replica's signed snapshot, verified with `trusted`: its version and whether it lists
    /// `key` as revoked, reading the key's shard from `shards` (an edge behind a load balancer
    /// may get the manifest from one replica and the shard from another).
    async fn snapshot_says_revoked(
        &self,
        shards: &Replica,
        trusted: &TrustedKeys,
        key: &str,
    ) -> (u64, bool) {
        let (status, _, raw) = self.call("GET", "/v1/snapshot", OWNER_TOKEN, None).await;
        assert_eq!(status, 200);
        // The replicas run on the system clock.
        let now = keygate_control_plane::Clock::system().now_ms();
        let snap = verify_snapshot(&raw, trusted, None, now).expect("the snapshot verifies");
        let index =
            keygate_shared::snapshot::shard_index(&KeyHash::of(key), snap.manifest().shard_bits);
        let digest = snap.shard_digest(index).unwrap().to_hex();
        let (status, _, raw) = shards
            .call(
                "GET",
                &format!("/v1/snapshot/shards/{digest}"),
                OWNER_TOKEN,
                None,
            )
            .await;
        assert_eq!(status, 200, "shard {digest} of version {}", snap.version());
        let records = snap
            .verify_shard(index, &raw)
            .expect("the shard verifies")
            .into_records()
            .unwrap();
        let rec = records
            .iter()
            .find(|r| r.hash == KeyHash::of(key))
            .expect("the key is in its shard");
        (snap.version(), rec.revoked)
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700)).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        std::fs::copy(entry.path(), &target).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

#[actix_web::test]
#[ignore = "needs PostgreSQL at KEYGATE_TEST_POSTGRES_URL; `cargo xtask test` runs it"]
async fn two_serve_processes_on_one_database() {
    let db = PgDatabase::create();
    // As on two hosts: each replica has its own data directory, holding a copy of the one
    // signing keyring (made once, by `keygate migrate`), and both get the same JWT secret.
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let migrate = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .arg("--data-dir")
        .arg(dir_a.path())
        .arg("migrate")
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    // Both start together on the migrated database; each also stores the bootstrap token.
    copy_dir(
        &dir_a.path().join("signing-keys"),
        &dir_b.path().join("signing-keys"),
    );
    let (a, b) = (start(dir_a.path(), &db.url), start(dir_b.path(), &db.url));
    let (a, b) = (ready(a), ready(b));

    // One signing key: an edge trusting it accepts either replica's snapshots.
    let (_, pk_a, _) = a
        .call("GET", "/v1/snapshot/public-key", OWNER_TOKEN, None)
        .await;
    let (_, pk_b, _) = b
        .call("GET", "/v1/snapshot/public-key", OWNER_TOKEN, None)
        .await;
    assert_eq!(pk_a["key_id"], pk_b["key_id"]);
    let trusted = TrustedKeys::from_base64url_list(pk_a["public_key"].as_str().unwrap()).unwrap();

    // A key created and then revoked through A is revoked in B's snapshot within the version memory.
    let (s, project, _) = a
        .call(
            "POST",
            "/v1/projects",
            OWNER_TOKEN,
            Some(json!({"name": "Replicated", "key_prefix": "rep"})),
        )
        .await;
    assert_eq!(s, 201, "{project}");
    let (s, key, _) = a
        .call(
            "POST",
            &format!("/v1/projects/{}/keys", project["id"].as_str().unwrap()),
            OWNER_TOKEN,
            Some(json!({"name": "k", "kind": "secret", "environment": "live"})),
        )
        .await;
    assert_eq!(s, 201, "{key}");
    let plaintext = key["key"].as_str().unwrap();
    let (before, revoked) = b.snapshot_says_revoked(&b, &trusted, plaintext).await;
    assert!(!revoked);
    let (s, _, _) = a
        .call(
            "POST",
            &format!("/v1/keys/{}/revoke", key["id"].as_str().unwrap()),
            OWNER_TOKEN,
            Some(json!({})),
        )
        .await;
    assert_eq!(s, 200);
    // B answers polls from the version it read for up to VERSION_MEMORY_MS and learns of its
    // own writes at once, but not of A's: past that time, B's next snapshot has the revocation.
    actix_web::rt::time::sleep(std::time::Duration::from_millis(
        keygate_control_plane::snapshot::VERSION_MEMORY_MS as u64 + 20,
    ))
    .await;
    let (after, revoked) = b.snapshot_says_revoked(&b, &trusted, plaintext).await;
    assert!(
        revoked,
        "B's snapshot still lists the key revoked through A as valid"
    );
    assert_eq!(after, before + 1);

    // Another change through A: an edge gets A's manifest, then the shard from B, which has
    // not seen the new version yet.
    let (s, other, _) = a
        .call(
            "POST",
            &format!("/v1/projects/{}/keys", project["id"].as_str().unwrap()),
            OWNER_TOKEN,
            Some(json!({"name": "k2", "kind": "secret", "environment": "live"})),
        )
        .await;
    assert_eq!(s, 201, "{other}");
    let (newer, revoked) = a
        .snapshot_says_revoked(&b, &trusted, other["key"].as_str().unwrap())
        .await;
    assert!(!revoked);
    assert_eq!(newer, after + 1);
    let (s, verdict, _) = b
        .call(
            "POST",
            "/v1/verify",
            OWNER_TOKEN,
            Some(json!({"key": plaintext})),
        )
        .await;
    assert_eq!((s, verdict["code"].as_str()), (200, Some("revoked_key")));

    // A token made on A works on B (and is now in B's cache); deleted through A, it stops at
    // once on A and on B once B's cache entry is older than TOKEN_CACHE_TTL.
    let (s, token, _) = a
        .call(
            "POST",
            "/v1/admin-tokens",
            OWNER_TOKEN,
            Some(json!({"name": "ci", "role": "admin"})),
        )
        .await;
    assert_eq!(s, 201, "{token}");
    let secret = token["token"].as_str().unwrap();
    assert_eq!(b.call("GET", "/v1/projects", secret, None).await.0, 200);
    let (s, _, _) = a
        .call(
            "DELETE",
            &format!("/v1/admin-tokens/{}", token["id"].as_str().unwrap()),
            OWNER_TOKEN,
            None,
        )
        .await;
    assert_eq!(s, 204);
    assert_eq!(a.call("GET", "/v1/projects", secret, None).await.0, 401);
    actix_web::rt::time::sleep(TOKEN_CACHE_TTL + Duration::from_millis(100)).await;
    assert_eq!(b.call("GET", "/v1/projects", secret, None).await.0, 401);
}

/// Replicas' loops claim each tick window of a job; of several claims in the same window, on
/// separate connections and at the same moment, exactly one wins, and a claim later in the
/// same window (loops that do not overlap) loses too.
#[test]
#[ignore = "needs PostgreSQL at KEYGATE_TEST_POSTGRES_URL; `cargo xtask test` runs it"]
fn each_tick_runs_once_across_replicas() {
    let db = PgDatabase::create();
    {
        let dir = tempfile::tempdir().unwrap();
        let mut config = keygate_control_plane::Config::new(dir.path());
        config.database_url = Some(db.url.clone());
        keygate_control_plane::startup::open_database(&config).unwrap();
    }
    const REPLICAS: usize = 4;
    const WINDOWS: i64 = 25;
    let interval = 60_000;
    let start = 1_800_000_000_000_i64 / interval * interval;
    let barrier = Arc::new(Barrier::new(REPLICAS));
    let wins: Vec<Vec<bool>> = (0..REPLICAS)
        .map(|r| {
            let (url, barrier) = (db.url.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut conn = keygate_control_plane::db::DbConn::Postgresql(
                    diesel::PgConnection::establish(&url).unwrap(),
                );
                (0..WINDOWS)
                    .map(|w| {
                        barrier.wait();
                        // Each replica's clock is a little off, within the window.
                        let now = start + w * interval + 1_000 * r as i64;
                        claim_tick(&mut conn, "test.job", interval, now).unwrap()
                    })
                    .collect()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    for w in 0..WINDOWS as usize {
        let winners = wins.iter().filter(|r| r[w]).count();
        assert_eq!(winners, 1, "window {w} was claimed {winners} times");
    }
    let mut conn = keygate_control_plane::db::DbConn::Postgresql(
        diesel::PgConnection::establish(&db.url).unwrap(),
    );
    let last = start + (WINDOWS - 1) * interval;
    // Later in the last window: already run.
    assert!(!claim_tick(&mut conn, "test.job", interval, last + interval - 1).unwrap());
    // Another job has windows of its own.
    assert!(claim_tick(&mut conn, "other.job", interval, last).unwrap());
    // The next window runs.
    assert!(claim_tick(&mut conn, "test.job", interval, last + interval).unwrap());
}

crate::both_backends!(a_job_runs_once_per_window);

/// The loop's unit: a tick runs only in a window nobody ran yet.
async fn a_job_runs_once_per_window(app: crate::helpers::TestApp) {
    use keygate_control_plane::jobs::run_tick;
    let interval = Duration::from_secs(60);
    let window = 60_000 * (app.clock.now_ms() / 60_000 + 1);
    let noop: keygate_control_plane::jobs::Tick = |_, _| Ok(());
    let failing: keygate_control_plane::jobs::Tick = |_, _| anyhow::bail!("tick failed");
    assert!(run_tick(&app.state, "test.window", interval, noop, window).unwrap());
    assert!(!run_tick(&app.state, "test.window", interval, noop, window + 59_999).unwrap());
    // A failed tick is not run again within its window; the next window runs.
    assert!(run_tick(
        &app.state,
        "test.window",
        interval,
        failing,
        window + 60_000
    )
    .is_err());
    assert!(!run_tick(&app.state, "test.window", interval, noop, window + 60_001).unwrap());
    assert!(run_tick(&app.state, "test.window", interval, noop, window + 120_000).unwrap());
}
