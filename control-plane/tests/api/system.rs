use actix_web::http::Method;
use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{logs, TestApp, OWNER_TOKEN};

both_backends!(
    health_openapi_metrics,
    no_secrets_in_logs,
    liveness_and_readiness_when_the_database_goes
);

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
    ("get", "/readyz"),
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
    // The project's route matching is documented with its two values.
    assert_eq!(
        doc.body["components"]["schemas"]["RouteMatching"]["enum"],
        json!(["exact", "case_insensitive"]),
        "{}",
        doc.body["components"]["schemas"]
    );
    // Every reference resolves: a schema named in a body but not registered would leave
    // clients (and Schemathesis) with a dangling `$ref`.
    let mut refs = Vec::new();
    collect_refs(&doc.body, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let name = r.trim_start_matches("#/components/schemas/");
        assert!(
            doc.body["components"]["schemas"].get(name).is_some(),
            "{r} does not resolve"
        );
    }
    // Ids are plain strings on the wire, documented once per kind of id.
    assert_eq!(
        doc.body["components"]["schemas"]["KeyView"]["properties"]["id"]["$ref"],
        "#/components/schemas/KeyId"
    );
    assert_eq!(doc.body["components"]["schemas"]["KeyId"]["type"], "string");
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

/// Makes the test's database unreachable for new connections (and ends the open ones on
/// PostgreSQL), or reachable again.
fn set_database_reachable(app: &TestApp, reachable: bool) {
    use diesel::connection::SimpleConnection as _;
    use diesel::Connection as _;
    use keygate_control_plane::db::DbTarget;
    match &app.state.db_target {
        DbTarget::Sqlite(path) => {
            // A directory where the file was: opening the database fails.
            let aside = path.with_extension("aside");
            if reachable {
                std::fs::remove_dir(path).unwrap();
                std::fs::rename(&aside, path).unwrap();
            } else {
                std::fs::rename(path, &aside).unwrap();
                std::fs::create_dir(path).unwrap();
            }
        }
        DbTarget::Postgres(url) => {
            let name = url.rsplit('/').next().unwrap().split('?').next().unwrap();
            let admin = std::env::var("KEYGATE_TEST_POSTGRES_URL").unwrap();
            let mut conn = diesel::PgConnection::establish(&admin).unwrap();
            conn.batch_execute(&format!(
                "ALTER DATABASE {name} ALLOW_CONNECTIONS {reachable}"
            ))
            .unwrap();
            if !reachable {
                conn.batch_execute(&format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
                ))
                .unwrap();
            }
        }
    }
}

async fn liveness_and_readiness_when_the_database_goes(app: TestApp) {
    let ready = app.request(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, 200, "{:?}", ready.body);
    assert_eq!(ready.body["status"], "ok");

    set_database_reachable(&app, false);
    let ready = app.request(Method::GET, "/readyz", None, None).await;
    let live = app.request(Method::GET, "/healthz", None, None).await;
    set_database_reachable(&app, true);
    assert_eq!(ready.status, 503, "{:?}", ready.body);
    assert_eq!(ready.code(), "database_unavailable");
    assert_eq!(
        ready.header("content-type").as_deref(),
        Some("application/problem+json")
    );
    assert!(
        !ready.detail().contains("kg_test"),
        "no internals: {}",
        ready.detail()
    );
    assert_eq!(live.status, 200, "liveness must not depend on the database");
    assert_eq!(live.body["status"], "ok");

    let ready = app.request(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, 200, "{:?}", ready.body);
}

/// Control planes starting together on a new PostgreSQL database migrate it once, without
/// tripping over each other: migrations run under an advisory lock.
#[test]
#[ignore = "needs PostgreSQL at KEYGATE_TEST_POSTGRES_URL; `cargo xtask test` runs it"]
fn concurrent_migrations_take_turns() {
    let db = crate::helpers::PgDatabase::create();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (url, barrier) = (db.url.clone(), barrier.clone());
            std::thread::spawn(move || {
                let dir = tempfile::tempdir().unwrap();
                let mut config = keygate_control_plane::Config::new(dir.path());
                config.database_url = Some(url);
                config.db_pool_size = Some(1);
                barrier.wait();
                keygate_control_plane::startup::open_database(&config).map(|_| ())
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap().expect("every replica starts");
    }
    use diesel::{Connection as _, RunQueryDsl as _};
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = diesel::PgConnection::establish(&db.url).unwrap();
    let c: Count = diesel::sql_query("SELECT count(*) AS n FROM __diesel_schema_migrations")
        .get_result(&mut conn)
        .unwrap();
    let expected = std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../store/migrations/postgres"
    ))
    .unwrap()
    .count();
    assert_eq!(c.n as usize, expected);
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => collect_refs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}
