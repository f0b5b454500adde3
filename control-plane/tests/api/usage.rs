//! Usage: rollups into hours and days, per-project sums, windows and granularities, a key's
//! last use, sightings, and pruning by retention.

use std::collections::BTreeSet;

use diesel::prelude::*;
use keygate_control_plane::db::schema::api_keys;
use keygate_control_plane::jobs::usage_prune as prune_tick;
use keygate_control_plane::timefmt::format_ms;
use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{spawn_with, Backend, TestApp, OWNER_TOKEN};

both_backends!(
    rollups_across_hour_and_day_boundaries,
    project_usage_sums_its_keys_only,
    granularity_and_window_are_checked,
    last_used_moves_forward_on_valid_only,
    sightings_merge_and_are_checked,
);

const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;

/// Midnight UTC of the current day, minus `days_ago` days.
fn midnight(app: &TestApp, days_ago: i64) -> i64 {
    app.clock.now_ms().div_euclid(DAY) * DAY - days_ago * DAY
}

async fn post_usage(app: &TestApp, body: Value) {
    let r = app.post("/v1/usage", OWNER_TOKEN, body).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
}

fn item(key: &str, at: i64, code: &str, count: u32) -> Value {
    json!({"key_id": key, "minute": format_ms(at), "code": code, "count": count})
}

/// `(start, code, count)` of a usage answer.
fn points(body: &Value) -> Vec<(String, String, i64)> {
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["start"].as_str().unwrap().to_owned(),
                i["code"].as_str().unwrap().to_owned(),
                i["count"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn p(at: i64, code: &str, count: i64) -> (String, String, i64) {
    (format_ms(at), code.to_owned(), count)
}

async fn usage(app: &TestApp, path: &str, g: &str, from: i64, to: i64) -> Value {
    let r = app
        .get(
            &format!(
                "{path}/usage?granularity={g}&from={}&to={}",
                format_ms(from),
                format_ms(to)
            ),
            OWNER_TOKEN,
        )
        .await;
    assert_eq!(r.status, 200, "{g}: {:?}", r.body);
    r.body
}

async fn rollups_across_hour_and_day_boundaries(app: TestApp) {
    let pr = app.create_project("acme").await;
    let k = app.secret_key(pr["id"].as_str().unwrap()).await;
    let id = k["id"].as_str().unwrap();
    let d = midnight(&app, 3);
    // Two minutes of one hour of day d-1, then two hours of day d; seconds are truncated.
    post_usage(
        &app,
        json!({"items": [
            item(id, d - 2 * MIN, "valid", 2),
            item(id, d - MIN + 30_000, "valid", 3),
            item(id, d, "valid", 4),
            item(id, d + 30 * MIN, "rate_limited", 1),
            item(id, d + HOUR + 5 * MIN, "valid", 5),
        ]}),
    )
    .await;
    // A second report for the same buckets adds up.
    post_usage(
        &app,
        json!({"items": [item(id, d + HOUR + 5 * MIN, "valid", 10)]}),
    )
    .await;
    let path = format!("/v1/keys/{id}");
    let (from, to) = (d - DAY, d + DAY);

    let minutes = usage(&app, &path, "minute", from, to).await;
    assert_eq!(minutes["granularity"], "minute");
    assert_eq!(
        points(&minutes),
        vec![
            p(d - 2 * MIN, "valid", 2),
            p(d - MIN, "valid", 3),
            p(d, "valid", 4),
            p(d + 30 * MIN, "rate_limited", 1),
            p(d + HOUR + 5 * MIN, "valid", 15),
        ]
    );
    let hours = usage(&app, &path, "hour", from, to).await;
    assert_eq!(hours["granularity"], "hour");
    assert_eq!(
        points(&hours),
        vec![
            p(d - HOUR, "valid", 5),
            p(d, "rate_limited", 1),
            p(d, "valid", 4),
            p(d + HOUR, "valid", 15),
        ]
    );
    let days = usage(&app, &path, "day", from, to).await;
    assert_eq!(
        points(&days),
        vec![
            p(d - DAY, "valid", 5),
            p(d, "rate_limited", 1),
            p(d, "valid", 19),
        ]
    );
    for body in [&minutes, &hours, &days] {
        assert_eq!(body["totals"], json!({"valid": 24, "rate_limited": 1}));
        assert_eq!(body["to"], format_ms(to));
    }

    // `from` is rounded down to its bucket: a window from 00:30 still has the 00:00 hour.
    let part = usage(&app, &path, "hour", d + 30 * MIN, d + HOUR).await;
    assert_eq!(part["from"], format_ms(d));
    assert_eq!(
        points(&part),
        vec![
            p(d, "rate_limited", 1),
            p(d, "valid", 4),
            p(d + HOUR, "valid", 15),
        ]
    );
    assert_eq!(part["totals"], json!({"valid": 19, "rate_limited": 1}));
    // `to` bounds the bucket starts: the day of d-1 only.
    let first = usage(&app, &path, "day", d - DAY, d - 1).await;
    assert_eq!(points(&first), vec![p(d - DAY, "valid", 5)]);
    // Defaults: per minute, the 24 hours before now.
    let r = app.get(&format!("{path}/usage"), OWNER_TOKEN).await;
    assert_eq!(r.body["granularity"], "minute");
    assert_eq!(r.body["items"], json!([]));
    assert_eq!(r.body["totals"], json!({}));
}

async fn project_usage_sums_its_keys_only(app: TestApp) {
    let a = app.create_project("shop").await;
    let aid = a["id"].as_str().unwrap();
    let b = app.create_project("other").await;
    let bid = b["id"].as_str().unwrap();
    let k1 = app.secret_key(aid).await["id"].as_str().unwrap().to_owned();
    let k2 = app.secret_key(aid).await["id"].as_str().unwrap().to_owned();
    let k3 = app.secret_key(bid).await["id"].as_str().unwrap().to_owned();
    let d = midnight(&app, 1);
    post_usage(
        &app,
        json!({"items": [
            item(&k1, d + 10 * MIN, "valid", 1),
            item(&k2, d + 20 * MIN, "valid", 2),
            item(&k2, d + 20 * MIN, "ip_not_allowed", 7),
            item(&k1, d + HOUR, "valid", 4),
            item(&k3, d + 10 * MIN, "valid", 100),
            item(&k3, d + 10 * MIN, "unknown_key", 100),
        ]}),
    )
    .await;
    // A revoked key's past usage still counts for its project.
    let r = app
        .post(
            &format!("/v1/keys/{k2}/revoke"),
            OWNER_TOKEN,
            json!({"reason": "test"}),
        )
        .await;
    assert_eq!(r.status, 200);
    let path = format!("/v1/projects/{aid}");
    let hours = usage(&app, &path, "hour", d, d + DAY).await;
    assert_eq!(
        points(&hours),
        vec![
            p(d, "ip_not_allowed", 7),
            p(d, "valid", 3),
            p(d + HOUR, "valid", 4)
        ]
    );
    assert_eq!(hours["totals"], json!({"valid": 7, "ip_not_allowed": 7}));
    let minutes = usage(&app, &path, "minute", d, d + DAY).await;
    assert_eq!(
        points(&minutes),
        vec![
            p(d + 10 * MIN, "valid", 1),
            p(d + 20 * MIN, "ip_not_allowed", 7),
            p(d + 20 * MIN, "valid", 2),
            p(d + HOUR, "valid", 4),
        ]
    );
    let days = usage(&app, &path, "day", d, d + DAY).await;
    assert_eq!(
        points(&days),
        vec![p(d, "ip_not_allowed", 7), p(d, "valid", 7)]
    );
    let other = usage(&app, &format!("/v1/projects/{bid}"), "day", d, d + DAY).await;
    assert_eq!(other["totals"], json!({"valid": 100, "unknown_key": 100}));
    // A project without keys has no usage.
    let c = app.create_project("empty").await;
    let empty = usage(
        &app,
        &format!("/v1/projects/{}", c["id"].as_str().unwrap()),
        "day",
        d,
        d + DAY,
    )
    .await;
    assert_eq!(empty["items"], json!([]));
    let viewer = app.token("viewer").await;
    let r = app.get(&format!("{path}/usage"), &viewer).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}

async fn granularity_and_window_are_checked(app: TestApp) {
    let pr = app.create_project("acme").await;
    let pid = pr["id"].as_str().unwrap();
    let k = app.secret_key(pid).await;
    let kid = k["id"].as_str().unwrap();
    let to = midnight(&app, 0);
    for base in [format!("/v1/keys/{kid}"), format!("/v1/projects/{pid}")] {
        for (g, days, ok) in [
            ("minute", 31, true),
            ("minute", 32, false),
            ("hour", 366, true),
            ("hour", 367, false),
            ("day", 1830, true),
            ("day", 1831, false),
        ] {
            let r = app
                .get(
                    &format!(
                        "{base}/usage?granularity={g}&from={}&to={}",
                        format_ms(to - days * DAY),
                        format_ms(to)
                    ),
                    OWNER_TOKEN,
                )
                .await;
            if ok {
                assert_eq!(r.status, 200, "{base} {g} {days}: {:?}", r.body);
            } else {
                assert_eq!(r.status, 422, "{base} {g} {days}");
                assert_eq!(r.code(), "validation_failed");
                assert!(r.detail().starts_with("from:"), "{}", r.detail());
                assert!(r.detail().contains(g), "{}", r.detail());
            }
        }
        // Just over the limit (one millisecond) is refused too.
        let r = app
            .get(
                &format!(
                    "{base}/usage?from={}&to={}",
                    format_ms(to - 31 * DAY - 1),
                    format_ms(to)
                ),
                OWNER_TOKEN,
            )
            .await;
        assert_eq!(r.status, 422);
        for (query, field) in [
            ("granularity=week", "granularity:"),
            ("granularity=", "granularity:"),
            ("from=yesterday", "from:"),
            ("to=2026-13-01T00:00:00Z", "to:"),
            ("bucket=hour", "bucket:"),
        ] {
            let r = app.get(&format!("{base}/usage?{query}"), OWNER_TOKEN).await;
            assert_eq!(r.status, 422, "{query}: {:?}", r.body);
            assert!(r.detail().starts_with(field), "{query}: {}", r.detail());
        }
        let r = app
            .get(
                &format!(
                    "{base}/usage?granularity=day&from={}&to={}",
                    format_ms(to),
                    format_ms(to - 1)
                ),
                OWNER_TOKEN,
            )
            .await;
        assert_eq!(r.status, 422);
        assert!(r.detail().starts_with("from:"), "{}", r.detail());
    }
    let missing = "prj_01jd0000000000000000000000";
    let r = app
        .get(&format!("/v1/projects/{missing}/usage"), OWNER_TOKEN)
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.code(), "not_found");
}

async fn snapshot_version(app: &TestApp) -> String {
    let r = app.get("/v1/snapshot", OWNER_TOKEN).await;
    assert_eq!(r.status, 200);
    r.header("keygate-snapshot-version").unwrap()
}

fn updated_at(app: &TestApp, id: &str) -> i64 {
    let mut conn = app.state.pool.get().unwrap();
    api_keys::table
        .find(id)
        .select(api_keys::updated_at)
        .first(&mut *conn)
        .unwrap()
}

async fn last_used(app: &TestApp, id: &str) -> Value {
    let r = app.get(&format!("/v1/keys/{id}"), OWNER_TOKEN).await;
    assert_eq!(r.status, 200);
    r.body["last_used_at"].clone()
}

async fn last_used_moves_forward_on_valid_only(app: TestApp) {
    let pr = app.create_project("acme").await;
    let pid = pr["id"].as_str().unwrap();
    let k = app.secret_key(pid).await;
    let id = k["id"].as_str().unwrap();
    let other = app.secret_key(pid).await;
    let other_id = other["id"].as_str().unwrap();
    assert_eq!(last_used(&app, id).await, Value::Null);
    let version = snapshot_version(&app).await;
    let updated = updated_at(&app, id);
    let m = midnight(&app, 0) + 10 * HOUR;

    // Refusals are not uses.
    post_usage(
        &app,
        json!({"items": [
            item(id, m + HOUR, "rate_limited", 1),
            item(id, m + HOUR, "referrer_not_allowed", 1),
        ]}),
    )
    .await;
    assert_eq!(last_used(&app, id).await, Value::Null);

    // The latest valid minute of the report, truncated to the minute.
    post_usage(
        &app,
        json!({"items": [
            item(id, m - 5 * MIN, "valid", 1),
            item(id, m + 42_000, "valid", 1),
            item(id, m + 2 * HOUR, "quota_exceeded", 1),
        ]}),
    )
    .await;
    assert_eq!(last_used(&app, id).await, json!(format_ms(m)));
    // An older report does not move it back.
    post_usage(&app, json!({"items": [item(id, m - DAY, "valid", 9)]})).await;
    assert_eq!(last_used(&app, id).await, json!(format_ms(m)));
    post_usage(&app, json!({"items": [item(id, m + MIN, "valid", 1)]})).await;
    assert_eq!(last_used(&app, id).await, json!(format_ms(m + MIN)));
    // Only the reported key moves.
    assert_eq!(last_used(&app, other_id).await, Value::Null);

    // Usage is not a change: no new snapshot version, no `updated_at`, no audit entry.
    assert_eq!(snapshot_version(&app).await, version);
    assert_eq!(updated_at(&app, id), updated);
    let audit = app
        .get(&format!("/v1/audit?target_id={id}"), OWNER_TOKEN)
        .await;
    assert_eq!(
        audit.body["items"].as_array().unwrap().len(),
        1,
        "create only"
    );

    // Every key view carries it: list and the single key.
    let list = app
        .get(&format!("/v1/projects/{pid}/keys"), OWNER_TOKEN)
        .await;
    let listed = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id)
        .unwrap()
        .clone();
    assert_eq!(listed["last_used_at"], json!(format_ms(m + MIN)));
    // A rotation's new key starts unused.
    let r = app
        .post(
            &format!("/v1/keys/{id}/rotate"),
            OWNER_TOKEN,
            json!({"grace_seconds": 60}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["last_used_at"], Value::Null);
}

fn sighting(key: &str, kind: &str, value: &str, first: i64, last: i64, count: u32) -> Value {
    json!({"key_id": key, "kind": kind, "value": value, "first_seen": format_ms(first),
           "last_seen": format_ms(last), "count": count})
}

async fn sightings_merge_and_are_checked(app: TestApp) {
    let pr = app.create_project("acme").await;
    let k = app.secret_key(pr["id"].as_str().unwrap()).await;
    let id = k["id"].as_str().unwrap();
    let edge = app.token("edge").await;
    let t = midnight(&app, 0) + 8 * HOUR;
    let r = app
        .post(
            "/v1/usage",
            &edge,
            json!({"items": [item(id, t, "valid", 3)], "sightings": [
                sighting(id, "ip", "2001:DB8:0::1", t, t + 5_000, 2),
                sighting(id, "ip", "203.0.113.9", t + 1_000, t + 1_000, 1),
                sighting(id, "referrer", "HTTPS://Shop.Example.COM:443", t + 2_000, t + 3_000, 3),
            ]}),
        )
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.body, json!({"accepted": 1, "sightings": 3}));
    // A later report widens the window on both sides and adds the counts; one inside the
    // window only adds. The same value twice in one report merges too.
    post_usage(
        &app,
        json!({"items": [], "sightings": [
            sighting(id, "ip", "2001:db8::1", t - 60_000, t + 1_000, 4),
            sighting(id, "ip", "2001:db8::1", t + 2_000, t + 90_000, 1),
            sighting(id, "referrer", "https://shop.example.com", t + 2_500, t + 2_600, 5),
        ]}),
    )
    .await;
    let r = app
        .get(&format!("/v1/keys/{id}/sightings"), OWNER_TOKEN)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.body["items"],
        json!([
            {"kind": "referrer", "value": "https://shop.example.com",
             "first_seen_at": format_ms(t + 2_000), "last_seen_at": format_ms(t + 3_000), "count": 8},
            {"kind": "ip", "value": "203.0.113.9",
             "first_seen_at": format_ms(t + 1_000), "last_seen_at": format_ms(t + 1_000), "count": 1},
            {"kind": "ip", "value": "2001:db8::1",
             "first_seen_at": format_ms(t - 60_000), "last_seen_at": format_ms(t + 90_000), "count": 7},
        ])
    );
    let ips = app
        .get(
            &format!("/v1/keys/{id}/sightings?kind=ip&limit=1"),
            OWNER_TOKEN,
        )
        .await;
    assert_eq!(ips.status, 200, "{:?}", ips.body);
    assert_eq!(ips.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(ips.body["items"][0]["value"], "203.0.113.9");
    let refs = app
        .get(
            &format!("/v1/keys/{id}/sightings?kind=referrer"),
            OWNER_TOKEN,
        )
        .await;
    assert_eq!(refs.body["items"].as_array().unwrap().len(), 1);
    for (query, field) in [
        ("kind=email", "kind:"),
        ("limit=0", "limit:"),
        ("limit=1001", "limit:"),
        ("since=1", "since:"),
    ] {
        let r = app
            .get(&format!("/v1/keys/{id}/sightings?{query}"), OWNER_TOKEN)
            .await;
        assert_eq!(r.status, 422, "{query}");
        assert!(r.detail().starts_with(field), "{query}: {}", r.detail());
    }

    // Each invalid sighting is refused naming its field, and nothing of the report is kept.
    let long = format!("https://{}.example.com", "a".repeat(250));
    let bad: Vec<(Value, &str)> = vec![
        (
            sighting(id, "email", "a@b.c", t, t, 1),
            "sightings[0].kind:",
        ),
        (
            sighting(id, "ip", "999.1.1.1", t, t, 1),
            "sightings[0].value:",
        ),
        (sighting(id, "ip", "", t, t, 1), "sightings[0].value:"),
        (
            sighting(id, "referrer", "https://shop.example.com/cart", t, t, 1),
            "sightings[0].value:",
        ),
        (
            sighting(id, "referrer", "shop.example.com", t, t, 1),
            "sightings[0].value:",
        ),
        (
            sighting(id, "referrer", "ftp://shop.example.com", t, t, 1),
            "sightings[0].value:",
        ),
        (
            sighting(id, "referrer", &long, t, t, 1),
            "sightings[0].value:",
        ),
        (
            sighting(id, "ip", "10.0.0.1", t, t, 0),
            "sightings[0].count:",
        ),
        (
            sighting(id, "ip", "10.0.0.1", t, t - 1, 1),
            "sightings[0].last_seen:",
        ),
        (
            sighting("", "ip", "10.0.0.1", t, t, 1),
            "sightings[0].key_id:",
        ),
        (
            json!({"key_id": id, "kind": "ip", "value": "10.0.0.1", "first_seen": "yesterday",
                   "last_seen": format_ms(t), "count": 1}),
            "sightings[0].first_seen:",
        ),
        (
            json!({"key_id": id, "kind": "ip", "value": "10.0.0.1", "first_seen": format_ms(t),
                   "last_seen": format_ms(t), "count": 1, "asn": 13335}),
            "sightings[0].asn:",
        ),
    ];
    for (s, field) in bad {
        let r = app
            .post(
                "/v1/usage",
                &edge,
                json!({"items": [item(id, t, "valid", 1000)], "sightings": [s]}),
            )
            .await;
        assert_eq!(r.status, 422, "{field}: {:?}", r.body);
        assert_eq!(r.code(), "validation_failed");
        assert!(r.detail().starts_with(field), "{field}: {}", r.detail());
    }
    let many: Vec<Value> = (0..5001)
        .map(|i| sighting(id, "ip", &format!("10.0.{}.{}", i / 256, i % 256), t, t, 1))
        .collect();
    let r = app
        .post("/v1/usage", &edge, json!({"items": [], "sightings": many}))
        .await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert!(r.detail().starts_with("sightings:"), "{}", r.detail());
    let minutes = usage(&app, &format!("/v1/keys/{id}"), "minute", t, t + HOUR).await;
    assert_eq!(
        minutes["totals"],
        json!({"valid": 3}),
        "refused reports add nothing"
    );
    let after = app
        .get(&format!("/v1/keys/{id}/sightings"), OWNER_TOKEN)
        .await;
    assert_eq!(after.body["items"].as_array().unwrap().len(), 3);
    // The largest report (5000 sightings) fits the body limit and is accepted.
    let most: Vec<Value> = (0..5000)
        .map(|i| sighting(id, "ip", &format!("10.1.{}.{}", i / 256, i % 256), t, t, 1))
        .collect();
    let r = app
        .post("/v1/usage", &edge, json!({"items": [], "sightings": most}))
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
}

/// Retention shorter than the defaults, to show the configuration reaches the job.
async fn prune_removes_only_rows_past_their_retention(backend: Backend) {
    let app = spawn_with(backend, |c| {
        c.usage_minute_retention_days = 2;
        c.usage_hour_retention_days = 10;
        c.usage_day_retention_days = 100;
        c.sighting_retention_days = 5;
    })
    .await;
    let pr = app.create_project("acme").await;
    let k = app.secret_key(pr["id"].as_str().unwrap()).await;
    let id = k["id"].as_str().unwrap();
    let now = midnight(&app, 0) + 12 * HOUR;
    // Each posted minute lands in all three tables.
    let at = [
        now - 100 * DAY,             // every table: gone (its day starts before the cutoff)
        now - 100 * DAY + 12 * HOUR, // day kept: its day starts after the cutoff
        now - 10 * DAY - HOUR,       // hour gone, day kept
        now - 10 * DAY,              // hour kept
        now - 2 * DAY - MIN,         // minute gone, hour kept
        now - 2 * DAY,               // minute kept: exactly at the cutoff
        now - MIN,
    ];
    let items: Vec<Value> = at.iter().map(|t| item(id, *t, "valid", 1)).collect();
    post_usage(
        &app,
        json!({"items": items, "sightings": [
            sighting(id, "ip", "10.0.0.1", now - 30 * DAY, now - 5 * DAY - 1, 1),
            sighting(id, "ip", "10.0.0.2", now - 30 * DAY, now - 5 * DAY, 1),
            sighting(id, "referrer", "https://a.example", now - HOUR, now - HOUR, 1),
        ]}),
    )
    .await;
    let starts = |body: &Value| -> BTreeSet<String> {
        points(body).into_iter().map(|(s, _, _)| s).collect()
    };
    let set = |ts: &[i64]| -> BTreeSet<String> { ts.iter().map(|t| format_ms(*t)).collect() };
    let path = format!("/v1/keys/{id}");
    let before = usage(&app, &path, "minute", now - 31 * DAY, now).await;
    assert_eq!(starts(&before).len(), 5, "minutes before pruning");

    prune_tick(&app.state, now).unwrap();

    let minutes = usage(&app, &path, "minute", now - 31 * DAY, now).await;
    assert_eq!(starts(&minutes), set(&[now - 2 * DAY, now - MIN]));
    let hours = usage(&app, &path, "hour", now - 366 * DAY, now).await;
    assert_eq!(
        starts(&hours),
        set(&[
            now - 10 * DAY,
            now - 2 * DAY - HOUR,
            now - 2 * DAY,
            now - HOUR
        ])
    );
    let day_of = |t: i64| t.div_euclid(DAY) * DAY;
    let days = usage(&app, &path, "day", now - 1830 * DAY, now).await;
    assert_eq!(
        starts(&days),
        set(&[
            day_of(now - 100 * DAY + 12 * HOUR),
            day_of(now - 10 * DAY - HOUR),
            day_of(now - 2 * DAY),
            day_of(now),
        ])
    );
    let s = app
        .get(&format!("/v1/keys/{id}/sightings"), OWNER_TOKEN)
        .await;
    let values: BTreeSet<&str> = s.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["value"].as_str().unwrap())
        .collect();
    assert_eq!(values, BTreeSet::from(["10.0.0.2", "https://a.example"]));
    // A second run finds nothing more to delete.
    prune_tick(&app.state, now).unwrap();
    let again = usage(&app, &path, "hour", now - 366 * DAY, now).await;
    assert_eq!(starts(&again).len(), 4);
}

mod prune_removes_only_rows_past_their_retention {
    use crate::helpers::Backend;

    #[actix_web::test]
    async fn sqlite() {
        super::prune_removes_only_rows_past_their_retention(Backend::Sqlite).await;
    }

    #[actix_web::test]
    #[ignore = "needs PostgreSQL at KEYGATE_TEST_POSTGRES_URL; `cargo xtask test` runs it"]
    async fn postgres() {
        super::prune_removes_only_rows_past_their_retention(Backend::Postgres).await;
    }
}
