//! Fleet simulation: N edge isolates poll a real control plane for the snapshot, as the edge
//! does, while keys are revoked at a fixed rate; reports how fast each revocation reaches the
//! fleet and what the fleet costs the control plane.
//!
//! ```text
//! cargo bench -p keygate-control-plane --bench fleet
//! ```
//!
//! The control plane is the `keygate` binary of this build (`keygate serve`, SQLite in a
//! temporary directory), a process of its own so that its CPU time and memory are its own
//! (`/proc/<pid>`). Each simulated isolate, like the edge's, asks `GET /v1/snapshot` with
//! `If-None-Match` every interval (its phase spread evenly over the interval); on a new manifest
//! it fetches the shards its location lacks, as isolates sharing the Workers Cache API of one
//! location would. A revocation counts as reaching an isolate when that isolate first holds a
//! version at least the one the revocation published.
//!
//! Settings: `FLEET_ISOLATES` (comma-separated fleet sizes, default `1000,5000`),
//! `FLEET_SECONDS` (default 30), `FLEET_INTERVAL_MS` (the edge's `SNAPSHOT_REFRESH_SECONDS`,
//! default 2000), `FLEET_REVOKE_RATE` (revocations per second, default 10),
//! `FLEET_PER_LOCATION` (isolates sharing a shard cache, default 5), `FLEET_KEYS` (keys besides
//! the ones revoked, default 2000).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use keygate_shared::snapshot::verify_snapshot;
use keygate_shared::TrustedKeys;
use serde_json::{json, Value};

const TOKEN: &str = "fleet-owner-token-0123456789abcdefghijklmnop";

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it,
    // and a load run does not belong in a test run.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "fleet simulation: run it with `cargo bench -p keygate-control-plane --bench fleet`"
        );
        return;
    }
    let sizes: Vec<usize> = std::env::var("FLEET_ISOLATES")
        .unwrap_or_else(|_| "1000,5000".to_owned())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let settings = Settings {
        seconds: env_or("FLEET_SECONDS", 30),
        interval: Duration::from_millis(env_or("FLEET_INTERVAL_MS", 2000)),
        rate: env_or("FLEET_REVOKE_RATE", 10),
        per_location: env_or("FLEET_PER_LOCATION", 5usize).max(1),
        keys: env_or("FLEET_KEYS", 2000),
    };
    println!(
        "fleet: {} s per run, poll every {} ms, {} revocations/s, {} isolates per location, {} other keys",
        settings.seconds,
        settings.interval.as_millis(),
        settings.rate,
        settings.per_location,
        settings.keys
    );
    for n in sizes {
        run(n, &settings);
    }
}

struct Settings {
    seconds: u64,
    interval: Duration,
    rate: u64,
    per_location: usize,
    keys: u64,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The control plane process, stopped when dropped.
struct Server {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .arg("--data-dir")
        .arg(dir.path())
        .arg("serve")
        .env("KEYGATE_LISTEN", format!("127.0.0.1:{port}"))
        .env("KEYGATE_BOOTSTRAP_TOKEN", TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    }
}

/// User + system CPU seconds of process `pid` so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    // USER_HZ is 100 on Linux.
    ticks / 100.0
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in MiB.
fn status_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim_start_matches(':')
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(0.0)
        / 1024.0
}

fn run(n: usize, s: &Settings) {
    let server = start_server();
    let pid = server.child.id();
    let base = server.base.clone();
    let revocations = usize::try_from(s.rate * s.seconds).unwrap() + 5;
    actix_web::rt::System::new().block_on(async move {
        let client = awc::Client::builder()
            .connector(awc::Connector::new().limit(512))
            .timeout(Duration::from_secs(30))
            .finish();
        wait_ready(&client, &base).await;
        let (edge, key_ids) = setup(&client, &base, revocations, s.keys).await;
        let public: Value = client
            .get(format!("{base}/v1/snapshot/public-key"))
            .insert_header(("authorization", format!("Bearer {edge}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let trusted = Rc::new(
            TrustedKeys::from_base64url_list(public["public_key"].as_str().unwrap()).unwrap(),
        );
        println!("\n## {n} isolates");

        let stop = Rc::new(Cell::new(false));
        let log: Rc<RefCell<Seen>> = Rc::new(RefCell::new(vec![Vec::new(); n]));
        let stats = Rc::new(RefCell::new(Stats::default()));
        let locations: Vec<Rc<RefCell<HashSet<String>>>> = (0..n.div_ceil(s.per_location))
            .map(|_| Rc::new(RefCell::new(HashSet::new())))
            .collect();
        let cpu_before = cpu_seconds(pid);
        let started = Instant::now();
        let mut isolates = Vec::with_capacity(n);
        for i in 0..n {
            let (client, base, edge) = (client.clone(), base.clone(), edge.clone());
            let (stop, log, stats) = (stop.clone(), log.clone(), stats.clone());
            let trusted = trusted.clone();
            let location = locations[i / s.per_location].clone();
            let phase = s.interval.mul_f64(i as f64 / n as f64);
            let interval = s.interval;
            isolates.push(actix_web::rt::spawn(async move {
                actix_web::rt::time::sleep(phase).await;
                let mut etag: Option<String> = None;
                let mut held = 0u64;
                let mut next = Instant::now();
                while !stop.get() {
                    let asked = Instant::now();
                    let mut req = client
                        .get(format!("{base}/v1/snapshot"))
                        .insert_header(("authorization", format!("Bearer {edge}")));
                    if let Some(e) = &etag {
                        req = req.insert_header(("if-none-match", e.clone()));
                    }
                    match req.send().await {
                        Ok(mut res) => {
                            let status = res.status().as_u16();
                            let version = res
                                .headers()
                                .get("keygate-snapshot-version")
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.parse::<u64>().ok());
                            let new_etag = res
                                .headers()
                                .get("etag")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned);
                            let body = res.body().limit(256 << 20).await.unwrap_or_default();
                            stats.borrow_mut().poll(status, asked.elapsed(), body.len());
                            if status == 200 {
                                etag = new_etag;
                                let digests = shard_digests(&body, &trusted);
                                let missing: Vec<String> = {
                                    let mut have = location.borrow_mut();
                                    digests.into_iter().filter(|d| have.insert(d.clone())).collect()
                                };
                                for d in missing {
                                    let r = client
                                        .get(format!("{base}/v1/snapshot/shards/{d}"))
                                        .insert_header(("authorization", format!("Bearer {edge}")))
                                        .send()
                                        .await;
                                    let ok = match r {
                                        Ok(mut r) => r.body().limit(256 << 20).await.is_ok() && r.status() == 200,
                                        Err(_) => false,
                                    };
                                    stats.borrow_mut().shard(ok);
                                }
                            }
                            if let Some(v) = version.filter(|v| *v > held) {
                                held = v;
                                log.borrow_mut()[i].push((v, Instant::now()));
                            }
                        }
                        Err(_) => stats.borrow_mut().poll(0, asked.elapsed(), 0),
                    }
                    next += interval;
                    let now = Instant::now();
                    if next > now {
                        actix_web::rt::time::sleep(next - now).await;
                    } else {
                        next = now;
                    }
                }
            }));
        }

        // Revoke at the set rate; each revocation's version is the one the control plane
        // serves right after the API answered.
        let mut revoked: Vec<(u64, Instant)> = Vec::new();
        let window = Duration::from_secs(s.seconds);
        let period = Duration::from_secs_f64(1.0 / s.rate.max(1) as f64);
        let mut rss_max = 0f64;
        // Warm-up: every isolate polls once before the first revocation.
        actix_web::rt::time::sleep(s.interval).await;
        let revoking = Instant::now();
        for key_id in key_ids.iter().take(revocations) {
            if revoking.elapsed() >= window {
                break;
            }
            let r = client
                .post(format!("{base}/v1/keys/{key_id}/revoke"))
                .insert_header(("authorization", format!("Bearer {TOKEN}")))
                .send_json(&json!({}))
                .await;
            let done = Instant::now();
            assert!(r.map(|r| r.status().is_success()).unwrap_or(false), "revoke failed");
            let v = client
                .get(format!("{base}/v1/snapshot"))
                .insert_header(("authorization", format!("Bearer {edge}")))
                .send()
                .await
                .ok()
                .and_then(|r| r.headers().get("keygate-snapshot-version")?.to_str().ok()?.parse().ok())
                .expect("version after a revocation");
            revoked.push((v, done));
            rss_max = rss_max.max(status_mib(pid, "VmRSS"));
            let due = revoking + period * u32::try_from(revoked.len()).unwrap();
            let now = Instant::now();
            if due > now {
                actix_web::rt::time::sleep(due - now).await;
            }
        }
        // Let the last revocations reach everyone.
        actix_web::rt::time::sleep(s.interval * 2).await;
        stop.set(true);
        let elapsed = started.elapsed().as_secs_f64();
        let cpu = cpu_seconds(pid) - cpu_before;
        for t in isolates {
            let _ = t.await;
        }

        let log = log.borrow();
        let mut lat: Vec<Duration> = Vec::new();
        let mut missed = 0u64;
        for (v, at) in &revoked {
            for seen in log.iter() {
                match seen.iter().find(|(sv, _)| sv >= v) {
                    Some((_, t)) => lat.push(t.saturating_duration_since(*at)),
                    None => missed += 1,
                }
            }
        }
        lat.sort();
        let st = stats.borrow();
        println!(
            "revocations: {} ({:.1}/s); propagation to each isolate: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms, not reached {missed}",
            revoked.len(),
            revoked.len() as f64 / revoking.elapsed().as_secs_f64(),
            ms(pct(&lat, 50.0)),
            ms(pct(&lat, 99.0)),
            ms(lat.last().copied().unwrap_or_default()),
        );
        let mut poll_lat = st.latencies.clone();
        poll_lat.sort();
        println!(
            "polls: {} ({:.0}/s): {} × 200, {} × 304, {} failed; poll latency p50 {:.1} ms, p99 {:.1} ms; {:.1} MB of manifests",
            st.polls,
            st.polls as f64 / elapsed,
            st.ok,
            st.not_modified,
            st.failed,
            ms(pct(&poll_lat, 50.0)),
            ms(pct(&poll_lat, 99.0)),
            st.bytes as f64 / 1e6,
        );
        println!(
            "shard fetches: {} ({} failed), one per location and changed shard",
            st.shards, st.shard_failures
        );
        println!(
            "control plane: {:.2} CPU seconds over {:.1} s ({:.0} % of one core), resident {:.0} MiB at most while revoking, peak {:.0} MiB",
            cpu,
            elapsed,
            cpu / elapsed * 100.0,
            rss_max,
            status_mib(pid, "VmHWM"),
        );
    });
    drop(server);
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p / 100.0).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Per isolate, each version it came to hold and when.
type Seen = Vec<Vec<(u64, Instant)>>;

#[derive(Default)]
struct Stats {
    polls: u64,
    ok: u64,
    not_modified: u64,
    failed: u64,
    bytes: u64,
    shards: u64,
    shard_failures: u64,
    latencies: Vec<Duration>,
}

impl Stats {
    fn poll(&mut self, status: u16, took: Duration, bytes: usize) {
        self.polls += 1;
        self.bytes += bytes as u64;
        self.latencies.push(took);
        match status {
            200 => self.ok += 1,
            304 => self.not_modified += 1,
            _ => self.failed += 1,
        }
    }

    fn shard(&mut self, ok: bool) {
        self.shards += 1;
        if !ok {
            self.shard_failures += 1;
        }
    }
}

/// The shard digests (hex) of a manifest, verified as the edge verifies it.
// The bench is its own process boundary: it reads the wall clock, as the edge does.
#[allow(clippy::disallowed_methods)]
fn shard_digests(body: &[u8], trusted: &TrustedKeys) -> Vec<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    match verify_snapshot(body, trusted, None, now) {
        Ok(m) => m
            .manifest()
            .shard_digests
            .iter()
            .map(|d| d.to_hex())
            .collect(),
        Err(e) => panic!("the control plane served a snapshot that does not verify: {e}"),
    }
}

async fn wait_ready(client: &awc::Client, base: &str) {
    for _ in 0..200 {
        if let Ok(r) = client.get(format!("{base}/healthz")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the control plane did not start");
}

/// A project with `revocable` keys to revoke and `others` more, and an edge token.
async fn setup(
    client: &awc::Client,
    base: &str,
    revocable: usize,
    others: u64,
) -> (String, Vec<String>) {
    let post = |path: String, body: Value| {
        let req = client
            .post(format!("{base}{path}"))
            .insert_header(("authorization", format!("Bearer {TOKEN}")));
        async move {
            let mut r = req.send_json(&body).await.unwrap();
            let v: Value = r.json().limit(1 << 20).await.unwrap_or_default();
            (r.status().as_u16(), v)
        }
    };
    let (s, project) = post(
        "/v1/projects".to_owned(),
        json!({"name": "fleet", "key_prefix": "flt"}),
    )
    .await;
    assert_eq!(s, 201, "create project: {project}");
    let pid = project["id"].as_str().unwrap().to_owned();
    let total = revocable + usize::try_from(others).unwrap();
    let mut ids = Vec::with_capacity(revocable);
    let started = Instant::now();
    for i in 0..total {
        let (s, key) = post(
            format!("/v1/projects/{pid}/keys"),
            json!({"name": format!("fleet {i}")}),
        )
        .await;
        assert_eq!(s, 201, "create key: {key}");
        if i < revocable {
            ids.push(key["id"].as_str().unwrap().to_owned());
        }
    }
    println!(
        "setup: {total} keys in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let (s, edge) = post(
        "/v1/admin-tokens".to_owned(),
        json!({"name": "fleet edge", "role": "edge"}),
    )
    .await;
    assert_eq!(s, 201, "create edge token: {edge}");
    (edge["token"].as_str().unwrap().to_owned(), ids)
}
