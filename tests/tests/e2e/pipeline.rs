//! The whole pipeline of docs/edge.md against the real control plane (in-process, its own
//! SQLite, port 0), the edge Worker in `workerd`, and a recording origin that checks the
//! edge's signature.

use std::time::{Duration, Instant};

use keygate_tests::stack::{Stack, StackOptions};
use serde_json::{json, Value};

const LIVE_HOST: &str = "api.shop.test";
const TEST_HOST: &str = "sandbox.shop.test";

/// Waits until the edge answers `status` for `key` on `path`; returns how long it took.
fn wait_status(stack: &Stack, key: &str, path: &str, status: u16, timeout: Duration) -> Duration {
    let auth = format!("Bearer {key}");
    let waited = Stack::wait_for(timeout, || {
        stack
            .edge(
                "GET",
                path,
                &[("Authorization", &auth), ("Host", LIVE_HOST)],
                None,
            )
            .status
            == status
    });
    assert!(
        waited.is_some(),
        "edge did not answer {status} for {path} within {timeout:?}\n{}",
        stack.edge_logs()
    );
    waited.unwrap_or_default()
}

fn start() -> (Stack, String) {
    let stack = Stack::start(StackOptions {
        host_environments: json!({ LIVE_HOST: "live", TEST_HOST: "test" }).to_string(),
        ..StackOptions::default()
    })
    .expect("stack starts (run `cargo xtask build-edge` first)");
    let project = stack.api(
        "POST",
        "/v1/projects",
        Some(&json!({
            "name": "Shop",
            "key_prefix": "shop",
            "routes": [
                {"methods": ["GET"], "path": "/orders/*", "scope": "orders:read"},
                {"methods": ["POST", "PUT"], "path": "/orders/*", "scope": "orders:write"},
                {"methods": ["*"], "path": "/admin/*", "scope": "admin"}
            ],
            "default_route_policy": "allow"
        })),
    );
    assert_eq!(project.status, 201, "{}", project.body);
    let id = project.body["id"].as_str().expect("project id").to_owned();
    (stack, id)
}

#[test]
fn edge_enforces_every_check_and_forwards_signed_requests() {
    let (stack, project) = start();
    let (server_id, server) = stack.create_key(&project, &json!({"name": "server", "kind": "secret", "environment": "live", "scopes": ["orders:read"]}));
    let (_, browser) = stack.create_key(&project, &json!({"name": "web", "kind": "publishable", "environment": "live", "scopes": ["orders:read"],
               "restrictions": {"referrers": ["https://shop.example.com", "*.shop.example.org"]}}));
    let (_, office) = stack.create_key(&project, &json!({"name": "office", "kind": "secret", "environment": "live", "scopes": ["orders:read"],
               "restrictions": {"ips": ["203.0.113.0/24", "2001:db8::/32"]}}));
    let (_, sandbox) = stack.create_key(&project, &json!({"name": "sandbox", "kind": "secret", "environment": "test", "scopes": ["orders:read"]}));
    wait_status(&stack, &sandbox, "/orders/1", 403, Duration::from_secs(15));
    let origin = stack.origin.as_ref().expect("recording origin");
    let before = origin.count();
    let get = |headers: &[(&str, &str)], path: &str| {
        let mut h = vec![("Host", LIVE_HOST)];
        h.extend_from_slice(headers);
        stack.edge("GET", path, &h, None)
    };
    let bearer = |k: &str| format!("Bearer {k}");

    // 401s, each with WWW-Authenticate, none reaching the origin.
    let r = get(&[], "/orders/1");
    assert_eq!((r.status, r.problem_code().as_str()), (401, "missing_key"));
    assert!(r
        .header("WWW-Authenticate")
        .is_some_and(|v| v.starts_with("Bearer")));
    assert_eq!(r.header("Content-Type"), Some("application/problem+json"));
    let r = get(
        &[("Authorization", "Bearer shop_sk_live_notakey")],
        "/orders/1",
    );
    assert_eq!(
        (r.status, r.problem_code().as_str()),
        (401, "malformed_key")
    );
    let mut tampered = server.clone();
    let last = tampered.pop().expect("char");
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let r = get(&[("Authorization", &bearer(&tampered))], "/orders/1");
    assert_eq!(
        (r.status, r.problem_code().as_str()),
        (401, "malformed_key"),
        "checksum"
    );
    let unknown = keygate_shared::PlaintextKey::from_parts(
        &keygate_shared::KeyPrefix::parse("shop").expect("prefix"),
        keygate_shared::Kind::Secret,
        keygate_shared::Environment::Live,
        "UnknownUnknownUnknownUnknown0000",
    )
    .expect("key");
    let r = get(&[("Authorization", &bearer(unknown.expose()))], "/orders/1");
    assert_eq!((r.status, r.problem_code().as_str()), (401, "unknown_key"));
    assert!(r.header("WWW-Authenticate").is_some());

    // 403s.
    let r = get(&[("Authorization", &bearer(&sandbox))], "/orders/1");
    assert_eq!(
        (r.status, r.problem_code().as_str()),
        (403, "environment_not_allowed")
    );
    let r = stack.edge(
        "GET",
        "/orders/1",
        &[("Host", TEST_HOST), ("Authorization", &bearer(&sandbox))],
        None,
    );
    assert_eq!(r.status, 200, "a test key on a test host: {}", r.text());
    let r = get(
        &[
            ("Authorization", &bearer(&browser)),
            ("Origin", "https://evil.example"),
        ],
        "/orders/1",
    );
    assert_eq!(
        (r.status, r.problem_code().as_str()),
        (403, "referrer_not_allowed")
    );
    assert!(
        r.header("Access-Control-Allow-Origin").is_none(),
        "no CORS for a refused origin"
    );
    let r = get(&[("Authorization", &bearer(&browser))], "/orders/1");
    assert_eq!(
        (r.status, r.problem_code().as_str()),
        (403, "referrer_not_allowed"),
        "no Origin nor Referer"
    );
    let r = get(
        &[
            ("Authorization", &bearer(&browser)),
            ("Origin", "https://shop.example.com.evil.com"),
        ],
        "/orders/1",
    );
    assert_eq!(r.problem_code(), "referrer_not_allowed");
    let r = get(
        &[
            ("Authorization", &bearer(&office)),
            ("CF-Connecting-IP", "198.51.100.1"),
        ],
        "/orders/1",
    );
    assert_eq!(
        (r.status, r.problem_code().as_str()),
        (403, "ip_not_allowed")
    );
    let r = get(&[("Authorization", &bearer(&office))], "/orders/1");
    assert_eq!(r.problem_code(), "ip_not_allowed", "no client IP");
    let r = stack.edge(
        "POST",
        "/orders/1",
        &[("Host", LIVE_HOST), ("Authorization", &bearer(&server))],
        Some(b"{}"),
    );
    assert_eq!(
        (r.status, r.problem_code().as_str()),
        (403, "insufficient_scope")
    );
    let r = get(&[("Authorization", &bearer(&server))], "/admin/users");
    assert_eq!(r.problem_code(), "insufficient_scope");
    assert_eq!(
        origin.count(),
        before + 1,
        "only the test-host request reached the origin"
    );

    // Successes: the key in each of the three places, removed before forwarding. Headers that
    // belong to the client's connection or name the edge never reach the origin, and the
    // Keygate-* headers a client sends are replaced, on the fast path and the full handler alike.
    let stray = [
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Authorization", "Basic cHJveHk6c2VjcmV0"),
        ("Keygate-Key-Id", "key_forged"),
        ("Keygate-Environment", "test"),
        ("X-Request-Id", "r-1"),
    ];
    let assert_clean = |seen: &keygate_tests::origin::Recorded| {
        let names: Vec<String> = seen
            .request
            .headers
            .iter()
            .map(|(k, _)| k.to_ascii_lowercase())
            .collect();
        for name in ["keep-alive", "proxy-authorization"] {
            assert!(
                !names.iter().any(|n| n == name),
                "{name} forwarded: {names:?}"
            );
        }
        let host = seen.header("host").unwrap_or_default();
        assert!(
            host.starts_with("127.0.0.1:"),
            "Host {host:?} is not the origin's"
        );
        for name in ["keygate-key-id", "keygate-environment"] {
            assert_eq!(names.iter().filter(|n| *n == name).count(), 1, "{name}");
        }
        assert_eq!(seen.header("keygate-key-id"), Some(server_id.as_str()));
        assert_eq!(seen.header("keygate-environment"), Some("live"));
        assert_eq!(seen.header("x-request-id"), Some("r-1"), "others kept");
    };
    let auth = bearer(&server);
    let mut sent = vec![("Authorization", auth.as_str())];
    sent.extend_from_slice(&stray);
    let r = get(&sent, "/orders/1?expand=items");
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = origin.recorded().pop().expect("forwarded");
    assert_eq!(seen.target(), "/orders/1?expand=items");
    assert!(seen.header("authorization").is_none());
    assert_clean(&seen);
    assert_eq!(seen.header("keygate-project-id"), Some(project.as_str()));
    assert_eq!(
        seen.signature_valid,
        Some(true),
        "origin verifies Keygate-Signature"
    );

    let r = get(
        &[
            ("X-API-Key", &server),
            ("Authorization", "Basic b3JpZ2luOnNlY3JldA=="),
        ],
        "/orders/2",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = origin.recorded().pop().expect("forwarded");
    assert!(seen.header("x-api-key").is_none(), "X-API-Key removed");
    assert_eq!(
        seen.header("authorization"),
        Some("Basic b3JpZ2luOnNlY3JldA=="),
        "other credentials kept"
    );
    assert_eq!(seen.signature_valid, Some(true));

    // A request with a body: method and bytes reach the origin unchanged.
    let (_, writer) = stack.create_key(&project, &json!({"name": "writer", "kind": "secret", "environment": "live", "scopes": ["orders:write"]}));
    let payload = br#"{"items":[{"sku":"A-1","qty":2}],"note":"caf\u00e9"}"#;
    let sent = Stack::wait_for(Duration::from_secs(10), || {
        stack
            .edge(
                "PUT",
                "/orders/9",
                &[
                    ("Host", LIVE_HOST),
                    ("Authorization", &bearer(&writer)),
                    ("Content-Type", "application/json"),
                ],
                Some(payload),
            )
            .status
            == 200
    });
    assert!(sent.is_some(), "the writer key was never accepted");
    let seen = origin.recorded().pop().expect("forwarded");
    assert_eq!(seen.request.method, "PUT");
    assert_eq!(seen.request.body, payload.to_vec());
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert_eq!(seen.signature_valid, Some(true));

    let r = get(&stray, &format!("/orders/3?a=1&key={server}&b=%20x+y&c"));
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = origin.recorded().pop().expect("forwarded");
    assert_clean(&seen);
    assert_eq!(
        seen.target(),
        "/orders/3?a=1&b=%20x+y&c",
        "key removed, query otherwise intact"
    );
    assert!(!seen.target().contains(&server));

    let r = get(
        &[
            ("Authorization", &bearer(&office)),
            ("CF-Connecting-IP", "2001:db8::7"),
        ],
        "/orders/1",
    );
    assert_eq!(r.status, 200, "{}", r.text());

    // A browser from an allowed origin: CORS headers on success and on errors.
    let r = get(
        &[
            ("Authorization", &bearer(&browser)),
            ("Origin", "https://shop.example.com"),
        ],
        "/orders/9",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("Access-Control-Allow-Origin"),
        Some("https://shop.example.com")
    );
    // The origin's own `Vary` is kept, with `Origin` added to it.
    let vary = r.header("Vary").unwrap_or_default().to_ascii_lowercase();
    assert!(
        vary.contains("accept-encoding") && vary.contains("origin"),
        "Vary: {vary}"
    );
    let r = get(
        &[
            ("Authorization", &bearer(&browser)),
            ("Origin", "https://a.b.shop.example.org"),
        ],
        "/orders/9",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = stack.edge(
        "POST",
        "/orders/9",
        &[
            ("Host", LIVE_HOST),
            ("Authorization", &bearer(&browser)),
            ("Origin", "https://shop.example.com"),
        ],
        Some(b"{}"),
    );
    assert_eq!(r.problem_code(), "insufficient_scope");
    assert_eq!(
        r.header("Access-Control-Allow-Origin"),
        Some("https://shop.example.com")
    );
    let preflight_before = origin.count();
    let r = stack.edge(
        "OPTIONS",
        "/orders/9",
        &[
            ("Host", LIVE_HOST),
            ("Origin", "https://shop.example.com"),
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "authorization"),
        ],
        None,
    );
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("Access-Control-Allow-Origin"),
        Some("https://shop.example.com")
    );
    assert_eq!(
        r.header("Access-Control-Allow-Headers"),
        Some("authorization")
    );
    assert_eq!(
        origin.count(),
        preflight_before,
        "preflight answered at the edge"
    );

    // Usage reaches the control plane in batches: counts per minute, hour and day, the key's
    // last use, and the client IPs and referrer origins seen with the key, refusals included.
    let r = get(
        &[
            ("Authorization", &bearer(&server)),
            ("CF-Connecting-IP", "198.51.100.99"),
        ],
        "/admin/users",
    );
    assert_eq!(r.problem_code(), "insufficient_scope");
    let key_usage = |g: &str| {
        stack
            .api(
                "GET",
                &format!("/v1/keys/{server_id}/usage?granularity={g}"),
                None,
            )
            .body
    };
    let sightings = || {
        stack
            .api("GET", &format!("/v1/keys/{server_id}/sightings"), None)
            .body
    };
    let has_sighting = |body: &Value, kind: &str, value: &str| {
        body["items"].as_array().is_some_and(|items| {
            items
                .iter()
                .any(|i| i["kind"] == kind && i["value"] == value && i["count"].as_u64() >= Some(1))
        })
    };
    let counted = Stack::wait_for(Duration::from_secs(15), || {
        // Flushes ride on later requests; keep some traffic going.
        let r = get(
            &[
                ("Authorization", &bearer(&server)),
                ("CF-Connecting-IP", "198.51.100.23"),
                ("Origin", "https://App.Example.net"),
            ],
            "/orders/1",
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let valid = |body: Value| {
            body["items"].as_array().is_some_and(|items| {
                items
                    .iter()
                    .any(|i| i["code"] == "valid" && i["count"].as_u64() >= Some(3))
            })
        };
        let seen = sightings();
        valid(key_usage("minute"))
            && valid(key_usage("hour"))
            && has_sighting(&seen, "ip", "198.51.100.23")
            && has_sighting(&seen, "ip", "198.51.100.99")
            && has_sighting(&seen, "referrer", "https://app.example.net")
    });
    assert!(
        counted.is_some(),
        "usage not recorded: {}\n{}\n{}",
        key_usage("hour"),
        sightings(),
        stack.edge_logs()
    );
    let day = key_usage("day");
    assert!(day["totals"]["valid"].as_i64() >= Some(3), "{day}");
    assert!(
        day["totals"]["insufficient_scope"].as_i64() >= Some(1),
        "{day}"
    );
    let project_usage = stack
        .api(
            "GET",
            &format!("/v1/projects/{project}/usage?granularity=hour"),
            None,
        )
        .body;
    assert!(
        project_usage["totals"]["valid"].as_i64() >= day["totals"]["valid"].as_i64(),
        "{project_usage}"
    );
    let key = stack
        .api("GET", &format!("/v1/keys/{server_id}"), None)
        .body;
    assert!(key["last_used_at"].is_string(), "{key}");
}

/// What a change made through the API may take, beyond the edge's refresh interval, to show at
/// the edge: the API call, building and signing the snapshot, the edge's fetch and check, and the
/// polling, on a machine busy with other work. A change that waits for a refresh taking 5 s
/// would exceed the bound with the 0.5 s interval of these tests.
const PROPAGATION_MARGIN: Duration = Duration::from_secs(3);

/// What the edge may take, beyond a key's expiry, to refuse it: the snapshot it holds already
/// carries the expiry, so only polling and a busy machine add to it.
const EXPIRY_MARGIN: Duration = Duration::from_secs(2);

/// How long the edge takes, counted from `since`, to answer `status` for `key`: polls until then
/// or until well past `bound`, and fails, with the figure, when it took longer than `bound`.
fn took_at_most(
    stack: &Stack,
    key: &str,
    status: u16,
    since: Instant,
    bound: Duration,
    what: &str,
) -> Duration {
    let auth = format!("Bearer {key}");
    // Keep polling past the bound, to report how late the change was rather than only that it was.
    let give_up = since + bound + Duration::from_secs(15);
    let took = loop {
        let r = stack.edge(
            "GET",
            "/x",
            &[("Authorization", &auth), ("Host", LIVE_HOST)],
            None,
        );
        if r.status == status {
            break Some(since.elapsed());
        }
        if Instant::now() >= give_up {
            break None;
        }
        std::thread::sleep(Duration::from_millis(25));
    };
    assert!(
        took.is_some(),
        "{what}: the edge did not answer {status} within {:?}\n{}",
        give_up - since,
        stack.edge_logs()
    );
    let took = took.unwrap_or_default();
    assert!(
        took <= bound,
        "{what}: took {took:?}, more than the bound of {bound:?}\n{}",
        stack.edge_logs()
    );
    eprintln!("{what}: {took:?} (bound {bound:?})");
    took
}

/// A key's `expires_at` as the control plane holds it, in Unix milliseconds.
fn expires_at_ms(stack: &Stack, key_id: &str) -> i64 {
    let r = stack.api("GET", &format!("/v1/keys/{key_id}"), None);
    let at = r.body["expires_at"].as_str().expect("the key expires");
    keygate_control_plane::timefmt::parse_ms(at).expect("expires_at")
}

#[allow(clippy::disallowed_methods)] // Expiry is judged on the wall clock, by the edge too.
fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Polls `key` at the edge until it is refused as `expired_key`, every answer before being 200;
/// asserts the refusal came no earlier than `expires_at_ms` and at most [`EXPIRY_MARGIN`] after.
fn refused_at_expiry(stack: &Stack, key: &str, expires_at_ms: i64, what: &str) {
    let auth = format!("Bearer {key}");
    let give_up = expires_at_ms + 20_000;
    let (refused_ms, r) = loop {
        let r = stack.edge(
            "GET",
            "/x",
            &[("Authorization", &auth), ("Host", LIVE_HOST)],
            None,
        );
        let now = wall_ms();
        if r.status != 200 {
            break (now, r);
        }
        assert!(
            now < give_up,
            "{what}: still accepted 20 s after its expiry\n{}",
            stack.edge_logs()
        );
        std::thread::sleep(Duration::from_millis(25));
    };
    assert_eq!(
        (r.status, r.problem_code().as_str()),
        (401, "expired_key"),
        "{what}: {}",
        r.text()
    );
    let late = refused_ms - expires_at_ms;
    assert!(late >= 0, "{what}: refused {}ms before its expiry", -late);
    let margin = EXPIRY_MARGIN.as_millis() as i64;
    assert!(
        late <= margin,
        "{what}: still accepted {late}ms after its expiry (bound {margin}ms)\n{}",
        stack.edge_logs()
    );
    eprintln!("{what}: refused {late}ms after its expiry (bound {margin}ms)");
}

#[test]
fn new_revoked_rotated_and_expiring_keys_take_effect_within_the_refresh_interval() {
    let (stack, project) = start();
    let refresh = Duration::from_secs_f64(stack.options.refresh_seconds);
    let bound = refresh + PROPAGATION_MARGIN;
    let (_, warmup) = stack.create_key(
        &project,
        &json!({"name": "warm", "kind": "secret", "environment": "live"}),
    );
    wait_status(&stack, &warmup, "/x", 200, Duration::from_secs(15));

    // A new key becomes usable, and a revoked one stops, without a per-request call, within the
    // refresh interval and the margin, counted from the API call.
    let asked = Instant::now();
    let (id, key) = stack.create_key(
        &project,
        &json!({"name": "new", "kind": "secret", "environment": "live"}),
    );
    took_at_most(&stack, &key, 200, asked, bound, "new key usable");
    let asked = Instant::now();
    let r = stack.api(
        "POST",
        &format!("/v1/keys/{id}/revoke"),
        Some(&json!({"reason": "leaked"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    took_at_most(&stack, &key, 401, asked, bound, "revocation enforced");
    let auth = format!("Bearer {key}");
    let r = stack.edge(
        "GET",
        "/x",
        &[("Host", LIVE_HOST), ("Authorization", &auth)],
        None,
    );
    assert_eq!(r.problem_code(), "revoked_key");

    // Rotation grace: the new key shows within the bound; the old one keeps working through the
    // grace period, long enough to be seen working after the new one shows, and stops at its end.
    let grace = bound + Duration::from_secs(3);
    let (old_id, old) = stack.create_key(
        &project,
        &json!({"name": "rot", "kind": "secret", "environment": "live"}),
    );
    wait_status(&stack, &old, "/x", 200, Duration::from_secs(10));
    let asked = Instant::now();
    let r = stack.api(
        "POST",
        &format!("/v1/keys/{old_id}/rotate"),
        Some(&json!({"grace_seconds": grace.as_secs()})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let new = r.body["key"].as_str().expect("new key").to_owned();
    took_at_most(&stack, &new, 200, asked, bound, "rotated key usable");
    let r = stack.edge(
        "GET",
        "/x",
        &[
            ("Host", LIVE_HOST),
            ("Authorization", &format!("Bearer {old}")),
        ],
        None,
    );
    assert_eq!(r.status, 200, "old key valid during the grace period");
    let grace_ends = expires_at_ms(&stack, &old_id);
    refused_at_expiry(&stack, &old, grace_ends, "old key at the end of its grace");
    let r = stack.edge(
        "GET",
        "/x",
        &[
            ("Host", LIVE_HOST),
            ("Authorization", &format!("Bearer {new}")),
        ],
        None,
    );
    assert_eq!(r.status, 200, "new key still valid");

    // Expiry: a key that expires soon works until then, long enough to be seen working, and is
    // refused from then on.
    let asked = Instant::now();
    let expires_at = wall_ms() + (bound + Duration::from_secs(3)).as_millis() as i64;
    let (short_id, short) = stack.create_key(
        &project,
        &json!({"name": "short", "kind": "secret", "environment": "live",
               "expires_at": keygate_control_plane::timefmt::format_ms(expires_at)}),
    );
    took_at_most(&stack, &short, 200, asked, bound, "expiring key usable");
    assert_eq!(expires_at_ms(&stack, &short_id), expires_at);
    refused_at_expiry(&stack, &short, expires_at, "key at its expiry");
}

#[test]
fn rate_limits_and_quotas_hold_in_durable_objects() {
    let (stack, project) = start();
    let (_, limited) = stack.create_key(&project, &json!({"name": "rl", "kind": "secret", "environment": "live", "rate_limit": {"limit": 3, "period_seconds": 60}}));
    let (_, both) = stack.create_key(&project, &json!({"name": "both", "kind": "secret", "environment": "live",
               "rate_limit": {"limit": 1, "period_seconds": 2}, "quota": {"limit": 2, "period": "day"}}));
    wait_status(&stack, &limited, "/x", 200, Duration::from_secs(15));
    let auth = format!("Bearer {limited}");
    let call = |auth: &str| {
        stack.edge(
            "GET",
            "/x",
            &[("Host", LIVE_HOST), ("Authorization", auth)],
            None,
        )
    };
    assert_eq!(call(&auth).status, 200);
    let r = call(&auth);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("RateLimit-Limit"), Some("3"));
    assert_eq!(r.header("RateLimit-Remaining"), Some("0"));
    let r = call(&auth);
    assert_eq!((r.status, r.problem_code().as_str()), (429, "rate_limited"));
    let retry: u64 = r
        .header("Retry-After")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=20).contains(&retry), "{retry}");
    assert_eq!(r.header("RateLimit-Limit"), Some("3"));
    assert_eq!(r.header("RateLimit-Remaining"), Some("0"));
    assert!(r.header("RateLimit-Reset").is_some());

    // Rate limit 1 per 2 s, quota 2 a day: throttled requests spend no quota.
    let auth = format!("Bearer {both}");
    assert_eq!(call(&auth).status, 200);
    for _ in 0..3 {
        assert_eq!(call(&auth).problem_code(), "rate_limited");
    }
    std::thread::sleep(Duration::from_millis(2100));
    let r = call(&auth);
    assert_eq!(r.status, 200, "the quota's second request: {}", r.text());
    std::thread::sleep(Duration::from_millis(2100));
    let r = call(&auth);
    assert_eq!(
        (r.status, r.problem_code().as_str()),
        (429, "quota_exceeded")
    );
    assert!(r.header("Retry-After").is_some());
    assert_eq!(r.header("RateLimit-Limit"), Some("2"));
}

#[test]
fn the_edge_keeps_serving_when_the_control_plane_stops_and_fails_closed_past_validity() {
    let mut stack = Stack::start(StackOptions {
        snapshot_validity_seconds: 10,
        ..StackOptions::default()
    })
    .expect("stack");
    let project = stack.api(
        "POST",
        "/v1/projects",
        Some(&json!({"name": "P", "key_prefix": "pp"})),
    );
    let project = project.body["id"].as_str().expect("project").to_owned();
    let (_, key) = stack.create_key(
        &project,
        &json!({"name": "k", "kind": "secret", "environment": "live"}),
    );
    let auth = format!("Bearer {key}");
    let ok = || {
        stack
            .edge(
                "GET",
                "/x",
                &[("Host", LIVE_HOST), ("Authorization", &auth)],
                None,
            )
            .status
            == 200
    };
    assert!(
        Stack::wait_for(Duration::from_secs(15), ok).is_some(),
        "{}",
        stack.edge_logs()
    );

    stack.stop_control_plane();
    let r = stack.edge(
        "GET",
        "/x",
        &[("Host", LIVE_HOST), ("Authorization", &auth)],
        None,
    );
    assert_eq!(
        r.status,
        200,
        "served from the last good snapshot: {}",
        r.text()
    );
    // Past the snapshot's validity (10 s from its last signing), the edge fails closed.
    let closed = Stack::wait_for(Duration::from_secs(25), || {
        let r = stack.edge(
            "GET",
            "/x",
            &[("Host", LIVE_HOST), ("Authorization", &auth)],
            None,
        );
        r.status == 503 && r.problem_code() == "snapshot_unavailable"
    });
    assert!(closed.is_some(), "{}", stack.edge_logs());

    // Back up: the edge recovers by itself.
    stack.restart_control_plane().expect("restart");
    let ok = || {
        stack
            .edge(
                "GET",
                "/x",
                &[("Host", LIVE_HOST), ("Authorization", &auth)],
                None,
            )
            .status
            == 200
    };
    assert!(
        Stack::wait_for(Duration::from_secs(15), ok).is_some(),
        "{}",
        stack.edge_logs()
    );
}
