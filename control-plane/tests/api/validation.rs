//! Every validation row of the contract gets a 422 naming the field; malformed JSON, wrong
//! content type and oversized bodies get their own 4xx.

use actix_web::http::Method;
use keygate_control_plane::extract::{BODY_LIMIT, USAGE_BODY_LIMIT};
use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{TestApp, OWNER_TOKEN};

both_backends!(key_spec_validation, body_errors, body_errors_of_every_route);

fn spec(overrides: Value) -> Value {
    let mut base = json!({
        "name": "k", "kind": "secret", "environment": "live", "scopes": ["orders:read"],
    });
    for (k, v) in overrides.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

async fn key_spec_validation(app: TestApp) {
    let p = app.create_project("acme").await;
    let path = format!("/v1/projects/{}/keys", p["id"].as_str().unwrap());
    let past = keygate_control_plane::timefmt::format_ms(app.clock.now_ms() - 1000);
    let cases: Vec<(Value, &str)> = vec![
        (spec(json!({"kind": "private"})), "kind:"),
        (spec(json!({"environment": "prod"})), "environment:"),
        (
            spec(json!({"kind": "publishable"})),
            "restrictions.referrers:",
        ),
        (
            spec(json!({"kind": "publishable", "restrictions": {"referrers": []}})),
            "restrictions.referrers:",
        ),
        (
            spec(json!({"restrictions": {"referrers": ["ok.example.com", "*"]}})),
            "restrictions.referrers[1]:",
        ),
        (
            spec(json!({"restrictions": {"referrers": ["*.com"]}})),
            "restrictions.referrers[0]:",
        ),
        (
            spec(json!({"restrictions": {"referrers": ["https://user@example.com"]}})),
            "restrictions.referrers[0]:",
        ),
        (
            spec(json!({"restrictions": {"referrers": ["example.com/a?b=1"]}})),
            "restrictions.referrers[0]:",
        ),
        (
            spec(json!({"restrictions": {"referrers": ["ex*mple.com"]}})),
            "restrictions.referrers[0]:",
        ),
        (
            spec(json!({"restrictions": {"ips": ["10.0.0.0/33"]}})),
            "restrictions.ips[0]:",
        ),
        (
            spec(json!({"restrictions": {"ips": ["10.0.0.1/8"]}})),
            "restrictions.ips[0]:",
        ),
        (
            spec(json!({"restrictions": {"ips": ["203.0.113.0/24", "not-an-ip"]}})),
            "restrictions.ips[1]:",
        ),
        (
            spec(json!({"restrictions": {"hosts": []}})),
            "restrictions.hosts:",
        ),
        (
            spec(json!({"rate_limit": {"limit": 0, "period_seconds": 60}})),
            "rate_limit.limit:",
        ),
        (
            spec(json!({"rate_limit": {"limit": -5, "period_seconds": 60}})),
            "rate_limit.limit:",
        ),
        (
            spec(json!({"rate_limit": {"limit": 5, "period_seconds": 0}})),
            "rate_limit.period_seconds:",
        ),
        (
            spec(json!({"rate_limit": {"limit": 5}})),
            "rate_limit.period_seconds:",
        ),
        (
            spec(json!({"quota": {"limit": 0, "period": "day"}})),
            "quota.limit:",
        ),
        (
            spec(json!({"quota": {"limit": 10, "period": "week"}})),
            "quota.period:",
        ),
        (spec(json!({"expires_at": past})), "expires_at:"),
        (spec(json!({"expires_at": "tomorrow"})), "expires_at:"),
        (spec(json!({"scopes": ["has space"]})), "scopes[0]:"),
        (spec(json!({"name": ""})), "name:"),
        (spec(json!({"metadata": "text"})), "metadata:"),
        (
            spec(json!({"metadata": {"big": "x".repeat(5000)}})),
            "metadata:",
        ),
        (spec(json!({"unexpected": 1})), "unexpected:"),
        (json!({"kind": "secret", "environment": "live"}), "name:"),
    ];
    for (body, field) in cases {
        let r = app.post(&path, OWNER_TOKEN, body.clone()).await;
        assert_eq!(r.status, 422, "{body}: {:?}", r.body);
        assert_eq!(r.code(), "validation_failed", "{body}");
        assert!(r.detail().starts_with(field), "{body}: {}", r.detail());
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/problem+json")
        );
        assert_eq!(r.body["status"], 422);
        assert!(r.body["type"].is_string() && r.body["title"].is_string());
    }
    // Nothing was created by the refused requests.
    let list = app.get(&path, OWNER_TOKEN).await;
    assert_eq!(list.body["items"], json!([]));
}

async fn body_errors(app: TestApp) {
    let p = app.create_project("acme").await;
    let path = format!("/v1/projects/{}/keys", p["id"].as_str().unwrap());
    let r = app
        .send_raw(
            Method::POST,
            &path,
            Some(OWNER_TOKEN),
            Some("application/json"),
            b"{\"name\": ".to_vec(),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), "malformed_json");
    let r = app
        .send_raw(
            Method::POST,
            &path,
            Some(OWNER_TOKEN),
            Some("application/json"),
            b"{} trailing".to_vec(),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), "malformed_json");
    let r = app
        .send_raw(
            Method::POST,
            &path,
            Some(OWNER_TOKEN),
            Some("application/json"),
            Vec::new(),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), "malformed_json");
    let r = app
        .send_raw(
            Method::POST,
            &path,
            Some(OWNER_TOKEN),
            Some("text/plain"),
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(r.status, 415);
    assert_eq!(r.code(), "unsupported_media_type");
    let r = app
        .send_raw(Method::POST, &path, Some(OWNER_TOKEN), None, b"{}".to_vec())
        .await;
    assert_eq!(r.status, 415);
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(70 * 1024));
    let r = app
        .send_raw(
            Method::POST,
            &path,
            Some(OWNER_TOKEN),
            Some("application/json"),
            big.into_bytes(),
        )
        .await;
    assert_eq!(r.status, 413);
    assert_eq!(r.code(), "payload_too_large");
    let r = app
        .send_raw(
            Method::POST,
            &path,
            Some(OWNER_TOKEN),
            Some("application/json; charset=utf-8"),
            b"[1,2]".to_vec(),
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.code(), "validation_failed");
    let r = app
        .post("/v1/auth/login", OWNER_TOKEN, json!({"email": "a@b.c"}))
        .await;
    assert_eq!(r.status, 422);
    assert!(r.detail().starts_with("password:"));
}

/// Every operation with a JSON body documents the four problems of a body, and answers each of
/// them (the document of two routes once left out their 413).
async fn body_errors_of_every_route(app: TestApp) {
    let doc = app.request(Method::GET, "/openapi.json", None, None).await;
    let mut routes = 0;
    for (template, item) in doc.body["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if op["requestBody"]["content"]["application/json"].is_null() {
                continue;
            }
            routes += 1;
            for status in ["400", "413", "415", "422"] {
                assert_eq!(
                    op["responses"][status]["content"]["application/problem+json"]["schema"]
                        ["$ref"],
                    "#/components/schemas/Problem",
                    "{method} {template} documents {status}"
                );
            }
            let path = template
                .split('/')
                .map(|s| if s.starts_with('{') { "x" } else { s })
                .collect::<Vec<_>>()
                .join("/");
            let limit = if path == "/v1/usage" {
                USAGE_BODY_LIMIT
            } else {
                BODY_LIMIT
            };
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            for (content_type, body, status, code) in [
                ("application/json", b"{".to_vec(), 400, "malformed_json"),
                (
                    "application/json",
                    vec![b' '; limit + 1],
                    413,
                    "payload_too_large",
                ),
                ("text/plain", b"{}".to_vec(), 415, "unsupported_media_type"),
                ("application/json", b"[]".to_vec(), 422, "validation_failed"),
            ] {
                let r = app
                    .send_raw(
                        m.clone(),
                        &path,
                        Some(OWNER_TOKEN),
                        Some(content_type),
                        body,
                    )
                    .await;
                assert_eq!(r.status, status, "{method} {path}: {:?}", r.body);
                assert_eq!(r.code(), code, "{method} {path}");
            }
        }
    }
    assert!(routes >= 15, "{routes} routes with a body");
}
