use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{TestApp, OWNER_TOKEN};

both_backends!(
    key_lifecycle,
    list_filters_and_pagination,
    rotation_grace,
    rotation_refusals,
    concurrent_revocations,
    usage_roundtrip,
    spec_defaults,
    search_by_name_prefix_and_start,
    search_pages_with_the_cursor,
    search_refuses_bad_prefixes,
);

async fn key_lifecycle(app: TestApp) {
    let p = app.create_project("acme").await;
    let pid = p["id"].as_str().unwrap();
    let created = app
        .create_key(
            pid,
            json!({
                "name": "Checkout web app",
                "kind": "publishable",
                "environment": "live",
                "scopes": ["orders:read"],
                "restrictions": {"referrers": ["https://shop.example.com/*", "*.example.org"], "ips": ["203.0.113.0/24", "2001:db8::/32"]},
                "rate_limit": {"limit": 100, "period_seconds": 60},
                "quota": {"limit": 100000, "period": "month"},
                "expires_at": "2099-01-01T00:00:00Z",
                "metadata": {"customer": "cus_123"}
            }),
        )
        .await;
    let key = created["key"].as_str().unwrap();
    let id = created["id"].as_str().unwrap();
    assert!(key.starts_with("acme_pk_live_"));
    assert!(keygate_shared::key::parse(key).is_ok());
    assert_eq!(created["start"].as_str().unwrap(), &key[..17]);
    assert_eq!(created["status"], "active");
    assert_eq!(created["quota"]["period"], "month");
    assert_eq!(created["expires_at"], "2099-01-01T00:00:00Z");
    assert_eq!(created["metadata"]["customer"], "cus_123");
    assert_eq!(created["restrictions"]["ips"][1], "2001:db8::/32");

    let got = app.get(&format!("/v1/keys/{id}"), OWNER_TOKEN).await;
    assert_eq!(got.status, 200);
    let text = String::from_utf8(got.raw.clone()).unwrap();
    assert!(!text.contains(key), "the plaintext is shown only once");
    assert!(
        !text.contains(&keygate_shared::KeyHash::of(key).to_hex()),
        "never the hash"
    );
    assert!(got.body.get("key").is_none());
    assert_eq!(got.body["last_used_at"], Value::Null);

    let patched = app
        .patch(
            &format!("/v1/keys/{id}"),
            OWNER_TOKEN,
            json!({"name": "Renamed", "scopes": ["orders:read", "orders:write"], "rate_limit": null, "metadata": null}),
        )
        .await;
    assert_eq!(patched.status, 200, "{:?}", patched.body);
    assert_eq!(patched.body["name"], "Renamed");
    assert_eq!(
        patched.body["scopes"],
        json!(["orders:read", "orders:write"])
    );
    assert_eq!(patched.body["rate_limit"], Value::Null);
    assert_eq!(patched.body["metadata"], Value::Null);
    assert_eq!(
        patched.body["quota"]["limit"], 100000,
        "untouched fields stay"
    );

    for field in ["kind", "environment"] {
        let r = app
            .patch(
                &format!("/v1/keys/{id}"),
                OWNER_TOKEN,
                json!({field: "secret"}),
            )
            .await;
        assert_eq!(r.status, 422);
        assert!(
            r.detail().starts_with(&format!("{field}:")),
            "{}",
            r.detail()
        );
    }
    let r = app
        .patch(
            &format!("/v1/keys/{id}"),
            OWNER_TOKEN,
            json!({"restrictions": {"referrers": []}}),
        )
        .await;
    assert_eq!(r.status, 422, "a pk key keeps a referrer");
    assert!(
        r.detail().starts_with("restrictions.referrers:"),
        "{}",
        r.detail()
    );

    let revoked = app
        .post(
            &format!("/v1/keys/{id}/revoke"),
            OWNER_TOKEN,
            json!({"reason": "leaked"}),
        )
        .await;
    assert_eq!(revoked.status, 200);
    assert_eq!(revoked.body["status"], "revoked");
    assert_eq!(revoked.body["revoked_reason"], "leaked");
    assert!(revoked.body["revoked_at"].is_string());
    let again = app
        .post(&format!("/v1/keys/{id}/revoke"), OWNER_TOKEN, json!({}))
        .await;
    assert_eq!(again.status, 409);
    assert_eq!(again.code(), "already_revoked");
    let r = app
        .patch(&format!("/v1/keys/{id}"), OWNER_TOKEN, json!({"name": "x"}))
        .await;
    assert_eq!(r.status, 409);

    let audit = app
        .get(&format!("/v1/audit?target_id={id}"), OWNER_TOKEN)
        .await;
    let actions: Vec<_> = audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(actions, ["key.revoke", "key.update", "key.create"]);
    let audit_text = String::from_utf8(audit.raw).unwrap();
    assert!(!audit_text.contains(key));
    assert!(!audit_text.contains(&keygate_shared::KeyHash::of(key).to_hex()));
}

async fn list_filters_and_pagination(app: TestApp) {
    let p = app.create_project("acme").await;
    let pid = p["id"].as_str().unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        let env = if i % 2 == 0 { "live" } else { "test" };
        let k = app
            .create_key(
                pid,
                json!({"name": format!("k{i}"), "kind": "secret", "environment": env}),
            )
            .await;
        ids.push(k["id"].as_str().unwrap().to_owned());
    }
    app.post(
        &format!("/v1/keys/{}/revoke", ids[0]),
        OWNER_TOKEN,
        json!({}),
    )
    .await;
    // An expired key: expires in one second, then the clock moves on.
    let exp = keygate_control_plane::timefmt::format_ms(app.clock.now_ms() + 1000);
    let expired = app
        .create_key(
            pid,
            json!({"name": "soon", "kind": "secret", "environment": "live", "expires_at": exp}),
        )
        .await;
    app.clock.advance_ms(2000);

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("?limit=2&cursor={c}"),
            None => "?limit=2".to_owned(),
        };
        let page = app
            .get(&format!("/v1/projects/{pid}/keys{q}"), OWNER_TOKEN)
            .await;
        assert_eq!(page.status, 200, "{:?}", page.body);
        let items = page.body["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|k| k["id"].as_str().unwrap().to_owned()));
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let mut all = ids.clone();
    all.push(expired["id"].as_str().unwrap().to_owned());
    all.reverse();
    assert_eq!(seen, all, "every key once, newest first");

    let ids_of = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let revoked = app
        .get(
            &format!("/v1/projects/{pid}/keys?status=revoked"),
            OWNER_TOKEN,
        )
        .await;
    assert_eq!(ids_of(&revoked.body), vec![ids[0].clone()]);
    let exp_list = app
        .get(
            &format!("/v1/projects/{pid}/keys?status=expired"),
            OWNER_TOKEN,
        )
        .await;
    assert_eq!(
        ids_of(&exp_list.body),
        vec![expired["id"].as_str().unwrap().to_owned()]
    );
    assert_eq!(exp_list.body["items"][0]["status"], "expired");
    let active = app
        .get(
            &format!("/v1/projects/{pid}/keys?status=active"),
            OWNER_TOKEN,
        )
        .await;
    assert_eq!(ids_of(&active.body).len(), 4);
    let test_env = app
        .get(
            &format!("/v1/projects/{pid}/keys?environment=test"),
            OWNER_TOKEN,
        )
        .await;
    assert_eq!(ids_of(&test_env.body), vec![ids[3].clone(), ids[1].clone()]);

    for (q, field) in [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=abc", "limit"),
        ("status=bogus", "status"),
        ("environment=prod", "environment"),
        ("cursor=nope", "cursor"),
        ("unknown=1", "unknown"),
    ] {
        let r = app
            .get(&format!("/v1/projects/{pid}/keys?{q}"), OWNER_TOKEN)
            .await;
        assert_eq!(r.status, 422, "{q}");
        assert!(
            r.detail().starts_with(&format!("{field}:")),
            "{q}: {}",
            r.detail()
        );
    }
}

async fn rotation_grace(app: TestApp) {
    let p = app.create_project("acme").await;
    let pid = p["id"].as_str().unwrap();
    let t0 = app.clock.now_ms();
    let two_hours = keygate_control_plane::timefmt::format_ms(t0 + 2 * 3600 * 1000);
    let old = app
        .create_key(pid, json!({"name": "k", "kind": "secret", "environment": "live", "scopes": ["orders:read"], "expires_at": two_hours}))
        .await;
    let old_key = old["key"].as_str().unwrap().to_owned();
    let old_id = old["id"].as_str().unwrap();

    let r = app
        .post(
            &format!("/v1/keys/{old_id}/rotate"),
            OWNER_TOKEN,
            json!({"grace_seconds": 3600}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let new_key = r.body["key"].as_str().unwrap().to_owned();
    let new_id = r.body["id"].as_str().unwrap().to_owned();
    assert_ne!(new_key, old_key);
    assert_eq!(r.body["rotated_from"], old_id);
    assert_eq!(r.body["scopes"], json!(["orders:read"]));
    assert_eq!(
        r.body["expires_at"],
        json!(two_hours),
        "the new key keeps the original expiry"
    );
    assert_eq!(r.body["previous"]["id"], old_id);
    let grace_end = keygate_control_plane::timefmt::format_ms(t0 + 3600 * 1000);
    assert_eq!(r.body["previous"]["expires_at"], json!(grace_end));

    // Both keys work during the grace period.
    assert_eq!(app.verify_code(&old_key).await, "valid");
    assert_eq!(app.verify_code(&new_key).await, "valid");
    let old_view = app.get(&format!("/v1/keys/{old_id}"), OWNER_TOKEN).await;
    assert_eq!(old_view.body["rotated_to"], json!(new_id));

    // After it, only the new one.
    app.clock.advance_ms(3600 * 1000 + 1);
    assert_eq!(app.verify_code(&old_key).await, "expired_key");
    assert_eq!(app.verify_code(&new_key).await, "valid");
    let old_view = app.get(&format!("/v1/keys/{old_id}"), OWNER_TOKEN).await;
    assert_eq!(old_view.body["status"], "expired");

    // A grace longer than the remaining life is cut at the original expiry.
    let ten_min = keygate_control_plane::timefmt::format_ms(app.clock.now_ms() + 600_000);
    let short = app
        .create_key(
            pid,
            json!({"name": "s", "kind": "secret", "environment": "live", "expires_at": ten_min}),
        )
        .await;
    let r = app
        .post(
            &format!("/v1/keys/{}/rotate", short["id"].as_str().unwrap()),
            OWNER_TOKEN,
            json!({"grace_seconds": 86400}),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body["previous"]["expires_at"], json!(ten_min));
    // A rotated key's expiry cannot be pushed past its grace.
    let r2 = app
        .patch(
            &format!("/v1/keys/{}", short["id"].as_str().unwrap()),
            OWNER_TOKEN,
            json!({"expires_at": null}),
        )
        .await;
    assert_eq!(r2.status, 422);
    assert!(r2.detail().starts_with("expires_at:"));
    app.clock.advance_ms(600_001);
    assert_eq!(
        app.verify_code(short["key"].as_str().unwrap()).await,
        "expired_key"
    );
    assert_eq!(
        app.verify_code(r.body["key"].as_str().unwrap()).await,
        "expired_key"
    );

    // grace 0: the old key stops at once.
    let k = app.secret_key(pid).await;
    let r = app
        .post(
            &format!("/v1/keys/{}/rotate", k["id"].as_str().unwrap()),
            OWNER_TOKEN,
            json!({"grace_seconds": 0}),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(
        app.verify_code(k["key"].as_str().unwrap()).await,
        "expired_key"
    );
    assert_eq!(
        app.verify_code(r.body["key"].as_str().unwrap()).await,
        "valid"
    );
}

async fn rotation_refusals(app: TestApp) {
    let p = app.create_project("acme").await;
    let pid = p["id"].as_str().unwrap();
    let k = app.secret_key(pid).await;
    let id = k["id"].as_str().unwrap();
    for (grace, ok) in [
        (json!(-1), false),
        (json!(2_592_001), false),
        (json!("x"), false),
    ] {
        let r = app
            .post(
                &format!("/v1/keys/{id}/rotate"),
                OWNER_TOKEN,
                json!({"grace_seconds": grace}),
            )
            .await;
        assert_eq!(r.status == 201, ok);
        assert_eq!(r.status, 422);
        assert!(r.detail().starts_with("grace_seconds:"), "{}", r.detail());
    }
    let r = app
        .post(
            &format!("/v1/keys/{id}/rotate"),
            OWNER_TOKEN,
            json!({"grace_seconds": 2_592_000}),
        )
        .await;
    assert_eq!(r.status, 201);
    let again = app
        .post(
            &format!("/v1/keys/{id}/rotate"),
            OWNER_TOKEN,
            json!({"grace_seconds": 0}),
        )
        .await;
    assert_eq!(again.status, 409);
    assert_eq!(again.code(), "already_rotated");

    let k = app.secret_key(pid).await;
    let id = k["id"].as_str().unwrap();
    app.post(&format!("/v1/keys/{id}/revoke"), OWNER_TOKEN, json!({}))
        .await;
    let r = app
        .post(
            &format!("/v1/keys/{id}/rotate"),
            OWNER_TOKEN,
            json!({"grace_seconds": 60}),
        )
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(r.code(), "key_not_active");

    let soon = keygate_control_plane::timefmt::format_ms(app.clock.now_ms() + 1000);
    let k = app
        .create_key(
            pid,
            json!({"name": "e", "kind": "secret", "environment": "live", "expires_at": soon}),
        )
        .await;
    app.clock.advance_ms(1001);
    let r = app
        .post(
            &format!("/v1/keys/{}/rotate", k["id"].as_str().unwrap()),
            OWNER_TOKEN,
            json!({"grace_seconds": 60}),
        )
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(r.code(), "key_not_active");
}

async fn concurrent_revocations(app: TestApp) {
    let p = app.create_project("acme").await;
    let pid = p["id"].as_str().unwrap();
    let mut keys = Vec::new();
    for _ in 0..20 {
        keys.push(app.secret_key(pid).await);
    }
    let before = snapshot_version(&app).await;
    let futures = keys.iter().map(|k| {
        let id = k["id"].as_str().unwrap().to_owned();
        let app = &app;
        async move {
            app.post(
                &format!("/v1/keys/{id}/revoke"),
                OWNER_TOKEN,
                json!({"reason": "bulk"}),
            )
            .await
        }
    });
    let results = futures_util::future::join_all(futures).await;
    for r in &results {
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    // Each revocation committed exactly one version: none shared, none lost.
    let after = snapshot_version(&app).await;
    assert_eq!(after, before + 20);
    for k in &keys {
        assert_eq!(
            app.verify_code(k["key"].as_str().unwrap()).await,
            "revoked_key"
        );
    }
    let snap = crate::snapshot::fetch_verified(&app).await;
    let records = crate::snapshot::all_records(&app, &snap).await;
    for k in &keys {
        let r = records
            .iter()
            .find(|r| r.key_id == k["id"].as_str().unwrap())
            .expect("record in snapshot");
        assert!(r.revoked);
    }
    let audit = app.get("/v1/audit?limit=200", OWNER_TOKEN).await;
    let revokes = audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "key.revoke")
        .count();
    assert_eq!(revokes, 20);
}

async fn snapshot_version(app: &TestApp) -> u64 {
    let r = app.get("/v1/snapshot", OWNER_TOKEN).await;
    assert_eq!(r.status, 200);
    r.header("keygate-snapshot-version")
        .unwrap()
        .parse()
        .unwrap()
}

async fn usage_roundtrip(app: TestApp) {
    let p = app.create_project("acme").await;
    let k = app.secret_key(p["id"].as_str().unwrap()).await;
    let id = k["id"].as_str().unwrap();
    let edge = app.token("edge").await;
    let now = app.clock.now_ms();
    let minute = keygate_control_plane::timefmt::format_ms(now - now % 60_000 - 60_000);
    let body = json!({"items": [
        {"key_id": id, "minute": minute, "code": "valid", "count": 3},
        {"key_id": id, "minute": minute, "code": "valid", "count": 2},
        {"key_id": id, "minute": minute, "code": "rate_limited", "count": 1}
    ]});
    let r = app.post("/v1/usage", &edge, body.clone()).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.body["accepted"], 3);
    let series = app.get(&format!("/v1/keys/{id}/usage"), OWNER_TOKEN).await;
    assert_eq!(series.status, 200, "{:?}", series.body);
    assert_eq!(series.body["granularity"], "minute");
    assert_eq!(
        series.body["items"],
        json!([
            {"start": minute, "code": "rate_limited", "count": 1},
            {"start": minute, "code": "valid", "count": 5}
        ])
    );
    assert_eq!(
        series.body["totals"],
        json!({"rate_limited": 1, "valid": 5})
    );
    let r = app
        .post(
            "/v1/usage",
            &edge,
            json!({"items": [{"key_id": id, "minute": minute, "code": "bogus", "count": 1}]}),
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(r.detail().starts_with("items[0].code:"), "{}", r.detail());
    let r = app
        .post(
            "/v1/usage",
            &edge,
            json!({"items": [{"key_id": id, "minute": minute, "code": "valid", "count": 0}]}),
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(r.detail().starts_with("items[0].count:"), "{}", r.detail());
    let empty = app
        .get(
            &format!("/v1/keys/{id}/usage?from=2020-01-01T00:00:00Z&to=2020-01-02T00:00:00Z"),
            OWNER_TOKEN,
        )
        .await;
    assert_eq!(empty.body["items"], json!([]));
    let bad = app
        .get(&format!("/v1/keys/{id}/usage?from=yesterday"), OWNER_TOKEN)
        .await;
    assert_eq!(bad.status, 422);
    assert!(bad.detail().starts_with("from:"));
}

/// Only `name` is required: `kind` defaults to `secret`, `environment` to `live`, and every other
/// field to none.
async fn spec_defaults(app: TestApp) {
    let p = app.create_project("acme").await;
    let pid = p["id"].as_str().unwrap();
    let k = app.create_key(pid, json!({"name": "minimal"})).await;
    assert_eq!(k["kind"], "secret");
    assert_eq!(k["environment"], "live");
    assert!(
        k["key"].as_str().unwrap().starts_with("acme_sk_live_"),
        "{k}"
    );
    assert_eq!(k["scopes"], json!([]));
    assert_eq!(k["rate_limit"], serde_json::Value::Null);
    assert_eq!(k["quota"], serde_json::Value::Null);
    assert_eq!(k["expires_at"], serde_json::Value::Null);
    assert_eq!(app.verify_code(k["key"].as_str().unwrap()).await, "valid");
    // Either default can be given alone.
    let t = app
        .create_key(pid, json!({"name": "sandbox", "environment": "test"}))
        .await;
    assert_eq!(t["kind"], "secret");
    assert!(
        t["key"].as_str().unwrap().starts_with("acme_sk_test_"),
        "{t}"
    );
    // A publishable key still needs its referrers, default kind or not.
    let r = app
        .post(
            &format!("/v1/projects/{pid}/keys"),
            OWNER_TOKEN,
            json!({"name": "web", "kind": "publishable"}),
        )
        .await;
    assert_eq!(r.status, 422);
    // `null` is not a default: an explicit null kind is refused.
    let r = app
        .post(
            &format!("/v1/projects/{pid}/keys"),
            OWNER_TOKEN,
            json!({"name": "x", "kind": null}),
        )
        .await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert!(r.detail().starts_with("kind"), "{}", r.detail());
    // The OpenAPI document requires only `name`.
    let doc = app
        .request(actix_web::http::Method::GET, "/openapi.json", None, None)
        .await
        .body;
    let schema = &doc["components"]["schemas"]["KeySpec"];
    assert_eq!(schema["required"], json!(["name"]), "{schema}");
    assert_eq!(
        schema["properties"]["kind"]["default"], "secret",
        "{schema}"
    );
    assert_eq!(schema["properties"]["environment"]["default"], "live");
}

/// The ids of a key page's items, in order.
fn page_ids(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {v}"))
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_owned())
        .collect()
}

/// `GET /v1/projects/{pid}/keys` with these query pairs, percent-encoded; expects a 200.
async fn search(app: &TestApp, pid: &str, pairs: &[(&str, &str)]) -> Value {
    let query = serde_urlencoded::to_string(pairs).unwrap();
    let r = app
        .get(&format!("/v1/projects/{pid}/keys?{query}"), OWNER_TOKEN)
        .await;
    assert_eq!(r.status, 200, "{query}: {:?}", r.body);
    r.body
}

async fn search_by_name_prefix_and_start(app: TestApp) {
    let p = app.create_project("acme").await;
    let pid = p["id"].as_str().unwrap();
    let other = app.create_project("other").await;
    let opid = other["id"].as_str().unwrap();
    let mut ids = std::collections::HashMap::new();
    for (name, env) in [
        ("Checkout web app", "live"),
        ("checkout worker", "test"),
        ("CHECKOUT-batch", "live"),
        ("Billing", "live"),
        ("100% off", "live"),
        ("a_b", "live"),
        ("axb", "live"),
        ("Émile", "live"),
    ] {
        let k = app
            .create_key(pid, json!({"name": name, "environment": env}))
            .await;
        ids.insert(name, k);
    }
    // Same name in another project: never in this project's results.
    app.create_key(opid, json!({"name": "Checkout web app"}))
        .await;
    let id = |name: &str| ids[name]["id"].as_str().unwrap().to_owned();

    // Name prefixes ignore ASCII case; newest first.
    let r = search(&app, pid, &[("name_prefix", "check")]).await;
    assert_eq!(
        page_ids(&r),
        [
            id("CHECKOUT-batch"),
            id("checkout worker"),
            id("Checkout web app")
        ]
    );
    let r = search(&app, pid, &[("name_prefix", "CHECKOUT W")]).await;
    assert_eq!(
        page_ids(&r),
        [id("checkout worker"), id("Checkout web app")]
    );
    // With the other filters.
    let r = search(
        &app,
        pid,
        &[("name_prefix", "checkout"), ("environment", "test")],
    )
    .await;
    assert_eq!(page_ids(&r), [id("checkout worker")]);
    // `%` and `_` are plain characters, not LIKE wildcards.
    let r = search(&app, pid, &[("name_prefix", "%")]).await;
    assert_eq!(page_ids(&r), Vec::<String>::new());
    let r = search(&app, pid, &[("name_prefix", "100%")]).await;
    assert_eq!(page_ids(&r), [id("100% off")]);
    let r = search(&app, pid, &[("name_prefix", "a_")]).await;
    assert_eq!(page_ids(&r), [id("a_b")]);
    let r = search(&app, pid, &[("name_prefix", "a")]).await;
    assert_eq!(page_ids(&r), [id("axb"), id("a_b")]);
    // Only ASCII letters fold, on both backends.
    let r = search(&app, pid, &[("name_prefix", "É")]).await;
    assert_eq!(page_ids(&r), [id("Émile")]);
    let r = search(&app, pid, &[("name_prefix", "é")]).await;
    assert_eq!(page_ids(&r), Vec::<String>::new());
    // An empty prefix is no filter.
    let r = search(&app, pid, &[("name_prefix", ""), ("start", "")]).await;
    assert_eq!(page_ids(&r).len(), 8);

    // By start: the whole start, a beginning of it, case-sensitive.
    let billing = &ids["Billing"];
    let start = billing["start"].as_str().unwrap();
    assert!(start.starts_with("acme_sk_live_"), "{start}");
    let r = search(&app, pid, &[("start", start)]).await;
    assert!(page_ids(&r).contains(&id("Billing")), "{r}");
    for k in r["items"].as_array().unwrap() {
        assert_eq!(k["start"], start);
    }
    let r = search(&app, pid, &[("start", "acme_sk_test_")]).await;
    assert_eq!(page_ids(&r), [id("checkout worker")]);
    let r = search(&app, pid, &[("start", "ACME_sk_")]).await;
    assert_eq!(page_ids(&r), Vec::<String>::new());
    let r = search(&app, pid, &[("start", "acme_sk_live_")]).await;
    assert_eq!(page_ids(&r).len(), 7);
    // Both at once.
    let r = search(
        &app,
        pid,
        &[("start", "acme_sk_live_"), ("name_prefix", "checkout")],
    )
    .await;
    assert_eq!(page_ids(&r), [id("CHECKOUT-batch"), id("Checkout web app")]);
    // A revoked key is still found, and `status` applies.
    app.post(
        &format!("/v1/keys/{}/revoke", id("Billing")),
        OWNER_TOKEN,
        json!({}),
    )
    .await;
    let r = search(&app, pid, &[("name_prefix", "bill"), ("status", "revoked")]).await;
    assert_eq!(page_ids(&r), [id("Billing")]);
    let r = search(&app, pid, &[("name_prefix", "bill"), ("status", "active")]).await;
    assert_eq!(page_ids(&r), Vec::<String>::new());
}

async fn search_pages_with_the_cursor(app: TestApp) {
    let p = app.create_project("acme").await;
    let pid = p["id"].as_str().unwrap();
    let mut matching = Vec::new();
    for i in 0..7 {
        let k = app
            .create_key(pid, json!({"name": format!("Search {i}")}))
            .await;
        matching.push(k["id"].as_str().unwrap().to_owned());
        // Keys that do not match, between the ones that do.
        app.create_key(pid, json!({"name": format!("Other {i}")}))
            .await;
    }
    matching.reverse();
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = search(
            &app,
            pid,
            &[
                ("name_prefix", "search"),
                ("limit", "3"),
                ("cursor", &cursor),
            ],
        )
        .await;
        let items = page_ids(&r);
        assert!(items.len() <= 3);
        seen.extend(items);
        match r["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, matching, "every match once, newest first");
}

async fn search_refuses_bad_prefixes(app: TestApp) {
    let p = app.create_project("acme").await;
    let pid = p["id"].as_str().unwrap();
    let long_name = "n".repeat(201);
    let long_start = "s".repeat(65);
    for (pairs, field) in [
        (vec![("name_prefix", long_name.as_str())], "name_prefix"),
        (vec![("name_prefix", "a\u{0}b")], "name_prefix"),
        (vec![("name_prefix", "tab\there")], "name_prefix"),
        (vec![("start", long_start.as_str())], "start"),
        (vec![("start", "acme\n")], "start"),
        (vec![("name_prefix", "ok"), ("cursor", "key_bad")], "cursor"),
    ] {
        let query = serde_urlencoded::to_string(&pairs).unwrap();
        let r = app
            .get(&format!("/v1/projects/{pid}/keys?{query}"), OWNER_TOKEN)
            .await;
        assert_eq!(r.status, 422, "{query}: {:?}", r.body);
        assert_eq!(r.code(), "validation_failed", "{query}");
        assert!(
            r.detail().starts_with(&format!("{field}:")),
            "{query}: {}",
            r.detail()
        );
    }
    // The longest allowed prefixes are fine (and match nothing).
    let r = search(&app, pid, &[("name_prefix", &"n".repeat(200))]).await;
    assert_eq!(page_ids(&r), Vec::<String>::new());
    let r = search(&app, pid, &[("start", &"s".repeat(64))]).await;
    assert_eq!(page_ids(&r), Vec::<String>::new());
}
