//! The whole matrix: every route x owner, admin, viewer, edge, no token, a deleted token, each
//! with the exact status it must get.

use actix_web::http::Method;
use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{TestApp, OWNER_TOKEN};

both_backends!(role_matrix);

const O: &str = "owner";
const A: &str = "admin";
const V: &str = "viewer";
const E: &str = "edge";
/// The roles in the order of [`Case::expect`].
const ROLES: [&str; 4] = [O, A, V, E];

/// One route, with the exact status each role gets: `[owner, admin, viewer, edge]`.
///
/// Requests change state, so a route that creates or ends something is sent by each role to its
/// own resource: in the path and body, `{r}` becomes the role's initial, and `{key}`, `{key2}`,
/// `{token}` and `{hook}` the id of a key, a second key, an API token and a webhook made for that
/// role alone. Every allowed role thus gets the route's success status; a 404 is expected only
/// for the routes of alerts and deliveries, which are asked about ids that do not exist.
struct Case {
    method: Method,
    path: String,
    body: Option<Value>,
    expect: [u16; 4],
}

/// Per role: the ids its placeholders stand for.
struct Own {
    initial: &'static str,
    key: String,
    key2: String,
    token: String,
    hook: String,
}

impl Own {
    fn fill(&self, template: &str) -> String {
        template
            .replace("{r}", self.initial)
            .replace("{key}", &self.key)
            .replace("{key2}", &self.key2)
            .replace("{token}", &self.token)
            .replace("{hook}", &self.hook)
    }
}

fn case(method: Method, path: impl Into<String>, body: Option<Value>, expect: [u16; 4]) -> Case {
    Case {
        method,
        path: path.into(),
        body,
        expect,
    }
}

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

    // Each role's own key to rotate, key to revoke, token and webhook to delete.
    let mut own = Vec::new();
    for role in ROLES {
        let initial: &'static str = &role[..1];
        let key = app.secret_key(&pid).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let key2 = app.secret_key(&pid).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let t = app
            .post(
                "/v1/admin-tokens",
                OWNER_TOKEN,
                json!({"name": format!("to delete {initial}"), "role": "viewer"}),
            )
            .await;
        assert_eq!(t.status, 201, "{:?}", t.body);
        let h = app
            .post(
                "/v1/webhooks",
                OWNER_TOKEN,
                json!({"url": format!("https://hooks.example.com/{initial}"), "events": ["key.revoked"]}),
            )
            .await;
        assert_eq!(h.status, 201, "{:?}", h.body);
        own.push(Own {
            initial,
            key,
            key2,
            token: t.body["id"].as_str().unwrap().to_owned(),
            hook: h.body["id"].as_str().unwrap().to_owned(),
        });
    }

    let no_delivery = "dlv_01jd0000000000000000000000";
    let no_alert = "alr_01jd0000000000000000000000";
    let minute = keygate_control_plane::timefmt::format_ms(app.clock.now_ms() / 60_000 * 60_000);
    let pid_path = |suffix: &str| format!("/v1/projects/{pid}{suffix}");
    let routes: Vec<Case> = vec![
        case(
            Method::POST,
            "/v1/projects",
            Some(json!({"name": "n", "key_prefix": "z{r}"})),
            [201, 201, 403, 403],
        ),
        case(Method::GET, "/v1/projects", None, [200, 200, 200, 403]),
        case(Method::GET, pid_path(""), None, [200, 200, 200, 403]),
        case(
            Method::PATCH,
            pid_path(""),
            Some(json!({"name": "renamed"})),
            [200, 200, 403, 403],
        ),
        case(
            Method::POST,
            pid_path("/keys"),
            Some(json!({"name": "k", "kind": "secret", "environment": "live"})),
            [201, 201, 403, 403],
        ),
        case(Method::GET, pid_path("/keys"), None, [200, 200, 200, 403]),
        case(
            Method::GET,
            format!("/v1/keys/{kid}"),
            None,
            [200, 200, 200, 403],
        ),
        case(
            Method::PATCH,
            format!("/v1/keys/{kid}"),
            Some(json!({"name": "renamed"})),
            [200, 200, 403, 403],
        ),
        case(
            Method::POST,
            "/v1/keys/{key}/rotate",
            Some(json!({"grace_seconds": 600})),
            [201, 201, 403, 403],
        ),
        case(
            Method::POST,
            "/v1/keys/{key2}/revoke",
            Some(json!({"reason": "matrix"})),
            [200, 200, 403, 403],
        ),
        case(
            Method::POST,
            "/v1/leaks",
            Some(json!({"keys": ["not_a_key"], "source": "matrix"})),
            [200, 200, 403, 403],
        ),
        case(
            Method::GET,
            format!("/v1/keys/{kid}/usage"),
            None,
            [200, 200, 200, 403],
        ),
        case(Method::GET, pid_path("/usage"), None, [200, 200, 200, 403]),
        case(
            Method::GET,
            format!("/v1/keys/{kid}/sightings"),
            None,
            [200, 200, 200, 403],
        ),
        case(
            Method::POST,
            "/v1/usage",
            Some(
                json!({"items": [{"key_id": kid, "minute": minute, "code": "valid", "count": 1}]}),
            ),
            [202, 403, 403, 202],
        ),
        case(
            Method::POST,
            "/v1/admins",
            Some(
                json!({"email": "x{r}@example.com", "role": "viewer", "password": "a long enough password"}),
            ),
            [201, 403, 403, 403],
        ),
        case(Method::GET, "/v1/admins", None, [200, 403, 403, 403]),
        // No such admin: only an owner gets as far as looking.
        case(
            Method::PATCH,
            "/v1/admins/adm_01jd0000000000000000000000",
            Some(json!({"role": "viewer"})),
            [404, 403, 403, 403],
        ),
        case(
            Method::DELETE,
            "/v1/admins/adm_01jd0000000000000000000000",
            None,
            [404, 403, 403, 403],
        ),
        case(
            Method::POST,
            "/v1/admin-tokens",
            Some(json!({"name": "t", "role": "viewer"})),
            [201, 403, 403, 403],
        ),
        case(Method::GET, "/v1/admin-tokens", None, [200, 403, 403, 403]),
        case(
            Method::DELETE,
            "/v1/admin-tokens/{token}",
            None,
            [204, 403, 403, 403],
        ),
        case(
            Method::POST,
            "/v1/verify",
            Some(json!({"key": key})),
            [200, 200, 200, 403],
        ),
        case(Method::GET, "/v1/audit", None, [200, 200, 200, 403]),
        case(
            Method::POST,
            "/v1/webhooks",
            Some(json!({"url": "https://hooks.example.com/m", "events": ["alert.raised"]})),
            [201, 201, 403, 403],
        ),
        case(Method::GET, "/v1/webhooks", None, [200, 200, 200, 403]),
        case(
            Method::GET,
            format!("/v1/webhooks/{wid}"),
            None,
            [200, 200, 200, 403],
        ),
        case(
            Method::PATCH,
            format!("/v1/webhooks/{wid}"),
            Some(json!({"description": "matrix"})),
            [200, 200, 403, 403],
        ),
        case(
            Method::DELETE,
            "/v1/webhooks/{hook}",
            None,
            [204, 204, 403, 403],
        ),
        case(
            Method::POST,
            format!("/v1/webhooks/{wid}/rotate-secret"),
            Some(json!({})),
            [200, 200, 403, 403],
        ),
        case(
            Method::GET,
            format!("/v1/webhooks/{wid}/deliveries"),
            None,
            [200, 200, 200, 403],
        ),
        case(
            Method::GET,
            format!("/v1/webhooks/{wid}/deliveries/{no_delivery}"),
            None,
            [404, 404, 404, 403],
        ),
        case(
            Method::POST,
            format!("/v1/webhooks/{wid}/deliveries/{no_delivery}/retry"),
            None,
            [404, 404, 403, 403],
        ),
        case(Method::GET, "/v1/alerts", None, [200, 200, 200, 403]),
        case(
            Method::GET,
            format!("/v1/alerts/{no_alert}"),
            None,
            [404, 404, 404, 403],
        ),
        case(
            Method::POST,
            format!("/v1/alerts/{no_alert}/acknowledge"),
            Some(json!({})),
            [404, 404, 403, 403],
        ),
        case(
            Method::GET,
            pid_path("/alert-rules"),
            None,
            [200, 200, 200, 403],
        ),
        case(
            Method::PATCH,
            pid_path("/alert-rules/rejections"),
            Some(json!({"enabled": true})),
            [200, 200, 403, 403],
        ),
        case(Method::GET, "/v1/snapshot", None, [200, 200, 200, 200]),
        case(
            Method::GET,
            format!("/v1/snapshot/shards/{digest}"),
            None,
            [200, 200, 200, 200],
        ),
        case(
            Method::GET,
            "/v1/snapshot/public-key",
            None,
            [200, 200, 200, 200],
        ),
        case(
            Method::GET,
            "/v1/snapshot/public-keys",
            None,
            [200, 200, 200, 200],
        ),
    ];
    let mut checked = 0;
    let mut wrong = Vec::new();
    for c in &routes {
        for (i, (role, token)) in tokens.iter().enumerate() {
            let path = own[i].fill(&c.path);
            let body = c
                .body
                .as_ref()
                .map(|b| serde_json::from_str::<Value>(&own[i].fill(&b.to_string())).unwrap());
            let r = app
                .request(c.method.clone(), &path, Some(token), body.as_ref())
                .await;
            let want = c.expect[i];
            let code_ok = match want {
                403 => r.code() == "forbidden",
                404 => r.code() == "not_found",
                _ => true,
            };
            if r.status.as_u16() != want || !code_ok {
                wrong.push(format!(
                    "{role} {} {path}: want {want}, got {} {:?}",
                    c.method, r.status, r.body
                ));
            }
            checked += 1;
        }
        let path = own[0].fill(&c.path);
        let body = c
            .body
            .as_ref()
            .map(|b| serde_json::from_str::<Value>(&own[0].fill(&b.to_string())).unwrap());
        for token in [
            None,
            Some(doomed_token.as_str()),
            Some("kgt_notarealtoken"),
            Some("a.b.c"),
        ] {
            let r = app
                .request(c.method.clone(), &path, token, body.as_ref())
                .await;
            assert_eq!(r.status, 401, "{token:?} {} {path}: {:?}", c.method, r.body);
            assert_eq!(r.code(), "unauthorized");
            assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
            checked += 1;
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
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
            let in_matrix = routes.iter().any(|c| {
                c.method.as_str().eq_ignore_ascii_case(method)
                    && same_shape(&own[0].fill(&c.path), path)
            });
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
