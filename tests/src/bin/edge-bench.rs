//! Edge benchmarks on loopback (docs/benchmarks.md, "Edge"):
//!
//! 1. Throughput and latency with `wrk` against workerd, same origin, one run each: an empty
//!    pass-through Worker (also with the client sending the four `Keygate-*` headers), a Worker
//!    making only the contract's header edits, Keygate with a valid key, Keygate with an invalid
//!    key.
//! 2. A cold isolate's first verdict against an `EDGE_BENCH_KEYS`-key snapshot (fresh workerd
//!    each time), with the key's shard fetched from the control plane, then from a location's
//!    cache that another runtime filled.
//! 3. Revocation: time from the revoke API call until the edge answers 401, with the default
//!    2-second refresh interval, on a control plane holding `EDGE_BENCH_KEYS` keys.
//! 4. Memory: the runtime's resident size and the isolate's Wasm memory while it answers
//!    `EDGE_BENCH_MEMORY_REQUESTS` requests for random keys of an `EDGE_BENCH_KEYS`-key snapshot.
//!
//! Run: `cargo xtask build-edge --release && cargo run -p keygate-tests --bin edge-bench`
//! (needs `wrk`: `apt-get install wrk`). `EDGE_BENCH_SECONDS` sets each wrk run's length,
//! `EDGE_BENCH_ROUNDS` the rounds of the valid-key comparison, `EDGE_BENCH_COLD_RUNS` the cold starts,
//! `EDGE_BENCH_KEYS` the key count of the cold starts, the revocations and the memory run
//! (100,000; `EDGE_BENCH_COLD_KEYS` still sets the cold starts' alone), `EDGE_BENCH_MEMORY_REQUESTS`
//! the memory run's requests (10,000), `EDGE_BENCH_PIN=0` turns off pinning the measured
//! runtime to its own CPU, and `EDGE_BENCH_ONLY` (a comma-separated subset of
//! `throughput,cold,revocation,memory`) what runs.

use std::fs;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keygate_shared::{Environment, KeyPrefix, Kind, PlaintextKey, SnapshotSigner};
use keygate_tests::cache::CacheService;
use keygate_tests::fixtures::{plain_record, SignedSnapshot};
use keygate_tests::http::{self, StubResponse, StubServer};
use keygate_tests::origin::Origin;
use keygate_tests::stack::{OriginChoice, Stack, StackOptions, ORIGIN_SECRET};
use keygate_tests::workerd::{workspace_root, WorkerdConfig};
use serde_json::json;

const PASS_THROUGH: &str = r#"
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    return fetch(env.ORIGIN_URL + url.pathname + url.search, { method: request.method, headers: request.headers });
  },
};
export class Limiter { async fetch() { return new Response(null, { status: 204 }); } }
"#;

/// The headers Keygate adds to a forwarded request, with values of the real ones' lengths.
const KEYGATE_HEADERS: &[(&str, &str)] = &[
    ("Keygate-Key-Id", "key_01kb7m3x2f9q8w6e5r4t3y2u1i"),
    ("Keygate-Project-Id", "prj_01kb7m3x2f9q8w6e5r4t3y2u1i"),
    ("Keygate-Environment", "live"),
    (
        "Keygate-Signature",
        "t=1764330000,v1=0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0",
    ),
];

/// The pass-through plus exactly the header edits the contract asks of every forwarded request,
/// made as `edge/shim.mjs` makes them, setting [`KEYGATE_HEADERS`], with no verification: the
/// floor for any Worker that forwards as the contract says.
fn header_edits_only() -> String {
    let sets: String = KEYGATE_HEADERS
        .iter()
        .map(|(name, value)| format!("    headers.set({name:?}, {value:?});\n"))
        .collect();
    format!(
        r#"
export default {{
  async fetch(request, env) {{
    const url = new URL(request.url);
    const headers = new Headers(request.headers);
    headers.delete("Authorization");
    headers.delete("Proxy-Authorization");
{sets}    const method = request.method;
    const body = method === "GET" || method === "HEAD" ? null : request.body;
    return fetch(env.ORIGIN_URL + url.pathname + url.search, {{ method, headers, body, redirect: "manual" }});
  }},
}};
export class Limiter {{ async fetch() {{ return new Response(null, {{ status: 204 }}); }} }}
"#
    )
}

/// The smallest valid WebAssembly module: the harness loads `worker/index.wasm` beside the
/// entry module.
const EMPTY_WASM: &[u8] = b"\0asm\x01\0\0\0";

struct WrkResult {
    rps: f64,
    requests: f64,
    p50: String,
    p99: String,
    non_2xx: String,
}

fn wrk(url: &str, headers: &[&str], seconds: u64) -> Result<WrkResult, String> {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t2", "-c16", &format!("-d{seconds}s"), "--latency"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd
        .arg(url)
        .output()
        .map_err(|e| format!("wrk: {e} (apt-get install wrk)"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |prefix: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("-")
            .to_owned()
    };
    let rps = field("Requests/sec:")
        .parse::<f64>()
        .map_err(|_| format!("wrk output:\n{text}"))?;
    let requests = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or(0.0);
    let non_2xx = text
        .lines()
        .find(|l| l.contains("Non-2xx"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("0".to_owned(), |v| v.trim().to_owned());
    Ok(WrkResult {
        rps,
        requests,
        p50: field("50%"),
        p99: field("99%"),
        non_2xx,
    })
}

/// CPU time (user + system, all threads) a process has used so far, from `/proc/<pid>/stat`,
/// in microseconds. Linux reports it in USER_HZ ticks, which are 1/100 s on x86_64 and arm64.
fn cpu_micros(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it start past the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) * 10_000.0)
}

/// Runs wrk and measures the CPU time the runtime process spent per request meanwhile: unlike
/// requests/s, it hardly depends on what else the machine's cores are doing.
fn measured(
    url: &str,
    headers: &[&str],
    seconds: u64,
    pid: Option<u32>,
) -> Result<(WrkResult, Option<f64>), String> {
    let before = pid.and_then(cpu_micros);
    let r = wrk(url, headers, seconds)?;
    let after = pid.and_then(cpu_micros);
    let per_request = match (before, after) {
        (Some(b), Some(a)) if r.requests > 0.0 => Some((a - b) / r.requests),
        _ => None,
    };
    Ok((r, per_request))
}

/// Runs `taskset -a -p -c` with `args`, from util-linux: with a CPU list, binds every thread of
/// a process to those CPUs; without, prints the process's affinity list.
fn taskset(args: &[&str]) -> Result<String, String> {
    let out = Command::new("taskset")
        .args(["-a", "-p", "-c"])
        .args(args)
        .output()
        .map_err(|e| format!("taskset: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "taskset -a -p -c {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn pin(pid: u32, cpus: &str) -> Result<(), String> {
    taskset(&[cpus, &pid.to_string()]).map(drop)
}

fn throughput(seconds: u64, rounds: usize, pinned: bool) -> Result<(), String> {
    // Pinned, the runtime under test has CPU 1 to itself, and everything else (wrk, the origin,
    // the control plane, the runtimes not being measured) shares CPU 0: requests/s then follow
    // the runtime's own cost per request instead of how the scheduler mixed the processes.
    // The CPUs this process had come back when this returns, for the runs after it.
    struct Restore(String);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = pin(std::process::id(), &self.0);
        }
    }
    let _restore = if pinned {
        let me = std::process::id();
        let listed = taskset(&[&me.to_string()])?;
        let cpus = listed
            .rsplit(':')
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        pin(me, "0")?;
        Some(Restore(cpus))
    } else {
        None
    };
    // A plain origin that answers 200 to everything, so every run measures the same origin work.
    // It keeps connections open, as real origins do: the runtime pools them, and no run pays a
    // TCP handshake per request.
    let origin = StubServer::start_keep_alive(|_| StubResponse::json(200, r#"{"ok":true}"#))
        .map_err(|e| e.to_string())?;
    let stack = Stack::start(StackOptions {
        refresh_seconds: 2.0,
        usage_flush_seconds: 10.0,
        origin: OriginChoice::External(origin.url()),
        ..StackOptions::default()
    })?;
    let project = stack.api(
        "POST",
        "/v1/projects",
        Some(&json!({"name": "Bench", "key_prefix": "bench"})),
    );
    let project = project.body["id"].as_str().ok_or("project")?.to_owned();
    let key = stack.api(
        "POST",
        &format!("/v1/projects/{project}/keys"),
        Some(&json!({"name": "bench", "kind": "secret", "environment": "live"})),
    );
    let key = key.body["key"].as_str().ok_or("key")?.to_owned();
    let auth = format!("Authorization: Bearer {key}");
    let ready = Stack::wait_for(Duration::from_secs(10), || {
        stack
            .edge(
                "GET",
                "/bench",
                &[("Authorization", &format!("Bearer {key}"))],
                None,
            )
            .status
            == 200
    });
    ready.ok_or("the edge never accepted the bench key")?;

    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let pass = js_worker(dir.path(), "pass-through", PASS_THROUGH, &stack.origin_url)?;
    let edits = js_worker(
        dir.path(),
        "header-edits",
        &header_edits_only(),
        &stack.origin_url,
    )?;

    let invalid = "Authorization: Bearer bench_sk_live_0000000000000000000000000000000000000";
    let pass_url = format!("{}/bench", pass.url());
    let edits_url = format!("{}/bench", edits.url());
    let edge_url = format!("{}/bench", stack.edge_url);
    println!("| run | requests/s | p50 | p99 | non-2xx | runtime CPU per request |");
    println!("|---|---|---|---|---|---|");
    let row = |name: &str, (r, cpu): &(WrkResult, Option<f64>)| {
        let cpu = cpu.map_or("-".to_owned(), |c| format!("{c:.0} µs"));
        println!(
            "| {name} | {:.0} | {} | {} | {} | {cpu} |",
            r.rps, r.p50, r.p99, r.non_2xx
        );
    };
    let (pass_pid, edits_pid) = (pass.pid(), edits.pid());
    let edge_pid = stack.edge.as_ref().and_then(|e| e.pid());
    // Each runtime moves to CPU 1 only while it is measured.
    let measure = |url: &str, headers: &[&str], pid: Option<u32>| {
        let moved = pid.filter(|_| pinned);
        if let Some(p) = moved {
            pin(p, "1")?;
        }
        let r = measured(url, headers, seconds, pid);
        if let Some(p) = moved {
            pin(p, "0")?;
        }
        r
    };
    // A candidate build of the edge (another `worker-build` output directory), measured in the
    // same rounds, to compare a change with the current build under the same load.
    let candidate = match std::env::var("EDGE_BENCH_CANDIDATE") {
        Ok(build) => {
            let edge = stack.start_another_edge(build, dir.path().join("candidate"))?;
            let url = format!("{}/bench", edge.url());
            Stack::wait_for(Duration::from_secs(10), || {
                http::get(&url, &[("Authorization", &format!("Bearer {key}"))])
                    .is_ok_and(|r| r.status == 200)
            })
            .ok_or("the candidate edge never accepted the bench key")?;
            Some((edge, url))
        }
        Err(_) => None,
    };
    let mut candidate_ratios = Vec::new();
    // (a), (a') and (b) alternate, so that a change in the machine's load hits them alike; the
    // ratios of each round are reported, and their medians. Every run sends the same key header.
    let (mut ratios, mut floor_ratios, mut over_floor) = (Vec::new(), Vec::new(), Vec::new());
    let (mut cpu_ratios, mut carried_ratios) = (Vec::new(), Vec::new());
    let auth = [auth.as_str()];
    // The four headers Keygate adds, with values of the real ones' lengths, sent by the client
    // through the pass-through: what carrying them costs the runtime, with no edits at all.
    let carried: Vec<String> = KEYGATE_HEADERS
        .iter()
        .map(|(name, value)| format!("{name}: {value}"))
        .collect();
    let carried: Vec<&str> = auth
        .iter()
        .copied()
        .chain(carried.iter().map(String::as_str))
        .collect();
    for round in 1..=rounds {
        let a = measure(&pass_url, &auth, pass_pid)?;
        row(&format!("(a) empty pass-through Worker, round {round}"), &a);
        let a2 = measure(&pass_url, &carried, pass_pid)?;
        row(
            &format!("(a'') pass-through, client sends the four Keygate-* headers, round {round}"),
            &a2,
        );
        let f = measure(&edits_url, &auth, edits_pid)?;
        row(&format!("(a') header edits only, round {round}"), &f);
        let b = measure(&edge_url, &auth, edge_pid)?;
        row(&format!("(b) Keygate, valid key, round {round}"), &b);
        ratios.push(b.0.rps / a.0.rps * 100.0);
        carried_ratios.push(a2.0.rps / a.0.rps * 100.0);
        floor_ratios.push(f.0.rps / a.0.rps * 100.0);
        over_floor.push(b.0.rps / f.0.rps * 100.0);
        if let (Some(ca), Some(cb)) = (a.1, b.1) {
            cpu_ratios.push(ca / cb * 100.0);
        }
        if let Some((edge, url)) = &candidate {
            let b2 = measure(url, &auth, edge.pid())?;
            row(
                &format!("(b') candidate build, valid key, round {round}"),
                &b2,
            );
            candidate_ratios.push(b2.0.rps / a.0.rps * 100.0);
        }
    }
    let c = measure(&edge_url, &[invalid], edge_pid)?;
    row("(c) Keygate, invalid key", &c);
    println!("\n(b)/(a) throughput per round: {}", summary(ratios));
    println!(
        "(a'')/(a) throughput per round (carrying the four headers): {}",
        summary(carried_ratios)
    );
    println!(
        "(a')/(a) throughput per round (the header edits alone): {}",
        summary(floor_ratios)
    );
    println!(
        "(b)/(a') throughput per round (verification alone): {}",
        summary(over_floor)
    );
    if candidate.is_some() {
        println!(
            "(b')/(a) throughput per round: {}",
            summary(candidate_ratios)
        );
    }
    println!(
        "(a)/(b) runtime CPU per request, per round: {}",
        summary(cpu_ratios)
    );
    Ok(())
}

/// Starts a JavaScript-only Worker (no Wasm) in its own `workerd`, forwarding to `origin`.
fn js_worker(
    dir: &std::path::Path,
    name: &str,
    source: &str,
    origin: &str,
) -> Result<keygate_tests::workerd::Workerd, String> {
    let build = dir.join(name).join("build");
    fs::create_dir_all(build.join("worker")).map_err(|e| e.to_string())?;
    fs::write(build.join("index.js"), source).map_err(|e| e.to_string())?;
    fs::write(build.join("worker/shim.mjs"), "export {};\n").map_err(|e| e.to_string())?;
    fs::write(build.join("worker/index.wasm"), EMPTY_WASM).map_err(|e| e.to_string())?;
    WorkerdConfig::new(workspace_root(), dir.join(name).join("state"))
        .build_dir(&build)
        .scheduled_trigger(false)
        .var("ORIGIN_URL", origin.to_owned())
        .start()
        .map_err(|e| format!("{name} workerd: {e}"))
}

/// Each value, then their median.
fn summary(mut values: Vec<f64>) -> String {
    if values.is_empty() {
        return "-".to_owned();
    }
    let listed: Vec<String> = values.iter().map(|r| format!("{r:.1} %")).collect();
    values.sort_by(f64::total_cmp);
    format!(
        "{}; median {:.1} %",
        listed.join(", "),
        values[values.len() / 2]
    )
}

#[allow(clippy::disallowed_methods)] // The benchmark plays the control plane's clock.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `keys` random live keys, signed into a snapshot (version 1) of one project.
fn signed_keys(keys: usize) -> Result<(SnapshotSigner, Vec<PlaintextKey>, SignedSnapshot), String> {
    let signer = SnapshotSigner::from_seed(&[3u8; 32]);
    let prefix = KeyPrefix::parse("cold").map_err(|e| e.to_string())?;
    let mut rng = rand::thread_rng();
    let plain: Vec<PlaintextKey> = (0..keys)
        .map(|_| PlaintextKey::generate(&mut rng, &prefix, Kind::Secret, Environment::Live))
        .collect();
    let records = plain
        .iter()
        .enumerate()
        .map(|(i, k)| plain_record(k, &format!("key_{i:08}"), "prj_cold"))
        .collect();
    let snapshot = SignedSnapshot::sign(&signer, 1, "prj_cold", records, now_ms());
    Ok((signer, plain, snapshot))
}

/// When a stub control plane was asked for the manifest (`true`) or a shard (`false`).
type Asked = Arc<Mutex<Vec<(bool, Instant)>>>;

/// A stub control plane serving `snapshot`, recording in `log` when it was asked for the
/// manifest or a shard, and taking usage reports (refused, the edge would keep and resend
/// them, growing with every key seen).
fn stub_control_plane(snapshot: SignedSnapshot, log: Asked) -> Result<StubServer, String> {
    StubServer::start(move |req| {
        let path = req.path();
        if req.method == "POST" && path == "/v1/usage" {
            return StubResponse::empty(202);
        }
        if let (true, Ok(mut l)) = (path.starts_with("/v1/snapshot"), log.lock()) {
            l.push((path == "/v1/snapshot", Instant::now()));
        }
        snapshot
            .respond(req, "\"1-cold\"")
            .unwrap_or_else(|| StubResponse::empty(404))
    })
    .map_err(|e| e.to_string())
}

/// An edge in a fresh `workerd` taking its snapshot from the stub `cp`, with the Cache API
/// backed by `cache` if any.
fn stub_edge(
    state: &std::path::Path,
    cp: &StubServer,
    origin: &Origin,
    signer: &SnapshotSigner,
    cache: Option<&CacheService>,
) -> Result<keygate_tests::workerd::Workerd, String> {
    let mut config = WorkerdConfig::new(workspace_root(), state)
        .scheduled_trigger(false)
        .var("CONTROL_PLANE_URL", cp.url())
        .var("ORIGIN_URL", origin.url())
        .secret("EDGE_TOKEN", "bench")
        .secret("SNAPSHOT_PUBLIC_KEYS", signer.public_key_base64url())
        .secret("ORIGIN_HMAC_SECRET", ORIGIN_SECRET);
    if let Some(c) = cache {
        config = config.cache_service(c.address());
    }
    config.start().map_err(|e| e.to_string())
}

/// One cold start's figures, from the request's start.
struct ColdRun {
    /// The first verdict, its shard fetched from the control plane.
    first: Duration,
    manifest_at: Option<Duration>,
    shard_at: Option<Duration>,
    /// The same runtime's next request.
    warm: Duration,
    /// Another fresh runtime's first verdict, its shard from the cache the first one filled.
    from_cache: Duration,
    /// The empty pass-through Worker's first response in a fresh runtime.
    baseline: Duration,
}

fn cold_start(keys: usize, runs: usize) -> Result<(), String> {
    let (signer, plain, snapshot) = signed_keys(keys)?;
    // When the edge asked for the manifest and for a shard, to split each cold start into
    // isolate start-up, manifest, and shard plus verdict and forward.
    let seen: Asked = Arc::default();
    let cp = stub_control_plane(snapshot, Arc::clone(&seen))?;
    let origin = Origin::start(0, ORIGIN_SECRET.as_bytes().to_vec()).map_err(|e| e.to_string())?;
    let mut times = Vec::new();
    // Run 0 is a warm-up, shown but not counted: the machine's first workerd start in a while
    // also pays for faulting in the runtime binary's pages, which a cold isolate in production
    // (a runtime process already running) does not.
    for i in 0..=runs {
        // Each run is a location whose cache starts empty: the first runtime misses it and
        // fetches the shard, then a second fresh runtime finds the shard there.
        let cache = CacheService::start().map_err(|e| e.to_string())?;
        let state = tempfile::tempdir().map_err(|e| e.to_string())?;
        let edge = stub_edge(
            &state.path().join("edge"),
            &cp,
            &origin,
            &signer,
            Some(&cache),
        )?;
        let key = &plain[(i * 7919) % plain.len()];
        let auth = format!("Bearer {}", key.expose());
        if let Ok(mut l) = seen.lock() {
            l.clear();
        }
        let start = Instant::now();
        let r = http::get(&format!("{}/cold", edge.url()), &[("Authorization", &auth)])
            .map_err(|e| e.to_string())?;
        let took = start.elapsed();
        let (manifest_at, shard_at) = seen.lock().map_or((None, None), |l| {
            let at = |manifest: bool| {
                l.iter()
                    .find(|(m, _)| *m == manifest)
                    .map(|(_, t)| t.duration_since(start))
            };
            (at(true), at(false))
        });
        if r.status != 200 {
            return Err(format!(
                "cold request answered {}: {}\n{}",
                r.status,
                r.text(),
                edge.logs()
            ));
        }
        let start = Instant::now();
        let _ = http::get(&format!("{}/cold", edge.url()), &[("Authorization", &auth)]);
        let warm = start.elapsed();
        // The shard is stored after the verdict: wait for it, then start the second runtime.
        let stored = Stack::wait_for(Duration::from_secs(10), || {
            cache.received().iter().any(|r| r.method == "PUT")
        });
        edge.stop();
        stored.ok_or("the first runtime never stored the shard in the cache")?;
        let cached = stub_edge(
            &state.path().join("cached"),
            &cp,
            &origin,
            &signer,
            Some(&cache),
        )?;
        let shards_before = shard_requests(&seen);
        let start = Instant::now();
        let r = http::get(
            &format!("{}/cold", cached.url()),
            &[("Authorization", &auth)],
        )
        .map_err(|e| e.to_string())?;
        let from_cache = start.elapsed();
        if r.status != 200 || shard_requests(&seen) != shards_before {
            return Err(format!(
                "cold request with a cached shard answered {} after {} shard requests\n{}",
                r.status,
                shard_requests(&seen) - shards_before,
                cached.logs()
            ));
        }
        cached.stop();
        // The same first request to the empty pass-through Worker in a fresh runtime: what any
        // Worker's first response costs here, the runtime's own start-up included.
        let empty = js_worker(state.path(), "empty", PASS_THROUGH, &origin.url())?;
        let start = Instant::now();
        let r = http::get(
            &format!("{}/cold", empty.url()),
            &[("Authorization", &auth)],
        )
        .map_err(|e| e.to_string())?;
        let baseline = start.elapsed();
        // The origin refuses it (no edge signature), which still makes a round trip through it.
        if r.status != 401 {
            return Err(format!("empty Worker answered {}", r.status));
        }
        empty.stop();
        times.push(ColdRun {
            first: took,
            manifest_at,
            shard_at,
            warm,
            from_cache,
            baseline,
        });
    }
    println!("| run | first verdict (cold isolate, includes manifest + one shard fetch) | manifest asked at | shard asked at | next request (warm) | first verdict, shard from the cache | empty Worker's first response |");
    println!("|---|---|---|---|---|---|---|");
    let ms = |d: Option<Duration>| {
        d.map_or("-".to_owned(), |d| {
            format!("{:.1} ms", d.as_secs_f64() * 1e3)
        })
    };
    for (i, t) in times.iter().enumerate() {
        println!(
            "| {} | {} | {} | {} | {:.2} ms | {} | {} |",
            if i == 0 {
                "warm-up".to_owned()
            } else {
                i.to_string()
            },
            ms(Some(t.first)),
            ms(t.manifest_at),
            ms(t.shard_at),
            t.warm.as_secs_f64() * 1e3,
            ms(Some(t.from_cache)),
            ms(Some(t.baseline))
        );
    }
    let series = |name: &str, pick: fn(&ColdRun) -> Duration, target: bool| {
        let mut counted: Vec<f64> = times[1..]
            .iter()
            .map(|t| pick(t).as_secs_f64() * 1e3)
            .collect();
        counted.sort_by(f64::total_cmp);
        if let (Some(min), Some(max)) = (counted.first(), counted.last()) {
            let under = if target {
                format!(
                    "; {} under 50 ms",
                    counted.iter().filter(|&&t| t < 50.0).count()
                )
            } else {
                String::new()
            };
            println!(
                "{name} over {} runs: min {min:.1} ms, median {:.1} ms, max {max:.1} ms{under}",
                counted.len(),
                counted[counted.len() / 2],
            );
        }
    };
    println!();
    series(
        "first verdict, shard from the control plane",
        |t| t.first,
        true,
    );
    series(
        "first verdict, shard from the cache",
        |t| t.from_cache,
        true,
    );
    series("empty Worker's first response", |t| t.baseline, false);
    Ok(())
}

fn shard_requests(seen: &Asked) -> usize {
    seen.lock()
        .map_or(0, |l| l.iter().filter(|(manifest, _)| !manifest).count())
}

/// `VmRSS` and `VmHWM` of process `pid`, in KiB.
fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn memory(keys: usize, requests: usize) -> Result<(), String> {
    use rand::Rng;
    let (signer, plain, snapshot) = signed_keys(keys)?;
    let shard_count = snapshot.shards.len();
    let cp = stub_control_plane(snapshot, Arc::default())?;
    let origin = Origin::start(0, ORIGIN_SECRET.as_bytes().to_vec()).map_err(|e| e.to_string())?;
    let state = tempfile::tempdir().map_err(|e| e.to_string())?;
    let edge = stub_edge(state.path(), &cp, &origin, &signer, None)?;
    let pid = edge.pid().ok_or("no workerd pid")?;
    let status = || -> serde_json::Value {
        http::get(
            &format!("{}/.well-known/keygate/status", edge.url()),
            &[("Authorization", "Bearer bench")],
        )
        .ok()
        .and_then(|r| serde_json::from_slice(&r.body).ok())
        .unwrap_or_default()
    };
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!("| requests | loaded shards (of {shard_count}) | Wasm memory | runtime VmRSS | runtime VmHWM | seconds |");
    println!("|---|---|---|---|---|---|");
    let row = |n: usize, started: Instant| {
        let s = status();
        let wasm = s["wasm_memory_bytes"]
            .as_f64()
            .map_or("-".to_owned(), |b| format!("{:.1} MiB", b / 1048576.0));
        let (rss, hwm) = rss_kib(pid).unwrap_or_default();
        println!(
            "| {n} | {} | {wasm} | {:.1} MiB | {:.1} MiB | {:.1} |",
            s["loaded_shards"],
            mib(rss),
            mib(hwm),
            started.elapsed().as_secs_f64()
        );
    };
    let (rss, _) = rss_kib(pid).unwrap_or_default();
    println!(
        "| 0 (started, no request yet) | - | - | {:.1} MiB | - | - |",
        mib(rss)
    );
    let mut rng = rand::thread_rng();
    let started = Instant::now();
    for n in 1..=requests {
        let key = &plain[rng.gen_range(0..plain.len())];
        let auth = format!("Bearer {}", key.expose());
        let r = http::get(&format!("{}/mem", edge.url()), &[("Authorization", &auth)])
            .map_err(|e| e.to_string())?;
        if r.status != 200 {
            return Err(format!(
                "request {n} answered {}: {}\n{}",
                r.status,
                r.text(),
                edge.logs()
            ));
        }
        if n == 1 || n % (requests / 10).max(1) == 0 {
            row(n, started);
        }
    }
    Ok(())
}

fn revocation(runs: usize, seeded: usize) -> Result<(), String> {
    let data = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut stack = Stack::start(StackOptions {
        refresh_seconds: 2.0,
        data_dir: Some(data.path().join("keygate-data")),
        ..StackOptions::default()
    })?;
    let project = stack.api(
        "POST",
        "/v1/projects",
        Some(&json!({"name": "Rev", "key_prefix": "rev"})),
    );
    let project = project.body["id"].as_str().ok_or("project")?.to_owned();
    if seeded > 0 {
        // Inserted behind a stopped control plane's back, so that its next start builds them
        // all into its first snapshot.
        stack.stop_control_plane();
        let started = Instant::now();
        keygate_tests::seed::insert_keys(
            &data.path().join("keygate-data"),
            &project,
            "rev",
            seeded,
            now_ms(),
        )?;
        let inserted = started.elapsed();
        stack.restart_control_plane()?;
        // Requests load the snapshot (the status page only reports it): one with a key that
        // is not in it.
        let prefix = KeyPrefix::parse("rev").map_err(|e| e.to_string())?;
        let stranger = PlaintextKey::generate(
            &mut rand::thread_rng(),
            &prefix,
            Kind::Secret,
            Environment::Live,
        );
        let auth = format!("Bearer {}", stranger.expose());
        let started = Instant::now();
        let built = Stack::wait_for(Duration::from_secs(120), || {
            stack.edge("GET", "/r", &[("Authorization", &auth)], None);
            stack.edge_status()["key_count"].as_u64() >= Some(seeded as u64)
        })
        .ok_or("the edge never held the seeded snapshot")?;
        println!(
            "seeded {seeded} keys in {:.1} s; the edge held the {seeded}-key snapshot {:.1} s after the control plane restarted ({:.1} s)",
            inserted.as_secs_f64(),
            built.as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
    }
    let mut times = Vec::new();
    for _ in 0..runs {
        let key = stack.api(
            "POST",
            &format!("/v1/projects/{project}/keys"),
            Some(&json!({"name": "r", "kind": "secret", "environment": "live"})),
        );
        let id = key.body["id"].as_str().ok_or("id")?.to_owned();
        let plain = key.body["key"].as_str().ok_or("key")?.to_owned();
        let auth = format!("Bearer {plain}");
        Stack::wait_for(Duration::from_secs(10), || {
            stack
                .edge("GET", "/r", &[("Authorization", &auth)], None)
                .status
                == 200
        })
        .ok_or("key never became valid")?;
        // Keep traffic flowing, as in production: refreshes ride on requests.
        let start = Instant::now();
        let r = stack.api(
            "POST",
            &format!("/v1/keys/{id}/revoke"),
            Some(&json!({"reason": "bench"})),
        );
        if r.status != 200 {
            return Err(format!("revoke: {}", r.body));
        }
        let mut took = None;
        while start.elapsed() < Duration::from_secs(10) {
            if stack
                .edge("GET", "/r", &[("Authorization", &auth)], None)
                .status
                == 401
            {
                took = Some(start.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        times.push(took.ok_or("revocation not enforced within 10 s")?);
    }
    times.sort();
    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    println!(
        "revocation enforced after: min {:.0} ms, median {:.0} ms, max {:.0} ms ({runs} runs, refresh interval 2 s)",
        ms(&times[0]),
        ms(&times[times.len() / 2]),
        ms(&times[times.len() - 1])
    );
    Ok(())
}

/// A positive whole number from the environment variable `name`, else `default`.
fn env_number(name: &str, default: usize) -> Result<usize, String> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(v) => match v.trim().parse() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("{name}={v:?} is not a positive whole number")),
        },
    }
}

/// The parts `EDGE_BENCH_ONLY` can name.
const PARTS: [&str; 4] = ["throughput", "cold", "revocation", "memory"];

fn main() -> std::process::ExitCode {
    let result = (|| {
        let seconds = env_number("EDGE_BENCH_SECONDS", 10)? as u64;
        let rounds = env_number("EDGE_BENCH_ROUNDS", 3)?;
        let cold_runs = env_number("EDGE_BENCH_COLD_RUNS", 5)?;
        let only = std::env::var("EDGE_BENCH_ONLY").unwrap_or_default();
        if let Some(p) = only
            .split(',')
            .find(|p| !p.is_empty() && !PARTS.contains(p))
        {
            return Err(format!(
                "EDGE_BENCH_ONLY: unknown part {p:?} (parts: {})",
                PARTS.join(",")
            ));
        }
        let run = |part: &str| only.is_empty() || only.split(',').any(|p| p == part);
        // Pinning needs two CPUs; `EDGE_BENCH_PIN=0` lets the scheduler place everything.
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let pinned = cpus >= 2 && std::env::var("EDGE_BENCH_PIN").map_or(true, |v| v != "0");
        if run("throughput") {
            println!(
                "## Throughput ({seconds} s per run, wrk -t2 -c16, {})\n",
                if pinned {
                    "the measured runtime alone on CPU 1, the rest on CPU 0"
                } else {
                    "unpinned"
                }
            );
            throughput(seconds, rounds, pinned)?;
        }
        let keys = env_number("EDGE_BENCH_KEYS", 100_000)?;
        if run("cold") {
            let cold_keys = env_number("EDGE_BENCH_COLD_KEYS", keys)?;
            println!("\n## Cold isolate, {cold_keys}-key snapshot\n");
            cold_start(cold_keys, cold_runs)?;
        }
        if run("revocation") {
            println!("\n## Revocation, {keys} keys seeded\n");
            revocation(10, keys)?;
        }
        if run("memory") {
            let requests = env_number("EDGE_BENCH_MEMORY_REQUESTS", 10_000)?;
            println!(
                "\n## Memory, {requests} requests over random keys of a {keys}-key snapshot\n"
            );
            memory(keys, requests)?;
        }
        Ok::<(), String>(())
    })();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edge-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
