//! A flood of wrong passwords at `POST /v1/auth/login` while the edge polls `GET /v1/snapshot`:
//! the polls keep being answered, the flood gets only 401 and 429, and an account that was not
//! attacked still logs in. Behaviour only; how fast the polls are answered during a flood is
//! measured by the `login_flood` benchmark (docs/benchmarks.md), not asserted here.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::both_backends;
use crate::helpers::{TestApp, OWNER_TOKEN};

both_backends!(login_flood_keeps_snapshot_polls_and_other_accounts_working);

const PASSWORD: &str = "correct horse battery";
const ATTACKED: [&str; 4] = [
    "ops@example.com",
    "dev@example.com",
    "billing@example.com",
    "nobody@example.com", // no such admin: guessed all the same
];
const BYSTANDER: &str = "calm@example.com";
/// Client addresses of the flood: 127.0.0.2 up to 127.0.0.(1 + ADDRESSES); all reach the
/// server at 127.0.0.1.
const ADDRESSES: u8 = 40;
/// Logins sent every `TICK`: 3 per 10 ms is 300 per second.
const PER_TICK: usize = 3;
const TICK: Duration = Duration::from_millis(10);
const FLOOD_FOR: Duration = Duration::from_secs(3);
const MAX_LOGINS: usize = 900;
const POLL_EVERY: Duration = Duration::from_millis(20);
const MAX_POLLS: usize = 400;

/// What one flooded login was answered: status, `Retry-After`, problem code.
type Answer = (u16, Option<String>, String);

async fn login_flood_keeps_snapshot_polls_and_other_accounts_working(app: TestApp) {
    for email in ATTACKED.iter().take(3).chain([&BYSTANDER]) {
        let r = app
            .post(
                "/v1/admins",
                OWNER_TOKEN,
                json!({"email": email, "role": "admin", "password": PASSWORD}),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    let p = app.create_project("acme").await;
    app.secret_key(p["id"].as_str().unwrap()).await;
    let edge = app.token("edge").await;

    // The poller: the edge's request, with the ETag of the last full answer.
    let stop = Rc::new(Cell::new(false));
    let poller = {
        let stop = stop.clone();
        // A client of its own, as the edge has: a keep-alive connection the setup requests
        // left in a shared pool can be closed under it ("connector has been disconnected"),
        // which is the client's race, not the server refusing a poll.
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(60))
            .finish();
        let url = format!("{}/v1/snapshot", app.base);
        actix_web::rt::spawn(async move {
            let mut polls = Vec::new();
            let mut etag: Option<String> = None;
            while !stop.get() && polls.len() < MAX_POLLS {
                let mut req = client
                    .get(&url)
                    .insert_header(("authorization", format!("Bearer {edge}")));
                if let Some(e) = &etag {
                    req = req.insert_header(("if-none-match", e.clone()));
                }
                let mut res = req.send().await.expect("snapshot request");
                res.body().limit(64 * 1024 * 1024).await.expect("body");
                if res.status() == 200 {
                    etag = res
                        .headers()
                        .get("etag")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                }
                polls.push(res.status().as_u16());
                actix_web::rt::time::sleep(POLL_EVERY).await;
            }
            polls
        })
    };

    // The flood: wrong passwords for the attacked accounts from many addresses, paced, bounded
    // in count and in time.
    let clients: Vec<awc::Client> = (0..ADDRESSES)
        .map(|i| {
            awc::Client::builder()
                .local_address(std::net::IpAddr::from([127, 0, 0, 2 + i]))
                .timeout(Duration::from_secs(60))
                .finish()
        })
        .collect();
    let url = format!("{}/v1/auth/login", app.base);
    let started = Instant::now();
    let mut sent = Vec::new();
    let mut n = 0usize;
    while started.elapsed() < FLOOD_FOR && n < MAX_LOGINS {
        for _ in 0..PER_TICK {
            let req = clients[n % clients.len()].post(&url);
            let email = ATTACKED[(n + n / clients.len()) % ATTACKED.len()];
            let body = json!({"email": email, "password": format!("guess {n}")});
            sent.push(actix_web::rt::spawn(async move {
                let mut res = req.send_json(&body).await.expect("login request");
                let raw = res.body().await.expect("body");
                let problem: serde_json::Value = serde_json::from_slice(&raw).unwrap_or_default();
                let answer: Answer = (
                    res.status().as_u16(),
                    res.headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned),
                    problem["code"].as_str().unwrap_or("").to_owned(),
                );
                answer
            }));
            n += 1;
        }
        actix_web::rt::time::sleep(TICK).await;
    }
    let mut answers = Vec::with_capacity(sent.len());
    for task in sent {
        answers.push(task.await.expect("login task"));
    }
    stop.set(true);
    let polls = poller.await.expect("poller");

    assert!(!polls.is_empty(), "the poller never got an answer");
    assert!(
        polls.iter().all(|s| *s == 200 || *s == 304),
        "snapshot polls during the flood: {polls:?}"
    );
    let mut throttled = 0;
    for (status, retry_after, code) in &answers {
        match status {
            401 => assert_eq!(code, "invalid_credentials"),
            429 => {
                assert_eq!(code, "login_throttled");
                let secs: u64 = retry_after
                    .as_deref()
                    .expect("429 without Retry-After")
                    .parse()
                    .expect("Retry-After in seconds");
                assert!(secs >= 1, "Retry-After {secs}");
                throttled += 1;
            }
            other => panic!("flooded login answered {other} ({code})"),
        }
    }
    assert!(throttled > 0, "no 429 among {} wrong logins", answers.len());

    // An account nobody attacked logs in from an address that did not attack.
    let r = app
        .request(
            actix_web::http::Method::POST,
            "/v1/auth/login",
            None,
            Some(&json!({"email": BYSTANDER, "password": PASSWORD})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.body["token"].is_string());
}
