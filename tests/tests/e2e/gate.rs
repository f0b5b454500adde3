//! The gate holds against ordinary requests: no valid admin action takes other keys down, no
//! spelling of a path reaches a route without its scope, unmapped hosts are refused, and the
//! key and client-sent `Keygate-*` headers never reach the origin.

use std::time::Duration;

use keygate_tests::http::Response;
use keygate_tests::stack::{Stack, StackOptions};
use serde_json::json;

const LIVE_HOST: &str = "api.shop.test";

fn start() -> (Stack, String) {
    let stack = Stack::start(StackOptions {
        host_environments: json!({ LIVE_HOST: "live" }).to_string(),
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
                {"methods": ["*"], "path": "/admin", "scope": "admin"},
                {"methods": ["*"], "path": "/admin/*", "scope": "admin"}
            ],
            "default_route_policy": "allow"
        })),
    );
    assert_eq!(project.status, 201, "{}", project.body);
    let id = project.body["id"].as_str().expect("project id").to_owned();
    (stack, id)
}

fn get(stack: &Stack, key: &str, path: &str, extra: &[(&str, &str)]) -> Response {
    let auth = format!("Bearer {key}");
    let mut h = vec![("Host", LIVE_HOST), ("Authorization", auth.as_str())];
    h.extend_from_slice(extra);
    stack.edge("GET", path, &h, None)
}

/// Waits until the edge answers `status` for `key` on `/orders/1`.
fn wait_status(stack: &Stack, key: &str, status: u16) {
    let waited = Stack::wait_for(Duration::from_secs(15), || {
        get(stack, key, "/orders/1", &[]).status == status
    });
    assert!(
        waited.is_some(),
        "edge did not answer {status} within 15 s\n{}",
        stack.edge_logs()
    );
}

#[test]
fn a_publishable_key_with_single_label_referrers_takes_no_other_key_down() {
    let (stack, project) = start();
    let (_, server) = stack.create_key(&project, &json!({"name": "server", "kind": "secret", "environment": "live", "scopes": ["orders:read"]}));
    wait_status(&stack, &server, 200);
    // Every one of these is accepted by the API; the edge's build once refused them and with
    // them the whole shard.
    let (_, web) = stack.create_key(&project, &json!({"name": "web", "kind": "publishable", "environment": "live", "scopes": ["orders:read"],
               "restrictions": {"referrers": ["*.test", "app.internal", "*.corp", "intranet",
                                              "https://*.xn--bcher-kva.example/app/*", "[::1]:8080"]}}));
    // A key made after it is in a snapshot at least as new: once it passes, the edge holds
    // the publishable key too.
    let (_, later) = stack.create_key(&project, &json!({"name": "later", "kind": "secret", "environment": "live", "scopes": ["orders:read"]}));
    wait_status(&stack, &later, 200);
    let r = get(&stack, &server, "/orders/1", &[]);
    assert_eq!(r.status, 200, "{}\n{}", r.text(), stack.edge_logs());
    for (origin, status) in [
        ("https://shop.test", 200),
        ("https://a.b.test", 200),
        ("http://app.internal", 200),
        ("https://intranet", 200),
        ("https://x.corp", 200),
        ("https://test", 403),
        ("https://app.internal.evil.example", 403),
    ] {
        let r = get(&stack, &web, "/orders/1", &[("Origin", origin)]);
        assert_eq!(r.status, status, "{origin}: {}", r.text());
    }
    let status = stack.edge_status();
    assert_eq!(status["unusable_keys"], json!([]), "{status}");
}

/// What the edge does with a path: `Ok(path)` forwards exactly `path` to the origin, `Err`
/// refuses with that status and code.
type Outcome = Result<&'static str, (u16, &'static str)>;

/// `(raw path, outcome)`.
fn path_corpus() -> Vec<(&'static str, Outcome)> {
    let scope = Err((403, "insufficient_scope"));
    let invalid = Err((400, "invalid_path"));
    vec![
        ("/orders/1", Ok("/orders/1")),
        ("/admin", scope),
        ("/admin/users", scope),
        ("//admin", scope),
        ("///admin//users", scope),
        ("/./admin", scope),
        ("/x/../admin", scope),
        ("/%2e/admin", scope),
        // The runtime resolves `.` and `..` (also as `%2e`) when it parses the request URL,
        // clamping at the root as browsers do; what still climbs after that is refused.
        ("/%2E%2e/admin", scope),
        ("/orders/../../admin", scope),
        ("/orders/..;/..;/admin", invalid),
        ("/orders/%2e%2e/admin/users", scope),
        ("/orders/.%2e/admin", scope),
        ("/%61dmin", scope),
        ("/%61%64%6D%69%6E/users", scope),
        ("/admin;x", scope),
        ("/admin;jsessionid=1/users", scope),
        ("/orders/..;/admin", scope),
        ("/admin/", scope),
        ("/admin/.", scope),
        ("/admin%2fusers", invalid),
        ("/admin%2Fusers", invalid),
        ("/orders%2f..%2fadmin", invalid),
        ("/admin%5cusers", invalid),
        ("/%00/admin", invalid),
        ("/orders/%zz", invalid),
        // Double encoding is one decoding away from a dot segment at an origin that decodes
        // twice; it is passed on encoded, never decoded twice.
        ("/%252e%252e/admin", Ok("/%252e%252e/admin")),
        ("/%2561dmin", Ok("/%2561dmin")),
        // Overlong dot segments and trailing dots are names, not dot segments.
        ("/.../admin", Ok("/.../admin")),
        ("/admin.", Ok("/admin.")),
        ("/admin..", Ok("/admin..")),
        // Not unreserved: kept encoded, in uppercase hex.
        ("/orders/a%3bb", Ok("/orders/a%3Bb")),
        ("/orders/%7e%41", Ok("/orders/~A")),
        // Route matching is case-sensitive unless the project says otherwise.
        ("/ADMIN", Ok("/ADMIN")),
    ]
}

#[test]
fn no_spelling_of_a_path_reaches_a_route_without_its_scope() {
    let (stack, project) = start();
    let (_, reader) = stack.create_key(&project, &json!({"name": "reader", "kind": "secret", "environment": "live", "scopes": ["orders:read"]}));
    wait_status(&stack, &reader, 200);
    let origin = stack.origin.as_ref().expect("recording origin");
    for (raw, expected) in path_corpus() {
        let before = origin.count();
        // Twice: the key in a header takes the entry module's fast path; in the query, the
        // full handler. Both must agree.
        for (extra_query, headers) in [("", true), ("key=", false)] {
            let auth = format!("Bearer {reader}");
            let r = if headers {
                stack.edge(
                    "GET",
                    raw,
                    &[("Host", LIVE_HOST), ("Authorization", &auth)],
                    None,
                )
            } else {
                let sep = if raw.contains('?') { "&" } else { "?" };
                stack.edge(
                    "GET",
                    &format!("{raw}{sep}{extra_query}{reader}"),
                    &[("Host", LIVE_HOST)],
                    None,
                )
            };
            match expected {
                Ok(forwarded) => {
                    assert_eq!(r.status, 200, "{raw}: {}\n{}", r.text(), stack.edge_logs());
                    let seen = origin.recorded();
                    let last = seen.last().expect("the origin saw the request");
                    assert_eq!(last.request.path(), forwarded, "{raw}");
                    assert_eq!(last.signature_valid, Some(true), "{raw}");
                }
                Err((status, c)) => {
                    assert_eq!((r.status, r.problem_code().as_str()), (status, c), "{raw}");
                }
            }
        }
        let reached = origin.count() - before;
        assert_eq!(reached, if expected.is_ok() { 2 } else { 0 }, "{raw}");
    }
    // `/v1/verify` normalises the same way.
    for (raw, expected) in path_corpus() {
        let r = stack.api(
            "POST",
            "/v1/verify",
            Some(&json!({"key": reader, "method": "GET", "path": raw, "host": LIVE_HOST})),
        );
        match expected {
            Ok(_) => assert_eq!((r.status, &r.body["code"]), (200, &json!("valid")), "{raw}"),
            Err((400, _)) => {
                assert_eq!(
                    (r.status, &r.body["code"]),
                    (400, &json!("invalid_path")),
                    "{raw}"
                )
            }
            Err((_, c)) => assert_eq!((r.status, &r.body["code"]), (200, &json!(c)), "{raw}"),
        }
    }

    // For an origin that routes case-insensitively, the project says so, and `/ADMIN` needs
    // the scope of `/admin` at the edge and in `/v1/verify`.
    let r = stack.api(
        "PATCH",
        &format!("/v1/projects/{project}"),
        Some(&json!({"route_matching": "case_insensitive"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["route_matching"], "case_insensitive");
    let refused = Stack::wait_for(Duration::from_secs(15), || {
        get(&stack, &reader, "/ADMIN", &[]).status == 403
    });
    assert!(
        refused.is_some(),
        "/ADMIN still passes\n{}",
        stack.edge_logs()
    );
    let before = origin.count();
    for (raw, status) in [("/Admin/Users", 403), ("/%41DMIN", 403), ("/ORDERS/1", 200)] {
        let r = get(&stack, &reader, raw, &[]);
        assert_eq!(r.status, status, "{raw}: {}", r.text());
        let v = stack.api(
            "POST",
            "/v1/verify",
            Some(&json!({"key": reader, "method": "GET", "path": raw, "host": LIVE_HOST})),
        );
        let want = if status == 200 {
            "valid"
        } else {
            "insufficient_scope"
        };
        assert_eq!(v.body["code"], want, "{raw}");
    }
    assert_eq!(
        origin.count(),
        before + 1,
        "only /ORDERS/1 reached the origin"
    );
}

#[test]
fn unmapped_hosts_fail_closed_and_the_key_leaves_all_three_places() {
    let (stack, project) = start();
    let (key_id, reader) = stack.create_key(&project, &json!({"name": "reader", "kind": "secret", "environment": "live", "scopes": ["orders:read"]}));
    wait_status(&stack, &reader, 200);
    let origin = stack.origin.as_ref().expect("recording origin");
    let before = origin.count();
    for host in [
        "keygate-edge.acme.workers.dev",
        "api.shop.test.evil.example",
        "127.0.0.1",
    ] {
        let auth = format!("Bearer {reader}");
        let r = stack.edge(
            "GET",
            "/orders/1",
            &[("Host", host), ("Authorization", &auth)],
            None,
        );
        assert_eq!(
            (r.status, r.problem_code().as_str()),
            (403, "environment_not_allowed"),
            "{host}"
        );
    }
    assert_eq!(origin.count(), before, "a refused host reached the origin");

    // The key sent three ways, and client headers in the edge's namespace in both spellings;
    // through the entry module's fast path (`reader`) and the full handler (`limited`: its
    // counters live in a Durable Object).
    let (limited_id, limited) = stack.create_key(
        &project,
        &json!({"name": "limited", "kind": "secret", "environment": "live", "scopes": ["orders:read"],
                "rate_limit": {"limit": 1000, "period_seconds": 60}}),
    );
    wait_status(&stack, &limited, 200);
    let cases = [(&key_id, &reader), (&limited_id, &limited)].map(|(id, key)| {
        let auth = format!("Bearer {key}");
        let path = format!("/orders/1?a=1&key={key}&b=2");
        [
            (
                id,
                key,
                path.clone(),
                vec![
                    ("Authorization".to_owned(), auth),
                    ("X-API-Key".to_owned(), key.to_string()),
                ],
            ),
            (
                id,
                key,
                path,
                vec![("X-API-Key".to_owned(), key.to_string())],
            ),
        ]
    });
    for (key_id, key, path, headers) in cases.into_iter().flatten() {
        let mut h = vec![
            ("Host", LIVE_HOST),
            ("Keygate_Environment", "test"),
            ("keygate-project-id", "prj_forged"),
            ("Keygate-Extra", "forged"),
        ];
        h.extend(headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        let r = stack.edge("GET", &path, &h, None);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let seen = origin.recorded();
        let last = seen.last().expect("forwarded");
        assert_eq!(last.target(), "/orders/1?a=1&b=2");
        assert!(last.header("Authorization").is_none());
        assert!(last.header("X-API-Key").is_none());
        assert!(!last.request.target.contains(key.as_str()));
        assert!(!last
            .request
            .headers
            .iter()
            .any(|(_, v)| v.contains(key.as_str())));
        let keygate: Vec<&str> = last
            .request
            .headers
            .iter()
            .filter(|(n, _)| n.to_ascii_lowercase().starts_with("keygate"))
            .map(|(n, _)| n.as_str())
            .collect();
        assert_eq!(keygate.len(), 4, "{keygate:?}");
        assert_eq!(
            last.header("Keygate-Key-Id"),
            Some(key_id.as_str()),
            "{path}"
        );
        assert_eq!(last.header("Keygate-Project-Id"), Some(project.as_str()));
        assert_eq!(last.header("Keygate-Environment"), Some("live"));
        assert!(last
            .header("Keygate-Signature")
            .is_some_and(|s| s.contains(",v2=") && !s.contains("v1=")));
        assert_eq!(last.signature_valid, Some(true));
    }
}
