//! The usage buffer's accounting, caps and batching.
use super::*;

const T: i64 = 1_764_307_230_000; // 2025-11-28T05:20:30Z

fn caller<'a>(ip: &str, origin: Option<&'a str>, referer: Option<&'a str>) -> Caller<'a> {
    Caller {
        ip: ip.parse().ok(),
        origin,
        referer,
    }
}

fn sorted(mut b: Batch) -> Batch {
    b.items
        .sort_by_key(|i| (i.key_id.clone(), i.minute, i.code.as_str()));
    b.sightings
        .sort_by_key(|s| (s.key_id.clone(), s.kind as u8, s.value.clone()));
    b
}

#[test]
fn aggregates_and_flushes() {
    let mut b = UsageBuffer::default();
    let none = Caller::default();
    b.record("key_1", Code::Valid, &none, T);
    b.record("key_1", Code::Valid, &none, T + 1000);
    b.record("key_1", Code::RateLimited, &none, T + 2000);
    assert!(b.take_if_due(T + 5000, 10_000).is_none());
    let batch = sorted(b.take_if_due(T + 10_000, 10_000).expect("due"));
    assert_eq!(batch.items.len(), 2);
    assert!(batch.sightings.is_empty());
    let valid = batch
        .items
        .iter()
        .find(|i| i.code == Code::Valid)
        .expect("valid");
    assert_eq!(valid.count, 2);
    assert_eq!(valid.minute, 1_764_307_200_000);
    let json = serde_json::to_value(&batch).expect("json");
    assert_eq!(json["items"][0]["minute"], "2025-11-28T05:20:00Z");
    assert_eq!(json["items"][0]["code"], "rate_limited");
    assert_eq!(json["sightings"], serde_json::json!([]));
    assert!(json.get("dropped").is_none());
    b.restore(batch, T + 11_000);
    let again = b.take_if_due(T + 30_000, 10_000).expect("restored");
    assert_eq!(again.items.iter().map(|i| i.count).sum::<u64>(), 3);
    assert!(
        b.take_if_due(T + 60_000, 10_000).is_none(),
        "empty after take"
    );
}

#[test]
fn collects_ips_and_referrer_origins_per_key() {
    let mut b = UsageBuffer::default();
    let app = "https://Shop.Example.com";
    b.record(
        "key_1",
        Code::Valid,
        &caller("203.0.113.7", Some(app), None),
        T,
    );
    // Origin wins over Referer; a Referer alone is reduced to its origin.
    b.record(
        "key_1",
        Code::ReferrerNotAllowed,
        &caller("203.0.113.7", Some(app), Some("https://other.example/x")),
        T + 500,
    );
    b.record(
        "key_1",
        Code::Valid,
        &caller("2001:DB8::1", None, Some("http://localhost:3000/app?q=1")),
        T + 900,
    );
    // Unparseable values are skipped; the verdict still counts.
    b.record(
        "key_2",
        Code::Valid,
        &caller("not an ip", Some("null"), None),
        T + 100,
    );
    let batch = sorted(b.take_if_due(T + 10_000, 10_000).expect("due"));
    let got: Vec<_> = batch
        .sightings
        .iter()
        .map(|s| {
            (
                s.key_id.as_str(),
                s.kind,
                s.value.as_str(),
                s.first_seen,
                s.last_seen,
                s.count,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "key_1",
                SightingKind::Ip,
                "2001:db8::1",
                T + 900,
                T + 900,
                1
            ),
            ("key_1", SightingKind::Ip, "203.0.113.7", T, T + 500, 2),
            (
                "key_1",
                SightingKind::Referrer,
                "http://localhost:3000",
                T + 900,
                T + 900,
                1
            ),
            (
                "key_1",
                SightingKind::Referrer,
                "https://shop.example.com",
                T,
                T + 500,
                2
            ),
        ]
    );
    assert_eq!(batch.items.iter().map(|i| i.count).sum::<u64>(), 4);
    let json = serde_json::to_value(&batch).expect("json");
    assert_eq!(
        json["sightings"][1],
        serde_json::json!({"key_id": "key_1", "kind": "ip", "value": "203.0.113.7",
            "first_seen": "2025-11-28T05:20:30.000Z", "last_seen": "2025-11-28T05:20:30.500Z",
            "count": 2})
    );
}

#[test]
fn caps_distinct_values_per_key_and_kind() {
    let mut b = UsageBuffer::default();
    for i in 0..100u32 {
        let ip = format!("10.0.0.{i}");
        let origin = format!("https://s{i}.example.com");
        b.record("key_1", Code::Valid, &caller(&ip, Some(&origin), None), T);
    }
    // A value already held still counts once the set is full.
    b.record(
        "key_1",
        Code::Valid,
        &caller("10.0.0.0", Some("https://s0.example.com"), None),
        T + 1,
    );
    // Another key has its own sets.
    b.record("key_2", Code::Valid, &caller("10.0.0.99", None, None), T);
    let batch = b.take_if_due(T + 10_000, 10_000).expect("due");
    let of = |key: &str, kind: SightingKind| {
        batch
            .sightings
            .iter()
            .filter(|s| s.key_id == key && s.kind == kind)
            .count()
    };
    assert_eq!(of("key_1", SightingKind::Ip), MAX_VALUES_PER_KIND);
    assert_eq!(of("key_1", SightingKind::Referrer), MAX_VALUES_PER_KIND);
    assert_eq!(of("key_2", SightingKind::Ip), 1);
    assert_eq!(batch.dropped, 2 * (100 - MAX_VALUES_PER_KIND as u64));
    let first = batch
        .sightings
        .iter()
        .find(|s| s.value == "10.0.0.0")
        .expect("kept");
    assert_eq!((first.count, first.last_seen), (2, T + 1));
    // The next interval starts with empty sets.
    b.record(
        "key_1",
        Code::Valid,
        &caller("10.0.0.99", None, None),
        T + 20_000,
    );
    let next = b.take_if_due(T + 30_000, 10_000).expect("due");
    assert_eq!(next.sightings.len(), 1);
    assert_eq!(next.dropped, 0);
}

#[test]
fn restore_keeps_sightings_and_merges_them() {
    let mut b = UsageBuffer::default();
    b.record(
        "key_1",
        Code::Valid,
        &caller("10.0.0.1", Some("https://a.example"), None),
        T,
    );
    let failed = b.take_if_due(T + 10_000, 10_000).expect("due");
    // Meanwhile the same IP calls again, and a new one.
    b.record(
        "key_1",
        Code::Valid,
        &caller("10.0.0.1", None, None),
        T + 12_000,
    );
    b.record(
        "key_1",
        Code::Valid,
        &caller("10.0.0.2", None, None),
        T + 13_000,
    );
    b.restore(failed, T + 14_000);
    let batch = sorted(b.take_if_due(T + 30_000, 10_000).expect("due"));
    let got: Vec<_> = batch
        .sightings
        .iter()
        .map(|s| (s.value.as_str(), s.first_seen, s.last_seen, s.count))
        .collect();
    assert_eq!(
        got,
        vec![
            ("10.0.0.1", T, T + 12_000, 2),
            ("10.0.0.2", T + 13_000, T + 13_000, 1),
            ("https://a.example", T, T, 1),
        ]
    );
    assert_eq!(batch.items.iter().map(|i| i.count).sum::<u64>(), 3);
}

#[test]
fn a_flush_is_due_early_when_large_and_posts_are_bounded() {
    let mut b = UsageBuffer::default();
    let none = Caller::default();
    for i in 0..MAX_ROWS as i64 {
        b.record(&format!("key_{i}"), Code::Valid, &none, T);
    }
    let batch = b
        .take_if_due(T + 1, 10_000)
        .expect("large buffers flush early");
    assert_eq!(batch.items.len(), MAX_ROWS);
    // After failed posts pile up, each post still carries at most MAX_POST_ROWS rows.
    let mut pile = Batch::default();
    for i in 0..2500 {
        pile.items.push(UsageItem {
            key_id: format!("key_{i}"),
            minute: 0,
            code: Code::Valid,
            count: 1,
        });
    }
    b.restore(pile, T + 2);
    let mut total = 0;
    while let Some(batch) = b.take_if_due(T + 100_000, 10_000) {
        assert!(batch.items.len() <= MAX_POST_ROWS);
        total += batch.items.len();
    }
    assert_eq!(total, 2500);
}

#[test]
fn formats_rfc3339() {
    assert_eq!(rfc3339_ms(T + 7), "2025-11-28T05:20:30.007Z");
    assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
    let item = UsageItem {
        key_id: "k".into(),
        minute: 1_764_307_200_000,
        code: Code::Valid,
        count: 1,
    };
    assert_eq!(
        serde_json::to_value(&item).expect("json")["minute"],
        "2025-11-28T05:20:00Z"
    );
}
