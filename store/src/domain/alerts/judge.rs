//! The judgment of one rule for one key: a pure function of the figures gathered from the
//! database ([`Observed`]), the rule's settings and `now`, so every threshold and message is
//! tested without a database.

use keygate_shared::QuotaPeriod;

use super::{Rule, RuleSettings, DAY_MS, HOUR_MS, MINUTE_MS, MIN_BASELINE_MS, SPIKE_MIN_REQUESTS};

/// What a rule found.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// One line.
    pub summary: String,
    /// Evidence.
    pub details: serde_json::Value,
}

/// The figures one rule needs about one key over the rule's window, as gathered from the
/// database. Which variant a rule gets is fixed by the rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    /// The rule does not apply to this key (an IP rule for a publishable key, a test-key rule
    /// for a live key, a quota rule for a key without a quota, ...).
    NotApplicable,
    /// `new_ips` and `new_referrers`: values first seen in the window, and a sample of them.
    NewValues {
        /// How many.
        count: i64,
        /// The newest few.
        sample: Vec<String>,
    },
    /// `rejections`: refusals in the window.
    Rejections {
        /// `referrer_not_allowed` verdicts.
        referrer: i64,
        /// `ip_not_allowed` verdicts.
        ip: i64,
    },
    /// `traffic_spike`: requests in the window against the whole hours of history before it.
    Traffic {
        /// Requests in the window.
        recent: i64,
        /// Requests in the baseline span.
        baseline: i64,
        /// Length of the baseline span.
        baseline_span_ms: i64,
    },
    /// `test_key_on_live`: times this test key was presented on a live host in the window.
    TestKeyOnLive {
        /// `environment_not_allowed` verdicts.
        refused: i64,
    },
    /// `near_quota`: valid requests counted in the current quota period.
    QuotaUse {
        /// Used so far.
        used: i64,
        /// The quota.
        limit: i64,
        /// Its period.
        period: QuotaPeriod,
    },
    /// `near_expiry`: a live, unrotated key's expiry.
    Expiry {
        /// When it expires (ms).
        expires_at: i64,
    },
}

/// Whether `rule` fires on `observed`, and with what explanation.
pub fn judge(rule: Rule, s: RuleSettings, observed: &Observed, now: i64) -> Option<Finding> {
    let window_ms = s.window_seconds * 1000;
    let win = window_text(s.window_seconds);
    match *observed {
        Observed::NotApplicable => None,
        Observed::NewValues { count, ref sample } => {
            let what = if rule == Rule::NewIps {
                "client IPs"
            } else {
                "referrer origins"
            };
            (count >= s.threshold).then(|| Finding {
                summary: format!(
                    "Used from {count} {what} never seen before for this key in {win} (threshold {}), including {}.",
                    s.threshold,
                    sample.join(", ")
                ),
                details: serde_json::json!({
                    "new_values": count,
                    "sample": sample,
                    "threshold": s.threshold,
                    "window_seconds": s.window_seconds,
                }),
            })
        }
        Observed::Rejections { referrer, ip } => {
            let total = referrer + ip;
            (total >= s.threshold).then(|| Finding {
                summary: format!(
                    "{total} requests refused in {win} ({referrer} referrer_not_allowed, {ip} ip_not_allowed; threshold {}): someone is trying the key from where it may not be used.",
                    s.threshold
                ),
                details: serde_json::json!({
                    "referrer_not_allowed": referrer,
                    "ip_not_allowed": ip,
                    "threshold": s.threshold,
                    "window_seconds": s.window_seconds,
                }),
            })
        }
        Observed::Traffic {
            recent,
            baseline,
            baseline_span_ms,
        } => spike_ratio(recent, baseline, baseline_span_ms, window_ms, s.threshold).map(
            |ratio| {
                let per_window = baseline as f64 * window_ms as f64 / baseline_span_ms as f64;
                Finding {
                    summary: format!(
                        "{recent} requests in {win}, {ratio:.0} times the key's usual {per_window:.1} (threshold {}x).",
                        s.threshold
                    ),
                    details: serde_json::json!({
                        "requests": recent,
                        "baseline_per_window": per_window,
                        "ratio": ratio,
                        "baseline_hours": baseline_span_ms / HOUR_MS,
                        "threshold": s.threshold,
                        "window_seconds": s.window_seconds,
                    }),
                }
            },
        ),
        Observed::TestKeyOnLive { refused: n } => (n >= s.threshold).then(|| Finding {
            summary: format!(
                "This test key was presented {n} times on live hosts in {win}: test keys often end up in code that ships."
            ),
            details: serde_json::json!({
                "environment_not_allowed": n,
                "threshold": s.threshold,
                "window_seconds": s.window_seconds,
            }),
        }),
        Observed::QuotaUse {
            used,
            limit,
            period,
        } => {
            let percent = used.saturating_mul(100) / limit.max(1);
            (percent >= s.threshold).then(|| Finding {
                summary: format!(
                    "Used {used} of its {limit} quota this {} ({percent}%, threshold {}%).",
                    period_text(period),
                    s.threshold
                ),
                details: serde_json::json!({
                    "used": used,
                    "limit": limit,
                    "period": period,
                    "percent": percent,
                    "threshold": s.threshold,
                }),
            })
        }
        Observed::Expiry { expires_at } => {
            if expires_at <= now {
                return None;
            }
            let left = expires_at - now;
            (left <= s.threshold * DAY_MS).then(|| Finding {
                summary: format!(
                    "Expires on {} ({} left; threshold {}).",
                    crate::timefmt::format_ms(expires_at),
                    duration_text(left),
                    plural(s.threshold, "day")
                ),
                details: serde_json::json!({
                    "expires_at": crate::timefmt::format_ms(expires_at),
                    "threshold": s.threshold,
                }),
            })
        }
    }
}

/// The `traffic_spike` decision: `recent` requests in the window against `baseline_total`
/// requests over `baseline_span_ms` of history before it. Returns the ratio when it fires.
pub fn spike_ratio(
    recent: i64,
    baseline_total: i64,
    baseline_span_ms: i64,
    window_ms: i64,
    factor: i64,
) -> Option<f64> {
    if baseline_span_ms < MIN_BASELINE_MS || recent < SPIKE_MIN_REQUESTS || window_ms <= 0 {
        return None;
    }
    // A quiet key's baseline is at least one request per window, so "10x" of nothing is
    // still ten requests, not any request at all.
    let per_window = (baseline_total as f64 * window_ms as f64 / baseline_span_ms as f64).max(1.0);
    let ratio = recent as f64 / per_window;
    (ratio >= factor as f64).then_some(ratio)
}

fn window_text(seconds: i64) -> String {
    match seconds {
        s if s % 86_400 == 0 => plural(s / 86_400, "day"),
        s if s % 3600 == 0 => plural(s / 3600, "hour"),
        s if s % 60 == 0 => plural(s / 60, "minute"),
        s => plural(s, "second"),
    }
}

fn plural(n: i64, unit: &str) -> String {
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

fn period_text(p: QuotaPeriod) -> &'static str {
    match p {
        QuotaPeriod::Day => "day",
        QuotaPeriod::Month => "month",
        QuotaPeriod::Total => "lifetime",
    }
}

fn duration_text(ms: i64) -> String {
    if ms >= DAY_MS {
        plural(ms / DAY_MS, "day")
    } else if ms >= HOUR_MS {
        plural(ms / HOUR_MS, "hour")
    } else {
        plural((ms / MINUTE_MS).max(1), "minute")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(threshold: i64, window_seconds: i64) -> RuleSettings {
        RuleSettings {
            enabled: true,
            threshold,
            window_seconds,
            auto_revoke: false,
        }
    }

    #[test]
    fn spikes_need_history_volume_and_the_factor() {
        let hour = HOUR_MS;
        // 7 days at 10 per hour, then 1000 in an hour: 100x.
        assert_eq!(
            spike_ratio(1000, 7 * 24 * 10, 7 * DAY_MS, hour, 10).map(f64::round),
            Some(100.0)
        );
        // 5x is under a 10x threshold.
        assert_eq!(spike_ratio(500, 7 * 24 * 100, 7 * DAY_MS, hour, 10), None);
        // Under a day of history: no judgement.
        assert_eq!(spike_ratio(100_000, 10, 12 * hour, hour, 10), None);
        // Too little traffic to matter, whatever the ratio.
        assert_eq!(spike_ratio(99, 0, 7 * DAY_MS, hour, 10), None);
        // A silent key: the baseline counts as one per window.
        assert!(spike_ratio(100, 0, 7 * DAY_MS, hour, 10).is_some());
    }

    #[test]
    fn counting_rules_fire_at_their_threshold_and_not_below() {
        let s = settings(5, 3600);
        let new = |count| Observed::NewValues {
            count,
            sample: vec!["203.0.113.7".to_owned()],
        };
        assert_eq!(judge(Rule::NewIps, s, &new(4), 0), None);
        let f = judge(Rule::NewIps, s, &new(5), 0).expect("fires at the threshold");
        assert!(f.summary.contains("5 client IPs") && f.summary.contains("1 hour"));
        assert!(f.summary.contains("203.0.113.7"), "{}", f.summary);
        let f = judge(Rule::NewReferrers, s, &new(9), 0).expect("fires above");
        assert!(f.summary.contains("referrer origins"), "{}", f.summary);

        let rej = |referrer, ip| Observed::Rejections { referrer, ip };
        assert_eq!(judge(Rule::Rejections, s, &rej(2, 2), 0), None);
        let f = judge(Rule::Rejections, s, &rej(3, 2), 0).expect("the two kinds add up");
        assert_eq!(f.details["referrer_not_allowed"], 3);
        assert_eq!(f.details["ip_not_allowed"], 2);

        let live = |refused| Observed::TestKeyOnLive { refused };
        assert_eq!(judge(Rule::TestKeyOnLive, s, &live(4), 0), None);
        assert!(judge(Rule::TestKeyOnLive, s, &live(5), 0).is_some());
    }

    #[test]
    fn a_spike_is_judged_against_the_keys_own_baseline() {
        let s = settings(10, 3600);
        let traffic = |recent, baseline| Observed::Traffic {
            recent,
            baseline,
            baseline_span_ms: 7 * DAY_MS,
        };
        // 10 an hour for a week, then 1,000 in the hour.
        let f = judge(Rule::TrafficSpike, s, &traffic(1000, 7 * 24 * 10), 0).expect("100x");
        assert!(
            f.summary.starts_with("1000 requests in 1 hour, 100 times"),
            "{}",
            f.summary
        );
        assert_eq!(f.details["baseline_hours"], 7 * 24);
        // The same burst on a key that always has 500 an hour is normal.
        assert_eq!(
            judge(Rule::TrafficSpike, s, &traffic(1000, 7 * 24 * 500), 0),
            None
        );
    }

    #[test]
    fn quota_and_expiry_warn_within_their_margin() {
        let s = settings(80, 0);
        let quota = |used| Observed::QuotaUse {
            used,
            limit: 1000,
            period: QuotaPeriod::Month,
        };
        assert_eq!(judge(Rule::NearQuota, s, &quota(799), 0), None);
        let f = judge(Rule::NearQuota, s, &quota(800), 0).expect("80% of the quota");
        assert_eq!(
            f.summary,
            "Used 800 of its 1000 quota this month (80%, threshold 80%)."
        );

        let s = settings(7, 0);
        let now = 1_800_000_000_000;
        let expiry = |in_ms| Observed::Expiry {
            expires_at: now + in_ms,
        };
        assert_eq!(judge(Rule::NearExpiry, s, &expiry(8 * DAY_MS), now), None);
        let f = judge(Rule::NearExpiry, s, &expiry(2 * HOUR_MS), now).expect("within 7 days");
        assert!(
            f.summary.contains("(2 hours left; threshold 7 days)"),
            "{}",
            f.summary
        );
        // Already expired: nothing left to warn of.
        assert_eq!(judge(Rule::NearExpiry, s, &expiry(0), now), None);
        assert_eq!(
            judge(Rule::NearExpiry, s, &Observed::NotApplicable, now),
            None
        );
    }

    #[test]
    fn windows_read_naturally() {
        assert_eq!(window_text(600), "10 minutes");
        assert_eq!(window_text(3600), "1 hour");
        assert_eq!(window_text(86_400), "1 day");
        assert_eq!(window_text(90), "90 seconds");
    }
}
