use actix_web::http::Method;
use serde_json::json;

use crate::both_backends;
use crate::helpers::{TestApp, OWNER_TOKEN};

both_backends!(
    project_lifecycle,
    duplicate_and_invalid_prefix,
    unknown_ids_are_404
);

async fn project_lifecycle(app: TestApp) {
    let p = app.create_project("acme").await;
    let id = p["id"].as_str().unwrap();
    assert!(id.starts_with("prj_"));
    assert_eq!(p["key_prefix"], "acme");
    assert_eq!(p["default_route_policy"], "allow");
    assert_eq!(p["routes"][0]["scope"], "orders:read");
    assert!(p["created_at"].as_str().unwrap().ends_with('Z'));

    let got = app.get(&format!("/v1/projects/{id}"), OWNER_TOKEN).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, p);

    let other = app.create_project("beta").await;
    let list = app.get("/v1/projects", OWNER_TOKEN).await;
    assert_eq!(list.status, 200);
    let ids: Vec<_> = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].clone())
        .collect();
    assert_eq!(
        ids,
        vec![other["id"].clone(), p["id"].clone()],
        "newest first"
    );

    let patched = app
        .patch(
            &format!("/v1/projects/{id}"),
            OWNER_TOKEN,
            json!({"name": "Acme Inc", "default_route_policy": "deny", "routes": []}),
        )
        .await;
    assert_eq!(patched.status, 200, "{:?}", patched.body);
    assert_eq!(patched.body["name"], "Acme Inc");
    assert_eq!(patched.body["default_route_policy"], "deny");
    assert_eq!(patched.body["routes"], json!([]));
    assert_eq!(patched.body["key_prefix"], "acme");

    let refused = app
        .patch(
            &format!("/v1/projects/{id}"),
            OWNER_TOKEN,
            json!({"key_prefix": "acme2"}),
        )
        .await;
    assert_eq!(refused.status, 422);
    assert!(
        refused.detail().starts_with("key_prefix:"),
        "{}",
        refused.detail()
    );

    // The audit log holds before/after of the change.
    let audit = app
        .get(&format!("/v1/audit?target_id={id}"), OWNER_TOKEN)
        .await;
    assert_eq!(audit.status, 200);
    let items = audit.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["action"], "project.update");
    assert_eq!(items[0]["details"]["before"]["name"], "Project acme");
    assert_eq!(items[0]["details"]["after"]["name"], "Acme Inc");
    assert_eq!(items[1]["action"], "project.create");
    assert!(items[0]["actor"].as_str().unwrap().starts_with("tok_"));
}

async fn duplicate_and_invalid_prefix(app: TestApp) {
    app.create_project("acme").await;
    let dup = app
        .post(
            "/v1/projects",
            OWNER_TOKEN,
            json!({"name": "Again", "key_prefix": "acme"}),
        )
        .await;
    assert_eq!(dup.status, 422);
    assert_eq!(dup.code(), "duplicate_prefix");
    assert!(dup.detail().contains("key_prefix"));
    for bad in ["a", "1abc", "Acme", "abcdefghijklm", "ac-me", ""] {
        let r = app
            .post(
                "/v1/projects",
                OWNER_TOKEN,
                json!({"name": "X", "key_prefix": bad}),
            )
            .await;
        assert_eq!(r.status, 422, "{bad}");
        assert_eq!(r.code(), "validation_failed");
        assert!(r.detail().starts_with("key_prefix:"), "{}", r.detail());
    }
    let r = app
        .post(
            "/v1/projects",
            OWNER_TOKEN,
            json!({"name": "X", "key_prefix": "xyz", "routes": [{"methods": ["GET"], "path": "orders", "scope": "a"}]}),
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(r.detail().starts_with("routes[0].path:"), "{}", r.detail());
    let r = app
        .post(
            "/v1/projects",
            OWNER_TOKEN,
            json!({"name": "X", "key_prefix": "xyz", "default_route_policy": "maybe"}),
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(
        r.detail().starts_with("default_route_policy:"),
        "{}",
        r.detail()
    );
}

async fn unknown_ids_are_404(app: TestApp) {
    let missing = "prj_01jd0000000000000000000000";
    for (m, path) in [
        (Method::GET, format!("/v1/projects/{missing}")),
        (Method::GET, format!("/v1/projects/{missing}/keys")),
        (Method::GET, "/v1/keys/key_nope".to_owned()),
        (Method::GET, "/v1/keys/key_nope/usage".to_owned()),
        (Method::GET, format!("/v1/projects/{missing}/usage")),
        (Method::GET, "/v1/keys/key_nope/sightings".to_owned()),
    ] {
        let r = app.request(m, &path, Some(OWNER_TOKEN), None).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.code(), "not_found");
    }
    let r = app
        .patch(
            &format!("/v1/projects/{missing}"),
            OWNER_TOKEN,
            json!({"name": "x"}),
        )
        .await;
    assert_eq!(r.status, 404);
    let r = app
        .post(
            &format!("/v1/projects/{missing}/keys"),
            OWNER_TOKEN,
            json!({"name": "k", "kind": "secret", "environment": "live"}),
        )
        .await;
    assert_eq!(r.status, 404);
    for path in ["/v1/keys/key_nope/rotate", "/v1/keys/key_nope/revoke"] {
        let r = app.post(path, OWNER_TOKEN, json!({})).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.code(), "not_found");
    }
    let r = app
        .request(
            Method::DELETE,
            "/v1/admin-tokens/tok_nope",
            Some(OWNER_TOKEN),
            None,
        )
        .await;
    assert_eq!(r.status, 404);
    let r = app.get("/v1/no-such-route", OWNER_TOKEN).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.code(), "not_found");
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/problem+json")
    );
    let r = app
        .request(Method::PUT, "/v1/projects", Some(OWNER_TOKEN), None)
        .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.code(), "method_not_allowed");
    assert_eq!(r.header("allow").as_deref(), Some("GET, POST"));
    let r = app
        .request(Method::DELETE, "/v1/keys/key_x", Some(OWNER_TOKEN), None)
        .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow").as_deref(), Some("GET, PATCH"));
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/problem+json")
    );
}

both_backends!(audit_log_is_append_only);

async fn audit_log_is_append_only(app: TestApp) {
    use diesel::prelude::*;
    use keygate_control_plane::db::schema::audit_log;
    app.create_project("acme").await;
    let mut conn = app.state.pool.get().unwrap();
    let before: i64 = audit_log::table.count().get_result(&mut *conn).unwrap();
    assert!(before >= 1);
    let deleted = diesel::delete(audit_log::table).execute(&mut *conn);
    assert!(deleted.is_err(), "DELETE on the audit log must fail");
    let updated = diesel::update(audit_log::table)
        .set(audit_log::actor.eq("someone-else"))
        .execute(&mut *conn);
    assert!(updated.is_err(), "UPDATE on the audit log must fail");
    let after: i64 = audit_log::table.count().get_result(&mut *conn).unwrap();
    assert_eq!(after, before);
}
