//! Webhooks against a real HTTP receiver on 127.0.0.1: signatures, payloads, event filters,
//! disabled endpoints, retries with backoff and their cap, giving up, manual retries,
//! `key.expiring`, a restart in the middle of a retry, the API's roles and validation, and the
//! console page.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::http::Method;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use keygate_control_plane::delivery::{deliver_due, Sender};
use keygate_control_plane::domain::webhooks::queue_expiring;
use serde_json::{json, Value};

use crate::helpers::{spawn_with, Backend, TestApp, OWNER_TOKEN};

const DAY_MS: i64 = 86_400_000;

// ---------------------------------------------------------------------------------------
// The receiver.

#[derive(Debug, Clone)]
struct Received {
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
}

#[derive(Default)]
struct Inbox {
    requests: Mutex<Vec<Received>>,
    /// Answer 500 to this many requests first, then 200.
    fail_first: AtomicUsize,
}

/// An HTTP server on 127.0.0.1 that records every request to any path.
struct Receiver {
    url: String,
    inbox: Arc<Inbox>,
    handle: actix_web::dev::ServerHandle,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

async fn record(req: HttpRequest, body: web::Bytes, inbox: web::Data<Inbox>) -> HttpResponse {
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                v.to_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let mut requests = inbox.requests.lock().unwrap();
    requests.push(Received {
        headers,
        body: body.to_vec(),
    });
    let failing = inbox
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        HttpResponse::InternalServerError().body("not now")
    } else {
        HttpResponse::Ok().body("thanks")
    }
}

impl Receiver {
    async fn start(fail_first: usize) -> Receiver {
        let inbox = Arc::new(Inbox::default());
        inbox.fail_first.store(fail_first, Ordering::SeqCst);
        let data = web::Data::from(inbox.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(record))
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Receiver {
            url: format!("http://127.0.0.1:{port}/hooks/keygate"),
            inbox,
            handle,
        }
    }

    fn requests(&self) -> Vec<Received> {
        self.inbox.requests.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.inbox.requests.lock().unwrap().len()
    }

    fn fail_next(&self, n: usize) {
        self.inbox.fail_first.store(n, Ordering::SeqCst);
    }

    async fn wait_for(&self, n: usize) -> Vec<Received> {
        eventually(&format!("{n} requests at the receiver"), || async {
            let r = self.requests();
            (r.len() >= n).then_some(r)
        })
        .await
    }

    fn types(&self) -> Vec<String> {
        let mut t: Vec<String> = self
            .requests()
            .iter()
            .map(|r| r.json()["type"].as_str().unwrap().to_owned())
            .collect();
        t.sort();
        t
    }
}

/// Polls `f` until it gives a value, for at most 15 seconds.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Helpers.

/// A control plane whose delivery worker polls every 20 ms.
async fn start(backend: Backend, max_attempts: i64) -> TestApp {
    spawn_with(backend, |c| {
        c.webhooks.poll_interval = Duration::from_millis(20);
        c.webhooks.retry_base_seconds = 10;
        c.webhooks.retry_cap_seconds = 40;
        c.webhooks.max_attempts = max_attempts;
        c.webhooks.timeout_seconds = 5;
        // The receiver is on 127.0.0.1, as a self-hosted receiver on a private network is.
        c.webhooks.allow_private_targets = true;
    })
    .await
}

macro_rules! webhook_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[actix_web::test]
                async fn sqlite() {
                    let app = super::start(crate::helpers::Backend::Sqlite, 5).await;
                    super::$name(app).await;
                }
                #[actix_web::test]
                #[ignore = "needs PostgreSQL at KEYGATE_TEST_POSTGRES_URL; `cargo xtask test` runs it"]
                async fn postgres() {
                    let app = super::start(crate::helpers::Backend::Postgres, 5).await;
                    super::$name(app).await;
                }
            }
        )*
    };
}

webhook_tests!(
    signed_deliveries_of_key_events,
    filters_and_disabled_endpoints,
    retries_back_off_up_to_the_cap_then_fail,
    key_expiring_once_per_key_and_endpoint,
    restart_in_the_middle_of_a_retry_loses_nothing,
    api_roles_validation_and_secrets,
    console_page,
);

/// A control plane with the default webhook settings (private targets refused) whose delivery
/// worker does not poll again during the test: the test sends with its own [`Sender`].
async fn start_guarded(backend: Backend) -> TestApp {
    spawn_with(backend, |c| {
        c.webhooks.poll_interval = Duration::from_secs(3600);
    })
    .await
}

mod ssrf_guard_at_create {
    #[actix_web::test]
    async fn sqlite() {
        let app = super::start_guarded(crate::helpers::Backend::Sqlite).await;
        super::ssrf_guard_at_create(app).await;
    }
    #[actix_web::test]
    #[ignore = "needs PostgreSQL at KEYGATE_TEST_POSTGRES_URL; `cargo xtask test` runs it"]
    async fn postgres() {
        let app = super::start_guarded(crate::helpers::Backend::Postgres).await;
        super::ssrf_guard_at_create(app).await;
    }
}

mod ssrf_guard_at_send {
    #[actix_web::test]
    async fn sqlite() {
        let app = super::start_guarded(crate::helpers::Backend::Sqlite).await;
        super::ssrf_guard_at_send(app).await;
    }
    #[actix_web::test]
    #[ignore = "needs PostgreSQL at KEYGATE_TEST_POSTGRES_URL; `cargo xtask test` runs it"]
    async fn postgres() {
        let app = super::start_guarded(crate::helpers::Backend::Postgres).await;
        super::ssrf_guard_at_send(app).await;
    }
}

async fn create_endpoint(
    app: &TestApp,
    url: &str,
    events: &[&str],
    extra: Value,
) -> (String, String) {
    let mut body = json!({"url": url, "events": events});
    if let Value::Object(m) = extra {
        body.as_object_mut().unwrap().extend(m);
    }
    let r = app.post("/v1/webhooks", OWNER_TOKEN, body).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    (
        r.body["id"].as_str().unwrap().to_owned(),
        r.body["secret"].as_str().unwrap().to_owned(),
    )
}

async fn deliveries(app: &TestApp, wid: &str) -> Vec<Value> {
    let r = app
        .get(&format!("/v1/webhooks/{wid}/deliveries"), OWNER_TOKEN)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body["items"].as_array().unwrap().clone()
}

/// Waits until the endpoint's only delivery satisfies `pred`, and returns it.
async fn wait_delivery(
    app: &TestApp,
    wid: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    eventually(what, || async {
        let d = deliveries(app, wid).await;
        d.first().filter(|d| pred(d)).cloned()
    })
    .await
}

fn ms(rfc3339: &Value) -> i64 {
    keygate_control_plane::timefmt::parse_ms(rfc3339.as_str().unwrap()).unwrap()
}

/// Checks a received request: the signature verifies with the endpoint's secret, the headers
/// are there, the body is `{id, type, created_at, data}`.
fn check_signed(app: &TestApp, r: &Received, secret: &str) -> Value {
    let header = r.header("keygate-webhook-signature");
    let now_s = app.clock.now_ms() / 1000;
    keygate_shared::webhook::verify(secret.as_bytes(), header, &r.body, now_s, 300)
        .unwrap_or_else(|e| panic!("signature {header:?} does not verify: {e}"));
    assert_eq!(
        keygate_shared::webhook::verify(b"whsec_another", header, &r.body, now_s, 300),
        Err(keygate_shared::webhook::WebhookSignatureError::Mismatch)
    );
    assert_eq!(r.header("content-type"), "application/json");
    assert!(r.header("user-agent").starts_with("Keygate-Webhooks/"));
    assert!(r.header("keygate-delivery-id").starts_with("dlv_"));
    let body = r.json();
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 4, "{body}");
    assert!(body["id"].as_str().unwrap().starts_with("evt_"));
    assert_eq!(r.header("keygate-event-id"), body["id"].as_str().unwrap());
    ms(&body["created_at"]);
    assert!(body["data"].is_object());
    body
}

// ---------------------------------------------------------------------------------------
// The tests.

async fn signed_deliveries_of_key_events(app: TestApp) {
    let rx = Receiver::start(0).await;
    let (wid, secret) = create_endpoint(
        &app,
        &rx.url,
        &["key.created", "key.rotated", "key.revoked"],
        json!({}),
    )
    .await;
    let p = app.create_project("acme").await;
    let old = app.secret_key(p["id"].as_str().unwrap()).await;
    let old_id = old["id"].as_str().unwrap();
    let r = app
        .post(
            &format!("/v1/keys/{old_id}/rotate"),
            OWNER_TOKEN,
            json!({"grace_seconds": 600}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let new = r.body;
    let new_id = new["id"].as_str().unwrap();
    // The old key leaks during its grace period: the leak report revokes it.
    let r = app
        .post(
            "/v1/leaks",
            OWNER_TOKEN,
            json!({"keys": [old["key"]], "source": "github"}),
        )
        .await;
    assert_eq!(r.body["items"][0]["status"], "revoked", "{:?}", r.body);
    let r = app
        .post(
            &format!("/v1/keys/{new_id}/revoke"),
            OWNER_TOKEN,
            json!({"reason": "done"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    let got = rx.wait_for(5).await;
    let mut by_type: HashMap<String, Vec<Value>> = HashMap::new();
    for r in &got {
        let body = check_signed(&app, r, &secret);
        let raw = String::from_utf8_lossy(&r.body);
        for plaintext in [&old["key"], &new["key"]] {
            assert!(!raw.contains(plaintext.as_str().unwrap()), "{raw}");
        }
        assert!(!raw.contains("hash"), "{raw}");
        by_type
            .entry(body["type"].as_str().unwrap().to_owned())
            .or_default()
            .push(body["data"].clone());
    }
    let created: Vec<&str> = by_type["key.created"]
        .iter()
        .map(|d| d["key"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(created.len(), 2);
    assert!(created.contains(&old_id) && created.contains(&new_id));
    let rotated = &by_type["key.rotated"];
    assert_eq!(rotated.len(), 1);
    assert_eq!(rotated[0]["key"]["id"], old_id);
    assert_eq!(rotated[0]["key"]["rotated_to"], new_id);
    assert_eq!(rotated[0]["new_key"]["id"], new_id);
    assert_eq!(rotated[0]["grace_seconds"], 600);
    let revoked = &by_type["key.revoked"];
    assert_eq!(revoked.len(), 2);
    let leak = revoked.iter().find(|d| d["key"]["id"] == old_id).unwrap();
    assert_eq!(leak["reason"], "leaked: reported by github");
    assert_eq!(leak["key"]["status"], "revoked");
    let plain = revoked.iter().find(|d| d["key"]["id"] == new_id).unwrap();
    assert_eq!(plain["reason"], "done");
    assert!(plain["actor"].as_str().unwrap().starts_with("tok_"));

    // The delivery log: five successes, each with one attempt answered 200.
    let log = eventually("five succeeded deliveries", || async {
        let d = deliveries(&app, &wid).await;
        (d.len() == 5 && d.iter().all(|d| d["status"] == "succeeded")).then_some(d)
    })
    .await;
    for d in &log {
        assert_eq!(d["attempts"], 1);
        assert_eq!(d["last_status_code"], 200);
        assert_eq!(d["next_attempt_at"], Value::Null);
        assert!(d["last_attempt_at"].is_string());
    }
    // Newest first.
    let ids: Vec<&str> = log.iter().map(|d| d["id"].as_str().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(ids, sorted);
    let d = &log[0];
    let detail = app
        .get(
            &format!(
                "/v1/webhooks/{wid}/deliveries/{}",
                d["id"].as_str().unwrap()
            ),
            OWNER_TOKEN,
        )
        .await;
    assert_eq!(detail.status, 200, "{:?}", detail.body);
    assert_eq!(detail.body["event"]["id"], d["event_id"]);
    assert_eq!(detail.body["event"]["type"], d["event_type"]);
    let attempts = detail.body["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["attempt"], 1);
    assert_eq!(attempts[0]["status_code"], 200);
    assert_eq!(attempts[0]["error"], Value::Null);
    // The body sent is the event of the log.
    let sent = got
        .iter()
        .find(|r| r.header("keygate-delivery-id") == d["id"].as_str().unwrap())
        .unwrap()
        .json();
    assert_eq!(sent["data"], detail.body["event"]["data"]);
    // Pages.
    let page = app
        .get(
            &format!("/v1/webhooks/{wid}/deliveries?limit=2"),
            OWNER_TOKEN,
        )
        .await;
    assert_eq!(page.body["items"].as_array().unwrap().len(), 2);
    let cursor = page.body["next_cursor"].as_str().unwrap();
    let rest = app
        .get(
            &format!("/v1/webhooks/{wid}/deliveries?limit=10&cursor={cursor}"),
            OWNER_TOKEN,
        )
        .await;
    assert_eq!(rest.body["items"].as_array().unwrap().len(), 3);
    assert_eq!(rest.body["next_cursor"], Value::Null);
    let none = app
        .get(
            &format!("/v1/webhooks/{wid}/deliveries?status=failed"),
            OWNER_TOKEN,
        )
        .await;
    assert_eq!(none.body["items"], json!([]));
}

async fn filters_and_disabled_endpoints(app: TestApp) {
    let rx_revoked = Receiver::start(0).await;
    let rx_created = Receiver::start(0).await;
    let rx_disabled = Receiver::start(0).await;
    let (revoked_only, _) =
        create_endpoint(&app, &rx_revoked.url, &["key.revoked"], json!({})).await;
    let (created_only, _) =
        create_endpoint(&app, &rx_created.url, &["key.created"], json!({})).await;
    let all = [
        "key.created",
        "key.rotated",
        "key.revoked",
        "key.expiring",
        "alert.raised",
    ];
    let (disabled, _) =
        create_endpoint(&app, &rx_disabled.url, &all, json!({"enabled": false})).await;

    let p = app.create_project("acme").await;
    let pid = p["id"].as_str().unwrap();
    let k = app.secret_key(pid).await;
    let kid = k["id"].as_str().unwrap();
    let r = app
        .post(&format!("/v1/keys/{kid}/revoke"), OWNER_TOKEN, json!({}))
        .await;
    assert_eq!(r.status, 200);
    rx_revoked.wait_for(1).await;
    rx_created.wait_for(1).await;
    wait_delivery(&app, &revoked_only, "revoked-only delivered", |d| {
        d["status"] == "succeeded"
    })
    .await;
    wait_delivery(&app, &created_only, "created-only delivered", |d| {
        d["status"] == "succeeded"
    })
    .await;
    // Nothing else is due: a round of the worker sends nothing.
    let sender = Sender::new(&app.state.webhooks);
    assert_eq!(
        deliver_due(&app.state, &sender, app.clock.now_ms())
            .await
            .unwrap(),
        0
    );
    assert_eq!(rx_revoked.types(), ["key.revoked"]);
    assert_eq!(rx_created.types(), ["key.created"]);
    assert_eq!(rx_disabled.count(), 0);
    assert!(deliveries(&app, &disabled).await.is_empty());
    assert_eq!(deliveries(&app, &revoked_only).await.len(), 1);
    assert_eq!(deliveries(&app, &created_only).await.len(), 1);

    // Disabled in the middle of a retry: nothing is sent until it is enabled again.
    rx_created.fail_next(1);
    app.secret_key(pid).await;
    eventually("a failed attempt", || async {
        let d = deliveries(&app, &created_only).await;
        (d.len() == 2 && d[0]["attempts"] == 1).then_some(())
    })
    .await;
    let r = app
        .patch(
            &format!("/v1/webhooks/{created_only}"),
            OWNER_TOKEN,
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["enabled"], false);
    let pending = deliveries(&app, &created_only).await[0].clone();
    assert_eq!(pending["status"], "pending");
    app.clock.advance_ms(3_600_000);
    assert_eq!(
        deliver_due(&app.state, &sender, app.clock.now_ms())
            .await
            .unwrap(),
        0
    );
    assert_eq!(rx_created.count(), 2);
    // A manual retry is refused while disabled.
    let r = app
        .post(
            &format!(
                "/v1/webhooks/{created_only}/deliveries/{}/retry",
                pending["id"].as_str().unwrap()
            ),
            OWNER_TOKEN,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert_eq!(r.code(), "endpoint_disabled");
    // Enabled again: the waiting delivery goes out.
    let r = app
        .patch(
            &format!("/v1/webhooks/{created_only}"),
            OWNER_TOKEN,
            json!({"enabled": true}),
        )
        .await;
    assert_eq!(r.status, 200);
    rx_created.wait_for(3).await;
    let done = wait_delivery(&app, &created_only, "delivered after enabling", |d| {
        d["status"] == "succeeded"
    })
    .await;
    assert_eq!(done["attempts"], 2);
    assert_eq!(rx_disabled.count(), 0);
}

async fn retries_back_off_up_to_the_cap_then_fail(app: TestApp) {
    // max_attempts 5, base 10 s, cap 40 s (see `start`).
    let rx = Receiver::start(5).await;
    let (wid, secret) = create_endpoint(&app, &rx.url, &["key.created"], json!({})).await;
    let p = app.create_project("acme").await;
    app.secret_key(p["id"].as_str().unwrap()).await;

    let expected_waits = [10_000, 20_000, 40_000, 40_000];
    for (i, wait) in expected_waits.iter().enumerate() {
        let n = i + 1;
        let d = wait_delivery(&app, &wid, &format!("attempt {n}"), |d| d["attempts"] == n).await;
        assert_eq!(d["status"], "pending");
        assert_eq!(d["last_status_code"], 500);
        let now = app.clock.now_ms();
        let next = ms(&d["next_attempt_at"]);
        // Exponential, capped, plus up to 10% jitter.
        assert!(
            next - now >= *wait && next - now <= wait + wait / 10,
            "attempt {n}: next in {} ms, expected {wait} (+10%)",
            next - now
        );
        // Not due yet: a round sends nothing.
        assert_eq!(rx.count(), n);
        app.clock.set_ms(next);
    }
    let failed = wait_delivery(&app, &wid, "failed after 5 attempts", |d| {
        d["status"] == "failed"
    })
    .await;
    assert_eq!(failed["attempts"], 5);
    assert_eq!(failed["next_attempt_at"], Value::Null);
    assert_eq!(failed["last_status_code"], 500);
    let did = failed["id"].as_str().unwrap();
    let detail = app
        .get(&format!("/v1/webhooks/{wid}/deliveries/{did}"), OWNER_TOKEN)
        .await;
    let attempts = detail.body["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 5);
    let mut last_at = 0;
    for (i, a) in attempts.iter().enumerate() {
        assert_eq!(a["attempt"], i + 1);
        assert_eq!(a["status_code"], 500);
        // Measured in milliseconds, within the attempt's 5 s timeout.
        let duration = a["duration_ms"].as_i64().unwrap();
        assert!((0..=5_000).contains(&duration), "{duration} ms");
        let at = ms(&a["at"]);
        assert!(at > last_at);
        last_at = at;
    }
    // Every attempt sent the same delivery, event and body.
    let got = rx.requests();
    assert_eq!(got.len(), 5);
    for r in &got {
        assert_eq!(r.header("keygate-delivery-id"), did);
        assert_eq!(r.body, got[0].body);
        check_signed(&app, r, &secret);
    }
    // A manual retry of the failed delivery: one more attempt, now answered 200.
    let r = app
        .post(
            &format!("/v1/webhooks/{wid}/deliveries/{did}/retry"),
            OWNER_TOKEN,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.body["id"], did);
    let done = wait_delivery(&app, &wid, "succeeded after a manual retry", |d| {
        d["status"] == "succeeded"
    })
    .await;
    assert_eq!(done["attempts"], 6);
    assert_eq!(done["last_status_code"], 200);
    assert_eq!(rx.count(), 6);
    // Failed attempts are logged, without the secret or the URL.
    let logs = crate::helpers::logs();
    assert!(logs.contains(did), "attempts are logged");
    assert!(!logs.contains(&secret) && !logs.contains(&rx.url));
    let viewer = app.token("viewer").await;
    let r = app
        .request(
            Method::POST,
            &format!("/v1/webhooks/{wid}/deliveries/{did}/retry"),
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(r.status, 403);
}

async fn key_expiring_once_per_key_and_endpoint(app: TestApp) {
    let rx7 = Receiver::start(0).await;
    let rx30 = Receiver::start(0).await;
    let (w7, secret7) = create_endpoint(&app, &rx7.url, &["key.expiring"], json!({})).await;
    let (w30, _) = create_endpoint(
        &app,
        &rx30.url,
        &["key.expiring"],
        json!({"expiring_days": 30}),
    )
    .await;
    let p = app.create_project("acme").await;
    let pid = p["id"].as_str().unwrap();
    let now = app.clock.now_ms();
    let expiring = |days: i64| {
        json!({
            "name": format!("in {days} days"), "kind": "secret", "environment": "live",
            "expires_at": keygate_control_plane::timefmt::format_ms(now + days * DAY_MS),
        })
    };
    let k3 = app.create_key(pid, expiring(3)).await;
    let k10 = app.create_key(pid, expiring(10)).await;
    app.create_key(pid, expiring(40)).await;
    app.secret_key(pid).await; // no expiry
    let revoked = app.create_key(pid, expiring(2)).await;
    let r = app
        .post(
            &format!("/v1/keys/{}/revoke", revoked["id"].as_str().unwrap()),
            OWNER_TOKEN,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200);
    // A rotated key is not announced; its successor (same expiry) is.
    let rotated = app.create_key(pid, expiring(2)).await;
    let r = app
        .post(
            &format!("/v1/keys/{}/rotate", rotated["id"].as_str().unwrap()),
            OWNER_TOKEN,
            json!({"grace_seconds": 3600}),
        )
        .await;
    assert_eq!(r.status, 201);
    let successor = r.body;

    let tick = || async {
        let st = app.state.clone();
        let now = app.clock.now_ms();
        web::block(move || queue_expiring(&mut st.pool.get().unwrap(), now))
            .await
            .unwrap()
            .unwrap()
    };
    assert_eq!(tick().await, 2 + 3);
    assert_eq!(tick().await, 0, "a second run queues nothing");
    let key_ids = |got: &[Received]| {
        let mut ids: Vec<String> = got
            .iter()
            .map(|r| r.json()["data"]["key"]["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    let mut want7 = vec![
        k3["id"].as_str().unwrap().to_owned(),
        successor["id"].as_str().unwrap().to_owned(),
    ];
    want7.sort();
    let got7 = rx7.wait_for(2).await;
    assert_eq!(key_ids(&got7), want7);
    for r in &got7 {
        let body = check_signed(&app, r, &secret7);
        assert_eq!(body["type"], "key.expiring");
        let data = &body["data"];
        let expires = ms(&data["expires_at"]);
        assert_eq!(data["key"]["expires_at"], data["expires_at"]);
        assert_eq!(
            data["days_left"],
            if expires == now + 3 * DAY_MS { 3 } else { 2 }
        );
    }
    let got30 = rx30.wait_for(3).await;
    let mut want30 = want7.clone();
    want30.push(k10["id"].as_str().unwrap().to_owned());
    want30.sort();
    assert_eq!(key_ids(&got30), want30);

    // Four days on, the ten-day key is six days away: now the 7-day endpoint hears of it, with
    // the event the 30-day endpoint got.
    app.clock.advance_ms(4 * DAY_MS);
    assert_eq!(tick().await, 1);
    assert_eq!(tick().await, 0);
    let got7 = rx7.wait_for(3).await;
    let late = got7
        .iter()
        .find(|r| r.json()["data"]["key"]["id"] == k10["id"])
        .unwrap();
    let early = got30
        .iter()
        .find(|r| r.json()["data"]["key"]["id"] == k10["id"])
        .unwrap();
    assert_eq!(
        late.header("keygate-event-id"),
        early.header("keygate-event-id")
    );
    assert_eq!(late.json()["data"]["days_left"], 10);
    // A new expiry is a new announcement.
    let r = app
        .patch(
            &format!("/v1/keys/{}", k10["id"].as_str().unwrap()),
            OWNER_TOKEN,
            json!({"expires_at": keygate_control_plane::timefmt::format_ms(app.clock.now_ms() + 5 * DAY_MS)}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(tick().await, 2);
    rx7.wait_for(4).await;
    rx30.wait_for(4).await;
    assert_eq!(deliveries(&app, &w7).await.len(), 4);
    assert_eq!(deliveries(&app, &w30).await.len(), 4);
}

async fn restart_in_the_middle_of_a_retry_loses_nothing(mut app: TestApp) {
    let rx = Receiver::start(1).await;
    let (wid, secret) = create_endpoint(&app, &rx.url, &["key.created"], json!({})).await;
    let p = app.create_project("acme").await;
    app.secret_key(p["id"].as_str().unwrap()).await;
    let first = wait_delivery(&app, &wid, "a failed first attempt", |d| {
        d["attempts"] == 1 && d["status"] == "pending"
    })
    .await;
    assert_eq!(first["last_status_code"], 500);

    app.restart().await;
    // The retry is due after the backoff, measured on the control plane's clock.
    app.clock.advance_ms(11_000);
    let done = wait_delivery(&app, &wid, "delivered after the restart", |d| {
        d["status"] == "succeeded"
    })
    .await;
    assert_eq!(done["id"], first["id"]);
    assert_eq!(done["attempts"], 2);
    let got = rx.requests();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].body, got[1].body);
    assert_eq!(
        got[0].header("keygate-delivery-id"),
        got[1].header("keygate-delivery-id")
    );
    check_signed(&app, &got[1], &secret);
    let detail = app
        .get(
            &format!(
                "/v1/webhooks/{wid}/deliveries/{}",
                done["id"].as_str().unwrap()
            ),
            OWNER_TOKEN,
        )
        .await;
    let codes: Vec<&Value> = detail.body["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["status_code"])
        .collect();
    assert_eq!(codes, [&json!(500), &json!(200)]);
}

async fn api_roles_validation_and_secrets(app: TestApp) {
    let viewer = app.token("viewer").await;
    let admin = app.token("admin").await;
    let edge = app.token("edge").await;
    let body = json!({"url": "https://hooks.example.com/keygate", "events": ["alert.raised"]});
    assert_eq!(
        app.post("/v1/webhooks", &viewer, body.clone()).await.status,
        403
    );
    assert_eq!(
        app.post("/v1/webhooks", &edge, body.clone()).await.status,
        403
    );
    assert_eq!(
        app.request(Method::POST, "/v1/webhooks", None, Some(&body))
            .await
            .status,
        401
    );
    let created = app.post("/v1/webhooks", &admin, body.clone()).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let c = &created.body;
    let wid = c["id"].as_str().unwrap().to_owned();
    let secret = c["secret"].as_str().unwrap().to_owned();
    assert!(wid.starts_with("whk_"));
    assert!(
        secret.starts_with("whsec_") && secret.len() == 38,
        "{secret}"
    );
    assert!(secret[6..].bytes().all(|b| b.is_ascii_alphanumeric()));
    assert_eq!(c["secret_start"], secret[..10]);
    assert_eq!(c["expiring_days"], 7);
    assert_eq!(c["enabled"], true);
    assert_eq!(c["description"], "");
    assert_eq!(c["events"], json!(["alert.raised"]));
    assert_eq!(c["url"], "https://hooks.example.com/keygate");
    ms(&c["created_at"]);

    // Reads: owner, admin, viewer; never the secret.
    for token in [OWNER_TOKEN, &admin, &viewer] {
        let one = app.get(&format!("/v1/webhooks/{wid}"), token).await;
        assert_eq!(one.status, 200);
        assert!(one.body.get("secret").is_none());
        assert_eq!(one.body["secret_start"], secret[..10]);
        let list = app.get("/v1/webhooks", token).await;
        assert_eq!(list.status, 200);
        assert_eq!(list.body["items"][0]["id"], wid);
        assert!(!String::from_utf8_lossy(&list.raw).contains(&secret));
    }
    for path in [
        "/v1/webhooks".to_owned(),
        format!("/v1/webhooks/{wid}"),
        format!("/v1/webhooks/{wid}/deliveries"),
    ] {
        let r = app.get(&path, &edge).await;
        assert_eq!(r.status, 403, "{path}");
        assert_eq!(r.code(), "forbidden");
    }

    // Update, rotate the secret.
    let r = app
        .patch(
            &format!("/v1/webhooks/{wid}"),
            &viewer,
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(r.status, 403);
    let r = app
        .patch(
            &format!("/v1/webhooks/{wid}"),
            &admin,
            json!({"description": " Ops pager ", "expiring_days": 30, "events": ["key.expiring", "key.revoked"], "url": "http://127.0.0.1:9/x?y=1"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["description"], "Ops pager");
    assert_eq!(r.body["expiring_days"], 30);
    assert_eq!(r.body["events"], json!(["key.expiring", "key.revoked"]));
    assert_eq!(r.body["url"], "http://127.0.0.1:9/x?y=1");
    assert_eq!(r.body["enabled"], true);
    let r = app
        .post(
            &format!("/v1/webhooks/{wid}/rotate-secret"),
            &admin,
            json!({"grace_seconds": 3600}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let new_secret = r.body["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    assert_eq!(r.body["secret_start"], new_secret[..10]);
    assert_eq!(
        ms(&r.body["previous_secret_expires_at"]),
        app.clock.now_ms() + 3_600_000
    );
    let r = app
        .post(
            &format!("/v1/webhooks/{wid}/rotate-secret"),
            &admin,
            json!({"grace_seconds": 700_000}),
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(r.detail().starts_with("grace_seconds"), "{}", r.detail());

    // The audit log names each change and never holds a secret.
    let audit = app
        .get(&format!("/v1/audit?target_id={wid}"), OWNER_TOKEN)
        .await;
    let mut actions: Vec<&str> = audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    actions.reverse();
    assert_eq!(
        actions,
        ["webhook.create", "webhook.update", "webhook.rotate_secret"]
    );
    let raw = String::from_utf8_lossy(&audit.raw);
    assert!(!raw.contains(&secret) && !raw.contains(&new_secret));

    // Validation names the field.
    let long = format!("https://example.com/{}", "a".repeat(2040));
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"url": "ftp://example.com/", "events": ["key.created"]}),
            "url",
        ),
        (
            json!({"url": "/relative", "events": ["key.created"]}),
            "url",
        ),
        (
            json!({"url": "https://u:p@example.com/", "events": ["key.created"]}),
            "url",
        ),
        (
            json!({"url": "https://example.com/#top", "events": ["key.created"]}),
            "url",
        ),
        (json!({"url": long, "events": ["key.created"]}), "url"),
        (json!({"events": ["key.created"]}), "url"),
        (
            json!({"url": "https://example.com/", "events": []}),
            "events",
        ),
        (
            json!({"url": "https://example.com/", "events": ["key.created", "key.leaked"]}),
            "events[1]",
        ),
        (
            json!({"url": "https://example.com/", "events": ["key.revoked", "key.revoked"]}),
            "events[1]",
        ),
        (
            json!({"url": "https://example.com/", "events": ["key.created"], "expiring_days": 0}),
            "expiring_days",
        ),
        (
            json!({"url": "https://example.com/", "events": ["key.created"], "expiring_days": 91}),
            "expiring_days",
        ),
        (
            json!({"url": "https://example.com/", "events": ["key.created"], "secret": "mine"}),
            "secret",
        ),
    ];
    for (body, field) in cases {
        let r = app.post("/v1/webhooks", OWNER_TOKEN, body.clone()).await;
        assert_eq!(r.status, 422, "{body}: {:?}", r.body);
        assert_eq!(r.code(), "validation_failed");
        assert!(
            r.detail().starts_with(&format!("{field}:")),
            "{body}: {}",
            r.detail()
        );
    }
    let r = app
        .patch(
            &format!("/v1/webhooks/{wid}"),
            OWNER_TOKEN,
            json!({"url": "example.com"}),
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(r.detail().starts_with("url:"));
    for q in ["status=bogus", "limit=0", "cursor=nope"] {
        let r = app
            .get(&format!("/v1/webhooks/{wid}/deliveries?{q}"), OWNER_TOKEN)
            .await;
        assert_eq!(r.status, 422, "{q}: {:?}", r.body);
    }
    let missing = "whk_01jd0000000000000000000000";
    assert_eq!(
        app.get(&format!("/v1/webhooks/{missing}"), OWNER_TOKEN)
            .await
            .code(),
        "not_found"
    );
    let r = app
        .get(
            &format!("/v1/webhooks/{wid}/deliveries/dlv_01jd0000000000000000000000"),
            OWNER_TOKEN,
        )
        .await;
    assert_eq!(r.status, 404);

    // Delete with a pending delivery: it fails as "endpoint deleted" and nothing more is sent.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (doomed, _) = create_endpoint(
        &app,
        &format!("http://127.0.0.1:{closed}/hook"),
        &["key.created"],
        json!({}),
    )
    .await;
    let p = app.create_project("acme").await;
    app.secret_key(p["id"].as_str().unwrap()).await;
    let d = wait_delivery(&app, &doomed, "a refused attempt", |d| d["attempts"] == 1).await;
    assert_eq!(d["status"], "pending");
    assert_eq!(d["last_status_code"], Value::Null);
    let error = d["last_error"].as_str().unwrap();
    assert!(
        error.to_ascii_lowercase().contains("connection refused"),
        "the refused connection is what the delivery records: {error}"
    );
    let did = d["id"].as_str().unwrap().to_owned();
    let r = app
        .request(
            Method::DELETE,
            &format!("/v1/webhooks/{doomed}"),
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(r.status, 403);
    let r = app
        .request(
            Method::DELETE,
            &format!("/v1/webhooks/{doomed}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        app.get(&format!("/v1/webhooks/{doomed}"), OWNER_TOKEN)
            .await
            .status,
        404
    );
    let r = app
        .request(
            Method::DELETE,
            &format!("/v1/webhooks/{doomed}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, 404);
    let st = app.state.clone();
    let row: (String, Option<String>, Option<i64>) = web::block(move || {
        use diesel::prelude::*;
        use keygate_control_plane::db::schema::webhook_deliveries as d;
        d::table
            .find(&did)
            .select((d::status, d::last_error, d::next_attempt_at))
            .first(&mut st.pool.get().unwrap())
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        row,
        (
            "failed".to_owned(),
            Some("endpoint deleted".to_owned()),
            None
        )
    );
    let audit = app
        .get(&format!("/v1/audit?target_id={doomed}"), OWNER_TOKEN)
        .await;
    assert_eq!(audit.body["items"][0]["action"], "webhook.delete");
}

async fn console_page(app: TestApp) {
    use keygate_control_plane::auth::Role;
    use keygate_control_plane::domain::accounts::{create_admin, CreateAdmin};
    let st = app.state.clone();
    let now = app.clock.now_ms();
    web::block(move || {
        let mut conn = st.pool.get().unwrap();
        for (email, role) in [
            ("owner@example.com", Role::Owner),
            ("viewer@example.com", Role::Viewer),
        ] {
            create_admin(
                &mut conn,
                now,
                "system",
                CreateAdmin {
                    email: email.to_owned(),
                    role,
                    password: "correct horse battery staple".to_owned(),
                },
            )
            .unwrap();
        }
    })
    .await
    .unwrap();
    let client = awc::Client::builder().disable_redirects().finish();
    let login = |email: &'static str| {
        let client = client.clone();
        let base = app.base.clone();
        async move {
            let resp = client
                .post(format!("{base}/console/login"))
                .send_form(&[
                    ("email", email),
                    ("password", "correct horse battery staple"),
                ])
                .await
                .unwrap();
            assert_eq!(resp.status(), 303);
            let cookie = resp.headers().get("set-cookie").unwrap().to_str().unwrap();
            cookie.split(';').next().unwrap().to_owned()
        }
    };
    let get = |cookie: String, path: String| {
        let client = client.clone();
        let base = app.base.clone();
        async move {
            let mut resp = client
                .get(format!("{base}{path}"))
                .insert_header(("cookie", cookie))
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let body = String::from_utf8(resp.body().await.unwrap().to_vec()).unwrap();
            (status, body)
        }
    };
    let post = |cookie: String, path: String, form: Vec<(&'static str, String)>| {
        let client = client.clone();
        let base = app.base.clone();
        async move {
            let mut resp = client
                .post(format!("{base}{path}"))
                .insert_header(("cookie", cookie))
                .send_form(&form)
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let location = resp
                .headers()
                .get("location")
                .map(|v| v.to_str().unwrap().to_owned());
            let body = String::from_utf8(resp.body().await.unwrap().to_vec()).unwrap();
            (status, location, body)
        }
    };
    let csrf_of = |page: &str| {
        let marker = "name=\"csrf_token\" value=\"";
        let at = page.find(marker).unwrap() + marker.len();
        page[at..at + 64].to_owned()
    };

    // Nothing listens there: attempts fail at once with an error.
    let hook_url = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://127.0.0.1:{}/in", l.local_addr().unwrap().port())
    };
    let owner = login("owner@example.com").await;
    let (status, page) = get(owner.clone(), "/console/webhooks".into()).await;
    assert_eq!(status, 200);
    assert!(page.contains("href=\"/console/webhooks\""), "nav link");
    assert!(page.contains("id=\"webhook-form\""));
    let csrf = csrf_of(&page);

    // Without or with a wrong CSRF token: refused.
    let form = |csrf: &str| {
        vec![
            ("csrf_token", csrf.to_owned()),
            ("url", hook_url.clone()),
            ("description", "Pager".to_owned()),
            ("events", "key.revoked".to_owned()),
            ("events", "key.expiring".to_owned()),
            ("expiring_days", "14".to_owned()),
            ("enabled", "yes".to_owned()),
        ]
    };
    let (status, _, _) = post(
        owner.clone(),
        "/console/webhooks".into(),
        form("0".repeat(64).as_str()),
    )
    .await;
    assert_eq!(status, 403);
    // A bad URL shows the API's message next to the field.
    let mut bad = form(&csrf);
    bad[1].1 = "ftp://nope".to_owned();
    let (status, _, body) = post(owner.clone(), "/console/webhooks".into(), bad).await;
    assert_eq!(status, 422);
    assert!(body.contains("url: must be an http or https URL"), "{body}");
    let (status, _, body) = post(owner.clone(), "/console/webhooks".into(), form(&csrf)).await;
    assert_eq!(status, 201, "{body}");
    let at = body.find("whsec_").unwrap();
    let secret = &body[at..at + 38];
    let list = app.get("/v1/webhooks", OWNER_TOKEN).await;
    let w = &list.body["items"][0];
    assert_eq!(w["secret_start"], secret[..10]);
    assert_eq!(w["events"], json!(["key.revoked", "key.expiring"]));
    assert_eq!(w["expiring_days"], 14);
    assert_eq!(w["description"], "Pager");
    let wid = w["id"].as_str().unwrap().to_owned();
    // The secret is never shown again.
    let (_, page) = get(owner.clone(), "/console/webhooks".into()).await;
    assert!(!page.contains(secret));
    assert!(page.contains(&hook_url));
    let (status, page) = get(owner.clone(), format!("/console/webhooks/{wid}")).await;
    assert_eq!(status, 200);
    assert!(!page.contains(secret));
    assert!(page.contains("No deliveries yet."));

    // Disable, then look at the delivery log of a delivery.
    let (status, location, _) = post(
        owner.clone(),
        format!("/console/webhooks/{wid}/disable"),
        vec![("csrf_token", csrf.clone())],
    )
    .await;
    assert_eq!(status, 303);
    assert_eq!(
        location.as_deref(),
        Some(format!("/console/webhooks/{wid}?done=disabled").as_str())
    );
    assert_eq!(
        app.get(&format!("/v1/webhooks/{wid}"), OWNER_TOKEN)
            .await
            .body["enabled"],
        false
    );
    post(
        owner.clone(),
        format!("/console/webhooks/{wid}/enable"),
        vec![("csrf_token", csrf.clone())],
    )
    .await;
    assert_eq!(
        app.get(&format!("/v1/webhooks/{wid}"), OWNER_TOKEN)
            .await
            .body["enabled"],
        true
    );
    let p = app.create_project("acme").await;
    let k = app.secret_key(p["id"].as_str().unwrap()).await;
    app.post(
        &format!("/v1/keys/{}/revoke", k["id"].as_str().unwrap()),
        OWNER_TOKEN,
        json!({}),
    )
    .await;
    wait_delivery(&app, &wid, "an attempt", |d| d["attempts"] == 1).await;
    let (_, page) = get(owner.clone(), format!("/console/webhooks/{wid}")).await;
    assert!(page.contains("id=\"deliveries\""), "{page}");
    assert!(page.contains("key.revoked"), "{page}");
    assert!(page.contains("badge pending"), "{page}");
    assert!(page.contains("Retry now"), "{page}");

    // A viewer sees no write controls, and a forged post with a valid CSRF token is refused.
    let viewer = login("viewer@example.com").await;
    let (status, page) = get(viewer.clone(), "/console/webhooks".into()).await;
    assert_eq!(status, 200);
    assert!(page.contains(&hook_url));
    assert!(!page.contains("id=\"webhook-form\""));
    let (_, detail) = get(viewer.clone(), format!("/console/webhooks/{wid}")).await;
    assert!(detail.contains("id=\"deliveries\""));
    assert!(!detail.contains("/delete\""), "{detail}");
    assert!(!detail.contains("Retry now"));
    assert!(!detail.contains("/disable\""));
    let viewer_csrf = csrf_of(&page);
    let (status, _, _) = post(
        viewer.clone(),
        "/console/webhooks".into(),
        form(&viewer_csrf),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _, _) = post(
        viewer,
        format!("/console/webhooks/{wid}/delete"),
        vec![("csrf_token", viewer_csrf), ("confirm", "yes".to_owned())],
    )
    .await;
    assert_eq!(status, 403);

    // Delete.
    let (status, location, _) = post(
        owner.clone(),
        format!("/console/webhooks/{wid}/delete"),
        vec![("csrf_token", csrf), ("confirm", "yes".to_owned())],
    )
    .await;
    assert_eq!(status, 303);
    assert_eq!(location.as_deref(), Some("/console/webhooks"));
    assert_eq!(
        app.get(&format!("/v1/webhooks/{wid}"), OWNER_TOKEN)
            .await
            .status,
        404
    );
}

async fn ssrf_guard_at_create(app: TestApp) {
    for url in [
        "http://127.0.0.1:9/x",
        "http://localhost:8080/hooks",
        "http://10.0.0.5/",
        "http://172.16.3.4/",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/",
        "http://0.0.0.0:8080/",
        "http://0x7f.1/",
        "http://[::1]/",
        "http://[::]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://[fd00::1]/",
        "http://[fe80::1]/",
    ] {
        let r = app
            .post(
                "/v1/webhooks",
                OWNER_TOKEN,
                json!({"url": url, "events": ["key.revoked"]}),
            )
            .await;
        assert_eq!(r.status, 422, "{url}: {:?}", r.body);
        assert_eq!(r.code(), "webhook_target_forbidden", "{url}");
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/problem+json")
        );
        assert!(r.detail().starts_with("url: "), "{}", r.detail());
        assert!(
            r.detail().contains("KEYGATE_WEBHOOK_ALLOW_PRIVATE"),
            "{}",
            r.detail()
        );
    }
    // A public name (which does not resolve from here: checked again at every send) is taken;
    // changing it to a private address is refused like creating one.
    let (wid, _) = create_endpoint(
        &app,
        "https://hooks.example.com/k",
        &["key.revoked"],
        json!({}),
    )
    .await;
    let r = app
        .patch(
            &format!("/v1/webhooks/{wid}"),
            OWNER_TOKEN,
            json!({"url": "http://169.254.169.254/"}),
        )
        .await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert_eq!(r.code(), "webhook_target_forbidden");
    let list = app.get("/v1/webhooks", OWNER_TOKEN).await;
    let items = list.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["url"], "https://hooks.example.com/k");
}

async fn ssrf_guard_at_send(app: TestApp) {
    let rx = Receiver::start(0).await;
    let port: u16 = rx
        .url
        .trim_start_matches("http://127.0.0.1:")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // Created while the name does not resolve to anything private...
    let url = format!("http://hooks.example.com:{port}/hooks/keygate");
    let (wid, _) = create_endpoint(&app, &url, &["key.created"], json!({})).await;
    let p = app.create_project("acme").await;
    app.secret_key(p["id"].as_str().unwrap()).await;
    // ...then DNS answers with a loopback address: refused before connecting.
    let rebinding: keygate_control_plane::ssrf::Resolver = Arc::new(|host, port| {
        assert_eq!(host, "hooks.example.com");
        Ok(vec![std::net::SocketAddr::from(([127, 0, 0, 1], port))])
    });
    let sender = Sender::with_resolver(&app.state.webhooks, rebinding.clone());
    assert_eq!(
        deliver_due(&app.state, &sender, app.clock.now_ms())
            .await
            .unwrap(),
        1
    );
    let d = deliveries(&app, &wid).await;
    assert_eq!(d.len(), 1);
    assert_eq!(d[0]["attempts"], 1);
    assert_eq!(d[0]["status"], "pending");
    let error = d[0]["last_error"].as_str().unwrap();
    assert!(
        error.contains("refused, no connection made")
            && error.contains("hooks.example.com resolves to 127.0.0.1, a loopback address"),
        "{error}"
    );
    assert_eq!(rx.count(), 0, "the guard let a request through");

    // A private address stored before the guard existed is refused at send too.
    {
        use diesel::prelude::*;
        use keygate_control_plane::db::schema::webhook_endpoints as e;
        let mut conn = app.state.pool.get().unwrap();
        diesel::update(e::table.find(&wid))
            .set(e::url.eq(&rx.url))
            .execute(&mut *conn)
            .unwrap();
    }
    app.clock.advance_ms(3_600_000);
    let sender = Sender::new(&app.state.webhooks);
    deliver_due(&app.state, &sender, app.clock.now_ms())
        .await
        .unwrap();
    let d = deliveries(&app, &wid).await;
    assert_eq!(d[0]["attempts"], 2);
    let error = d[0]["last_error"].as_str().unwrap();
    assert!(
        error.contains("127.0.0.1 is 127.0.0.1, a loopback address"),
        "{error}"
    );
    assert_eq!(rx.count(), 0);

    // The same delivery with private targets allowed reaches the receiver: the guard, not
    // the receiver, refused it above.
    let mut allowed = app.state.webhooks.clone();
    allowed.allow_private_targets = true;
    app.clock.advance_ms(3_600_000);
    deliver_due(
        &app.state,
        &Sender::with_resolver(&allowed, rebinding),
        app.clock.now_ms(),
    )
    .await
    .unwrap();
    rx.wait_for(1).await;
    let d = deliveries(&app, &wid).await;
    assert_eq!(d[0]["status"], "succeeded");
}
