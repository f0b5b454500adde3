//! The edge (the Worker's Wasm build of `keygate-shared`, in workerd) and `POST /v1/verify`
//! (the control plane's build) answer generated requests against generated keys: every code
//! must be the same, and no refused request may reach the origin.
//!
//! Keys and projects are drawn from the control plane's accepted input space (single-label
//! hosts, punycode IDNs, ports, IPv6 literals, wildcards, paths, CIDRs of both families, routes
//! with every method form and wildcard); requests from values that match and values that do
//! not, paths in every spelling of `gate.rs`'s corpus. `KEYGATE_DIFF_SEED` replays a run.

use std::time::Duration;

use keygate_tests::stack::{Stack, StackOptions};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const LIVE_HOST: &str = "api.diff.test";
const TEST_HOST: &str = "sandbox.diff.test";
const REQUESTS: usize = 520;

const PATTERNS: &[&str] = &[
    "*.test",
    "app.internal",
    "intranet",
    "*.corp",
    "localhost:3000",
    "localhost:*",
    "https://shop.example.com",
    "http://shop.example.com/app/*",
    "shop.example.com/app/page",
    "*.example.org",
    "https://*.xn--bcher-kva.example/app/*",
    "xn--bcher-kva.example",
    "[::1]:8080",
    "https://[2001:db8::1]",
    "127.0.0.1:8080",
    "Example.COM:8443",
    "*.deep.example.net/a/*",
];

const REFERERS: &[&str] = &[
    "https://x.test/",
    "https://a.b.test/p?q=1",
    "https://test/",
    "http://app.internal/",
    "https://intranet/",
    "https://sso.corp/login",
    "http://localhost:3000/",
    "http://localhost:5173/x",
    "https://shop.example.com/",
    "http://shop.example.com/app/x",
    "http://shop.example.com/app/page",
    "http://shop.example.com/other",
    "https://www.example.org/",
    "https://example.org/",
    "https://m.xn--bcher-kva.example/app/1",
    "https://xn--bcher-kva.example/",
    "http://[::1]:8080/",
    "https://[2001:db8::1]/",
    "http://127.0.0.1:8080/",
    "https://example.com:8443/",
    "https://x.deep.example.net/a/b",
    "https://evil.example/",
    "https://shop.example.com.evil.example/",
    "https://user@shop.example.com/",
    "null",
];

const CIDRS: &[&str] = &[
    "203.0.113.0/24",
    "198.51.100.7/32",
    "10.0.0.0/8",
    "2001:db8::/32",
    "::1/128",
    "0.0.0.0/0",
];

const IPS: &[&str] = &[
    "203.0.113.9",
    "198.51.100.7",
    "198.51.100.8",
    "10.1.2.3",
    "2001:db8::7",
    "2001:db9::1",
    "::1",
];

const PATHS: &[&str] = &[
    "/",
    "/orders",
    "/orders/1",
    "/orders/1/items",
    "/admin",
    "/admin/users",
    "//admin",
    "/x/../admin",
    "/%61dmin/users",
    "/admin;x",
    "/orders/..;/admin",
    "/reports/2026",
    "/reports/",
    "/public/file.txt",
    "/ADMIN",
    "/admin%2fusers",
    "/../admin",
    "/%00",
    "/orders/%7E1",
];

const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "PATCH"];

fn pick<'a>(rng: &mut StdRng, from: &[&'a str]) -> &'a str {
    from.choose(rng).copied().unwrap_or_default()
}

fn some<'a>(rng: &mut StdRng, from: &[&'a str], n: usize) -> Vec<&'a str> {
    let n = rng.gen_range(1..=n.min(from.len()));
    from.choose_multiple(rng, n).copied().collect()
}

fn project_spec(name: &str, prefix: &str, deny: bool) -> Value {
    json!({
        "name": name,
        "key_prefix": prefix,
        "routes": [
            {"methods": ["GET"], "path": "/orders/*", "scope": "orders:read"},
            {"methods": ["POST", "PUT", "patch"], "path": "/orders/*", "scope": "orders:write"},
            {"methods": ["*"], "path": "/admin", "scope": "admin"},
            {"methods": ["*"], "path": "/admin/*", "scope": "admin"},
            {"methods": ["DELETE"], "path": "/orders/1", "scope": "orders:delete"},
            {"methods": ["*"], "path": "/reports/*", "scope": "reports"},
            {"methods": ["GET"], "path": "/", "scope": "root"}
        ],
        "default_route_policy": if deny { "deny" } else { "allow" },
    })
}

fn key_spec(rng: &mut StdRng, i: usize) -> Value {
    let publishable = rng.gen_bool(0.4);
    let scopes = some(
        rng,
        &[
            "orders:read",
            "orders:write",
            "orders:delete",
            "admin",
            "reports",
            "root",
        ],
        4,
    );
    let mut spec = json!({
        "name": format!("key {i}"),
        "environment": if rng.gen_bool(0.7) { "live" } else { "test" },
        "scopes": scopes,
    });
    spec["kind"] = json!(if publishable { "publishable" } else { "secret" });
    let mut restrictions = json!({});
    if publishable || rng.gen_bool(0.2) {
        restrictions["referrers"] = json!(some(rng, PATTERNS, 4));
    }
    if rng.gen_bool(0.3) {
        restrictions["ips"] = json!(some(rng, CIDRS, 3));
    }
    spec["restrictions"] = restrictions;
    if rng.gen_bool(0.15) {
        // Never reached in a run: exercises the counters path without making the two
        // independent counters disagree.
        spec["rate_limit"] = json!({"limit": 100_000, "period_seconds": 60});
    }
    spec
}

#[test]
fn the_edge_and_verify_agree_on_generated_keys_and_requests() {
    let seed: u64 = std::env::var("KEYGATE_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("differential seed: {seed} (KEYGATE_DIFF_SEED={seed} replays it)");
    let mut rng = StdRng::seed_from_u64(seed);
    let stack = Stack::start(StackOptions {
        host_environments: json!({ LIVE_HOST: "live", TEST_HOST: "test" }).to_string(),
        ..StackOptions::default()
    })
    .expect("stack starts (run `cargo xtask build-edge` first)");
    let mut keys: Vec<String> = Vec::new();
    for (name, prefix, deny) in [("Allow", "diffa", false), ("Deny", "diffd", true)] {
        let p = stack.api(
            "POST",
            "/v1/projects",
            Some(&project_spec(name, prefix, deny)),
        );
        assert_eq!(p.status, 201, "{}", p.body);
        let id = p.body["id"].as_str().expect("project id").to_owned();
        for i in 0..30 {
            let spec = key_spec(&mut rng, i);
            let r = stack.api("POST", &format!("/v1/projects/{id}/keys"), Some(&spec));
            assert_eq!(
                r.status, 201,
                "seed {seed}: the API refused {spec}: {}",
                r.body
            );
            let key = r.body["key"].as_str().expect("plaintext").to_owned();
            if rng.gen_bool(0.1) {
                let kid = r.body["id"].as_str().expect("id");
                let rv = stack.api(
                    "POST",
                    &format!("/v1/keys/{kid}/revoke"),
                    Some(&json!({"reason": "differential"})),
                );
                assert_eq!(rv.status, 200, "{}", rv.body);
            }
            keys.push(key);
        }
    }
    // Keys no snapshot has, and strings that are not keys.
    let mut unknown = keys[0].clone();
    unknown.replace_range(14..18, "ZZZZ");
    keys.push(unknown);
    keys.push("diffa_sk_live_notakey".into());

    // The edge holds every key once the control plane's newest version is installed.
    let want = stack.snapshot_version().expect("snapshot version");
    // Snapshots load on first need: a request makes the edge ask for the newest one.
    let poke = format!("Bearer {}", keys[0]);
    let held = Stack::wait_for(Duration::from_secs(15), || {
        stack.edge(
            "GET",
            "/",
            &[("Host", LIVE_HOST), ("Authorization", &poke)],
            None,
        );
        stack.edge_status()["version"].as_u64() >= Some(want)
    });
    assert!(
        held.is_some(),
        "edge never held version {want}\n{}",
        stack.edge_logs()
    );

    let origin = stack.origin.as_ref().expect("recording origin");
    let mut compared = 0;
    for n in 0..REQUESTS {
        let key = keys.choose(&mut rng).cloned().unwrap_or_default();
        let referer = rng.gen_bool(0.6).then(|| pick(&mut rng, REFERERS));
        let ip = rng.gen_bool(0.5).then(|| pick(&mut rng, IPS));
        let method = pick(&mut rng, METHODS);
        let path = pick(&mut rng, PATHS);
        let host = *[LIVE_HOST, TEST_HOST, "other.diff.test"]
            .choose(&mut rng)
            .unwrap_or(&LIVE_HOST);

        let mut verify = json!({"key": key, "method": method, "path": path, "host": host});
        let auth = format!("Bearer {key}");
        let mut headers = vec![("Host", host), ("Authorization", auth.as_str())];
        if let Some(r) = referer {
            verify["referrer"] = json!(r);
            headers.push(("Referer", r));
        }
        if let Some(ip) = ip {
            verify["ip"] = json!(ip);
            headers.push(("CF-Connecting-IP", ip));
        }
        let expected = stack.api("POST", "/v1/verify", Some(&verify));
        let expected_code = match expected.status {
            200 => expected.body["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            400 => expected.body["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            s => panic!(
                "seed {seed}, request {n}: verify answered {s} for {verify}: {}",
                expected.body
            ),
        };
        let body = (method != "GET").then_some(&b"{}"[..]);
        let before = origin.count();
        let r = stack.edge(method, path, &headers, body);
        let edge_code = if r.status == 200 && origin.count() == before + 1 {
            "valid".to_owned()
        } else {
            serde_json::from_slice::<Value>(&r.body).unwrap_or(Value::Null)["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(
            edge_code,
            expected_code,
            "seed {seed}, request {n}: {verify}\nedge answered {} {}\n{}",
            r.status,
            r.text(),
            stack.edge_logs()
        );
        let reached = origin.count() - before;
        assert_eq!(
            reached,
            usize::from(edge_code == "valid"),
            "seed {seed}, request {n}: {verify}"
        );
        compared += 1;
    }
    assert_eq!(compared, REQUESTS);
    assert_eq!(stack.edge_status()["unusable_keys"], json!([]));
}
