//! The edge Worker in `workerd`, against a stub control plane and a stub origin: vars and
//! secrets reach it, it fetches services on 127.0.0.1, the `Limiter` Durable Object keeps
//! counters on disk, and the scheduled handler copies the snapshot into the disk-backed KV
//! namespace, from which a restarted runtime serves while the control plane is down.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use keygate_shared::{
    Environment, KeyPrefix, KeyRecord, Kind, PlaintextKey, RateLimit, SnapshotSigner,
};
use keygate_tests::fixtures::{plain_record, SignedSnapshot};
use keygate_tests::http::{self, StubResponse, StubServer};
use keygate_tests::workerd::{workspace_root, Workerd, WorkerdConfig};
use serde_json::Value;

const EDGE_TOKEN: &str = "edge-token-for-the-runtime-test";
const ORIGIN_SECRET: &str = "origin-secret-for-the-runtime-test";
const PROJECT: &str = "prj_runtime";

/// The test plays the control plane, which signs with the current time.
#[allow(clippy::disallowed_methods)]
fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(since.as_millis()).expect("time fits in i64")
}

fn key(secret: &str) -> PlaintextKey {
    let prefix = KeyPrefix::parse("e2e").expect("valid prefix");
    PlaintextKey::from_parts(&prefix, Kind::Secret, Environment::Live, secret)
        .expect("32 base62 characters")
}

fn record(key: &PlaintextKey, key_id: &str, rate_limit: Option<RateLimit>) -> KeyRecord {
    KeyRecord {
        rate_limit,
        ..plain_record(key, key_id, PROJECT)
    }
}

/// A control plane that serves one signed snapshot and its shards, and can be taken down.
struct ControlPlane {
    server: StubServer,
    down: Arc<AtomicBool>,
}

impl ControlPlane {
    fn start(records: Vec<KeyRecord>, signer: &SnapshotSigner) -> ControlPlane {
        let snapshot = SignedSnapshot::sign(signer, 1, PROJECT, records, now_ms());
        let down = Arc::new(AtomicBool::new(false));
        let is_down = Arc::clone(&down);
        let server = StubServer::start(move |req| {
            if is_down.load(Ordering::SeqCst) {
                return StubResponse::empty(503);
            }
            if req.header("authorization") != Some(&format!("Bearer {EDGE_TOKEN}")) {
                return StubResponse::empty(401);
            }
            if let Some(resp) = snapshot.respond(req, "\"v1\"") {
                return resp;
            }
            let path = req.path();
            if path == "/v1/usage" && req.method == "POST" {
                return StubResponse::empty(204);
            }
            StubResponse::empty(404)
        })
        .expect("start control plane stub");
        ControlPlane { server, down }
    }
}

fn start_edge(
    state: &std::path::Path,
    cp: &ControlPlane,
    origin: &StubServer,
    pk: &str,
) -> Workerd {
    WorkerdConfig::new(workspace_root(), state)
        .var("CONTROL_PLANE_URL", cp.server.url())
        .var("ORIGIN_URL", origin.url())
        .var("SNAPSHOT_REFRESH_SECONDS", "2")
        .secret("EDGE_TOKEN", EDGE_TOKEN)
        .secret("SNAPSHOT_PUBLIC_KEYS", pk)
        .secret("ORIGIN_HMAC_SECRET", ORIGIN_SECRET)
        .start()
        .expect("workerd starts with the built edge (run `cargo xtask build-edge` first)")
}

fn problem_code(resp: &http::Response) -> String {
    let v: Value = serde_json::from_slice(&resp.body).expect("a problem+json body");
    v["code"].as_str().unwrap_or_default().to_owned()
}

fn call(edge: &Workerd, path: &str, key: Option<&PlaintextKey>) -> http::Response {
    let auth = key.map(|k| format!("Bearer {}", k.expose()));
    let mut headers = vec![("CF-Connecting-IP", "203.0.113.7")];
    if let Some(a) = auth.as_deref() {
        headers.push(("Authorization", a));
    }
    edge.get(path, &headers).expect("edge answers")
}

#[test]
fn edge_runs_in_workerd_with_kv_durable_objects_and_scheduled_events() {
    let signer = SnapshotSigner::from_seed(&[7u8; 32]);
    let free = key("Free0000000000000000000000000000");
    let limited = key("Limited0000000000000000000000000");
    let two_per_hour = RateLimit {
        limit: NonZeroU32::new(2).expect("non-zero"),
        period_seconds: NonZeroU32::new(3600).expect("non-zero"),
    };
    let cp = ControlPlane::start(
        vec![
            record(&free, "key_free", None),
            record(&limited, "key_limited", Some(two_per_hour)),
        ],
        &signer,
    );
    let origin = StubServer::start(|req| {
        StubResponse::json(200, format!("{{\"path\":\"{}\"}}", req.path()))
    })
    .expect("start origin stub");
    let state = tempfile::tempdir().expect("temp dir");
    let pk = signer.public_key_base64url();

    let edge = start_edge(state.path(), &cp, &origin, &pk);
    let logs = || edge.logs();

    // A fetch answered by the Worker itself.
    let resp = call(&edge, "/hello", None);
    assert_eq!(resp.status, 401, "{}\n{}", resp.text(), logs());
    assert_eq!(problem_code(&resp), "missing_key");
    assert!(resp.header("www-authenticate").is_some());

    // Vars and secrets reach the Worker: it fetches the snapshot from 127.0.0.1 with the edge
    // token, verifies it with the public key, and forwards to the origin.
    let resp = call(&edge, "/hello?x=1", Some(&free));
    assert_eq!(resp.status, 200, "{}\n{}", resp.text(), logs());
    assert_eq!(resp.text(), r#"{"path":"/hello"}"#);
    let seen = origin.received();
    let forwarded = seen.last().expect("origin saw the request");
    assert_eq!(forwarded.target, "/hello?x=1");
    assert_eq!(forwarded.header("keygate-key-id"), Some("key_free"));
    assert_eq!(forwarded.header("keygate-project-id"), Some(PROJECT));
    assert!(forwarded.header("authorization").is_none(), "key forwarded");
    assert!(forwarded.header("keygate-signature").is_some());

    // The Limiter Durable Object counts across requests.
    for _ in 0..2 {
        let resp = call(&edge, "/limited", Some(&limited));
        assert_eq!(resp.status, 200, "{}\n{}", resp.text(), logs());
    }
    let resp = call(&edge, "/limited", Some(&limited));
    assert_eq!(resp.status, 429, "{}\n{}", resp.text(), logs());
    assert_eq!(problem_code(&resp), "rate_limited");
    assert!(resp.header("retry-after").is_some());

    // A scheduled event copies the snapshot and its shards into KV, on disk.
    let outcome = edge.trigger_scheduled("* * * * *").expect("trigger");
    assert!(outcome.is_ok(), "{outcome:?}\n{}", logs());
    let kv = state.path().join("kv");
    assert!(
        kv.join("snapshot").is_file(),
        "no snapshot in KV after the scheduled event:\n{}",
        logs()
    );
    drop(edge);

    // With the control plane down, a fresh runtime on the same state starts from KV, and the
    // Durable Object's counters survived the restart.
    cp.down.store(true, Ordering::SeqCst);
    let edge = start_edge(state.path(), &cp, &origin, &pk);
    let resp = call(&edge, "/after-restart", Some(&free));
    assert_eq!(resp.status, 200, "{}\n{}", resp.text(), edge.logs());
    assert_eq!(resp.text(), r#"{"path":"/after-restart"}"#);
    let resp = call(&edge, "/limited", Some(&limited));
    assert_eq!(resp.status, 429, "{}\n{}", resp.text(), edge.logs());
}
