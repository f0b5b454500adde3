//! `evaluate`: the order of its checks, route scopes, limits with counters here or elsewhere,
//! and lazily loaded shards.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use core::net::IpAddr;
use core::num::{NonZeroU32, NonZeroU64};

use common::{key, project, record, route, DAY, HOUR, T0};
use keygate_shared::snapshot::{shard_index, verify_snapshot};
use keygate_shared::{
    admit, evaluate, Code, DefaultRoutePolicy, Environment, EnvironmentRule, Evaluation, IpNet,
    KeyRecord, Kind, LimitState, MemoryView, PlaintextKey, ProjectPolicy, Quota, QuotaPeriod,
    RateLimit, ReferrerPattern, RequestFacts, Scope, SnapshotIndex, TrustedKeys, Verdict,
};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn rate(limit: u32, period_seconds: u32) -> Option<RateLimit> {
    Some(RateLimit {
        limit: NonZeroU32::new(limit).expect("nz"),
        period_seconds: NonZeroU32::new(period_seconds).expect("nz"),
    })
}

fn quota(limit: u64, period: QuotaPeriod) -> Option<Quota> {
    Some(Quota {
        limit: NonZeroU64::new(limit).expect("nz"),
        period,
    })
}

fn routes() -> Vec<keygate_shared::Route> {
    vec![
        route(&["GET", "HEAD"], "/orders/*", "orders:read"),
        route(&["POST", "PUT", "DELETE"], "/orders/*", "orders:write"),
        route(&["*"], "/orders/export", "orders:export"),
        route(&["*"], "/admin/*", "admin"),
    ]
}

fn view_with(records: Vec<KeyRecord>, default: DefaultRoutePolicy) -> MemoryView {
    MemoryView::new(vec![project("proj_1", routes(), default)], records)
}

#[allow(clippy::panic)] // A test helper: a wrong kind of evaluation fails the test.
fn done(e: Evaluation<'_>) -> Verdict<'_> {
    match e {
        Evaluation::Done(v) => v,
        other => panic!("expected a verdict, got {other:?}"),
    }
}

fn code_of(view: &MemoryView, facts: &RequestFacts<'_>, now: i64) -> Code {
    done(evaluate(view, facts, now, Some(&mut LimitState::default()))).code
}

/// A key that fails every check from status onwards: revoked, expired, test-only, restricted
/// to a referrer and a network that the request does not come from, without the route's scope,
/// and out of rate limit and quota.
struct Everything {
    key: PlaintextKey,
    record: KeyRecord,
}

fn everything_wrong() -> Everything {
    let k = key("acme", Kind::Publishable, Environment::Test, 1);
    let mut r = record(&k, "key_all");
    r.kind = Kind::Publishable;
    r.environment = Environment::Test;
    r.revoked = true;
    r.expires_at_ms = Some(T0 - 1);
    r.referrers = vec![ReferrerPattern::decode("https://shop.example.com").expect("pattern")];
    r.ips = vec![IpNet::parse("203.0.113.0/24").expect("net")];
    r.scopes = vec![Scope::parse("orders:read").expect("scope")];
    r.rate_limit = rate(1, 60);
    r.quota = quota(1, QuotaPeriod::Total);
    Everything { key: k, record: r }
}

/// Facts that fail every request-side check for [`everything_wrong`].
fn bad_facts(key: &str) -> RequestFacts<'_> {
    RequestFacts {
        key: Some(key),
        origin: Some("https://evil.example.net"),
        referer: None,
        ip: Some(ip("198.51.100.1")),
        method: Some("POST"),
        path: Some("/orders/1"),
        environment: EnvironmentRule::Only(Environment::Live),
    }
}

#[test]
fn checks_run_in_contract_order() {
    let Everything {
        key: k,
        record: mut r,
    } = everything_wrong();
    let text = k.expose().to_owned();
    // Counters already spent: the next request would be both throttled and over quota.
    let spent = LimitState {
        rate_tat_ms: T0 + 60_000,
        quota_period_start_ms: 0,
        quota_used: 1,
        rate_tat_frac: 0,
    };
    let mut facts = bad_facts(&text);
    let expect = |r: &KeyRecord, facts: &RequestFacts<'_>, code: Code| {
        let view = view_with(vec![r.clone()], DefaultRoutePolicy::Allow);
        let mut state = spent;
        let v = done(evaluate(&view, facts, T0, Some(&mut state)));
        assert_eq!(v.code, code, "{r:?} {facts:?}");
        if code != Code::Valid {
            assert_eq!(state, spent, "a refusal must not touch the counters");
        }
        if !matches!(code, Code::RateLimited | Code::QuotaExceeded) {
            assert_eq!(v.limits, None);
        }
        // Found keys carry their record, so the edge can name the key in its logs.
        assert_eq!(v.record.map(|x| x.key_id.as_str()), Some("key_all"));
    };

    // Each step removes the failure that decided the step before.
    expect(&r, &facts, Code::RevokedKey);
    r.revoked = false;
    expect(&r, &facts, Code::ExpiredKey);
    r.expires_at_ms = Some(T0 + 1);
    expect(&r, &facts, Code::EnvironmentNotAllowed);
    facts.environment = EnvironmentRule::Only(Environment::Test);
    expect(&r, &facts, Code::ReferrerNotAllowed);
    facts.origin = Some("https://shop.example.com");
    expect(&r, &facts, Code::IpNotAllowed);
    facts.ip = Some(ip("203.0.113.9"));
    expect(&r, &facts, Code::InsufficientScope);
    facts.method = Some("GET");
    expect(&r, &facts, Code::RateLimited);
    r.rate_limit = None;
    expect(&r, &facts, Code::QuotaExceeded);
    r.quota = None;
    expect(&r, &facts, Code::Valid);
}

#[test]
fn checks_before_the_lookup() {
    let view = view_with(vec![], DefaultRoutePolicy::Allow);
    let none = RequestFacts::default();
    assert_eq!(code_of(&view, &none, T0), Code::MissingKey);
    for bad in ["", "acme", "acme_sk_live_short", "not a key at all"] {
        let facts = RequestFacts {
            key: Some(bad),
            ..RequestFacts::default()
        };
        assert_eq!(code_of(&view, &facts, T0), Code::MalformedKey, "{bad:?}");
    }
    // A key with a wrong checksum is malformed even when the real key exists.
    let k = key("acme", Kind::Secret, Environment::Live, 2);
    let view = view_with(vec![record(&k, "key_2")], DefaultRoutePolicy::Allow);
    let mut broken = k.expose().to_owned();
    let last = broken.pop().expect("char");
    broken.push(if last == '0' { '1' } else { '0' });
    let facts = RequestFacts {
        key: Some(&broken),
        ..RequestFacts::default()
    };
    assert_eq!(code_of(&view, &facts, T0), Code::MalformedKey);
    // A well-formed stranger is unknown, with no record.
    let stranger = key("acme", Kind::Secret, Environment::Live, 3);
    let facts = RequestFacts {
        key: Some(stranger.expose()),
        ..RequestFacts::default()
    };
    let v = done(evaluate(&view, &facts, T0, None));
    assert_eq!(v.code, Code::UnknownKey);
    assert!(v.record.is_none());
    // Malformed wins over everything else in the facts.
    let facts = RequestFacts {
        key: Some("acme_sk_live_x"),
        ..bad_facts("")
    };
    assert_eq!(code_of(&view, &facts, T0), Code::MalformedKey);
}

#[test]
fn expiry_is_exclusive_of_the_instant() {
    let k = key("acme", Kind::Secret, Environment::Live, 4);
    let mut r = record(&k, "key_4");
    r.expires_at_ms = Some(T0);
    let view = view_with(vec![r], DefaultRoutePolicy::Allow);
    let facts = RequestFacts {
        key: Some(k.expose()),
        ..RequestFacts::default()
    };
    assert_eq!(code_of(&view, &facts, T0 - 1), Code::Valid);
    assert_eq!(code_of(&view, &facts, T0), Code::ExpiredKey);
    assert_eq!(code_of(&view, &facts, T0 + DAY), Code::ExpiredKey);
}

#[test]
fn ip_restrictions() {
    let k = key("acme", Kind::Secret, Environment::Live, 5);
    let mut r = record(&k, "key_5");
    r.ips = vec![
        IpNet::parse("203.0.113.0/24").expect("net"),
        IpNet::parse("2001:db8::/32").expect("net"),
    ];
    let view = view_with(vec![r], DefaultRoutePolicy::Allow);
    let code = |addr: Option<&str>| {
        let facts = RequestFacts {
            key: Some(k.expose()),
            ip: addr.map(ip),
            ..RequestFacts::default()
        };
        code_of(&view, &facts, T0)
    };
    assert_eq!(code(Some("203.0.113.200")), Code::Valid);
    assert_eq!(code(Some("::ffff:203.0.113.200")), Code::Valid);
    assert_eq!(code(Some("2001:db8:ffff::1")), Code::Valid);
    assert_eq!(code(Some("203.0.114.1")), Code::IpNotAllowed);
    assert_eq!(code(Some("2001:db9::1")), Code::IpNotAllowed);
    // Restricted key, unknown client address: refused.
    assert_eq!(code(None), Code::IpNotAllowed);
}

#[test]
fn referrer_restrictions_through_evaluate() {
    let k = key("acme", Kind::Publishable, Environment::Live, 6);
    let mut r = record(&k, "key_6");
    r.kind = Kind::Publishable;
    r.referrers = vec![
        ReferrerPattern::decode("https://shop.example.com/checkout/*").expect("pattern"),
        ReferrerPattern::decode("*.example.org").expect("pattern"),
    ];
    let view = view_with(vec![r], DefaultRoutePolicy::Allow);
    let code = |origin: Option<&str>, referer: Option<&str>| {
        let facts = RequestFacts {
            key: Some(k.expose()),
            origin,
            referer,
            ..RequestFacts::default()
        };
        code_of(&view, &facts, T0)
    };
    assert_eq!(code(None, None), Code::ReferrerNotAllowed);
    assert_eq!(code(Some("https://a.example.org"), None), Code::Valid);
    assert_eq!(
        code(Some("https://example.org"), None),
        Code::ReferrerNotAllowed
    );
    assert_eq!(
        code(None, Some("https://shop.example.com/checkout/pay")),
        Code::Valid
    );
    assert_eq!(
        code(Some("https://shop.example.com"), None),
        Code::ReferrerNotAllowed
    );
    assert_eq!(
        code(
            Some("https://shop.example.com"),
            Some("https://shop.example.com/checkout/")
        ),
        Code::Valid
    );
}

#[test]
fn route_scopes() {
    let k = key("acme", Kind::Secret, Environment::Live, 7);
    let mut r = record(&k, "key_7");
    r.scopes = vec![Scope::parse("orders:read").expect("scope")];
    for default in [DefaultRoutePolicy::Allow, DefaultRoutePolicy::Deny] {
        let view = view_with(vec![r.clone()], default);
        let code = |method: Option<&str>, path: Option<&str>| {
            let facts = RequestFacts {
                key: Some(k.expose()),
                method,
                path,
                ..RequestFacts::default()
            };
            code_of(&view, &facts, T0)
        };
        let unrouted = match default {
            DefaultRoutePolicy::Allow => Code::Valid,
            DefaultRoutePolicy::Deny => Code::InsufficientScope,
        };
        assert_eq!(code(Some("GET"), Some("/orders/1")), Code::Valid);
        assert_eq!(code(Some("get"), Some("/orders/1")), Code::Valid);
        assert_eq!(code(Some("HEAD"), Some("/orders")), Code::Valid);
        assert_eq!(
            code(Some("POST"), Some("/orders/1")),
            Code::InsufficientScope
        );
        // The more specific route wins even though the key holds the broader one's scope.
        assert_eq!(
            code(Some("GET"), Some("/orders/export")),
            Code::InsufficientScope
        );
        assert_eq!(code(Some("GET"), Some("/admin/")), Code::InsufficientScope);
        // A route that names other methods does not cover this one.
        assert_eq!(code(Some("PATCH"), Some("/orders/1")), unrouted);
        assert_eq!(code(Some("GET"), Some("/users")), unrouted);
        assert_eq!(code(Some("GET"), Some("/ordersx")), unrouted);
        // Without both method and path there is no route check.
        assert_eq!(code(None, Some("/admin/x")), Code::Valid);
        assert_eq!(code(Some("GET"), None), Code::Valid);
    }
    // More scopes, more routes.
    r.scopes.push(Scope::parse("orders:export").expect("scope"));
    r.scopes.push(Scope::parse("admin").expect("scope"));
    let view = view_with(vec![r.clone()], DefaultRoutePolicy::Deny);
    for (m, p) in [("GET", "/orders/export"), ("DELETE", "/admin/users/1")] {
        let facts = RequestFacts {
            key: Some(k.expose()),
            method: Some(m),
            path: Some(p),
            ..RequestFacts::default()
        };
        assert_eq!(code_of(&view, &facts, T0), Code::Valid, "{m} {p}");
    }
    // Scopes compare literally: `orders:read` is not `orders`.
    let view = MemoryView::new(
        vec![project(
            "proj_1",
            vec![route(&["*"], "/x", "orders")],
            DefaultRoutePolicy::Allow,
        )],
        vec![r.clone()],
    );
    let facts = RequestFacts {
        key: Some(k.expose()),
        method: Some("GET"),
        path: Some("/x"),
        ..RequestFacts::default()
    };
    assert_eq!(code_of(&view, &facts, T0), Code::InsufficientScope);
    // A key whose project is missing from the snapshot passes no route check.
    let orphan = MemoryView::new(Vec::<ProjectPolicy>::new(), vec![r]);
    assert_eq!(code_of(&orphan, &facts, T0), Code::InsufficientScope);
    let no_route = RequestFacts {
        key: Some(k.expose()),
        ..RequestFacts::default()
    };
    assert_eq!(code_of(&orphan, &no_route, T0), Code::Valid);
}

/// Evaluates `requests` twice: with counters inside `evaluate`, and with `NeedsCounters`
/// finished by `admit` on counters kept elsewhere. Both must agree at every step.
#[allow(clippy::panic)] // A test helper: a wrong kind of evaluation fails the test.
fn both_ways(r: &KeyRecord, k: &PlaintextKey, times: &[i64]) -> (Vec<(Code, u64)>, LimitState) {
    let view = view_with(vec![r.clone()], DefaultRoutePolicy::Allow);
    let facts = RequestFacts {
        key: Some(k.expose()),
        ..RequestFacts::default()
    };
    let mut inline = LimitState::default();
    let mut remote = LimitState::default();
    let mut out = Vec::new();
    for &now in times {
        let a = done(evaluate(&view, &facts, now, Some(&mut inline)));
        let b = match evaluate(&view, &facts, now, None) {
            Evaluation::NeedsCounters(pending) => {
                assert_eq!(pending.record().key_id, r.key_id);
                let limits = pending.limits();
                assert_eq!(limits.rate_limit, r.rate_limit);
                assert_eq!(limits.quota, r.quota);
                pending.finish(admit(&limits, &mut remote, now))
            }
            other => panic!("expected NeedsCounters, got {other:?}"),
        };
        assert_eq!(a, b, "at {now}");
        assert_eq!(inline, remote, "at {now}");
        let info = a.limits.expect("limits carry header values");
        out.push((a.code, info.remaining));
    }
    (out, inline)
}

#[test]
fn rate_limit_through_evaluate() {
    let k = key("acme", Kind::Secret, Environment::Live, 8);
    let mut r = record(&k, "key_8");
    r.rate_limit = rate(3, 1);
    let times = [T0, T0, T0, T0, T0 + 333, T0 + 334, T0 + 334, T0 + 1_000];
    let (codes, _) = both_ways(&r, &k, &times);
    use Code::{RateLimited as L, Valid as V};
    assert_eq!(
        codes,
        vec![
            (V, 2),
            (V, 1),
            (V, 0),
            (L, 0),
            // One token comes back every 333.3 ms.
            (L, 0),
            (V, 0),
            (L, 0),
            (V, 1),
        ]
    );
    // Header values on a refusal.
    let view = view_with(vec![r], DefaultRoutePolicy::Allow);
    let facts = RequestFacts {
        key: Some(k.expose()),
        ..RequestFacts::default()
    };
    let mut st = LimitState::default();
    for _ in 0..3 {
        done(evaluate(&view, &facts, T0, Some(&mut st)));
    }
    let v = done(evaluate(&view, &facts, T0, Some(&mut st)));
    let info = v.limits.expect("info");
    assert_eq!(v.code, Code::RateLimited);
    assert_eq!(info.limit, 3);
    assert_eq!(info.retry_after_seconds, Some(1));
    assert_eq!(info.reset_seconds, 1);
}

#[test]
fn quota_through_evaluate() {
    let k = key("acme", Kind::Secret, Environment::Live, 9);
    let mut r = record(&k, "key_9");
    r.quota = quota(3, QuotaPeriod::Day);
    let times = [T0, T0 + 1, T0 + HOUR, T0 + 2 * HOUR, T0 + DAY - 1, T0 + DAY];
    let (codes, state) = both_ways(&r, &k, &times);
    use Code::{QuotaExceeded as Q, Valid as V};
    assert_eq!(codes, vec![(V, 2), (V, 1), (V, 0), (Q, 0), (Q, 0), (V, 2)]);
    assert_eq!(state.quota_used, 1);
    assert_eq!(state.quota_period_start_ms, T0 + DAY);
}

#[test]
fn rate_limit_and_quota_together() {
    let k = key("acme", Kind::Secret, Environment::Live, 10);
    let mut r = record(&k, "key_10");
    r.rate_limit = rate(2, 60);
    r.quota = quota(3, QuotaPeriod::Month);
    let times = [
        T0,
        T0 + 1,
        T0 + 2,
        T0 + 3,
        T0 + 30_000,
        T0 + 30_001,
        T0 + 60_000,
        T0 + 120_000,
    ];
    let (codes, state) = both_ways(&r, &k, &times);
    let only_codes: Vec<Code> = codes.iter().map(|c| c.0).collect();
    use Code::{QuotaExceeded as Q, RateLimited as L, Valid as V};
    // Throttled requests spend no quota: the third success comes only when the rate allows.
    assert_eq!(only_codes, vec![V, V, L, L, V, L, Q, Q]);
    assert_eq!(state.quota_used, 3);
    // The header values describe the rate limit while there is one.
    assert_eq!(codes[0].1, 1);
}

#[test]
fn throttled_requests_spend_no_quota() {
    let k = key("acme", Kind::Secret, Environment::Live, 11);
    let mut r = record(&k, "key_11");
    r.rate_limit = rate(1, 60);
    r.quota = quota(5, QuotaPeriod::Total);
    let view = view_with(vec![r], DefaultRoutePolicy::Allow);
    let facts = RequestFacts {
        key: Some(k.expose()),
        ..RequestFacts::default()
    };
    let mut st = LimitState::default();
    assert_eq!(
        done(evaluate(&view, &facts, T0, Some(&mut st))).code,
        Code::Valid
    );
    for i in 1..50 {
        assert_eq!(
            done(evaluate(&view, &facts, T0 + i, Some(&mut st))).code,
            Code::RateLimited
        );
    }
    assert_eq!(st.quota_used, 1);
    // Four more successes, one a minute, then the quota is spent.
    for minute in 1..=4 {
        let v = done(evaluate(&view, &facts, T0 + minute * 60_000, Some(&mut st)));
        assert_eq!(v.code, Code::Valid, "minute {minute}");
    }
    assert_eq!(st.quota_used, 5);
    let before = st;
    let v = done(evaluate(&view, &facts, T0 + 5 * 60_000, Some(&mut st)));
    assert_eq!(v.code, Code::QuotaExceeded);
    // And a quota refusal spends no rate-limit token.
    assert_eq!(st, before);
}

#[test]
fn keys_without_limits_never_need_counters() {
    let k = key("acme", Kind::Secret, Environment::Live, 12);
    let view = view_with(vec![record(&k, "key_12")], DefaultRoutePolicy::Allow);
    let facts = RequestFacts {
        key: Some(k.expose()),
        ..RequestFacts::default()
    };
    let v = done(evaluate(&view, &facts, T0, None));
    assert_eq!(v.code, Code::Valid);
    assert_eq!(v.limits, None);
    let mut st = LimitState::default();
    let v = done(evaluate(&view, &facts, T0, Some(&mut st)));
    assert!(v.is_valid());
    assert_eq!(st, LimitState::default());
    // A key with limits that fails an earlier check is decided without counters.
    let Everything { key: k, record: r } = everything_wrong();
    let view = view_with(vec![r], DefaultRoutePolicy::Allow);
    let text = k.expose().to_owned();
    let v = done(evaluate(&view, &bad_facts(&text), T0, None));
    assert_eq!(v.code, Code::RevokedKey);
}

#[test]
fn needs_shard_until_the_shard_is_loaded() {
    let signer = common::signer(3);
    let keys: Vec<PlaintextKey> = (0..64)
        .map(|i| key("acme", Kind::Secret, Environment::Live, 100 + i))
        .collect();
    let records: Vec<KeyRecord> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let mut r = record(k, &format!("key_{i}"));
            if i == 0 {
                r.rate_limit = rate(10, 1);
            }
            r
        })
        .collect();
    let projects = vec![project("proj_1", routes(), DefaultRoutePolicy::Deny)];
    let (wire, shards) = common::snapshot(
        &signer,
        records,
        projects,
        Some(3),
        common::Window::default(),
    );
    let mut trusted = TrustedKeys::new();
    trusted.add(signer.verifying_key());
    let manifest = verify_snapshot(&wire, &trusted, None, T0).expect("verifies");
    let mut index = SnapshotIndex::new(manifest);

    let k = &keys[0];
    let want = shard_index(&k.hash(), 3);
    let facts = RequestFacts {
        key: Some(k.expose()),
        method: Some("GET"),
        path: Some("/unrouted"),
        ..RequestFacts::default()
    };
    let mut st = LimitState::default();
    match evaluate(&index, &facts, T0, Some(&mut st)) {
        Evaluation::NeedsShard(s) => assert_eq!(s, want),
        other => panic!("expected NeedsShard, got {other:?}"),
    }
    assert_eq!(st, LimitState::default());
    // A malformed key needs no shard.
    let malformed = RequestFacts {
        key: Some("acme_sk_live_nope"),
        ..RequestFacts::default()
    };
    assert_eq!(
        done(evaluate(&index, &malformed, T0, None)).code,
        Code::MalformedKey
    );
    // Loading another shard does not help.
    let other = (want + 1) % 8;
    index
        .load_shard(other, &shards.shards[other as usize].bytes)
        .expect("load");
    assert!(matches!(
        evaluate(&index, &facts, T0, None),
        Evaluation::NeedsShard(s) if s == want
    ));
    index
        .load_shard(want, &shards.shards[want as usize].bytes)
        .expect("load");
    assert!(index.is_loaded(want));
    assert_eq!(index.loaded_shards(), 2);
    // Now the project's policy applies (deny on an unrouted path)...
    assert_eq!(
        done(evaluate(&index, &facts, T0, Some(&mut st))).code,
        Code::InsufficientScope
    );
    // ...and a routed request reaches the counters.
    let facts = RequestFacts {
        path: Some("/orders/1"),
        ..facts
    };
    let mut full = index.clone();
    assert!(matches!(
        evaluate(&full, &facts, T0, None),
        Evaluation::Done(v) if v.code == Code::InsufficientScope
    ));
    let no_route = RequestFacts {
        method: None,
        path: None,
        ..facts
    };
    assert!(matches!(
        evaluate(&full, &no_route, T0, None),
        Evaluation::NeedsCounters(p) if p.record().key_id == "key_0"
    ));
    // A well-formed key that is not in its (loaded) shard is unknown.
    let mut stranger_n = 10_000;
    let stranger = loop {
        let s = key("acme", Kind::Secret, Environment::Live, stranger_n);
        if shard_index(&s.hash(), 3) == want {
            break s;
        }
        stranger_n += 1;
    };
    let facts = RequestFacts {
        key: Some(stranger.expose()),
        ..RequestFacts::default()
    };
    assert_eq!(
        done(evaluate(&full, &facts, T0, None)).code,
        Code::UnknownKey
    );
    // Loading every shard finds every key.
    for (i, s) in shards.shards.iter().enumerate() {
        full.load_shard(i as u32, &s.bytes).expect("load");
    }
    for (i, k) in keys.iter().enumerate().skip(1) {
        let facts = RequestFacts {
            key: Some(k.expose()),
            ..RequestFacts::default()
        };
        let v = done(evaluate(&full, &facts, T0, None));
        assert_eq!(v.code, Code::Valid);
        assert_eq!(v.record.map(|r| r.key_id.clone()), Some(format!("key_{i}")));
    }
}
