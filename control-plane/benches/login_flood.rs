//! Login flood: wrong passwords at `POST /v1/auth/login` at a fixed rate while a poller reads
//! `GET /v1/snapshot` as the edge does (edge token, `If-None-Match`, every 20 ms), and the
//! poller's latency with and without the flood.
//!
//! ```text
//! cargo bench -p keygate-control-plane --bench login_flood
//! ```
//!
//! Starts a control plane in-process on SQLite (temporary data directory, port 0), unless
//! `KEYGATE_FLOOD_URL` names one already running on loopback (then `KEYGATE_FLOOD_TOKEN` is its
//! owner or bootstrap token), which is how an older build is measured. Settings:
//! `KEYGATE_FLOOD_RATE` (logins per second, default 300), `KEYGATE_FLOOD_SECONDS` (length of
//! the flood and of the baseline, default 10), `KEYGATE_FLOOD_ADDRESSES` (client addresses
//! 127.0.0.2 and up, default 200). Access logs are formatted as in production (JSON, info) and
//! written to a sink.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use keygate_control_plane::{Application, Config};
use serde_json::{json, Value};

const TOKEN: &str = "bench-owner-token-0123456789abcdefghijklmnop";
const PASSWORD: &str = "correct horse battery";
const ATTACKED: [&str; 5] = [
    "flood-a@example.com",
    "flood-b@example.com",
    "flood-c@example.com",
    "flood-d@example.com",
    "flood-nobody@example.com",
];
const POLL_EVERY: Duration = Duration::from_millis(20);
/// Logins are sent in ticks of this length.
const TICK: Duration = Duration::from_millis(10);

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it,
    // and a load run does not belong in a test run.
    if !std::env::args().any(|a| a == "--bench") {
        println!("login_flood benchmark: run it with `cargo bench -p keygate-control-plane --bench login_flood`");
        return;
    }
    keygate_control_plane::telemetry::init(true, std::io::sink);
    let rate: u64 = env_or("KEYGATE_FLOOD_RATE", 300);
    let seconds: u64 = env_or("KEYGATE_FLOOD_SECONDS", 10);
    let addresses: u8 = env_or("KEYGATE_FLOOD_ADDRESSES", 200u8).clamp(1, 250);
    actix_web::rt::System::new().block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let (base, token, _running) = match std::env::var("KEYGATE_FLOOD_URL") {
            Ok(url) => {
                assert!(
                    url.starts_with("http://127.0.0.1:"),
                    "KEYGATE_FLOOD_URL must be http://127.0.0.1:<port>"
                );
                let token = std::env::var("KEYGATE_FLOOD_TOKEN").expect("KEYGATE_FLOOD_TOKEN");
                println!("control plane: {url} (external)");
                (url, token, None)
            }
            Err(_) => {
                let mut config = Config::new(dir.path());
                config.bootstrap_token = Some(TOKEN.to_owned());
                let app = Application::build(config).await.unwrap();
                let base = format!("http://127.0.0.1:{}", app.port());
                let handle = app.handle();
                actix_web::rt::spawn(app.run_until_stopped());
                println!("control plane: {base} (in-process, SQLite)");
                (base, TOKEN.to_owned(), Some(Stopper(handle)))
            }
        };
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(60))
            .finish();
        let edge = setup(&client, &base, &token).await;
        println!("flood: {rate} wrong logins/s for {seconds} s from {addresses} addresses, {} accounts; poll every {} ms", ATTACKED.len(), POLL_EVERY.as_millis());

        let window = Duration::from_secs(seconds);
        let baseline = poll_for(&client, &base, &edge, window).await;
        report("baseline, no flood", &baseline);

        let stop = Rc::new(Cell::new(false));
        let poller = {
            // A client of its own, as the edge is a client of its own.
            let client = awc::Client::builder()
                .timeout(Duration::from_secs(60))
                .finish();
            let (base, edge, stop) = (base.clone(), edge.clone(), stop.clone());
            actix_web::rt::spawn(async move {
                let mut polls = Polls::default();
                let mut etag = None;
                while !stop.get() {
                    poll_once(&client, &base, &edge, &mut etag, &mut polls).await;
                    actix_web::rt::time::sleep(POLL_EVERY).await;
                }
                polls
            })
        };
        let flood = flood(&base, rate, window, addresses).await;
        stop.set(true);
        report("during the flood", &poller.await.unwrap());
        println!("flood answers: {flood:?}");
    });
}

struct Stopper(actix_web::dev::ServerHandle);

impl Drop for Stopper {
    fn drop(&mut self) {
        drop(self.0.stop(false));
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Admins for the attacked accounts (409 when they exist already), a project with a key so the
/// snapshot holds something, and an edge token.
async fn setup(client: &awc::Client, base: &str, token: &str) -> String {
    let post = |path: &str, body: Value| {
        let req = client
            .post(format!("{base}{path}"))
            .insert_header(("authorization", format!("Bearer {token}")));
        async move {
            let mut r = req.send_json(&body).await.unwrap();
            let v: Value = r.json().limit(1 << 20).await.unwrap_or_default();
            (r.status().as_u16(), v)
        }
    };
    for email in &ATTACKED[..4] {
        let (s, v) = post(
            "/v1/admins",
            json!({"email": email, "role": "admin", "password": PASSWORD}),
        )
        .await;
        assert!(s == 201 || s == 409, "create admin: {s} {v}");
    }
    let suffix = std::process::id() % 100_000;
    let (s, project) = post(
        "/v1/projects",
        json!({"name": format!("flood {suffix}"), "key_prefix": format!("fl{suffix}"), "routes": [{"methods": ["GET"], "path": "/orders/*", "scope": "orders:read"}]}),
    )
    .await;
    assert_eq!(s, 201, "create project: {project}");
    let pid = project["id"].as_str().unwrap();
    let (s, key) = post(
        &format!("/v1/projects/{pid}/keys"),
        json!({"name": "flood", "kind": "secret", "environment": "live", "scopes": ["orders:read"]}),
    )
    .await;
    assert_eq!(s, 201, "create key: {key}");
    let (s, edge) = post(
        "/v1/admin-tokens",
        json!({"name": "flood edge", "role": "edge"}),
    )
    .await;
    assert_eq!(s, 201, "create edge token: {edge}");
    edge["token"].as_str().unwrap().to_owned()
}

#[derive(Default)]
struct Polls {
    latencies: Vec<Duration>,
    statuses: BTreeMap<u16, u64>,
}

async fn poll_once(
    client: &awc::Client,
    base: &str,
    edge: &str,
    etag: &mut Option<String>,
    polls: &mut Polls,
) {
    let mut req = client
        .get(format!("{base}/v1/snapshot"))
        .insert_header(("authorization", format!("Bearer {edge}")));
    if let Some(e) = etag.as_ref() {
        req = req.insert_header(("if-none-match", e.clone()));
    }
    let started = Instant::now();
    let status = match req.send().await {
        Ok(mut res) => {
            let ok = res.body().limit(64 * 1024 * 1024).await.is_ok();
            if res.status() == 200 {
                *etag = res
                    .headers()
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
            }
            if ok {
                res.status().as_u16()
            } else {
                eprintln!("snapshot poll: the body did not arrive");
                0
            }
        }
        Err(e) => {
            eprintln!("snapshot poll failed: {e}");
            0
        }
    };
    polls.latencies.push(started.elapsed());
    *polls.statuses.entry(status).or_default() += 1;
}

async fn poll_for(client: &awc::Client, base: &str, edge: &str, window: Duration) -> Polls {
    let mut polls = Polls::default();
    let mut etag = None;
    let started = Instant::now();
    while started.elapsed() < window {
        poll_once(client, base, edge, &mut etag, &mut polls).await;
        actix_web::rt::time::sleep(POLL_EVERY).await;
    }
    polls
}

/// Sends `rate` wrong logins per second for `window`, round-robin over the client addresses and
/// accounts, then waits for every answer; returns the count per status (0: no answer).
async fn flood(base: &str, rate: u64, window: Duration, addresses: u8) -> BTreeMap<u16, u64> {
    let clients: Vec<awc::Client> = (0..addresses)
        .map(|i| {
            awc::Client::builder()
                .local_address(std::net::IpAddr::from([127, 0, 0, 2 + i]))
                .timeout(Duration::from_secs(30))
                .finish()
        })
        .collect();
    let url = format!("{base}/v1/auth/login");
    let total = rate * window.as_secs();
    let started = Instant::now();
    let mut sent = Vec::with_capacity(usize::try_from(total).unwrap());
    let mut n: u64 = 0;
    while n < total && started.elapsed() < window + Duration::from_secs(1) {
        // Catch up to the schedule: n logins are due after n / rate seconds.
        let due = (started.elapsed().as_micros() as u64 * rate / 1_000_000 + 1).min(total);
        while n < due {
            let i = usize::try_from(n).unwrap();
            let req = clients[i % clients.len()].post(&url);
            let email = ATTACKED[(i + i / clients.len()) % ATTACKED.len()];
            let body = json!({"email": email, "password": format!("guess {n}")});
            sent.push(actix_web::rt::spawn(async move {
                match req.send_json(&body).await {
                    Ok(mut res) => {
                        let _ = res.body().await;
                        res.status().as_u16()
                    }
                    Err(_) => 0,
                }
            }));
            n += 1;
        }
        actix_web::rt::time::sleep(TICK).await;
    }
    let mut counts = BTreeMap::new();
    for task in sent {
        *counts.entry(task.await.unwrap()).or_default() += 1;
    }
    counts
}

fn report(label: &str, polls: &Polls) {
    let mut l = polls.latencies.clone();
    l.sort();
    let at = |q: f64| {
        let i = ((q * l.len() as f64).ceil() as usize).clamp(1, l.len()) - 1;
        l[i].as_secs_f64() * 1000.0
    };
    if l.is_empty() {
        println!("{label}: no polls");
        return;
    }
    println!(
        "{label}: {} polls {:?}, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        l.len(),
        polls.statuses,
        at(0.50),
        at(0.99),
        at(1.0)
    );
}
