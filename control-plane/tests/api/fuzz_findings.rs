//! What the API fuzzing (`cargo xtask schemathesis`, docs/fuzzing.md, "API fuzzing") found: a
//! schema-valid request refused, a schema-invalid one accepted, a bound the OpenAPI document did
//! not state. Each finding is pinned here: the document states the bound, a request at the bound
//! is accepted and one past it is refused.

use actix_web::http::Method;
use keygate_control_plane::timefmt::format_ms;
use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{TestApp, OWNER_TOKEN};

both_backends!(
    list_limits_and_cursors_are_declared,
    nullability_is_declared,
    integral_floats_are_integers,
    bodies_must_be_objects,
    unknown_fields_are_refused_and_declared,
    counts_take_the_whole_u32_range,
    lengths_count_characters,
    declared_patterns_match_the_server,
);

async fn openapi(app: &TestApp) -> Value {
    let r = app.request(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(r.status, 200);
    r.body
}

/// The schema of query parameter `name` of `GET path`.
fn query_param<'a>(doc: &'a Value, path: &str, name: &str) -> &'a Value {
    doc["paths"][path]["get"]["parameters"]
        .as_array()
        .unwrap_or_else(|| panic!("no parameters for GET {path}"))
        .iter()
        .find(|p| p["name"] == name && p["in"] == "query")
        .map(|p| &p["schema"])
        .unwrap_or_else(|| panic!("no query parameter {name} on GET {path}"))
}

fn component<'a>(doc: &'a Value, name: &str) -> &'a Value {
    let c = &doc["components"]["schemas"][name];
    assert!(c.is_object(), "no component {name}");
    c
}

/// Whether a property's schema admits `null`.
fn nullable(prop: &Value) -> bool {
    let ty = &prop["type"];
    ty == "null"
        || ty.as_array().is_some_and(|t| t.iter().any(|t| t == "null"))
        || prop["nullable"] == true
        || ["oneOf", "anyOf"].iter().any(|k| {
            prop[*k]
                .as_array()
                .is_some_and(|alts| alts.iter().any(|a| a["type"] == "null"))
        })
}

/// Schema-valid `limit` values of 1 to 200 were refused with no bound in the document.
async fn list_limits_and_cursors_are_declared(app: TestApp) {
    let doc = openapi(&app).await;
    let p = app.create_project("acme").await;
    let pid = p["id"].as_str().unwrap();
    app.secret_key(pid).await;
    let key_id = app.secret_key(pid).await["id"].as_str().unwrap().to_owned();
    let lists = [
        (
            "/v1/projects/{project_id}/keys".to_owned(),
            format!("/v1/projects/{pid}/keys"),
            200,
            Some("key"),
        ),
        (
            "/v1/audit".to_owned(),
            "/v1/audit".to_owned(),
            200,
            Some("aud"),
        ),
        (
            "/v1/alerts".to_owned(),
            "/v1/alerts".to_owned(),
            200,
            Some("alr"),
        ),
        (
            "/v1/keys/{key_id}/sightings".to_owned(),
            format!("/v1/keys/{key_id}/sightings"),
            1000,
            None,
        ),
    ];
    for (template, path, max, cursor_prefix) in lists {
        let limit = query_param(&doc, &template, "limit");
        assert_eq!(limit["minimum"], 1, "{template}");
        assert_eq!(limit["maximum"], max, "{template}");
        for ok in [1, max] {
            let r = app.get(&format!("{path}?limit={ok}"), OWNER_TOKEN).await;
            assert_eq!(r.status, 200, "{path} limit={ok}: {:?}", r.body);
        }
        for bad in [0, max + 1] {
            let r = app.get(&format!("{path}?limit={bad}"), OWNER_TOKEN).await;
            assert_eq!(r.status, 422, "{path} limit={bad}");
            assert_eq!(r.code(), "validation_failed");
        }
        if let Some(prefix) = cursor_prefix {
            let cursor = query_param(&doc, &template, "cursor");
            assert_eq!(
                cursor["pattern"],
                format!("^({prefix}_[0-9A-Za-z]{{26}})?$"),
                "{template}"
            );
        }
    }
    // Page through the keys with the cursor the document describes.
    let r = app
        .get(&format!("/v1/projects/{pid}/keys?limit=1"), OWNER_TOKEN)
        .await;
    let cursor = r.body["next_cursor"].as_str().unwrap().to_owned();
    let r = app
        .get(
            &format!("/v1/projects/{pid}/keys?limit=1&cursor={cursor}"),
            OWNER_TOKEN,
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    // The alert filters are the enums the server parses, not free strings.
    let status = query_param(&doc, "/v1/alerts", "status");
    let rule = query_param(&doc, "/v1/alerts", "rule");
    for p in [status, rule] {
        assert!(
            p.to_string().contains("$ref") || p["enum"].is_array(),
            "an enum: {p}"
        );
    }
}

/// `null` was declared for fields that default when absent but refuse `null`
/// (`default_route_policy`), and refused fields (`kind` in a key update) were declared.
async fn nullability_is_declared(app: TestApp) {
    let doc = openapi(&app).await;
    let create = &component(&doc, "CreateProject")["properties"];
    for field in ["default_route_policy", "route_matching"] {
        assert!(!nullable(&create[field]), "{field}: {}", create[field]);
        let r = app
            .post(
                "/v1/projects",
                OWNER_TOKEN,
                json!({"name": "N", "key_prefix": "nul", field: null}),
            )
            .await;
        assert_eq!(r.status, 422, "{field}");
        assert_eq!(r.code(), "validation_failed");
    }
    let spec = &component(&doc, "KeySpec")["properties"];
    assert!(!nullable(&spec["restrictions"]), "{}", spec["restrictions"]);
    for field in ["rate_limit", "quota", "expires_at", "metadata"] {
        assert!(nullable(&spec[field]), "{field}: {}", spec[field]);
    }
    let update = &component(&doc, "UpdateKey")["properties"];
    assert!(update.get("kind").is_none() && update.get("environment").is_none());
    let update = &component(&doc, "UpdateProject")["properties"];
    assert!(update.get("key_prefix").is_none());

    let p = app.create_project("acme").await;
    let pid = p["id"].as_str().unwrap();
    let key = app
        .create_key(
            pid,
            json!({"name": "k", "rate_limit": null, "quota": null, "expires_at": null, "metadata": null}),
        )
        .await;
    let r = app
        .patch(
            &format!("/v1/keys/{}", key["id"].as_str().unwrap()),
            OWNER_TOKEN,
            json!({"kind": "publishable"}),
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.code(), "validation_failed");
}

/// `415.0` is an integer to JSON Schema; the server refused it for `grace_seconds` and
/// `threshold`.
async fn integral_floats_are_integers(app: TestApp) {
    let p = app.create_project("acme").await;
    let pid = p["id"].as_str().unwrap();
    let key = app.secret_key(pid).await;
    let r = app
        .post(
            &format!("/v1/keys/{}/rotate", key["id"].as_str().unwrap()),
            OWNER_TOKEN,
            json!({"grace_seconds": 415.0}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = app
        .patch(
            &format!("/v1/projects/{pid}/alert-rules/new_ips"),
            OWNER_TOKEN,
            json!({"threshold": 5.0}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["threshold"], 5);
    let other = app.secret_key(pid).await;
    let r = app
        .post(
            &format!("/v1/keys/{}/rotate", other["id"].as_str().unwrap()),
            OWNER_TOKEN,
            json!({"grace_seconds": 1.5}),
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.code(), "validation_failed");
}

/// `[]` was accepted as a body of `POST /v1/webhooks/{id}/rotate-secret`: serde reads a struct
/// from an array of its fields.
async fn bodies_must_be_objects(app: TestApp) {
    let hook = app
        .post(
            "/v1/webhooks",
            OWNER_TOKEN,
            json!({"url": "https://hooks.example.com/keygate", "events": ["key.revoked"]}),
        )
        .await;
    assert_eq!(hook.status, 201, "{:?}", hook.body);
    let rotate = format!(
        "/v1/webhooks/{}/rotate-secret",
        hook.body["id"].as_str().unwrap()
    );
    for body in [json!([]), json!([0]), json!("x"), json!(1)] {
        let r = app.post(&rotate, OWNER_TOKEN, body.clone()).await;
        assert_eq!(r.status, 422, "{body}");
        assert_eq!(r.code(), "validation_failed");
        assert!(r.detail().starts_with("body:"), "{}", r.detail());
    }
    let r = app
        .post("/v1/projects", OWNER_TOKEN, json!(["Shop", "shop"]))
        .await;
    assert_eq!(r.status, 422);
    let r = app.post(&rotate, OWNER_TOKEN, json!({})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}

/// Unknown fields inside a route, a rate limit or restrictions are refused; the document
/// says so with `additionalProperties: false`.
async fn unknown_fields_are_refused_and_declared(app: TestApp) {
    let doc = openapi(&app).await;
    for name in [
        "Route",
        "RateLimit",
        "Quota",
        "Restrictions",
        "KeySpec",
        "UpdateKey",
        "CreateProject",
        "UpdateProject",
        "CreateWebhook",
        "RotateSecret",
    ] {
        assert_eq!(
            component(&doc, name)["additionalProperties"],
            false,
            "{name}"
        );
    }
    // Every JSON request body of every operation says so.
    let mut bodies = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let schema = &op["requestBody"]["content"]["application/json"]["schema"];
            let Some(reference) = schema["$ref"].as_str() else {
                assert!(schema.is_null(), "{method} {path}: inline body {schema}");
                continue;
            };
            let name = reference.trim_start_matches("#/components/schemas/");
            assert_eq!(
                component(&doc, name)["additionalProperties"],
                false,
                "{method} {path}: {name}"
            );
            bodies += 1;
        }
    }
    assert!(bodies >= 15, "{bodies} request bodies");
    let r = app
        .post(
            "/v1/projects",
            OWNER_TOKEN,
            json!({"name": "Shop", "key_prefix": "shop",
                   "routes": [{"methods": ["GET"], "path": "/a", "scope": "s", "": 1}]}),
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.code(), "validation_failed");
    assert!(r.detail().starts_with("routes[0]."), "{}", r.detail());
}

/// Counts are `u32`; the document said `int32`, so 2147483648 counted as invalid but was
/// accepted.
async fn counts_take_the_whole_u32_range(app: TestApp) {
    let doc = openapi(&app).await;
    for (name, field) in [
        ("UsageItem", "count"),
        ("SightingReport", "count"),
        ("RateLimit", "limit"),
        ("RateLimit", "period_seconds"),
    ] {
        let prop = &component(&doc, name)["properties"][field];
        assert_eq!(prop["maximum"], u64::from(u32::MAX), "{name}.{field}");
        assert_eq!(prop["minimum"], 1, "{name}.{field}");
        assert_ne!(prop["format"], "int32", "{name}.{field}");
    }
    let p = app.create_project("acme").await;
    let key = app.secret_key(p["id"].as_str().unwrap()).await;
    let minute = format_ms(app.clock.now_ms().div_euclid(60_000) * 60_000);
    let item = |count: u64| json!({"items": [{"key_id": key["id"], "minute": minute, "code": "valid", "count": count}]});
    let r = app
        .post("/v1/usage", OWNER_TOKEN, item(u64::from(u32::MAX)))
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let r = app
        .post("/v1/usage", OWNER_TOKEN, item(u64::from(u32::MAX) + 1))
        .await;
    assert_eq!(r.status, 422);
}

/// `maxLength` counts characters; the server counted bytes for usage key ids and passwords.
async fn lengths_count_characters(app: TestApp) {
    let doc = openapi(&app).await;
    assert_eq!(
        component(&doc, "UsageItem")["properties"]["key_id"]["maxLength"],
        64
    );
    let password = &component(&doc, "CreateAdmin")["properties"]["password"];
    assert_eq!(password["minLength"], 12);
    assert_eq!(password["maxLength"], 1024);

    let minute = format_ms(app.clock.now_ms().div_euclid(60_000) * 60_000);
    for (key_id, status) in [("é".repeat(64), 202), ("é".repeat(65), 422)] {
        let r = app
            .post(
                "/v1/usage",
                OWNER_TOKEN,
                json!({"items": [{"key_id": key_id, "minute": minute, "code": "valid", "count": 1}]}),
            )
            .await;
        assert_eq!(r.status, status, "{:?}", r.body);
    }
    for (i, (password, status)) in [("é".repeat(1024), 201), ("é".repeat(1025), 422)]
        .into_iter()
        .enumerate()
    {
        let r = app
            .post(
                "/v1/admins",
                OWNER_TOKEN,
                json!({"email": format!("long{i}@example.com"), "role": "viewer", "password": password}),
            )
            .await;
        assert_eq!(r.status, status, "{:?}", r.body);
    }
}

/// Patterns and list bounds the document now states, checked against the server.
async fn declared_patterns_match_the_server(app: TestApp) {
    let doc = openapi(&app).await;
    assert_eq!(
        component(&doc, "CreateProject")["properties"]["key_prefix"]["pattern"],
        "^[a-z][a-z0-9]{1,11}$"
    );
    assert_eq!(
        component(&doc, "Scope")["pattern"],
        "^[A-Za-z0-9:._/-]{1,128}$"
    );
    assert_eq!(
        component(&doc, "Method")["pattern"],
        "^([A-Za-z]{1,32}|[*])$"
    );
    let verify = &component(&doc, "VerifyRequest")["properties"];
    assert_eq!(verify["method"]["pattern"], "^[A-Za-z]{1,32}$");
    assert_eq!(verify["path"]["pattern"], "^/");
    assert_eq!(
        component(&doc, "LeakReport")["properties"]["keys"]["minItems"],
        1
    );
    let events = &component(&doc, "CreateWebhook")["properties"]["events"];
    assert_eq!(events["minItems"], 1);

    // At the bounds: accepted; past them: refused.
    let ok = app
        .post(
            "/v1/projects",
            OWNER_TOKEN,
            json!({"name": "Long", "key_prefix": "a23456789012",
                   "routes": [{"methods": ["*"], "path": "/x", "scope": "a".repeat(128)}]}),
        )
        .await;
    assert_eq!(ok.status, 201, "{:?}", ok.body);
    for (prefix, scope) in [("a234567890123", "s".to_owned()), ("ab", "a".repeat(129))] {
        let r = app
            .post(
                "/v1/projects",
                OWNER_TOKEN,
                json!({"name": "Bad", "key_prefix": prefix,
                       "routes": [{"methods": ["GET"], "path": "/x", "scope": scope}]}),
            )
            .await;
        assert_eq!(r.status, 422, "{prefix} {:?}", r.body);
    }
    let key = app.secret_key(ok.body["id"].as_str().unwrap()).await;
    let plain = key["key"].as_str().unwrap();
    let r = app
        .post(
            "/v1/verify",
            OWNER_TOKEN,
            json!({"key": plain, "method": "a".repeat(32), "path": "/x"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    for (method, path) in [("a".repeat(33), "/x"), ("GET".to_owned(), "x")] {
        let r = app
            .post(
                "/v1/verify",
                OWNER_TOKEN,
                json!({"key": plain, "method": method, "path": path}),
            )
            .await;
        assert_eq!(r.status, 422, "{method} {path}");
    }
    let r = app
        .post(
            "/v1/webhooks",
            OWNER_TOKEN,
            json!({"url": "https://hooks.example.com/keygate", "events": []}),
        )
        .await;
    assert_eq!(r.status, 422);
}
