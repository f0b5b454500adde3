use serde_json::json;

use crate::both_backends;
use crate::helpers::{TestApp, OWNER_TOKEN};

both_backends!(verify_codes, verify_limits_and_bad_requests);

async fn verify_codes(app: TestApp) {
    let p = app.create_project("acme").await;
    let pid = p["id"].as_str().unwrap();
    let sk = app
        .create_key(pid, json!({"name": "s", "kind": "secret", "environment": "live", "scopes": ["orders:read"], "metadata": {"plan": "pro"}}))
        .await;
    let key = sk["key"].as_str().unwrap();
    let r = app
        .verify(
            json!({"key": key, "method": "GET", "path": "/orders/1", "host": "api.example.com"}),
        )
        .await;
    assert_eq!(r.body["valid"], true);
    assert_eq!(r.body["code"], "valid");
    assert_eq!(r.body["key_id"], sk["id"]);
    assert_eq!(r.body["project_id"], json!(pid));
    assert_eq!(r.body["environment"], "live");
    assert_eq!(r.body["scopes"], json!(["orders:read"]));
    assert_eq!(r.body["metadata"], json!({"plan": "pro"}));

    let a = &app;
    let code = |body: serde_json::Value| async move {
        a.verify(body).await.body["code"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(code(json!({"key": "nope"})).await, "malformed_key");
    let mut bad_sum = key.to_owned();
    let last = bad_sum.pop().unwrap();
    bad_sum.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(code(json!({"key": bad_sum})).await, "malformed_key");
    let unknown = keygate_shared::PlaintextKey::generate(
        &mut rand::rngs::OsRng,
        &keygate_shared::KeyPrefix::parse("acme").unwrap(),
        keygate_shared::Kind::Secret,
        keygate_shared::Environment::Live,
    );
    assert_eq!(code(json!({"key": unknown.expose()})).await, "unknown_key");
    assert_eq!(
        code(json!({"key": key, "host": "sandbox.example.com"})).await,
        "environment_not_allowed"
    );
    // Hosts are mapped, so one that is not is refused, as at the edge; port, case and a
    // trailing dot do not matter.
    assert_eq!(
        code(json!({"key": key, "host": "other.example.com"})).await,
        "environment_not_allowed"
    );
    assert_eq!(
        code(json!({"key": key, "host": "API.example.com.:443"})).await,
        "valid"
    );
    assert_eq!(
        code(json!({"key": key, "method": "POST", "path": "/orders/1"})).await,
        "insufficient_scope"
    );
    assert_eq!(
        code(json!({"key": key, "method": "GET", "path": "/elsewhere"})).await,
        "valid"
    );

    let pk = app
        .create_key(pid, json!({"name": "p", "kind": "publishable", "environment": "live",
            "restrictions": {"referrers": ["https://shop.example.com/*"], "ips": ["203.0.113.0/24"]}}))
        .await;
    let pkey = pk["key"].as_str().unwrap();
    assert_eq!(
        code(json!({"key": pkey, "referrer": "https://evil.example.net/", "ip": "203.0.113.7"}))
            .await,
        "referrer_not_allowed"
    );
    assert_eq!(
        code(json!({"key": pkey, "ip": "203.0.113.7"})).await,
        "referrer_not_allowed"
    );
    assert_eq!(
        code(
            json!({"key": pkey, "referrer": "https://shop.example.com/cart", "ip": "198.51.100.1"})
        )
        .await,
        "ip_not_allowed"
    );
    assert_eq!(
        code(
            json!({"key": pkey, "referrer": "https://shop.example.com/cart", "ip": "203.0.113.7"})
        )
        .await,
        "valid"
    );

    let exp = keygate_control_plane::timefmt::format_ms(app.clock.now_ms() + 5_000);
    let ek = app
        .create_key(
            pid,
            json!({"name": "e", "kind": "secret", "environment": "live", "expires_at": exp}),
        )
        .await;
    assert_eq!(code(json!({"key": ek["key"]})).await, "valid");
    app.clock.advance_ms(5_000);
    assert_eq!(code(json!({"key": ek["key"]})).await, "expired_key");

    app.post(
        &format!("/v1/keys/{}/revoke", sk["id"].as_str().unwrap()),
        OWNER_TOKEN,
        json!({}),
    )
    .await;
    let r = app.verify(json!({"key": key})).await;
    assert_eq!(r.body["code"], "revoked_key");
    assert_eq!(r.body["valid"], false);
    assert!(r.body.get("scopes").is_none());

    // Project policy changes apply at once too.
    app.patch(
        &format!("/v1/projects/{pid}"),
        OWNER_TOKEN,
        json!({"default_route_policy": "deny"}),
    )
    .await;
    let k2 = app.secret_key(pid).await;
    assert_eq!(
        code(json!({"key": k2["key"], "method": "GET", "path": "/elsewhere"})).await,
        "insufficient_scope"
    );
}

async fn verify_limits_and_bad_requests(app: TestApp) {
    let p = app.create_project("acme").await;
    let pid = p["id"].as_str().unwrap();
    let k = app
        .create_key(pid, json!({"name": "r", "kind": "secret", "environment": "live", "rate_limit": {"limit": 2, "period_seconds": 60}}))
        .await;
    let key = k["key"].as_str().unwrap();
    assert_eq!(app.verify_code(key).await, "valid");
    let second = app.verify(json!({"key": key})).await;
    assert_eq!(second.body["code"], "valid");
    assert_eq!(second.body["limits"]["remaining"], 0);
    assert_eq!(app.verify_code(key).await, "rate_limited");
    app.clock.advance_ms(30_000);
    assert_eq!(app.verify_code(key).await, "valid");

    let q = app
        .create_key(pid, json!({"name": "q", "kind": "secret", "environment": "live", "quota": {"limit": 1, "period": "total"}}))
        .await;
    assert_eq!(app.verify_code(q["key"].as_str().unwrap()).await, "valid");
    assert_eq!(
        app.verify_code(q["key"].as_str().unwrap()).await,
        "quota_exceeded"
    );

    for (body, field) in [
        (json!({}), "key"),
        (json!({"key": key, "ip": "not-an-ip"}), "ip"),
        (json!({"key": key, "path": "orders"}), "path"),
        (json!({"key": key, "method": "GE T"}), "method"),
        (json!({"key": key, "extra": true}), "extra"),
        (json!({"key": 5}), "key"),
    ] {
        let r = app.post("/v1/verify", OWNER_TOKEN, body.clone()).await;
        assert_eq!(r.status, 422, "{body}");
        assert!(
            r.detail().starts_with(&format!("{field}:")),
            "{body}: {}",
            r.detail()
        );
    }
    let metrics = app
        .request(actix_web::http::Method::GET, "/metrics", None, None)
        .await;
    let text = String::from_utf8(metrics.raw).unwrap();
    assert!(
        text.contains("keygate_verify_total{code=\"rate_limited\"} 1"),
        "{text}"
    );
}
