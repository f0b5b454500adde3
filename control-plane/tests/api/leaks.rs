//! `POST /v1/leaks`: live keys are revoked at once, with the source in the audit log.

use keygate_shared::{Environment, KeyPrefix, Kind, PlaintextKey};
use serde_json::json;

use crate::both_backends;
use crate::helpers::{TestApp, OWNER_TOKEN};

both_backends!(leak_report_revokes_live_keys, leak_report_validation);

fn unissued_key(prefix: &str) -> String {
    PlaintextKey::from_parts(
        &KeyPrefix::parse(prefix).unwrap(),
        Kind::Secret,
        Environment::Live,
        "0123456789abcdefghijABCDEFGHIJkl",
    )
    .unwrap()
    .into_string()
}

async fn leak_report_revokes_live_keys(app: TestApp) {
    let p = app.create_project("acme").await;
    let pid = p["id"].as_str().unwrap();
    let leaked = app.secret_key(pid).await;
    let kid = leaked["id"].as_str().unwrap();
    let key = leaked["key"].as_str().unwrap();
    let bystander = app.secret_key(pid).await;
    assert_eq!(app.verify_code(key).await, "valid");
    let unknown = unissued_key("acme");
    let admin = app.token("admin").await;

    let r = app
        .post(
            "/v1/leaks",
            &admin,
            json!({
                "keys": [key, unknown, "acme_sk_live_nonsense"],
                "source": "github-secret-scanning",
                "url": "https://github.com/someone/repo/blob/main/.env"
            }),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let items = r.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(items[0]["status"], "revoked");
    assert_eq!(items[0]["key_id"], kid);
    assert_eq!(items[0]["start"], leaked["start"]);
    assert_eq!(items[1]["status"], "unknown");
    assert_eq!(items[1]["key_id"], json!(null));
    assert_eq!(items[1]["start"], json!(&unknown[..17]));
    assert_eq!(items[2]["status"], "malformed");
    assert_eq!(items[2]["start"], json!(null));
    // The answer never carries a whole key.
    let raw = String::from_utf8_lossy(&r.raw);
    assert!(!raw.contains(key) && !raw.contains(&unknown));

    assert_eq!(app.verify_code(key).await, "revoked_key");
    assert_eq!(
        app.verify_code(bystander["key"].as_str().unwrap()).await,
        "valid"
    );
    let view = app.get(&format!("/v1/keys/{kid}"), OWNER_TOKEN).await;
    assert_eq!(view.body["status"], "revoked");
    assert_eq!(
        view.body["revoked_reason"],
        "leaked: reported by github-secret-scanning"
    );

    let audit = app
        .get(&format!("/v1/audit?target_id={kid}"), OWNER_TOKEN)
        .await;
    let entry = &audit.body["items"][0];
    assert_eq!(entry["action"], "key.revoke");
    let actor = entry["actor"].as_str().unwrap();
    assert!(actor.starts_with("tok_"), "{actor}");
    assert_eq!(entry["details"]["leak"]["source"], "github-secret-scanning");
    assert_eq!(
        entry["details"]["leak"]["url"],
        "https://github.com/someone/repo/blob/main/.env"
    );
    assert_eq!(entry["details"]["leak"]["reported_by"], actor);
    assert_eq!(entry["details"]["after"]["status"], "revoked");
    assert!(!audit.body.to_string().contains(key));

    // Reported again (url is optional): already revoked, no new audit entry.
    let again = app
        .post(
            "/v1/leaks",
            OWNER_TOKEN,
            json!({"keys": [key], "source": "pastebin-monitor"}),
        )
        .await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    assert_eq!(again.body["items"][0]["status"], "already_revoked");
    assert_eq!(again.body["items"][0]["key_id"], kid);
    let audit2 = app
        .get(&format!("/v1/audit?target_id={kid}"), OWNER_TOKEN)
        .await;
    assert_eq!(
        audit2.body["items"].as_array().unwrap().len(),
        audit.body["items"].as_array().unwrap().len()
    );
    let view = app.get(&format!("/v1/keys/{kid}"), OWNER_TOKEN).await;
    assert_eq!(
        view.body["revoked_reason"],
        "leaked: reported by github-secret-scanning"
    );

    // Viewers and the edge may not report.
    for role in ["viewer", "edge"] {
        let t = app.token(role).await;
        let r = app
            .post("/v1/leaks", &t, json!({"keys": [unknown], "source": "x"}))
            .await;
        assert_eq!(r.status, 403, "{role}");
    }
}

async fn leak_report_validation(app: TestApp) {
    let k = unissued_key("acme");
    let too_many: Vec<String> = (0..101).map(|_| k.clone()).collect();
    for (body, field) in [
        (json!({"keys": [k], "source": "s", "extra": 1}), "extra"),
        (json!({"keys": [k]}), "source"),
        (json!({"keys": [k], "source": "  "}), "source"),
        (json!({"keys": [], "source": "s"}), "keys"),
        (json!({"keys": too_many, "source": "s"}), "keys"),
        (
            json!({"keys": [k], "source": "s", "url": "javascript:alert(1)"}),
            "url",
        ),
        (json!({"keys": "nope", "source": "s"}), "keys"),
    ] {
        let r = app.post("/v1/leaks", OWNER_TOKEN, body.clone()).await;
        assert_eq!(r.status, 422, "{body}: {:?}", r.body);
        assert!(r.detail().contains(field), "{body}: {}", r.detail());
    }
    let ok = (0..100).map(|_| k.clone()).collect::<Vec<_>>();
    let r = app
        .post("/v1/leaks", OWNER_TOKEN, json!({"keys": ok, "source": "s"}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["items"].as_array().unwrap().len(), 100);
}
