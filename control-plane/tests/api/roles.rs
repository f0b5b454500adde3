//! The whole matrix: every route x owner, admin, viewer, edge, no token, a deleted token.

use actix_web::http::Method;
use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{TestApp, OWNER_TOKEN};

both_backends!(role_matrix);

const O: &str = "owner";
const A: &str = "admin";
const V: &str = "viewer";
const E: &str = "edge";

async fn role_matrix(app: TestApp) {
    let p = app.create_project("acme").await;
    let pid = p["id"].as_str().unwrap().to_owned();
    let k = app.secret_key(&pid).await;
    let kid = k["id"].as_str().unwrap().to_owned();
    let key = k["key"].as_str().unwrap().to_owned();
    let snap = crate::snapshot::fetch_verified(&app).await;
    let digest = snap.shard_digest(0).unwrap().to_hex();

    let mut tokens = vec![(O, OWNER_TOKEN.to_owned())];
    for role in [A, V, E] {
        tokens.push((role, app.token(role).await));
    }
    // A token that existed and was deleted.
    let doomed = app
        .post(
            "/v1/admin-tokens",
            OWNER_TOKEN,
            json!({"name": "doomed", "role": "owner"}),
        )
        .await;
    let doomed_token = doomed.body["token"].as_str().unwrap().to_owned();
    assert_eq!(app.get("/v1/projects", &doomed_token).await.status, 200);
    let del = app
        .request(
            Method::DELETE,
            &format!("/v1/admin-tokens/{}", doomed.body["id"].as_str().unwrap()),
            Some(OWNER_TOKEN),
            None,
        )
        .await;
    assert_eq!(del.status, 204);

    let hook = app
        .post(
            "/v1/webhooks",
            OWNER_TOKEN,
            json!({"url": "https://hooks.example.com/k", "events": ["alert.raised"]}),
        )
        .await;
    assert_eq!(hook.status, 201, "{:?}", hook.body);
    let wid = hook.body["id"].as_str().unwrap().to_owned();
    let no_delivery = "dlv_01jd0000000000000000000000";

    let minute = keygate_control_plane::timefmt::format_ms(app.clock.now_ms() / 60_000 * 60_000);
    // (method, path, body, roles allowed). Bodies are valid, so an allowed role gets a 2xx
    // (or a 4xx from the resource's state, never 401/403).
    let routes: Vec<(Method, String, Option<Value>, Vec<&str>)> = vec![
        (
            Method::POST,
            "/v1/projects".into(),
            Some(json!({"name": "n", "key_prefix": "zz"})),
            vec![O, A],
        ),
        (Method::GET, "/v1/projects".into(), None, vec![O, A, V]),
        (
            Method::GET,
            format!("/v1/projects/{pid}"),
            None,
            vec![O, A, V],
        ),
        (
            Method::PATCH,
            format!("/v1/projects/{pid}"),
            Some(json!({"name": "renamed"})),
            vec![O, A],
        ),
        (
            Method::POST,
            format!("/v1/projects/{pid}/keys"),
            Some(json!({"name": "k", "kind": "secret", "environment": "live"})),
            vec![O, A],
        ),
        (
            Method::GET,
            format!("/v1/projects/{pid}/keys"),
            None,
            vec![O, A, V],
        ),
        (Method::GET, format!("/v1/keys/{kid}"), None, vec![O, A, V]),
        (
            Method::PATCH,
            format!("/v1/keys/{kid}"),
            Some(json!({"name": "renamed"})),
            vec![O, A],
        ),
        (
            Method::POST,
            format!("/v1/keys/{kid}/rotate"),
            Some(json!({"grace_seconds": 600})),
            vec![O, A],
        ),
        (
            Method::POST,
            format!("/v1/keys/{kid}/revoke"),
            Some(json!({"reason": "matrix"})),
            vec![O, A],
        ),
        (
            Method::POST,
            "/v1/leaks".into(),
            Some(json!({"keys": ["not_a_key"], "source": "matrix"})),
            vec![O, A],
        ),
        (
            Method::GET,
            format!("/v1/keys/{kid}/usage"),
            None,
            vec![O, A, V],
        ),
        (
            Method::GET,
            format!("/v1/projects/{pid}/usage"),
            None,
            vec![O, A, V],
        ),
        (
            Method::GET,
            format!("/v1/keys/{kid}/sightings"),
            None,
            vec![O, A, V],
        ),
        (
            Method::POST,
            "/v1/usage".into(),
            Some(
                json!({"items": [{"key_id": kid, "minute": minute, "code": "valid", "count": 1}]}),
            ),
            vec![O, E],
        ),
        (
            Method::POST,
            "/v1/admins".into(),
            Some(
                json!({"email": "x@example.com", "role": "viewer", "password": "a long enough password"}),
            ),
            vec![O],
        ),
        (Method::GET, "/v1/admins".into(), None, vec![O]),
        (
            Method::PATCH,
            "/v1/admins/adm_01jd0000000000000000000000".into(),
            Some(json!({"role": "viewer"})),
            vec![O],
        ),
        (
            Method::DELETE,
            "/v1/admins/adm_01jd0000000000000000000000".into(),
            None,
            vec![O],
        ),
        (
            Method::POST,
            "/v1/admin-tokens".into(),
            Some(json!({"name": "t", "role": "viewer"})),
            vec![O],
        ),
        (Method::GET, "/v1/admin-tokens".into(), None, vec![O]),
        (
            Method::DELETE,
            "/v1/admin-tokens/tok_01jd0000000000000000000000".into(),
            None,
            vec![O],
        ),
        (
            Method::POST,
            "/v1/verify".into(),
            Some(json!({"key": key})),
            vec![O, A, V],
        ),
        (Method::GET, "/v1/audit".into(), None, vec![O, A, V]),
        (
            Method::POST,
            "/v1/webhooks".into(),
            Some(json!({"url": "https://hooks.example.com/m", "events": ["alert.raised"]})),
            vec![O, A],
        ),
        (Method::GET, "/v1/webhooks".into(), None, vec![O, A, V]),
        (
            Method::GET,
            format!("/v1/webhooks/{wid}"),
            None,
            vec![O, A, V],
        ),
        (
            Method::PATCH,
            format!("/v1/webhooks/{wid}"),
            Some(json!({"description": "matrix"})),
            vec![O, A],
        ),
        (
            Method::DELETE,
            "/v1/webhooks/whk_01jd0000000000000000000000".into(),
            None,
            vec![O, A],
        ),
        (
            Method::POST,
            format!("/v1/webhooks/{wid}/rotate-secret"),
            Some(json!({})),
            vec![O, A],
        ),
        (
            Method::GET,
            format!("/v1/webhooks/{wid}/deliveries"),
            None,
            vec![O, A, V],
        ),
        (
            Method::GET,
            format!("/v1/webhooks/{wid}/deliveries/{no_delivery}"),
            None,
            vec![O, A, V],
        ),
        (
            Method::POST,
            format!("/v1/webhooks/{wid}/deliveries/{no_delivery}/retry"),
            None,
            vec![O, A],
        ),
        (Method::GET, "/v1/alerts".into(), None, vec![O, A, V]),
        (
            Method::GET,
            "/v1/alerts/alr_01jd0000000000000000000000".into(),
            None,
            vec![O, A, V],
        ),
        (
            Method::POST,
            "/v1/alerts/alr_01jd0000000000000000000000/acknowledge".into(),
            Some(json!({})),
            vec![O, A],
        ),
        (
            Method::GET,
            format!("/v1/projects/{pid}/alert-rules"),
            None,
            vec![O, A, V],
        ),
        (
            Method::PATCH,
            format!("/v1/projects/{pid}/alert-rules/rejections"),
            Some(json!({"enabled": true})),
            vec![O, A],
        ),
        (Method::GET, "/v1/snapshot".into(), None, vec![O, A, V, E]),
        (
            Method::GET,
            format!("/v1/snapshot/shards/{digest}"),
            None,
            vec![O, A, V, E],
        ),
        (
            Method::GET,
            "/v1/snapshot/public-key".into(),
            None,
            vec![O, A, V, E],
        ),
        (
            Method::GET,
            "/v1/snapshot/public-keys".into(),
            None,
            vec![O, A, V, E],
        ),
    ];
    let mut checked = 0;
    for (method, path, body, allowed) in &routes {
        for (role, token) in &tokens {
            let r = app
                .request(method.clone(), path, Some(token), body.as_ref())
                .await;
            if allowed.contains(role) {
                assert!(
                    r.status != 401 && r.status != 403 && !r.status.is_server_error(),
                    "{role} {method} {path}: {} {:?}",
                    r.status,
                    r.body
                );
            } else {
                assert_eq!(r.status, 403, "{role} {method} {path}: {:?}", r.body);
                assert_eq!(r.code(), "forbidden");
            }
            checked += 1;
        }
        for token in [
            None,
            Some(doomed_token.as_str()),
            Some("kgt_notarealtoken"),
            Some("a.b.c"),
        ] {
            let r = app
                .request(method.clone(), path, token, body.as_ref())
                .await;
            assert_eq!(r.status, 401, "{token:?} {method} {path}: {:?}", r.body);
            assert_eq!(r.code(), "unauthorized");
            assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
            checked += 1;
        }
    }
    // Every /v1 route of the OpenAPI document but login and logout is in the matrix (both
    // speak for a session, which the matrix's API tokens are not; accounts.rs tests them).
    let doc = app
        .request(Method::GET, "/openapi.json", None, None)
        .await
        .body;
    let mut documented = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if !path.starts_with("/v1/") || path.starts_with("/v1/auth/") {
                continue;
            }
            documented += 1;
            let in_matrix = routes
                .iter()
                .any(|(m, p, _, _)| m.as_str().eq_ignore_ascii_case(method) && same_shape(p, path));
            assert!(in_matrix, "{method} {path} is not in the role matrix");
        }
    }
    assert_eq!(documented, routes.len());
    assert_eq!(checked, routes.len() * 8);
}

/// `/v1/keys/key_123` has the shape of `/v1/keys/{key_id}`.
fn same_shape(concrete: &str, template: &str) -> bool {
    let a: Vec<_> = concrete.split('/').collect();
    let b: Vec<_> = template.split('/').collect();
    a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| x == y || y.starts_with('{'))
}
