//! Alert rules, alerts, acknowledgement and revocation by a rule, from usage posted the way
//! the edge posts it. Rules are evaluated by calling the job's function at the test clock's
//! `now`, so each test decides when evaluation happens.

use keygate_control_plane::domain::alerts::{self, EvaluationReport};
use keygate_control_plane::timefmt::format_ms;
use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{TestApp, OWNER_TOKEN};

both_backends!(
    new_ips_rule_raises_once_and_revokes_the_key,
    rejections_are_listed_acknowledged_and_raised_again_after_the_window,
    test_key_on_live_hosts,
    quota_and_expiry_warnings,
    traffic_far_above_baseline,
    new_referrers_and_disabled_rules,
    rule_settings_validation_and_roles,
    forgeable_signals_alert_but_never_revoke,
);

fn evaluate(app: &TestApp) -> EvaluationReport {
    let mut conn = app.state.pool.get().unwrap();
    alerts::evaluate(&mut conn, app.clock.now_ms()).unwrap()
}

fn minute_of(ms: i64) -> String {
    format_ms(ms - ms.rem_euclid(60_000))
}

async fn post_usage(app: &TestApp, body: Value) {
    let r = app.post("/v1/usage", OWNER_TOKEN, body).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
}

async fn counts(app: &TestApp, key_id: &str, at: i64, items: &[(&str, u32)]) {
    let items: Vec<Value> = items
        .iter()
        .map(|(code, n)| json!({"key_id": key_id, "minute": minute_of(at), "code": code, "count": n}))
        .collect();
    post_usage(app, json!({ "items": items })).await;
}

async fn sightings(app: &TestApp, key_id: &str, kind: &str, values: &[String], at: i64) {
    let s: Vec<Value> = values
        .iter()
        .map(|v| {
            json!({"key_id": key_id, "kind": kind, "value": v,
                   "first_seen": format_ms(at), "last_seen": format_ms(at), "count": 1})
        })
        .collect();
    post_usage(app, json!({"items": [], "sightings": s})).await;
}

async fn rule(app: &TestApp, project_id: &str, rule: &str, body: Value) -> Value {
    let r = app
        .patch(
            &format!("/v1/projects/{project_id}/alert-rules/{rule}"),
            OWNER_TOKEN,
            body,
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body
}

async fn alerts_of(app: &TestApp, key_id: &str) -> Vec<Value> {
    let r = app
        .get(&format!("/v1/alerts?key_id={key_id}"), OWNER_TOKEN)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body["items"].as_array().unwrap().clone()
}

fn ips(n: usize, net: u8) -> Vec<String> {
    (1..=n).map(|i| format!("198.51.{net}.{i}")).collect()
}

async fn new_ips_rule_raises_once_and_revokes_the_key(app: TestApp) {
    let p = app.create_project("acme").await;
    let pid = p["id"].as_str().unwrap();
    let k = app.secret_key(pid).await;
    let id = k["id"].as_str().unwrap();
    let v = rule(
        &app,
        pid,
        "new_ips",
        json!({"threshold": 5, "auto_revoke": true}),
    )
    .await;
    assert_eq!(v["threshold"], 5);
    assert_eq!(v["auto_revoke"], true);
    assert_eq!(v["customized"], true);

    // An endpoint that wants alerts (nothing listens there: only the queued delivery counts).
    let hook = app
        .post(
            "/v1/webhooks",
            OWNER_TOKEN,
            json!({"url": "https://hooks.example.com/alerts", "events": ["alert.raised"]}),
        )
        .await;
    assert_eq!(hook.status, 201, "{:?}", hook.body);
    let hook_id = hook.body["id"].as_str().unwrap().to_owned();

    let now = app.clock.now_ms();
    // The key's usual two servers, then below the threshold: nothing.
    sightings(&app, id, "ip", &ips(4, 100), now - 30_000).await;
    counts(&app, id, now, &[("valid", 40)]).await;
    let report = evaluate(&app);
    assert!(report.raised.is_empty(), "{report:?}");
    assert!(alerts_of(&app, id).await.is_empty());

    // A leak: the key turns up on many new machines.
    sightings(&app, id, "ip", &ips(3, 200), now).await;
    let report = evaluate(&app);
    assert_eq!(report.raised.len(), 1, "{report:?}");
    assert_eq!(report.revoked, vec![id.to_owned()]);
    let list = alerts_of(&app, id).await;
    assert_eq!(list.len(), 1);
    let alert = &list[0];
    assert_eq!(alert["rule"], "new_ips");
    assert_eq!(alert["status"], "open");
    assert_eq!(alert["action"], "revoked");
    assert_eq!(alert["details"]["new_values"], 7);
    let summary = alert["summary"].as_str().unwrap();
    assert!(summary.contains("7 client IPs"), "{summary}");
    assert!(summary.contains("198.51.200."), "{summary}");

    let key = app.get(&format!("/v1/keys/{id}"), OWNER_TOKEN).await;
    assert_eq!(key.body["status"], "revoked");
    assert!(key.body["revoked_reason"]
        .as_str()
        .unwrap()
        .starts_with("automatically revoked by alert rule new_ips"));
    // The audit log names the rule as the actor of both the alert and the revocation.
    let audit = app
        .get(&format!("/v1/audit?target_id={id}"), OWNER_TOKEN)
        .await;
    let entries = audit.body["items"].as_array().unwrap();
    let by_rule: Vec<&str> = entries
        .iter()
        .filter(|e| e["actor"] == "rule:new_ips")
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(by_rule.contains(&"key.revoke"), "{entries:?}");
    assert!(by_rule.contains(&"alert.raise"), "{entries:?}");

    // One alert.raised went to the endpoint, with the alert and the revoked key.
    let deliveries = app
        .get(&format!("/v1/webhooks/{hook_id}/deliveries"), OWNER_TOKEN)
        .await;
    let items = deliveries.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{:?}", deliveries.body);
    assert_eq!(items[0]["event_type"], "alert.raised");
    let one = app
        .get(
            &format!(
                "/v1/webhooks/{hook_id}/deliveries/{}",
                items[0]["id"].as_str().unwrap()
            ),
            OWNER_TOKEN,
        )
        .await;
    assert_eq!(one.status, 200, "{:?}", one.body);
    let event = one.body.to_string();
    assert!(event.contains(alert["id"].as_str().unwrap()), "{event}");
    assert!(event.contains("\"status\":\"revoked\""), "{event}");

    // Evaluated again: the key is revoked and the alert stands; nothing new.
    let report = evaluate(&app);
    assert!(report.raised.is_empty(), "{report:?}");
    assert_eq!(alerts_of(&app, id).await.len(), 1);

    // The alert is one by id too.
    let one = app
        .get(
            &format!("/v1/alerts/{}", alert["id"].as_str().unwrap()),
            OWNER_TOKEN,
        )
        .await;
    assert_eq!(one.status, 200);
    assert_eq!(one.body["id"], alert["id"]);
    let missing = app.get("/v1/alerts/alr_nope", OWNER_TOKEN).await;
    assert_eq!(missing.status, 404);
}

async fn rejections_are_listed_acknowledged_and_raised_again_after_the_window(app: TestApp) {
    let p = app.create_project("acme").await;
    let pid = p["id"].as_str().unwrap();
    let k = app.secret_key(pid).await;
    let id = k["id"].as_str().unwrap();
    let now = app.clock.now_ms();
    counts(
        &app,
        id,
        now,
        &[
            ("referrer_not_allowed", 12),
            ("ip_not_allowed", 9),
            ("valid", 3),
        ],
    )
    .await;
    let report = evaluate(&app);
    assert_eq!(report.raised.len(), 1, "{report:?}");
    assert!(report.revoked.is_empty(), "rules do not revoke by default");
    let open = app.get("/v1/alerts?status=open", OWNER_TOKEN).await;
    let items = open.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    let alert = &items[0];
    assert_eq!(alert["rule"], "rejections");
    assert_eq!(alert["key_id"], id);
    assert_eq!(alert["project_id"], pid);
    assert_eq!(alert["details"]["referrer_not_allowed"], 12);
    assert_eq!(alert["details"]["ip_not_allowed"], 9);
    assert_eq!(alert["action"], Value::Null);
    let aid = alert["id"].as_str().unwrap();
    let key = app.get(&format!("/v1/keys/{id}"), OWNER_TOKEN).await;
    assert_eq!(key.body["status"], "active");

    // Still open: the same burst does not raise a second alert.
    counts(&app, id, now, &[("ip_not_allowed", 30)]).await;
    assert!(evaluate(&app).raised.is_empty());

    // A viewer may read but not acknowledge.
    let viewer = app.token("viewer").await;
    let r = app.get("/v1/alerts", &viewer).await;
    assert_eq!(r.status, 200);
    let r = app
        .post(&format!("/v1/alerts/{aid}/acknowledge"), &viewer, json!({}))
        .await;
    assert_eq!(r.status, 403);
    let r = app
        .post(
            &format!("/v1/alerts/{aid}/acknowledge"),
            OWNER_TOKEN,
            json!({"note": "our own scanner"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["status"], "acknowledged");
    assert!(r.body["acknowledged_by"]
        .as_str()
        .unwrap()
        .starts_with("tok_"));
    assert!(r.body["acknowledged_at"].is_string());
    let again = app
        .post(
            &format!("/v1/alerts/{aid}/acknowledge"),
            OWNER_TOKEN,
            json!({}),
        )
        .await;
    assert_eq!(again.status, 409);
    assert_eq!(again.code(), "already_acknowledged");
    let open = app.get("/v1/alerts?status=open", OWNER_TOKEN).await;
    assert_eq!(open.body["items"], json!([]));
    let audit = app
        .get(&format!("/v1/audit?target_id={aid}"), OWNER_TOKEN)
        .await;
    assert_eq!(audit.body["items"][0]["action"], "alert.acknowledge");
    assert_eq!(audit.body["items"][0]["details"]["note"], "our own scanner");

    // Acknowledged, but within the window: quiet.
    app.clock.advance_ms(60_000);
    assert!(evaluate(&app).raised.is_empty());
    // After the window, a new burst is a new alert.
    app.clock.advance_ms(300_000);
    let later = app.clock.now_ms();
    counts(&app, id, later, &[("referrer_not_allowed", 25)]).await;
    let report = evaluate(&app);
    assert_eq!(report.raised.len(), 1, "{report:?}");
    assert_eq!(alerts_of(&app, id).await.len(), 2);
}

async fn test_key_on_live_hosts(app: TestApp) {
    let p = app.create_project("acme").await;
    let pid = p["id"].as_str().unwrap();
    let test_key = app
        .create_key(
            pid,
            json!({"name": "dev", "kind": "secret", "environment": "test"}),
        )
        .await;
    let live_key = app.secret_key(pid).await;
    let (tid, lid) = (
        test_key["id"].as_str().unwrap(),
        live_key["id"].as_str().unwrap(),
    );
    let now = app.clock.now_ms();
    counts(&app, tid, now, &[("environment_not_allowed", 2)]).await;
    // A live key on a test host is a mistake, not a leak.
    counts(&app, lid, now, &[("environment_not_allowed", 50)]).await;
    let report = evaluate(&app);
    assert_eq!(report.raised.len(), 1, "{report:?}");
    let list = alerts_of(&app, tid).await;
    assert_eq!(list[0]["rule"], "test_key_on_live");
    assert!(list[0]["summary"]
        .as_str()
        .unwrap()
        .contains("presented 2 times on live hosts"));
    assert!(alerts_of(&app, lid).await.is_empty());
}

async fn quota_and_expiry_warnings(app: TestApp) {
    let p = app.create_project("acme").await;
    let pid = p["id"].as_str().unwrap();
    let now = app.clock.now_ms();
    let quota = app
        .create_key(
            pid,
            json!({"name": "metered", "kind": "secret", "environment": "live",
                   "quota": {"limit": 100, "period": "total"}}),
        )
        .await;
    let qid = quota["id"].as_str().unwrap();
    counts(&app, qid, now, &[("valid", 80), ("rate_limited", 50)]).await;
    assert!(evaluate(&app).raised.is_empty(), "80% is under 90%");
    counts(&app, qid, now, &[("valid", 12)]).await;
    let report = evaluate(&app);
    assert_eq!(report.raised.len(), 1, "{report:?}");
    let a = &alerts_of(&app, qid).await[0];
    assert_eq!(a["rule"], "near_quota");
    assert_eq!(a["details"]["used"], 92);
    assert_eq!(a["details"]["percent"], 92);

    let expiring = app
        .create_key(
            pid,
            json!({"name": "temp", "kind": "secret", "environment": "live",
                   "expires_at": format_ms(now + 3 * 86_400_000)}),
        )
        .await;
    let later = app
        .create_key(
            pid,
            json!({"name": "later", "kind": "secret", "environment": "live",
                   "expires_at": format_ms(now + 30 * 86_400_000)}),
        )
        .await;
    let eid = expiring["id"].as_str().unwrap();
    let report = evaluate(&app);
    assert_eq!(report.raised.len(), 1, "{report:?}");
    let a = &alerts_of(&app, eid).await[0];
    assert_eq!(a["rule"], "near_expiry");
    assert!(a["summary"].as_str().unwrap().contains("3 days left"));
    assert!(alerts_of(&app, later["id"].as_str().unwrap())
        .await
        .is_empty());
    // Acknowledged, an expiry warning is not repeated.
    let r = app
        .post(
            &format!("/v1/alerts/{}/acknowledge", a["id"].as_str().unwrap()),
            OWNER_TOKEN,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200);
    app.clock.advance_ms(86_400_000);
    let report = evaluate(&app);
    assert!(report.raised.is_empty(), "{report:?}");
    assert_eq!(alerts_of(&app, eid).await.len(), 1);
}

async fn traffic_far_above_baseline(app: TestApp) {
    let p = app.create_project("acme").await;
    let pid = p["id"].as_str().unwrap();
    let k = app.secret_key(pid).await;
    let id = k["id"].as_str().unwrap();
    let hour = 3_600_000;
    let start = app.clock.now_ms();
    // Two days of steady traffic: 20 requests an hour.
    let items: Vec<Value> = (0..48)
        .map(|h| json!({"key_id": id, "minute": minute_of(start + h * hour), "code": "valid", "count": 20}))
        .collect();
    post_usage(&app, json!({ "items": items })).await;
    app.clock.advance_ms(48 * hour + 1_800_000);
    let now = app.clock.now_ms();
    // Ordinary: 25 in the last hour.
    counts(&app, id, now, &[("valid", 25)]).await;
    assert!(evaluate(&app).raised.is_empty());
    // 300 more: 325 against a baseline of 20 is over 10x.
    counts(&app, id, now, &[("valid", 200), ("rate_limited", 100)]).await;
    let report = evaluate(&app);
    assert_eq!(report.raised.len(), 1, "{report:?}");
    let a = &alerts_of(&app, id).await[0];
    assert_eq!(a["rule"], "traffic_spike");
    assert_eq!(a["details"]["requests"], 325);
    let ratio = a["details"]["ratio"].as_f64().unwrap();
    assert!((15.0..17.0).contains(&ratio), "{ratio}");
}

async fn new_referrers_and_disabled_rules(app: TestApp) {
    let p = app.create_project("acme").await;
    let pid = p["id"].as_str().unwrap();
    let pk = app
        .create_key(
            pid,
            json!({"name": "web", "kind": "publishable", "environment": "live",
                   "restrictions": {"referrers": ["shop.example.com"]}}),
        )
        .await;
    let id = pk["id"].as_str().unwrap();
    let now = app.clock.now_ms();
    // Publishable keys are exempt from the IP rule: browsers bring new IPs all the time.
    sightings(&app, id, "ip", &ips(50, 7), now).await;
    assert!(evaluate(&app).raised.is_empty());
    // Disabled, the referrer rule stays quiet.
    rule(&app, pid, "new_referrers", json!({"enabled": false})).await;
    let origins: Vec<String> = [
        "https://a.example.net",
        "https://b.example.net",
        "https://c.example.net",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    sightings(&app, id, "referrer", &origins, now).await;
    assert!(evaluate(&app).raised.is_empty());
    rule(&app, pid, "new_referrers", json!({"enabled": true})).await;
    let report = evaluate(&app);
    assert_eq!(report.raised.len(), 1, "{report:?}");
    let a = &alerts_of(&app, id).await[0];
    assert_eq!(a["rule"], "new_referrers");
    assert!(a["summary"]
        .as_str()
        .unwrap()
        .contains("3 referrer origins"));
    // Other projects' rules are their own.
    let other = app.create_project("other").await;
    let list = app
        .get(
            &format!("/v1/projects/{}/alert-rules", other["id"].as_str().unwrap()),
            OWNER_TOKEN,
        )
        .await;
    let nr = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == "new_referrers")
        .unwrap()
        .clone();
    assert_eq!(nr["enabled"], true);
    assert_eq!(nr["customized"], false);
}

async fn rule_settings_validation_and_roles(app: TestApp) {
    let p = app.create_project("acme").await;
    let pid = p["id"].as_str().unwrap();
    let list = app
        .get(&format!("/v1/projects/{pid}/alert-rules"), OWNER_TOKEN)
        .await;
    assert_eq!(list.status, 200);
    let rules: Vec<&str> = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    assert_eq!(
        rules,
        [
            "new_ips",
            "new_referrers",
            "rejections",
            "traffic_spike",
            "test_key_on_live",
            "near_quota",
            "near_expiry"
        ]
    );
    let path = format!("/v1/projects/{pid}/alert-rules");
    let cases = [
        ("new_ips", json!({"threshold": 0}), "threshold"),
        ("near_quota", json!({"threshold": 101}), "threshold"),
        (
            "rejections",
            json!({"window_seconds": 59}),
            "window_seconds",
        ),
        ("near_expiry", json!({"auto_revoke": true}), "auto_revoke"),
    ];
    for (r, body, field) in cases {
        let res = app.patch(&format!("{path}/{r}"), OWNER_TOKEN, body).await;
        assert_eq!(res.status, 422, "{r}: {:?}", res.body);
        assert!(res.detail().starts_with(field), "{}", res.detail());
    }
    let res = app
        .patch(&format!("{path}/new_ips"), OWNER_TOKEN, json!({"bogus": 1}))
        .await;
    assert_eq!(res.status, 422);
    let res = app
        .patch(&format!("{path}/no_such_rule"), OWNER_TOKEN, json!({}))
        .await;
    assert_eq!(res.status, 404);
    let res = app
        .patch(
            "/v1/projects/prj_nope/alert-rules/new_ips",
            OWNER_TOKEN,
            json!({}),
        )
        .await;
    assert_eq!(res.status, 404);
    // Refused changes left nothing behind.
    let list = app.get(&path, OWNER_TOKEN).await;
    assert!(list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["customized"] == false));

    let viewer = app.token("viewer").await;
    let edge = app.token("edge").await;
    assert_eq!(app.get(&path, &viewer).await.status, 200);
    assert_eq!(
        app.patch(
            &format!("{path}/new_ips"),
            &viewer,
            json!({"enabled": false})
        )
        .await
        .status,
        403
    );
    assert_eq!(app.get("/v1/alerts", &edge).await.status, 403);
    let bad = app.get("/v1/alerts?status=closed", OWNER_TOKEN).await;
    assert_eq!(bad.status, 422);

    // A change is audited with before and after.
    rule(&app, pid, "rejections", json!({"threshold": 5})).await;
    let audit = app
        .get(&format!("/v1/audit?target_id={pid}"), OWNER_TOKEN)
        .await;
    let e = &audit.body["items"][0];
    assert_eq!(e["action"], "alert_rule.update");
    assert_eq!(e["details"]["before"]["threshold"], 20);
    assert_eq!(e["details"]["after"]["threshold"], 5);
}

async fn forgeable_signals_alert_but_never_revoke(app: TestApp) {
    use diesel::prelude::*;
    use keygate_control_plane::db::schema::alert_rules;

    let p = app.create_project("acme").await;
    let pid = p["id"].as_str().unwrap();
    let path = format!("/v1/projects/{pid}/alert-rules");
    // Rules fed by Origin, Referer and client IPs may not be set to revoke.
    for r in ["new_referrers", "rejections"] {
        let res = app
            .patch(
                &format!("{path}/{r}"),
                OWNER_TOKEN,
                json!({"auto_revoke": true}),
            )
            .await;
        assert_eq!(res.status, 422, "{r}: {:?}", res.body);
        assert_eq!(res.code(), "validation_failed");
        assert!(res.detail().starts_with("auto_revoke:"), "{}", res.detail());
        assert!(res.detail().contains("Origin"), "{}", res.detail());
    }
    let list = app.get(&path, OWNER_TOKEN).await;
    for r in list.body["items"].as_array().unwrap() {
        let revocable = !["new_referrers", "rejections", "near_quota", "near_expiry"]
            .contains(&r["rule"].as_str().unwrap());
        assert_eq!(r["can_auto_revoke"], revocable, "{r}");
    }

    // A setting stored before this rule (a database from an older version) stays inert.
    {
        let mut conn = app.state.pool.get().unwrap();
        diesel::insert_into(alert_rules::table)
            .values((
                alert_rules::project_id.eq(pid),
                alert_rules::rule.eq("rejections"),
                alert_rules::enabled.eq(true),
                alert_rules::threshold.eq(20_i64),
                alert_rules::window_seconds.eq(300_i64),
                alert_rules::auto_revoke.eq(true),
                alert_rules::updated_at.eq(app.clock.now_ms()),
            ))
            .execute(&mut *conn)
            .unwrap();
    }
    let web = app
        .create_key(
            pid,
            json!({"name": "web", "kind": "publishable", "environment": "live",
                   "restrictions": {"referrers": ["shop.example.com"]}}),
        )
        .await;
    let wid = web["id"].as_str().unwrap();
    let now = app.clock.now_ms();
    counts(&app, wid, now, &[("referrer_not_allowed", 25)]).await;
    let report = evaluate(&app);
    assert_eq!(report.raised.len(), 1, "{report:?}");
    assert!(report.revoked.is_empty(), "{report:?}");
    let alerts = alerts_of(&app, wid).await;
    assert_eq!(alerts[0]["rule"], "rejections");
    assert_eq!(alerts[0]["action"], Value::Null);
    let key = app.get(&format!("/v1/keys/{wid}"), OWNER_TOKEN).await;
    assert_eq!(key.body["status"], "active");

    // A rule that may revoke secret keys never revokes a publishable one: anyone who loaded
    // the page holds it and can present it anywhere.
    rule(&app, pid, "test_key_on_live", json!({"auto_revoke": true})).await;
    let public_test = app
        .create_key(
            pid,
            json!({"name": "web dev", "kind": "publishable", "environment": "test",
                   "restrictions": {"referrers": ["localhost:*"]}}),
        )
        .await;
    let secret_test = app
        .create_key(
            pid,
            json!({"name": "dev", "kind": "secret", "environment": "test"}),
        )
        .await;
    let (ptid, stid) = (
        public_test["id"].as_str().unwrap(),
        secret_test["id"].as_str().unwrap(),
    );
    counts(&app, ptid, now, &[("environment_not_allowed", 3)]).await;
    counts(&app, stid, now, &[("environment_not_allowed", 3)]).await;
    let report = evaluate(&app);
    assert_eq!(report.raised.len(), 2, "{report:?}");
    assert_eq!(report.revoked, vec![stid.to_owned()]);
    let key = app.get(&format!("/v1/keys/{ptid}"), OWNER_TOKEN).await;
    assert_eq!(key.body["status"], "active");
    let key = app.get(&format!("/v1/keys/{stid}"), OWNER_TOKEN).await;
    assert_eq!(key.body["status"], "revoked");
}
