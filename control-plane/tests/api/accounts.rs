use actix_web::http::Method;
use serde_json::json;

use crate::both_backends;
use crate::helpers::{Backend, Resp, TestApp, OWNER_TOKEN};

both_backends!(
    admins_and_login,
    tokens_lifecycle,
    logout_ends_that_session_only,
    audit_filters_run_in_the_database,
    failed_logins_are_throttled_per_account_and_address,
    console_login_is_throttled_too,
    admins_are_deleted_and_their_roles_changed,
    own_password_change,
    every_role_can_log_out,
    console_admin_lifecycle
);

/// `POST /v1/auth/login` with these credentials.
async fn login(app: &TestApp, email: &str, password: &str) -> Resp {
    app.request(
        Method::POST,
        "/v1/auth/login",
        None,
        Some(&json!({"email": email, "password": password})),
    )
    .await
}

async fn admins_and_login(app: TestApp) {
    let r = app
        .post("/v1/admins", OWNER_TOKEN, json!({"email": "Ops@Example.com", "role": "admin", "password": "correct horse battery"}))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["email"], "ops@example.com");
    assert_eq!(r.body["role"], "admin");
    assert!(r.body["id"].as_str().unwrap().starts_with("adm_"));
    assert!(r.body.get("password").is_none() && r.body.get("password_hash").is_none());

    let dup = app
        .post(
            "/v1/admins",
            OWNER_TOKEN,
            json!({"email": "ops@example.com", "role": "viewer", "password": "another password!"}),
        )
        .await;
    assert_eq!(dup.status, 409);
    for (body, field) in [
        (
            json!({"email": "nope", "role": "admin", "password": "long enough password"}),
            "email:",
        ),
        (
            json!({"email": "a@b.c", "role": "root", "password": "long enough password"}),
            "role:",
        ),
        (
            json!({"email": "a@b.c", "role": "admin", "password": "short"}),
            "password:",
        ),
    ] {
        let r = app.post("/v1/admins", OWNER_TOKEN, body).await;
        assert_eq!(r.status, 422);
        assert!(r.detail().starts_with(field), "{}", r.detail());
    }
    let list = app.get("/v1/admins", OWNER_TOKEN).await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);

    let bad = login(&app, "ops@example.com", "wrong password").await;
    assert_eq!(bad.status, 401);
    assert_eq!(bad.code(), "invalid_credentials");
    let unknown = login(&app, "who@example.com", "correct horse battery").await;
    assert_eq!(unknown.status, 401);
    assert_eq!(unknown.code(), "invalid_credentials");

    let login = login(&app, "ops@example.com", "correct horse battery").await;
    assert_eq!(login.status, 200, "{:?}", login.body);
    let jwt = login.body["token"].as_str().unwrap().to_owned();
    assert_eq!(jwt.matches('.').count(), 2);
    assert!(login.body["expires_at"].is_string());

    // The session carries the admin's role.
    assert_eq!(app.get("/v1/projects", &jwt).await.status, 200);
    let p = app
        .post(
            "/v1/projects",
            &jwt,
            json!({"name": "Via session", "key_prefix": "sess"}),
        )
        .await;
    assert_eq!(p.status, 201);
    assert_eq!(app.get("/v1/admins", &jwt).await.status, 403);
    let audit = app
        .get(
            &format!("/v1/audit?target_id={}", p.body["id"].as_str().unwrap()),
            &jwt,
        )
        .await;
    assert!(audit.body["items"][0]["actor"]
        .as_str()
        .unwrap()
        .starts_with("adm_"));

    // A tampered session is refused; an expired one too.
    let mut tampered = jwt.clone();
    tampered.pop();
    tampered.push('x');
    assert_eq!(app.get("/v1/projects", &tampered).await.status, 401);
    app.clock.advance_ms(3600 * 1000 + 1000);
    let expired = app.get("/v1/projects", &jwt).await;
    assert_eq!(expired.status, 401);
    assert_eq!(expired.code(), "unauthorized");
}

async fn tokens_lifecycle(app: TestApp) {
    let r = app
        .post(
            "/v1/admin-tokens",
            OWNER_TOKEN,
            json!({"name": "ci", "role": "viewer"}),
        )
        .await;
    assert_eq!(r.status, 201);
    let token = r.body["token"].as_str().unwrap().to_owned();
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert!(token.starts_with("kgt_") && token.len() == 44);
    assert!(token[4..].bytes().all(|b| b.is_ascii_alphanumeric()));
    assert_eq!(app.get("/v1/projects", &token).await.status, 200);

    let list = app.get("/v1/admin-tokens", OWNER_TOKEN).await;
    assert_eq!(list.status, 200);
    let text = String::from_utf8(list.raw.clone()).unwrap();
    assert!(!text.contains(&token), "a token is shown only once");
    let items = list.body["items"].as_array().unwrap();
    let mine = items.iter().find(|t| t["id"] == json!(id)).unwrap();
    assert_eq!(mine["role"], "viewer");
    assert!(mine["last_used_at"].is_string(), "use is recorded");
    // The bootstrap token is listed too (hashed, never shown).
    assert!(items
        .iter()
        .any(|t| t["name"] == "bootstrap" && t["role"] == "owner"));

    let del = app
        .request(
            Method::DELETE,
            &format!("/v1/admin-tokens/{id}"),
            Some(OWNER_TOKEN),
            None,
        )
        .await;
    assert_eq!(del.status, 204);
    let after = app.get("/v1/projects", &token).await;
    assert_eq!(after.status, 401, "stops working at once");
    let again = app
        .request(
            Method::DELETE,
            &format!("/v1/admin-tokens/{id}"),
            Some(OWNER_TOKEN),
            None,
        )
        .await;
    assert_eq!(again.status, 404);
    let r = app
        .post(
            "/v1/admin-tokens",
            OWNER_TOKEN,
            json!({"name": "x", "role": "superuser"}),
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(r.detail().starts_with("role:"));
}

#[actix_web::test]
async fn short_bootstrap_token_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::helpers::test_config(Backend::Sqlite, dir.path(), None);
    config.bootstrap_token = Some("too-short".to_owned());
    let err = keygate_control_plane::Application::build(config)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("KEYGATE_BOOTSTRAP_TOKEN"), "{err}");
}

async fn logout_ends_that_session_only(app: TestApp) {
    let r = app
        .post(
            "/v1/admins",
            OWNER_TOKEN,
            json!({"email": "ops@example.com", "role": "viewer", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let session = || async {
        let r = login(&app, "ops@example.com", "correct horse battery").await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body["token"].as_str().unwrap().to_owned()
    };
    // Two sessions of the same admin, in the same second.
    let (laptop, phone) = (session().await, session().await);
    assert_ne!(laptop, phone);
    assert_eq!(app.get("/v1/projects", &laptop).await.status, 200);

    let out = app
        .request(Method::POST, "/v1/auth/logout", Some(&laptop), None)
        .await;
    assert_eq!(out.status, 204, "{:?}", out.body);
    let refused = app.get("/v1/projects", &laptop).await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.code(), "unauthorized");
    assert_eq!(refused.detail(), "the session was logged out");
    // Logging out again needs a live session.
    let again = app
        .request(Method::POST, "/v1/auth/logout", Some(&laptop), None)
        .await;
    assert_eq!(again.status, 401);
    // The other session is untouched.
    assert_eq!(app.get("/v1/projects", &phone).await.status, 200);

    // An API token is not a session.
    let api = app
        .request(Method::POST, "/v1/auth/logout", Some(OWNER_TOKEN), None)
        .await;
    assert_eq!(api.status, 400);
    assert_eq!(api.code(), "not_a_session");
    assert_eq!(app.get("/v1/projects", OWNER_TOKEN).await.status, 200);

    // Once the logged-out token has expired, the next logout removes its row.
    app.clock.advance_ms(3600 * 1000 + 1000);
    let fresh = session().await;
    let out = app
        .request(Method::POST, "/v1/auth/logout", Some(&fresh), None)
        .await;
    assert_eq!(out.status, 204);
    let rows: Vec<String> = {
        use diesel::prelude::*;
        use keygate_control_plane::db::schema::revoked_sessions;
        let mut c = app.state.pool.get().unwrap();
        keygate_control_plane::with_backend!(&mut *c, |c| revoked_sessions::table
            .select(revoked_sessions::admin_id)
            .load::<String>(c))
        .unwrap()
    };
    assert_eq!(rows.len(), 1, "only the live session's end is kept");
}

async fn audit_filters_run_in_the_database(app: TestApp) {
    let second = app
        .post(
            "/v1/admin-tokens",
            OWNER_TOKEN,
            json!({"name": "second", "role": "admin"}),
        )
        .await;
    assert_eq!(second.status, 201, "{:?}", second.body);
    let other = second.body["token"].as_str().unwrap().to_owned();
    for (i, token) in [OWNER_TOKEN, other.as_str(), OWNER_TOKEN]
        .iter()
        .enumerate()
    {
        let p = app
            .post(
                "/v1/projects",
                token,
                json!({"name": format!("P{i}"), "key_prefix": format!("pp{i}")}),
            )
            .await;
        assert_eq!(p.status, 201, "{:?}", p.body);
        let k = app
            .post(
                &format!("/v1/projects/{}/keys", p.body["id"].as_str().unwrap()),
                token,
                json!({"name": "k", "kind": "secret", "environment": "live"}),
            )
            .await;
        assert_eq!(k.status, 201, "{:?}", k.body);
    }
    let actions = |r: &Resp| -> Vec<(String, String)> {
        r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["action"].as_str().unwrap().to_owned(),
                    e["actor"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let projects = actions(&app.get("/v1/audit?action=project.", OWNER_TOKEN).await);
    assert_eq!(projects.len(), 3, "{projects:?}");
    assert!(projects.iter().all(|(a, _)| a == "project.create"));
    // Case does not matter, and LIKE's wildcards are plain characters.
    assert_eq!(
        actions(&app.get("/v1/audit?action=PROJECT.", OWNER_TOKEN).await).len(),
        3
    );
    assert!(actions(&app.get("/v1/audit?action=%25", OWNER_TOKEN).await).is_empty());
    assert!(actions(&app.get("/v1/audit?action=project_", OWNER_TOKEN).await).is_empty());

    // By actor, and both filters together, across pages.
    let keys = actions(&app.get("/v1/audit?action=key.create", OWNER_TOKEN).await);
    assert_eq!(keys.len(), 3);
    // An API token's entries name the token as their actor.
    let other_actor = second.body["id"].as_str().unwrap().to_owned();
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = app
            .get(
                &format!("/v1/audit?actor={other_actor}&limit=1{cursor}"),
                OWNER_TOKEN,
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        seen.extend(actions(&r));
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(
        seen,
        vec![
            ("key.create".to_owned(), other_actor.clone()),
            ("project.create".to_owned(), other_actor.clone())
        ]
    );
    let both = actions(
        &app.get(
            &format!("/v1/audit?actor={other_actor}&action=key."),
            OWNER_TOKEN,
        )
        .await,
    );
    assert_eq!(both, vec![("key.create".to_owned(), other_actor)]);
}

/// `POST /v1/auth/login` sent from `from` (any 127.0.0.0/8 address reaches the server).
async fn login_from(app: &TestApp, from: &str, email: &str, password: &str) -> Resp {
    let client = awc::Client::builder()
        .local_address(from.parse().unwrap())
        .finish();
    let mut res = client
        .post(format!("{}/v1/auth/login", app.base))
        .send_json(&json!({"email": email, "password": password}))
        .await
        .expect("login request");
    let raw = res.body().await.expect("body").to_vec();
    Resp {
        status: res.status(),
        headers: res.headers().clone(),
        body: serde_json::from_slice(&raw).unwrap_or_default(),
        raw,
    }
}

async fn failed_logins_are_throttled_per_account_and_address(app: TestApp) {
    const A: &str = "127.0.0.1";
    const B: &str = "127.0.0.2";
    for email in ["ops@example.com", "other@example.com"] {
        let r = app
            .post(
                "/v1/admins",
                OWNER_TOKEN,
                json!({"email": email, "role": "admin", "password": "correct horse battery"}),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    // Wrong passwords for one account: 401 until the account is throttled, then 429.
    let mut throttled = None;
    for attempt in 1..=10 {
        let r = login_from(&app, A, "ops@example.com", "wrong password!").await;
        if r.status == 429 {
            throttled = Some((attempt, r));
            break;
        }
        assert_eq!(r.status, 401, "attempt {attempt}: {:?}", r.body);
    }
    let (attempt, r) = throttled.expect("no 429 after 10 wrong passwords");
    assert_eq!(attempt, 6, "five failures are free");
    assert_eq!(r.code(), "login_throttled");
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/problem+json")
    );
    let retry_after: i64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(retry_after >= 1, "{retry_after}");
    // Even the right password waits; another account from another address does not.
    let r = login_from(&app, A, "ops@example.com", "correct horse battery").await;
    assert_eq!(r.status, 429);
    let r = login_from(&app, B, "other@example.com", "correct horse battery").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // The same account from another address waits too: the account is throttled.
    let r = login_from(&app, B, "ops@example.com", "correct horse battery").await;
    assert_eq!(r.status, 429);

    // Just before the backoff ends: still 429. After it: the right password works.
    app.clock.advance_ms(retry_after * 1000 - 1);
    let r = login_from(&app, A, "ops@example.com", "correct horse battery").await;
    assert_eq!(r.status, 429);
    app.clock.advance_ms(1);
    let r = login_from(&app, A, "ops@example.com", "correct horse battery").await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    // The backoff doubles: after a success the account starts over with five free failures,
    // and each failure past them doubles the wait.
    for _ in 0..5 {
        let r = login_from(&app, B, "ops@example.com", "wrong password!").await;
        assert_eq!(r.status, 401);
    }
    let first: i64 = login_from(&app, B, "ops@example.com", "wrong password!")
        .await
        .header("retry-after")
        .unwrap()
        .parse()
        .unwrap();
    app.clock.advance_ms(first * 1000);
    assert_eq!(
        login_from(&app, B, "ops@example.com", "wrong password!")
            .await
            .status,
        401
    );
    let second = login_from(&app, B, "ops@example.com", "wrong password!").await;
    assert_eq!(second.status, 429);
    let second: i64 = second.header("retry-after").unwrap().parse().unwrap();
    assert_eq!(second, 2 * first);
    app.clock.advance_ms(second * 1000);

    // One address guessing across many accounts is throttled as an address.
    let mut address_throttled = false;
    for i in 0..40 {
        let r = login_from(
            &app,
            A,
            &format!("nobody{i}@example.com"),
            "wrong password!",
        )
        .await;
        if r.status == 429 {
            address_throttled = true;
            break;
        }
        assert_eq!(r.status, 401);
    }
    assert!(
        address_throttled,
        "an address guessing across accounts was never throttled"
    );
    let r = login_from(&app, A, "other@example.com", "correct horse battery").await;
    assert_eq!(r.status, 429, "{:?}", r.body);
    let r = login_from(&app, B, "other@example.com", "correct horse battery").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}

async fn console_login_is_throttled_too(app: TestApp) {
    let r = app
        .post(
            "/v1/admins",
            OWNER_TOKEN,
            json!({"email": "ops@example.com", "role": "admin", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(r.status, 201);
    let client = awc::Client::builder().disable_redirects().finish();
    let form = |password: &'static str| {
        let (app, client) = (&app, &client);
        async move {
            client
                .post(format!("{}/console/login", app.base))
                .send_form(&[("email", "ops@example.com"), ("password", password)])
                .await
                .expect("console login")
        }
    };
    for _ in 0..5 {
        assert_eq!(form("wrong password!").await.status(), 401);
    }
    let r = form("correct horse battery").await;
    assert_eq!(r.status(), 429);
    let retry_after: i64 = r
        .headers()
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // The API shares the console's counters.
    assert_eq!(
        login(&app, "ops@example.com", "correct horse battery")
            .await
            .status,
        429
    );
    app.clock.advance_ms(retry_after * 1000);
    assert_eq!(form("correct horse battery").await.status(), 303);
}

async fn new_admin(app: &TestApp, email: &str, role: &str) -> String {
    let r = app
        .post(
            "/v1/admins",
            OWNER_TOKEN,
            json!({"email": email, "role": role, "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body["id"].as_str().unwrap().to_owned()
}

async fn session(app: &TestApp, email: &str) -> String {
    let r = login(app, email, "correct horse battery").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body["token"].as_str().unwrap().to_owned()
}

async fn admins_are_deleted_and_their_roles_changed(app: TestApp) {
    let boss = new_admin(&app, "boss@example.com", "owner").await;
    let ops = new_admin(&app, "ops@example.com", "admin").await;
    let boss_jwt = session(&app, "boss@example.com").await;
    let ops_jwt = session(&app, "ops@example.com").await;
    assert_eq!(app.get("/v1/projects", &ops_jwt).await.status, 200);

    // Owners only.
    let viewer = app.token("viewer").await;
    let admin = app.token("admin").await;
    for t in [&viewer, &admin, &ops_jwt] {
        let r = app
            .patch(&format!("/v1/admins/{boss}"), t, json!({"role": "viewer"}))
            .await;
        assert_eq!(r.status, 403);
        let r = app
            .request(Method::DELETE, &format!("/v1/admins/{boss}"), Some(t), None)
            .await;
        assert_eq!(r.status, 403);
    }
    // Validation and unknown ids.
    let r = app
        .patch(
            &format!("/v1/admins/{ops}"),
            OWNER_TOKEN,
            json!({"role": "root"}),
        )
        .await;
    assert_eq!(r.status, 422);
    let r = app
        .patch(
            &format!("/v1/admins/{ops}"),
            OWNER_TOKEN,
            json!({"role": "viewer", "email": "x@y.z"}),
        )
        .await;
    assert_eq!(r.status, 422);
    let r = app
        .patch(
            "/v1/admins/adm_nope",
            OWNER_TOKEN,
            json!({"role": "viewer"}),
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.code(), "not_found");
    let r = app
        .request(
            Method::DELETE,
            "/v1/admins/adm_nope",
            Some(OWNER_TOKEN),
            None,
        )
        .await;
    assert_eq!(r.status, 404);

    // The last owner can be neither demoted nor deleted, not even by themselves.
    let r = app
        .patch(
            &format!("/v1/admins/{boss}"),
            &boss_jwt,
            json!({"role": "admin"}),
        )
        .await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert_eq!(r.code(), "last_owner");
    let r = app
        .request(
            Method::DELETE,
            &format!("/v1/admins/{boss}"),
            Some(&boss_jwt),
            None,
        )
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(r.code(), "last_owner");
    assert_eq!(app.get("/v1/admins", &boss_jwt).await.status, 200);

    // Demoting ends the admin's sessions at once; a new login has the new role.
    let r = app
        .patch(
            &format!("/v1/admins/{ops}"),
            &boss_jwt,
            json!({"role": "viewer"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["role"], "viewer");
    let r = app.get("/v1/projects", &ops_jwt).await;
    assert_eq!(r.status, 401, "a demoted admin's session still works");
    let ops_viewer = session(&app, "ops@example.com").await;
    assert_eq!(app.get("/v1/projects", &ops_viewer).await.status, 200);
    let p = app
        .post(
            "/v1/projects",
            &ops_viewer,
            json!({"name": "X", "key_prefix": "xx"}),
        )
        .await;
    assert_eq!(p.status, 403);
    // Promoting to a second owner makes the first one removable.
    let r = app
        .patch(
            &format!("/v1/admins/{ops}"),
            &boss_jwt,
            json!({"role": "owner"}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(app.get("/v1/projects", &ops_viewer).await.status, 401);
    let ops_owner = session(&app, "ops@example.com").await;
    // Deleting ends the admin's sessions at once.
    let r = app
        .request(
            Method::DELETE,
            &format!("/v1/admins/{boss}"),
            Some(&ops_owner),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    assert_eq!(app.get("/v1/projects", &boss_jwt).await.status, 401);
    assert_eq!(
        login(&app, "boss@example.com", "correct horse battery")
            .await
            .status,
        401
    );
    let list = app.get("/v1/admins", OWNER_TOKEN).await;
    let emails: Vec<&str> = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails, ["ops@example.com"]);
    let r = app
        .request(
            Method::DELETE,
            &format!("/v1/admins/{ops}"),
            Some(OWNER_TOKEN),
            None,
        )
        .await;
    assert_eq!(r.code(), "last_owner");

    // Audited, with the actor.
    let audit = app
        .get(&format!("/v1/audit?target_id={boss}"), OWNER_TOKEN)
        .await;
    let e = &audit.body["items"][0];
    assert_eq!(e["action"], "admin.delete");
    assert_eq!(e["actor"], ops);
    assert_eq!(e["details"]["before"]["role"], "owner");
    let audit = app
        .get(
            &format!("/v1/audit?target_id={ops}&action=admin.update"),
            OWNER_TOKEN,
        )
        .await;
    let items = audit.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[1]["details"]["before"]["role"], "admin");
    assert_eq!(items[1]["details"]["after"]["role"], "viewer");
    assert_eq!(items[1]["actor"], boss);
}

async fn own_password_change(app: TestApp) {
    let id = new_admin(&app, "ops@example.com", "viewer").await;
    let laptop = session(&app, "ops@example.com").await;
    let phone = session(&app, "ops@example.com").await;
    let change = |token: String, body: serde_json::Value| {
        let app = &app;
        async move { app.post("/v1/auth/password", &token, body).await }
    };
    // API tokens have no password.
    let r = change(
        OWNER_TOKEN.to_owned(),
        json!({"current_password": "x", "new_password": "a brand new password"}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), "not_a_session");
    let r = change(
        laptop.clone(),
        json!({"current_password": "wrong password!", "new_password": "a brand new password"}),
    )
    .await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert_eq!(r.code(), "wrong_current_password");
    let r = change(
        laptop.clone(),
        json!({"current_password": "correct horse battery", "new_password": "short"}),
    )
    .await;
    assert_eq!(r.status, 422);
    assert!(r.detail().starts_with("new_password"), "{}", r.detail());
    let r = change(
        laptop.clone(),
        json!({"current_password": "correct horse battery"}),
    )
    .await;
    assert_eq!(r.status, 422);
    // Nothing changed so far.
    assert_eq!(app.get("/v1/projects", &phone).await.status, 200);

    let r = change(laptop.clone(), json!({"current_password": "correct horse battery", "new_password": "a brand new password"})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let fresh = r.body["token"].as_str().unwrap().to_owned();
    assert_eq!(app.get("/v1/projects", &fresh).await.status, 200);
    for old in [&laptop, &phone] {
        assert_eq!(app.get("/v1/projects", old).await.status, 401);
    }
    assert_eq!(
        login(&app, "ops@example.com", "correct horse battery")
            .await
            .status,
        401
    );
    assert_eq!(
        login(&app, "ops@example.com", "a brand new password")
            .await
            .status,
        200
    );
    let audit = app
        .get(
            &format!("/v1/audit?target_id={id}&action=admin.password"),
            OWNER_TOKEN,
        )
        .await;
    let items = audit.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["actor"], id);
    assert!(!audit.body.to_string().contains("brand new"));

    // Wrong current passwords are throttled like logins.
    let mut throttled = false;
    for _ in 0..10 {
        let r = change(
            fresh.clone(),
            json!({"current_password": "wrong password!", "new_password": "another new password"}),
        )
        .await;
        if r.status == 429 {
            assert_eq!(r.code(), "login_throttled");
            throttled = true;
            break;
        }
        assert_eq!(r.status, 422);
    }
    assert!(throttled);
}

async fn every_role_can_log_out(app: TestApp) {
    for role in ["owner", "admin", "viewer", "edge"] {
        let email = format!("{role}@example.com");
        new_admin(&app, &email, role).await;
        let jwt = session(&app, &email).await;
        let r = app
            .request(Method::POST, "/v1/auth/logout", Some(&jwt), None)
            .await;
        assert_eq!(r.status, 204, "{role}: {:?}", r.body);
        let r = app.get("/v1/snapshot/public-key", &jwt).await;
        assert_eq!(r.status, 401, "{role}");
    }
}

async fn console_admin_lifecycle(app: TestApp) {
    use keygate_control_plane::console::session::csrf_token;
    let boss = new_admin(&app, "boss@example.com", "owner").await;
    let ops = new_admin(&app, "ops@example.com", "admin").await;
    let client = awc::Client::builder().disable_redirects().finish();
    let post = |token: String, path: String, form: Vec<(&'static str, String)>| {
        let (app, client) = (&app, &client);
        async move {
            let mut form = form;
            form.push(("csrf_token", csrf_token(&token)));
            let mut r = client
                .post(format!("{}{path}", app.base))
                .insert_header(("cookie", format!("keygate_session={token}")))
                .send_form(&form)
                .await
                .unwrap();
            let body = String::from_utf8_lossy(&r.body().await.unwrap()).into_owned();
            (r.status().as_u16(), r.headers().clone(), body)
        }
    };
    let boss_jwt = session(&app, "boss@example.com").await;
    let ops_jwt = session(&app, "ops@example.com").await;
    // The admins page has the controls.
    let mut page = client
        .get(format!("{}/console/admins", app.base))
        .insert_header(("cookie", format!("keygate_session={boss_jwt}")))
        .send()
        .await
        .unwrap();
    let html = String::from_utf8_lossy(&page.body().await.unwrap()).into_owned();
    assert!(
        html.contains(&format!("/console/admins/{ops}/role")),
        "{html}"
    );
    assert!(html.contains(&format!("/console/admins/{ops}/delete")));
    // Non-owners may not.
    let (status, _, _) = post(
        ops_jwt.clone(),
        format!("/console/admins/{boss}/delete"),
        vec![],
    )
    .await;
    assert_eq!(status, 403);
    // The last owner stays, with the reason on the page.
    let (status, _, body) = post(
        boss_jwt.clone(),
        format!("/console/admins/{boss}/role"),
        vec![("role", "viewer".into())],
    )
    .await;
    assert_eq!(status, 409);
    assert!(body.contains("no owner"), "{body}");
    // A role change ends the sessions of the admin changed.
    let (status, _, _) = post(
        boss_jwt.clone(),
        format!("/console/admins/{ops}/role"),
        vec![("role", "viewer".into())],
    )
    .await;
    assert_eq!(status, 303);
    assert_eq!(app.get("/v1/projects", &ops_jwt).await.status, 401);
    let list = app.get("/v1/admins", OWNER_TOKEN).await;
    assert!(list.body.to_string().contains("\"viewer\""));
    // Everyone changes their own password; the session goes on with a new cookie.
    let viewer_jwt = session(&app, "ops@example.com").await;
    let (status, _, body) = post(
        viewer_jwt.clone(),
        "/console/account/password".into(),
        vec![
            ("current_password", "nope nope nope".into()),
            ("new_password", "a brand new password".into()),
        ],
    )
    .await;
    assert_eq!(status, 422);
    assert!(body.contains("current_password"), "{body}");
    let (status, headers, _) = post(
        viewer_jwt.clone(),
        "/console/account/password".into(),
        vec![
            ("current_password", "correct horse battery".into()),
            ("new_password", "a brand new password".into()),
        ],
    )
    .await;
    assert_eq!(status, 303);
    let cookie = headers
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let fresh = cookie
        .trim_start_matches("keygate_session=")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(app.get("/v1/projects", &fresh).await.status, 200);
    assert_eq!(app.get("/v1/projects", &viewer_jwt).await.status, 401);
    assert_eq!(
        login(&app, "ops@example.com", "a brand new password")
            .await
            .status,
        200
    );
    // Deleting from the console.
    let (status, _, _) = post(
        boss_jwt.clone(),
        format!("/console/admins/{ops}/delete"),
        vec![],
    )
    .await;
    assert_eq!(status, 303);
    assert_eq!(app.get("/v1/projects", &fresh).await.status, 401);
    let audit = app
        .get(&format!("/v1/audit?target_id={ops}"), OWNER_TOKEN)
        .await;
    assert_eq!(audit.body["items"][0]["action"], "admin.delete");
    assert_eq!(audit.body["items"][0]["actor"], boss);
}
