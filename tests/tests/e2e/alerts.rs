//! A leak simulated at the edge: a secret key suddenly called from many client IPs. The edge
//! reports what it saw, the control plane's alert rule fires and revokes the key, the edge
//! stops the key, and a webhook receiver gets the signed `alert.raised` and `key.revoked`.

use std::time::{Duration, Instant};

use keygate_tests::http::{StubResponse, StubServer};
use keygate_tests::stack::{Stack, StackOptions};
use serde_json::{json, Value};

#[test]
fn a_leak_pattern_at_the_edge_raises_an_alert_and_the_rule_revokes_the_key() {
    // The rule is evaluated every second here (15 s by default), so that the bound below is short.
    let options = StackOptions {
        alert_interval: Some(Duration::from_secs(1)),
        ..StackOptions::default()
    };
    // From the first request of the leak to the edge refusing the key: the edge reports the IPs
    // within a flush interval, the rule runs within its interval and revokes the key, and the
    // edge picks the revocation up within its refresh interval; the margin covers the requests
    // that make up the pattern, the API calls and fetches in between, and a busy machine.
    let bound = Duration::from_secs_f64(options.usage_flush_seconds + options.refresh_seconds)
        + options.alert_interval.unwrap_or_default()
        + Duration::from_secs(4);
    let stack = Stack::start(options).expect("stack starts (run `cargo xtask build-edge` first)");
    let receiver = StubServer::start(|_| StubResponse::empty(204)).expect("receiver");
    let hook = stack.api(
        "POST",
        "/v1/webhooks",
        Some(&json!({
            "url": format!("{}/keygate", receiver.url()),
            "events": ["alert.raised", "key.revoked"],
        })),
    );
    assert_eq!(hook.status, 201, "{}", hook.body);
    let secret = hook.body["secret"].as_str().expect("secret").to_owned();

    let project = stack.api(
        "POST",
        "/v1/projects",
        Some(&json!({"name": "Shop", "key_prefix": "shop"})),
    );
    assert_eq!(project.status, 201, "{}", project.body);
    let pid = project.body["id"].as_str().expect("id").to_owned();
    let rule = stack.api(
        "PATCH",
        &format!("/v1/projects/{pid}/alert-rules/new_ips"),
        Some(&json!({"threshold": 6, "auto_revoke": true})),
    );
    assert_eq!(rule.status, 200, "{}", rule.body);
    let created = stack.api(
        "POST",
        &format!("/v1/projects/{pid}/keys"),
        Some(&json!({"name": "backend", "kind": "secret", "environment": "live"})),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let key_id = created.body["id"].as_str().expect("id").to_owned();
    let auth = format!("Bearer {}", created.body["key"].as_str().expect("key"));

    // The key's own server works.
    Stack::wait_for(Duration::from_secs(10), || {
        stack
            .edge(
                "GET",
                "/orders/1",
                &[("Authorization", &auth), ("CF-Connecting-IP", "192.0.2.10")],
                None,
            )
            .status
            == 200
    })
    .expect("the new key works at the edge");

    // Then the key turns up on machines all over the internet: the edge serves it until it
    // refuses it as revoked, and answers nothing else meanwhile.
    let start = Instant::now();
    let give_up = bound + Duration::from_secs(30);
    let mut i = 0u32;
    let refused = loop {
        i += 1;
        let ip = format!("203.0.113.{}", i % 40 + 1);
        let r = stack.edge(
            "GET",
            "/orders/1",
            &[("Authorization", &auth), ("CF-Connecting-IP", &ip)],
            None,
        );
        if r.status != 200 {
            break Some(r);
        }
        if start.elapsed() > give_up {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = start.elapsed();
    let Some(refused) = refused else {
        panic!(
            "the key was still served {took:?} after the leak began\n{}",
            stack.edge_logs()
        );
    };
    let body: Value = serde_json::from_slice(&refused.body).unwrap_or(Value::Null);
    assert_eq!(
        (refused.status, body["code"].as_str()),
        (401, Some("revoked_key")),
        "before the key was revoked, the edge answered {} {}\n{}",
        refused.status,
        refused.text(),
        stack.edge_logs()
    );
    eprintln!("leak pattern to revoked at the edge: {took:?} (bound {bound:?})");
    assert!(
        took <= bound,
        "the key was stopped {took:?} after the leak began, more than {bound:?}\n{}",
        stack.edge_logs()
    );

    let alerts = stack.api("GET", &format!("/v1/alerts?key_id={key_id}"), None);
    assert_eq!(alerts.status, 200);
    let items = alerts.body["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{}", alerts.body);
    let alert = &items[0];
    assert_eq!(alert["rule"], "new_ips");
    assert_eq!(alert["action"], "revoked");
    assert!(alert["details"]["new_values"].as_i64().unwrap_or(0) >= 6);
    let key = stack.api("GET", &format!("/v1/keys/{key_id}"), None);
    assert_eq!(key.body["status"], "revoked");
    let audit = stack.api("GET", &format!("/v1/audit?target_id={key_id}"), None);
    let revoke = audit.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|e| e["action"] == "key.revoke")
        .cloned()
        .expect("a revocation in the audit log");
    assert_eq!(revoke["actor"], "rule:new_ips");

    // Both events reach the receiver, signed with the endpoint's secret.
    let mut types = Vec::new();
    Stack::wait_for(Duration::from_secs(30), || {
        types = receiver
            .received()
            .iter()
            .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
            .filter_map(|v| v["type"].as_str().map(str::to_owned))
            .collect();
        types.contains(&"alert.raised".to_owned()) && types.contains(&"key.revoked".to_owned())
    })
    .unwrap_or_else(|| panic!("webhooks did not arrive: {types:?}"));
    for r in receiver.received() {
        let header = r
            .header(keygate_shared::webhook::SIGNATURE_HEADER)
            .expect("signature header");
        // The stack's control plane runs on the system clock.
        #[allow(clippy::disallowed_methods)]
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
        keygate_shared::webhook::verify(secret.as_bytes(), header, &r.body, now, 300)
            .expect("signature verifies");
        let v: Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(v["data"]["key"]["id"], key_id.as_str(), "{v}");
    }
}
