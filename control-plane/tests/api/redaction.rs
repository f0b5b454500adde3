//! Secrets never reach `Debug`: each type that holds a plaintext key, token, password, webhook
//! secret or database password is formatted with `{:?}` and `{:#?}`, and the secret must not
//! appear. The values come from real API answers where there are some, so a new field that
//! holds a secret is formatted too.

use keygate_control_plane::domain::{accounts, keys, leaks, webhooks};
use keygate_control_plane::ids::{AdminId, WebhookId};
use serde_json::json;

use crate::both_backends;
use crate::helpers::{TestApp, OWNER_TOKEN};

both_backends!(secrets_are_never_in_debug);

/// Formats `value` both ways and checks that none of `secrets` shows.
fn assert_redacted(what: &str, value: &impl std::fmt::Debug, secrets: &[&str]) {
    for text in [format!("{value:?}"), format!("{value:#?}")] {
        for s in secrets {
            assert!(!s.is_empty());
            assert!(!text.contains(s), "{what} shows a secret in Debug: {text}");
        }
        assert!(text.len() > what.len(), "{what}: {text}");
    }
}

fn from<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> T {
    serde_json::from_value(v.clone()).unwrap()
}

async fn secrets_are_never_in_debug(app: TestApp) {
    // Keys: creation and rotation answers.
    let p = app.create_project("acme").await;
    let pid = p["id"].as_str().unwrap();
    let created = app.secret_key(pid).await;
    let plaintext = created["key"].as_str().unwrap().to_owned();
    let secret_part = &plaintext["acme_sk_live_".len()..];
    let v: keys::CreatedKey = from(&created);
    assert_eq!(v.key, plaintext);
    assert_redacted("CreatedKey", &v, &[secret_part]);
    let rotated = app
        .post(
            &format!("/v1/keys/{}/rotate", created["id"].as_str().unwrap()),
            OWNER_TOKEN,
            json!({"grace_seconds": 60}),
        )
        .await;
    assert_eq!(rotated.status, 201, "{:?}", rotated.body);
    let new_plain = rotated.body["key"].as_str().unwrap();
    let v: keys::RotatedKey = from(&rotated.body);
    assert_redacted("RotatedKey", &v, &[&new_plain["acme_sk_live_".len()..]]);

    // Admin API tokens.
    let t = app
        .post(
            "/v1/admin-tokens",
            OWNER_TOKEN,
            json!({"name": "ci", "role": "viewer"}),
        )
        .await;
    let token = t.body["token"].as_str().unwrap().to_owned();
    let v: accounts::CreatedToken = from(&t.body);
    assert_redacted("CreatedToken", &v, &[&token["kgt_".len()..]]);

    // Passwords and sessions.
    let password = "correct horse battery staple";
    let v: accounts::CreateAdmin =
        from(&json!({"email": "ops@example.com", "role": "admin", "password": password}));
    assert_redacted("CreateAdmin", &v, &[password]);
    let r = app
        .post(
            "/v1/admins",
            OWNER_TOKEN,
            json!({"email": "ops@example.com", "role": "admin", "password": password}),
        )
        .await;
    assert_eq!(r.status, 201);
    let v: accounts::Login = from(&json!({"email": "ops@example.com", "password": password}));
    assert_redacted("Login", &v, &[password]);
    let v: accounts::ChangePassword =
        from(&json!({"current_password": password, "new_password": "another secret phrase"}));
    assert_redacted("ChangePassword", &v, &[password, "another secret phrase"]);
    let login = app
        .request(
            actix_web::http::Method::POST,
            "/v1/auth/login",
            None,
            Some(&json!({"email": "ops@example.com", "password": password})),
        )
        .await;
    let jwt = login.body["token"].as_str().unwrap().to_owned();
    let v: accounts::Session = from(&login.body);
    // The signature part of the JWT, and its payload.
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_redacted("Session", &v, &[parts[1], parts[2]]);
    let mut conn = app.state.pool.get().unwrap();
    let row =
        accounts::find_admin_row(&mut conn, &AdminId::new(r.body["id"].as_str().unwrap())).unwrap();
    let hash = row.password_hash.clone();
    assert_redacted("AdminRow", &row, &[&hash]);

    // Webhook secrets: creation, rotation, the stored row and a claimed delivery.
    let h = app
        .post(
            "/v1/webhooks",
            OWNER_TOKEN,
            json!({"url": "https://hooks.example.com/k", "events": ["key.revoked"]}),
        )
        .await;
    assert_eq!(h.status, 201, "{:?}", h.body);
    let first = h.body["secret"].as_str().unwrap().to_owned();
    let v: webhooks::CreatedWebhook = from(&h.body);
    assert_redacted("CreatedWebhook", &v, &[&first["whsec_".len()..]]);
    let wid = h.body["id"].as_str().unwrap();
    let rot = app
        .post(
            &format!("/v1/webhooks/{wid}/rotate-secret"),
            OWNER_TOKEN,
            json!({"grace_seconds": 600}),
        )
        .await;
    assert_eq!(rot.status, 200, "{:?}", rot.body);
    let second = rot.body["secret"].as_str().unwrap().to_owned();
    let v: webhooks::RotatedSecret = from(&rot.body);
    assert_redacted("RotatedSecret", &v, &[&second["whsec_".len()..]]);
    let both = [&first["whsec_".len()..], &second["whsec_".len()..]];
    let row = webhooks::find_row(&mut conn, &WebhookId::new(wid)).unwrap();
    assert_redacted("EndpointRow", &row, &both);
    let secrets = webhooks::Secrets::parse(&row.secret);
    assert_redacted("Secrets", &secrets, &both);
    let r = app
        .post(
            &format!("/v1/keys/{}/revoke", rotated.body["id"].as_str().unwrap()),
            OWNER_TOKEN,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200);
    let claimed =
        webhooks::claim_due(&mut conn, app.clock.now_ms() + 3_600_000, 10, 60_000).unwrap();
    assert!(!claimed.is_empty());
    for out in &claimed {
        assert_redacted("Outgoing", out, &both);
    }

    // Leak reports and the scanner's options.
    let v: leaks::LeakReport = from(&json!({"keys": [plaintext], "source": "test"}));
    assert_redacted("LeakReport", &v, &[secret_part]);
    let v = keygate_control_plane::scan::ScanOptions {
        paths: vec![],
        revoke: true,
        token: Some(token.clone()),
        url: "http://127.0.0.1:8080".into(),
    };
    assert_redacted("ScanOptions", &v, &[&token["kgt_".len()..]]);

    // Configuration and database targets: tokens and database passwords.
    let mut config = keygate_control_plane::Config::new("/tmp/x");
    config.bootstrap_token = Some("bootstrap-token-0123456789abcdefghijklmnop".into());
    config.jwt_secret = Some("jwt-secret-0123456789abcdefghijklmnopqrstu".into());
    config.database_url = Some("postgres://keygate:hunter2-db-pass@db/keygate".into());
    assert_redacted(
        "Config",
        &config,
        &["bootstrap-token-0123", "jwt-secret-0123", "hunter2-db-pass"],
    );
    let target = keygate_control_plane::db::DbTarget::from_config(
        config.database_url.as_deref(),
        std::path::Path::new("/tmp/x"),
    )
    .unwrap();
    assert_redacted("DbTarget", &target, &["hunter2-db-pass"]);
    assert_redacted("AppState", &*app.state, &[OWNER_TOKEN, &first, &second]);
}
