use actix_web::http::Method;
use serde_json::json;

use crate::both_backends;
use crate::helpers::{logs, TestApp, OWNER_TOKEN};

both_backends!(health_openapi_metrics, no_secrets_in_logs);

/// Every route of the contract, as documented paths.
const CONTRACT: &[(&str, &str)] = &[
    ("post", "/v1/auth/login"),
    ("post", "/v1/projects"),
    ("get", "/v1/projects"),
    ("get", "/v1/projects/{project_id}"),
    ("patch", "/v1/projects/{project_id}"),
    ("post", "/v1/projects/{project_id}/keys"),
    ("get", "/v1/projects/{project_id}/keys"),
    ("get", "/v1/keys/{key_id}"),
    ("patch", "/v1/keys/{key_id}"),
    ("post", "/v1/keys/{key_id}/rotate"),
    ("post", "/v1/keys/{key_id}/revoke"),
    ("post", "/v1/admins"),
    ("get", "/v1/admins"),
    ("post", "/v1/admin-tokens"),
    ("get", "/v1/admin-tokens"),
    ("delete", "/v1/admin-tokens/{token_id}"),
    ("post", "/v1/verify"),
    ("get", "/v1/audit"),
    ("get", "/v1/snapshot"),
    ("get", "/v1/snapshot/public-key"),
    ("get", "/healthz"),
    ("get", "/openapi.json"),
    // Beyond the contract table.
    ("post", "/v1/auth/logout"),
    ("post", "/v1/auth/password"),
    ("patch", "/v1/admins/{admin_id}"),
    ("delete", "/v1/admins/{admin_id}"),
    ("get", "/v1/snapshot/shards/{digest_hex}"),
    ("get", "/v1/snapshot/public-keys"),
    ("post", "/v1/usage"),
    ("get", "/v1/keys/{key_id}/usage"),
    ("get", "/v1/projects/{project_id}/usage"),
    ("get", "/v1/keys/{key_id}/sightings"),
    ("get", "/metrics"),
    ("post", "/v1/leaks"),
    ("get", "/v1/alerts"),
    ("get", "/v1/alerts/{alert_id}"),
    ("post", "/v1/alerts/{alert_id}/acknowledge"),
    ("get", "/v1/projects/{project_id}/alert-rules"),
    ("patch", "/v1/projects/{project_id}/alert-rules/{rule}"),
    ("post", "/v1/webhooks"),
    ("get", "/v1/webhooks"),
    ("get", "/v1/webhooks/{webhook_id}"),
    ("patch", "/v1/webhooks/{webhook_id}"),
    ("delete", "/v1/webhooks/{webhook_id}"),
    ("post", "/v1/webhooks/{webhook_id}/rotate-secret"),
    ("get", "/v1/webhooks/{webhook_id}/deliveries"),
    ("get", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}"),
    (
        "post",
        "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry",
    ),
];

async fn health_openapi_metrics(app: TestApp) {
    let h = app.request(Method::GET, "/healthz", None, None).await;
    assert_eq!(h.status, 200);
    assert_eq!(h.body["status"], "ok");
    assert!(h.header("x-request-id").is_some());

    let doc = app.request(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(doc.status, 200);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc.body["paths"].as_object().unwrap();
    for (method, path) in CONTRACT {
        assert!(
            paths.get(*path).and_then(|p| p.get(*method)).is_some(),
            "{method} {path} missing from /openapi.json"
        );
    }
    let operations: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(
        operations,
        CONTRACT.len(),
        "the document has exactly the app's routes"
    );
    // Each documented operation is routed by the app (no route-level 404/405).
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let concrete = path
                .replace("{project_id}", "prj_x")
                .replace("{key_id}", "key_x")
                .replace("{token_id}", "tok_x")
                .replace("{digest_hex}", "00")
                .replace("{webhook_id}", "whk_x")
                .replace("{delivery_id}", "dlv_x");
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = app
                .request(m, &concrete, Some(OWNER_TOKEN), Some(&json!({})))
                .await;
            let unrouted =
                (r.status == 404 && r.detail().starts_with("no route")) || r.status == 405;
            assert!(!unrouted, "{method} {path} is documented but not routed");
        }
    }
    let mut ids: Vec<&str> = paths
        .values()
        .flat_map(|p| p.as_object().unwrap().values())
        .map(|op| op["operationId"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "operationIds are unique");
    let schemas = doc.body["components"]["schemas"].as_object().unwrap();
    for s in [
        "Problem",
        "KeySpec",
        "KeyView",
        "ProjectView",
        "VerifyResponse",
        "Route",
        "RateLimit",
    ] {
        assert!(schemas.contains_key(s), "schema {s}");
    }

    // Request ids are echoed when valid.
    let mut res = app
        .client
        .get(format!("{}/healthz", app.base))
        .insert_header(("x-request-id", "req-123"))
        .send()
        .await
        .unwrap();
    let _ = res.body().await;
    assert_eq!(res.headers().get("x-request-id").unwrap(), "req-123");

    let m = app.request(Method::GET, "/metrics", None, None).await;
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    let text = String::from_utf8(m.raw).unwrap();
    assert!(
        text.contains(
            "keygate_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"}"
        ),
        "{text}"
    );
    assert!(text
        .contains("keygate_http_request_duration_seconds_bucket{route=\"/healthz\",le=\"+Inf\"}"));
    assert!(
        text.contains("route=\"/v1/projects/{project_id}\""),
        "routes are labelled by pattern"
    );
    assert!(text.contains("# TYPE keygate_snapshot_version gauge"));
}

async fn no_secrets_in_logs(app: TestApp) {
    let p = app.create_project("logs").await;
    let k = app.secret_key(p["id"].as_str().unwrap()).await;
    let key = k["key"].as_str().unwrap().to_owned();
    app.verify(json!({"key": key})).await;
    let token = app.token("viewer").await;
    app.get("/v1/projects", &token).await;
    app.post(
        "/v1/admins",
        OWNER_TOKEN,
        json!({"email": "l@example.com", "role": "admin", "password": "log-password-123456"}),
    )
    .await;
    let login = app
        .request(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(&json!({"email": "l@example.com", "password": "log-password-123456"})),
        )
        .await;
    let jwt = login.body["token"].as_str().unwrap().to_owned();
    app.get("/v1/projects", &jwt).await;
    // Failing requests too.
    app.get(&format!("/v1/projects?key={key}"), &token).await;
    app.get("/v1/projects", "kgt_wrongtokenvalue").await;

    let text = logs();
    assert!(text.contains("\"request_id\""), "structured request logs");
    for secret in [
        key.as_str(),
        token.as_str(),
        jwt.as_str(),
        OWNER_TOKEN,
        "log-password-123456",
        &key[17..],
    ] {
        assert!(!text.contains(secret), "a secret reached the logs");
    }
}
