//! Faults on PostgreSQL: while clients create, rotate and revoke keys, the control plane's
//! connections are killed (`pg_terminate_backend`) and then the database becomes unreachable for
//! a few seconds (the control plane reaches it through a TCP proxy in this process, which is
//! cut). Every acknowledged change must be there afterwards, no change may be half-applied, the
//! same process must serve again once the database is back, snapshot versions never go back,
//! and `/healthz` stays 200 while `/readyz` says 503.

use std::cell::RefCell;
use std::io::Read as _;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::http::Method;
use diesel::connection::SimpleConnection as _;
use diesel::{Connection as _, RunQueryDsl as _};
use serde_json::{json, Value};

use crate::helpers::{self, Backend, TestApp, OWNER_TOKEN};

/// A TCP proxy to one upstream address that can be cut: every open connection is closed and
/// new ones are closed as soon as they are accepted, until it is restored.
struct Proxy {
    addr: String,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let cut = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (c, o) = (cut.clone(), open.clone());
        // Lives as long as the test binary: a blocked accept cannot be interrupted portably.
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if c.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                {
                    let mut open = o.lock().unwrap();
                    open.push(client.try_clone().unwrap());
                    open.push(server.try_clone().unwrap());
                }
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        Proxy { addr, cut, open }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` until either side ends, then closes both.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if std::io::Write::write_all(&mut to, &buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    });
}

/// `host:port` of a `postgres://` URL.
fn authority(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split(['/', '?']).next().unwrap_or(rest);
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:5432")
    }
}

/// A request that may fail: `None` when no response came.
async fn try_request(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Option<helpers::Resp> {
    let req = app
        .client
        .request(method, format!("{}{path}", app.base))
        .insert_header(("authorization", format!("Bearer {OWNER_TOKEN}")));
    let mut res = match body {
        Some(b) => req.send_json(&b).await,
        None => req.send().await,
    }
    .ok()?;
    let raw = res.body().limit(64 * 1024 * 1024).await.ok()?.to_vec();
    Some(helpers::Resp {
        status: res.status(),
        headers: res.headers().clone(),
        body: serde_json::from_slice(&raw).unwrap_or(Value::Null),
        raw,
    })
}

/// What the clients were told.
#[derive(Default)]
struct Ledger {
    created: Vec<String>,
    /// (old, new) of each acknowledged rotation.
    rotated: Vec<(String, String)>,
    revoked: Vec<String>,
    /// Requests answered with something else than 2xx, or not answered.
    unacknowledged: usize,
    /// When the database became reachable again.
    recovered_at: Option<Instant>,
    /// Requests sent after that which failed (each names the request and its answer).
    failed_after_recovery: Vec<String>,
}

impl Ledger {
    fn failed(&mut self, sent: Instant, what: &str, r: &Option<helpers::Resp>) {
        self.unacknowledged += 1;
        if self.recovered_at.is_some_and(|at| sent > at) {
            self.failed_after_recovery.push(format!(
                "{what}: {:?}",
                r.as_ref().map(|r| (r.status, r.body.clone()))
            ));
        }
    }
}

async fn client(app: &TestApp, project: &str, stop: &AtomicBool, ledger: &RefCell<Ledger>) {
    let status_ok = |r: &Option<helpers::Resp>| r.as_ref().is_some_and(|r| r.status.is_success());
    while !stop.load(Ordering::SeqCst) {
        let sent = Instant::now();
        let r = try_request(
            app,
            Method::POST,
            &format!("/v1/projects/{project}/keys"),
            Some(json!({"name": "fault", "kind": "secret", "environment": "live"})),
        )
        .await;
        if !status_ok(&r) {
            ledger.borrow_mut().failed(sent, "create", &r);
            continue;
        }
        let id = r.unwrap().body["id"].as_str().unwrap().to_owned();
        ledger.borrow_mut().created.push(id.clone());

        let sent = Instant::now();
        let r = try_request(
            app,
            Method::POST,
            &format!("/v1/keys/{id}/rotate"),
            Some(json!({"grace_seconds": 60})),
        )
        .await;
        let to_revoke = if status_ok(&r) {
            let new = r.unwrap().body["id"].as_str().unwrap().to_owned();
            ledger.borrow_mut().rotated.push((id.clone(), new.clone()));
            new
        } else {
            ledger.borrow_mut().failed(sent, "rotate", &r);
            id
        };

        let sent = Instant::now();
        let r = try_request(
            app,
            Method::POST,
            &format!("/v1/keys/{to_revoke}/revoke"),
            Some(json!({"reason": "fault test"})),
        )
        .await;
        if status_ok(&r) {
            ledger.borrow_mut().revoked.push(to_revoke);
        } else {
            ledger.borrow_mut().failed(sent, "revoke", &r);
        }
    }
}

/// The snapshot version of an `ETag` (`"<version>-<hex>"`).
fn etag_version(r: &helpers::Resp) -> Option<u64> {
    let etag = r.header("etag")?;
    etag.trim_matches('"').split('-').next()?.parse().ok()
}

async fn poll_snapshots(app: &TestApp, stop: &AtomicBool, versions: &RefCell<Vec<u64>>) {
    while !stop.load(Ordering::SeqCst) {
        if let Some(r) = try_request(app, Method::GET, "/v1/snapshot", None).await {
            if r.status == 200 {
                versions
                    .borrow_mut()
                    .push(etag_version(&r).expect("a snapshot's ETag names its version"));
            }
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Ends every session of the database `name` (the control plane's pooled connections).
async fn terminate_backends(name: &str) -> usize {
    let name = name.to_owned();
    actix_web::rt::task::spawn_blocking(move || {
        #[derive(diesel::QueryableByName)]
        struct Killed {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut conn = diesel::PgConnection::establish(&helpers::postgres_url()).unwrap();
        let k: Killed = diesel::sql_query(format!(
            "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity \
             WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        ))
        .get_result(&mut conn)
        .unwrap();
        usize::try_from(k.n).unwrap()
    })
    .await
    .unwrap()
}

async fn status_of(app: &TestApp, path: &str) -> u16 {
    app.request(Method::GET, path, None, None)
        .await
        .status
        .as_u16()
}

#[derive(diesel::QueryableByName, Debug)]
struct KeyLinks {
    #[diesel(sql_type = diesel::sql_types::Text)]
    id: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    rotated_to: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    rotated_from: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    revoked_at: Option<i64>,
}

#[derive(diesel::QueryableByName, Debug)]
struct AuditEntry {
    #[diesel(sql_type = diesel::sql_types::Text)]
    action: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    target_id: String,
}

#[actix_web::test]
#[ignore = "needs PostgreSQL at KEYGATE_TEST_POSTGRES_URL; `cargo xtask test` runs it"]
async fn acknowledged_changes_survive_killed_connections_and_an_outage() {
    let upstream = authority(&helpers::postgres_url());
    let proxy = Proxy::start(upstream.clone());
    let proxy_addr = proxy.addr.clone();
    let app = helpers::spawn_with(Backend::Postgres, move |c| {
        let url = c.database_url.take().expect("a PostgreSQL URL");
        c.database_url = Some(url.replacen(&upstream, &proxy_addr, 1));
    })
    .await;
    let url = helpers::postgres_url();
    let db_name = match &app.state.db_target {
        keygate_control_plane::db::DbTarget::Postgres(u) => u
            .rsplit('/')
            .next()
            .unwrap()
            .split('?')
            .next()
            .unwrap()
            .to_owned(),
        other => panic!("expected PostgreSQL, got {other:?}"),
    };
    let direct_url = {
        let (base, _) = url.split_once('?').unwrap_or((&url, ""));
        format!("{}/{db_name}", base.rsplit_once('/').unwrap().0)
    };
    let project = app.create_project("flt").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(status_of(&app, "/readyz").await, 200);

    let stop = AtomicBool::new(false);
    let ledger = RefCell::new(Ledger::default());
    let versions = RefCell::new(Vec::new());
    let during_outage = RefCell::new(Vec::new());
    let chaos = async {
        let pause = || actix_web::rt::time::sleep(Duration::from_millis(400));
        pause().await;
        for _ in 0..3 {
            let killed = terminate_backends(&db_name).await;
            assert!(killed > 0, "the control plane had connections to kill");
            pause().await;
        }
        proxy.cut();
        // The process lives and says so; it is not ready while its database is away.
        let outage = Instant::now();
        while outage.elapsed() < Duration::from_secs(3) {
            let live = status_of(&app, "/healthz").await;
            let ready = status_of(&app, "/readyz").await;
            during_outage.borrow_mut().push((live, ready));
            actix_web::rt::time::sleep(Duration::from_millis(300)).await;
        }
        proxy.restore();
        ledger.borrow_mut().recovered_at = Some(Instant::now());
        // The same process recovers: no restart.
        let back = Instant::now();
        while status_of(&app, "/readyz").await != 200 {
            assert!(
                back.elapsed() < Duration::from_secs(30),
                "/readyz never came back"
            );
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
        let recovered = ledger.borrow().created.len();
        let back = Instant::now();
        while ledger.borrow().created.len() < recovered + 10 {
            assert!(
                back.elapsed() < Duration::from_secs(30),
                "no key created after the outage"
            );
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
        stop.store(true, Ordering::SeqCst);
    };
    futures_util::future::join5(
        chaos,
        client(&app, &project, &stop, &ledger),
        client(&app, &project, &stop, &ledger),
        client(&app, &project, &stop, &ledger),
        poll_snapshots(&app, &stop, &versions),
    )
    .await;

    // Connections killed while idle in the pool are replaced before use, not handed to the
    // next requests.
    let killed = terminate_backends(&db_name).await;
    assert!(killed > 0, "the pool kept connections to kill");
    for _ in 0..10 {
        let r = try_request(
            &app,
            Method::POST,
            &format!("/v1/projects/{project}/keys"),
            Some(json!({"name": "after", "kind": "secret", "environment": "live"})),
        )
        .await;
        let r = r.expect("an answer");
        assert_eq!(
            r.status, 201,
            "after killing idle connections: {:?}",
            r.body
        );
        let id = r.body["id"].as_str().unwrap().to_owned();
        ledger.borrow_mut().created.push(id);
    }

    let during_outage = during_outage.into_inner();
    assert!(!during_outage.is_empty());
    for (live, ready) in &during_outage {
        assert_eq!(*live, 200, "/healthz during the outage");
        assert_eq!(*ready, 503, "/readyz during the outage");
    }
    assert_eq!(status_of(&app, "/healthz").await, 200);

    let ledger = ledger.into_inner();
    assert!(
        !ledger.created.is_empty() && !ledger.rotated.is_empty() && !ledger.revoked.is_empty(),
        "the clients made changes: {} created, {} rotated, {} revoked",
        ledger.created.len(),
        ledger.rotated.len(),
        ledger.revoked.len()
    );
    // Once the database is back, every request succeeds: connections that died while idle in
    // the pool are replaced before use rather than handed to requests.
    assert_eq!(
        ledger.failed_after_recovery,
        Vec::<String>::new(),
        "requests failed after the database was back"
    );
    assert!(
        ledger.unacknowledged > 0,
        "the faults reached the clients (otherwise this test proves nothing)"
    );

    // Read back without the proxy or the control plane.
    let mut conn = diesel::PgConnection::establish(&direct_url).unwrap();
    conn.batch_execute("SELECT 1").unwrap();
    let keys: Vec<KeyLinks> =
        diesel::sql_query("SELECT id, rotated_to, rotated_from, revoked_at FROM api_keys")
            .load(&mut conn)
            .unwrap();
    let by_id: std::collections::HashMap<&str, &KeyLinks> =
        keys.iter().map(|k| (k.id.as_str(), k)).collect();
    let audit: Vec<AuditEntry> =
        diesel::sql_query("SELECT action, target_id FROM audit_log WHERE target_id LIKE 'key_%'")
            .load(&mut conn)
            .unwrap();
    let audited = |action: &str, id: &str| {
        audit
            .iter()
            .any(|a| a.action == action && a.target_id == id)
    };

    // Everything acknowledged is there.
    for id in &ledger.created {
        assert!(
            by_id.contains_key(id.as_str()),
            "acknowledged key {id} is missing"
        );
    }
    for (old, new) in &ledger.rotated {
        let o = by_id[old.as_str()];
        assert_eq!(
            o.rotated_to.as_deref(),
            Some(new.as_str()),
            "rotation of {old}"
        );
        assert_eq!(
            by_id[new.as_str()].rotated_from.as_deref(),
            Some(old.as_str())
        );
    }
    for id in &ledger.revoked {
        assert!(
            by_id[id.as_str()].revoked_at.is_some(),
            "revocation of {id}"
        );
    }
    // Nothing is half-applied, acknowledged or not: each rotation links both keys and is
    // audited, each key's creation and each revocation is audited.
    for k in &keys {
        assert!(audited("key.create", &k.id), "{k:?} has no creation audit");
        if let Some(to) = &k.rotated_to {
            let new = by_id
                .get(to.as_str())
                .unwrap_or_else(|| panic!("{k:?} was rotated to a key that does not exist"));
            assert_eq!(new.rotated_from.as_deref(), Some(k.id.as_str()), "{k:?}");
            assert!(audited("key.rotate", &k.id), "{k:?} rotation not audited");
        }
        if let Some(from) = &k.rotated_from {
            assert_eq!(
                by_id[from.as_str()].rotated_to.as_deref(),
                Some(k.id.as_str()),
                "{k:?}: its predecessor does not point at it"
            );
        }
        if k.revoked_at.is_some() {
            assert!(audited("key.revoke", &k.id), "{k:?} revocation not audited");
        }
    }

    // Versions never went back, and the snapshot now reflects every change.
    let versions = versions.into_inner();
    assert!(versions.len() > 2, "the poller saw snapshots: {versions:?}");
    assert!(
        versions.windows(2).all(|w| w[0] <= w[1]),
        "snapshot versions went back: {versions:?}"
    );
    let last = app.get("/v1/snapshot", OWNER_TOKEN).await;
    assert_eq!(last.status, 200);
    #[derive(diesel::QueryableByName)]
    struct Version {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        version: i64,
    }
    let v: Version = diesel::sql_query("SELECT version FROM snapshot_state WHERE id = 1")
        .get_result(&mut conn)
        .unwrap();
    let served = etag_version(&last).unwrap();
    assert_eq!(served, u64::try_from(v.version).unwrap());
    assert!(served >= *versions.last().unwrap());
}
