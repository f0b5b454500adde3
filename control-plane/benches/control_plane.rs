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

use diesel::prelude::*;
use keygate_control_plane::db::schema::api_keys;
use keygate_control_plane::{Application, Config};

use serde_json::{json, Value};

#[path = "support/postgres.rs"]
mod postgres;
#[path = "support/seed.rs"]
mod seed;

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
        postgres::with_database("control_plane", |url| {
            run("PostgreSQL", Some(url), seconds, keys)
        })
        .await;
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
    config.database_url = database_url.clone();
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
    {
        let mut conn = state.pool.get().unwrap();
        let now = state.clock.now_ms();
        seed::seed(
            &mut conn,
            &pid,
            keys.saturating_sub(existing as usize),
            now,
            |i| (format!("key_bench{i:08}"), "seeded".to_owned()),
        );
    }
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
        assert_eq!(poll(&base, None).await.0, 200);
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    // The first poll after seeding builds everything (the seeded rows bypass `key_changes`, so
    // nothing was held yet); the next two publish an unchanged key set incrementally.
    println!(
        "GET /v1/snapshot with {} keys: first (full build) {:.0} ms; after a version bump (incremental) {:.0} ms, {:.0} ms",
        keys.max(existing as usize),
        times[0],
        times[1],
        times[2]
    );

    // Let the kernel write back the seeded database first: its flush competes for the cores.
    let _ = Command::new("sync").status();
    actix_web::rt::time::sleep(std::time::Duration::from_secs(5)).await;
    let published = keys.max(existing as usize);
    println!(
        "304 polls against /healthz, {published} keys published, in the process that seeded them:"
    );
    poll_rounds(&base, seconds, dir.path()).await;
    handle.stop(true).await;

    // The same database served by `keygate serve` started afresh, as after a restart: the
    // figure a deployment sees, without the seeding's and earlier builds' heap in the process.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_keygate"));
    serve
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path())
        .env("KEYGATE_BOOTSTRAP_TOKEN", TOKEN)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if let Some(url) = &database_url {
        serve.args(["--database-url", url]);
    }
    let mut child = serve.spawn().expect("start keygate serve");
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if client.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let t = Instant::now();
    assert_eq!(poll(&base, None).await.0, 200);
    println!(
        "restarted keygate serve: first GET /v1/snapshot (full build of {published} keys) {:.0} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    println!("304 polls against /healthz, {published} keys published, restarted keygate serve:");
    poll_rounds(&base, seconds, dir.path()).await;
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    for field in ["VmHWM:", "VmRSS:"] {
        if let Some(l) = status.lines().find(|l| l.starts_with(field)) {
            println!("restarted keygate serve {l}");
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Six alternating wrk rounds of `/healthz` and of snapshot polls answered 304; prints each
/// round and the median ratio.
async fn poll_rounds(base: &str, seconds: u64, dir: &std::path::Path) {
    let health = format!("{base}/healthz");
    let snapshot = format!("{base}/v1/snapshot");
    let mut ratios = Vec::new();
    for round in 1..=6 {
        // The ETag of this moment: a poll holding an older one is answered 200 with the whole
        // manifest, which is not what is measured here (checked again after the run).
        let etag = poll(base, None).await.1;
        let polls_request = Request::Get(vec![
            ("Authorization", format!("Bearer {TOKEN}")),
            ("If-None-Match", etag.clone()),
        ]);
        let run_health = || wrk_run(&health, &Request::Get(vec![]), 16, seconds, dir);
        let run_polls = || wrk_run(&snapshot, &polls_request, 16, seconds, dir);
        // Alternate which goes first, so a drift in the machine's load favours neither.
        let (h, p) = if round % 2 == 1 {
            let h = run_health();
            (h, run_polls())
        } else {
            let p = run_polls();
            (run_health(), p)
        };
        let still = poll(base, Some(&etag)).await.0 == 304;
        assert!(
            still,
            "the snapshot changed during round {round}: its polls were not all 304s"
        );
        let ratio = p.rate / h.rate;
        ratios.push(ratio);
        println!(
            "  round {round}: GET /healthz {}; GET /v1/snapshot answered 304 {} ({ratio:.2} of /healthz)",
            h.summary, p.summary
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "  median {:.2} of /healthz (wrk -t1 -c16, 6 rounds)",
        (ratios[2] + ratios[3]) / 2.0
    );
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

/// One snapshot poll with a client of its own (the caller's pooled connections may have idled
/// past keep-alive): its status and `ETag`.
async fn poll(base: &str, etag: Option<&str>) -> (u16, String) {
    let mut req = awc::Client::default()
        .get(format!("{base}/v1/snapshot"))
        .insert_header(("authorization", format!("Bearer {TOKEN}")));
    if let Some(e) = etag {
        req = req.insert_header(("if-none-match", e.to_owned()));
    }
    let mut r = req.send().await.unwrap();
    let _ = r.body().limit(1 << 26).await;
    let etag = r
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (r.status().as_u16(), etag)
}
