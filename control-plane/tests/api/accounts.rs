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
    console_login_is_throttled_too
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
