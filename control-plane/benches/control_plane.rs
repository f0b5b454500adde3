//! Load benchmark of the control plane on loopback, with wrk as the load generator.
//!
//! ```text
//! cargo bench -p keygate-control-plane --bench control_plane
//! ```
//!
//! Runs SQLite, and PostgreSQL too when `KEYGATE_TEST_POSTGRES_URL` is set (a fresh database is
//! created and dropped). Settings: `KEYGATE_BENCH_SECONDS` (wrk duration, default 10),
//! `KEYGATE_BENCH_KEYS` (keys in the snapshot build, default 100000). Access logs are formatted
//! as in production (JSON, info) and written to a sink.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::Instant;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::PgConnection;
use keygate_control_plane::db::models::KeyRow;
use keygate_control_plane::db::schema::api_keys;
use keygate_control_plane::domain::keys::StoredPolicy;
use keygate_control_plane::{with_backend, Application, Config};
use keygate_shared::{Environment, KeyPrefix, Kind, PlaintextKey, Scope};
use serde_json::{json, Value};

const TOKEN: &str = "bench-owner-token-0123456789abcdefghijklmnop";

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it,
    // and a load run does not belong in a test run.
    if !std::env::args().any(|a| a == "--bench") {
        println!("control_plane benchmark: run it with `cargo bench -p keygate-control-plane --bench control_plane`");
        return;
    }
    keygate_control_plane::telemetry::init(true, std::io::sink);
    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("wrk is not installed (apt-get install -y wrk)");
        std::process::exit(1);
    }
    let seconds: u64 = env_or("KEYGATE_BENCH_SECONDS", 10);
    let keys: usize = env_or("KEYGATE_BENCH_KEYS", 100_000);
    actix_web::rt::System::new().block_on(async move {
        run("SQLite", None, seconds, keys).await;
        if let Ok(url) = std::env::var("KEYGATE_TEST_POSTGRES_URL") {
            let name = format!("kg_bench_{}", std::process::id());
            let mut admin = PgConnection::establish(&url).expect("postgres");
            admin
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .unwrap();
            let base = url.split('?').next().unwrap();
            let db_url = format!("{}/{name}", base.rsplit_once('/').unwrap().0);
            run("PostgreSQL", Some(db_url), seconds, keys).await;
            admin
                .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
                .unwrap();
        } else {
            println!("PostgreSQL skipped: KEYGATE_TEST_POSTGRES_URL is not set");
        }
    });
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn run(label: &str, database_url: Option<String>, seconds: u64, keys: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.bootstrap_token = Some(TOKEN.to_owned());
    config.database_url = database_url;
    config.db_pool_size = std::env::var("KEYGATE_BENCH_POOL")
        .ok()
        .and_then(|v| v.parse().ok());
    let app = Application::build(config).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let state = app.state();
    let handle = app.handle();
    actix_web::rt::spawn(app.run_until_stopped());
    let client = awc::Client::default();
    let post = |path: String, body: Value| {
        let client = client.clone();
        let url = format!("{base}{path}");
        async move {
            let mut r = client
                .post(url)
                .insert_header(("authorization", format!("Bearer {TOKEN}")))
                .send_json(&body)
                .await
                .unwrap();
            r.json::<Value>().limit(1 << 20).await.unwrap()
        }
    };
    let project = post(
        "/v1/projects".into(),
        json!({"name": "bench", "key_prefix": "bench", "routes": [{"methods": ["GET"], "path": "/orders/*", "scope": "orders:read"}]}),
    )
    .await;
    let pid = project["id"].as_str().unwrap().to_owned();
    let key = post(
        format!("/v1/projects/{pid}/keys"),
        json!({"name": "verify", "kind": "secret", "environment": "live", "scopes": ["orders:read"]}),
    )
    .await;
    let plaintext = key["key"].as_str().unwrap().to_owned();

    println!("## {label}");
    for connections in [16, 32] {
        let verify = wrk(
            &format!("{base}/v1/verify"),
            &format!(r#"{{"key":"{plaintext}","method":"GET","path":"/orders/1"}}"#),
            connections,
            seconds,
            dir.path(),
        );
        println!("/v1/verify, key without counters (wrk -t1 -c{connections}): {verify}");
    }
    let create = wrk(
        &format!("{base}/v1/projects/{pid}/keys"),
        r#"{"name":"bench","kind":"secret","environment":"live","scopes":["orders:read"]}"#,
        16,
        seconds,
        dir.path(),
    );
    println!("key creation (wrk -t1 -c16): {create}");

    // Snapshot build: bulk-insert keys up to `keys`, then time cold builds.
    let existing: i64 = {
        let mut c = state.pool.get().unwrap();
        api_keys::table.count().get_result(&mut *c).unwrap()
    };
    let started = Instant::now();
    seed(&state, &pid, keys.saturating_sub(existing as usize));
    println!(
        "seeded {} keys in {:.1} s",
        keys.saturating_sub(existing as usize),
        started.elapsed().as_secs_f64()
    );
    let mut times = Vec::new();
    for _ in 0..3 {
        {
            let mut c = state.pool.get().unwrap();
            keygate_control_plane::domain::bump_version(&mut c).unwrap();
        }
        let t = Instant::now();
        let mut r = client
            .get(format!("{base}/v1/snapshot"))
            .insert_header(("authorization", format!("Bearer {TOKEN}")))
            .send()
            .await
            .unwrap();
        let body = r.body().limit(1 << 26).await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(!body.is_empty());
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "snapshot build of {} keys (GET /v1/snapshot after a change): median {:.0} ms (runs: {})",
        keys.max(existing as usize),
        times[1],
        times
            .iter()
            .map(|t| format!("{t:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // Polls of an unchanged snapshot against the cheapest route, in alternating rounds so that
    // the machine's load hits both alike.
    let etag = {
        let r = client
            .get(format!("{base}/v1/snapshot"))
            .insert_header(("authorization", format!("Bearer {TOKEN}")))
            .send()
            .await
            .unwrap();
        r.headers()
            .get("etag")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    };
    let mut ratios = Vec::new();
    for round in 1..=3 {
        let health = wrk_run(
            &format!("{base}/healthz"),
            &Request::Get(vec![]),
            16,
            seconds,
            dir.path(),
        );
        let polls = wrk_run(
            &format!("{base}/v1/snapshot"),
            &Request::Get(vec![
                ("Authorization", format!("Bearer {TOKEN}")),
                ("If-None-Match", etag.clone()),
            ]),
            16,
            seconds,
            dir.path(),
        );
        let ratio = polls.rate / health.rate;
        ratios.push(ratio);
        println!(
            "round {round}: GET /healthz {}; GET /v1/snapshot answered 304 {} ({:.2} of /healthz)",
            health.summary, polls.summary, ratio
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "304 polls against /healthz with {} keys published (wrk -t1 -c16): median {:.2}",
        keys.max(existing as usize),
        ratios[1]
    );
    handle.stop(true).await;
}

fn seed(state: &keygate_control_plane::state::AppState, project_id: &str, n: usize) {
    let prefix = KeyPrefix::parse("bench").unwrap();
    let policy = StoredPolicy {
        scopes: vec![Scope::parse("orders:read").unwrap()],
        ..Default::default()
    };
    let policy = serde_json::to_string(&policy).unwrap();
    let mut conn = state.pool.get().unwrap();
    let now = state.clock.now_ms();
    let mut done = 0;
    while done < n {
        let batch = (n - done).min(1000);
        let rows: Vec<KeyRow> = (0..batch)
            .map(|_| {
                let k = PlaintextKey::generate(
                    &mut rand::rngs::OsRng,
                    &prefix,
                    Kind::Secret,
                    Environment::Live,
                );
                KeyRow {
                    id: keygate_control_plane::ids::KeyId::generate(),
                    project_id: keygate_control_plane::ids::ProjectId::new(project_id),
                    name: "seeded".to_owned(),
                    kind: Kind::Secret,
                    environment: Environment::Live,
                    key_hash: k.hash().to_hex(),
                    key_start: k.start(),
                    policy: policy.clone(),
                    expires_at: None,
                    created_at: now,
                    updated_at: now,
                    revoked_at: None,
                    revoked_reason: None,
                    rotated_to: None,
                    rotated_from: None,
                    last_used_at: None,
                }
            })
            .collect();
        with_backend!(&mut *conn, |c| diesel::insert_into(api_keys::table)
            .values(&rows)
            .execute(c))
        .unwrap();
        done += batch;
    }
}

/// Runs wrk with a POST body; returns "N req/s, p50 X, p99 Y".
fn wrk(url: &str, body: &str, connections: u32, seconds: u64, dir: &std::path::Path) -> String {
    wrk_run(
        url,
        &Request::Post(body.to_owned()),
        connections,
        seconds,
        dir,
    )
    .summary
}

/// What wrk sends.
enum Request {
    /// A JSON body, with the bench token.
    Post(String),
    /// A GET with these headers.
    Get(Vec<(&'static str, String)>),
}

struct WrkResult {
    rate: f64,
    summary: String,
}

fn wrk_run(
    url: &str,
    request: &Request,
    connections: u32,
    seconds: u64,
    dir: &std::path::Path,
) -> WrkResult {
    let script = dir.join("request.lua");
    let lua = match request {
        Request::Post(body) => format!(
            "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.headers[\"Authorization\"] = \"Bearer {TOKEN}\"\nwrk.body = [[{body}]]\n"
        ),
        Request::Get(headers) => headers
            .iter()
            .map(|(k, v)| format!("wrk.headers[\"{k}\"] = [[{v}]]\n"))
            .collect(),
    };
    std::fs::write(&script, lua).unwrap();
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(&script)
        .arg(url)
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    let find = |prefix: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
            .unwrap_or_else(|| "?".to_owned())
    };
    let errors = text
        .lines()
        .find(|l| l.contains("Non-2xx"))
        .map(|l| format!(", {}", l.trim()))
        .unwrap_or_default();
    let rate = find("Requests/sec:");
    WrkResult {
        rate: rate.parse().unwrap_or(0.0),
        summary: format!(
            "{rate} req/s, p50 {}, p99 {}{errors}",
            find("50%"),
            find("99%")
        ),
    }
}
