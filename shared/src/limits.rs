//! Rate-limit and quota decisions. The counter state is an input: the edge keeps it in a
//! Durable Object per key, the control plane in memory for `/v1/verify`. Both call [`admit`].
//!
//! Rate limits use GCRA (a token bucket of `limit` tokens refilled over `period_seconds`): one
//! timestamp of state, exact across isolates when one Durable Object owns it. Quotas count
//! successful requests per UTC day, UTC month or in total. A throttled request spends no quota,
//! and a request refused by its quota spends no rate-limit token.

use serde::{Deserialize, Serialize};

use crate::policy::{Quota, QuotaPeriod, RateLimit};

/// What `Retry-After` says for an exhausted `total` quota, which never resets: one year.
pub const TOTAL_QUOTA_RETRY_SECONDS: u64 = 365 * 86_400;

/// Counter state of one key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitState {
    /// GCRA theoretical arrival time, Unix milliseconds (whole part).
    pub rate_tat_ms: i64,
    /// Start of the quota period that `quota_used` counts, Unix milliseconds.
    pub quota_period_start_ms: i64,
    /// Successful requests counted in that period.
    pub quota_used: u64,
    /// The sub-millisecond part of the theoretical arrival time, in units of `1/limit` ms
    /// (below the rate limit's `limit`). With it the schedule is exact: rounding the arrival
    /// time to whole milliseconds would shrink the burst of, say, 3 per second to 2, and cap any
    /// limit at one request per millisecond. Absent in state stored before it existed.
    #[serde(default)]
    pub rate_tat_frac: u32,
}

/// The limits of one key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Rate limit, if any.
    pub rate_limit: Option<RateLimit>,
    /// Quota, if any.
    pub quota: Option<Quota>,
}

/// Values for the `RateLimit-*` and `Retry-After` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitInfo {
    /// `RateLimit-Limit`.
    pub limit: u64,
    /// `RateLimit-Remaining`.
    pub remaining: u64,
    /// `RateLimit-Reset`: seconds until the limit is fully restored.
    pub reset_seconds: u64,
    /// `Retry-After`, on refusals only.
    pub retry_after_seconds: Option<u64>,
}

/// The outcome of [`admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LimitDecision {
    /// Counted. Headers describe the rate limit if there is one, else the quota.
    Allowed(Option<LimitInfo>),
    /// Refused by the rate limit; nothing counted.
    RateLimited(LimitInfo),
    /// Refused by the quota; nothing counted.
    QuotaExceeded(LimitInfo),
}

/// Decides one request against `limits`, updating `state` only when it is allowed.
pub fn admit(limits: &Limits, state: &mut LimitState, now_ms: i64) -> LimitDecision {
    let mut rate_info = None;
    let mut new_tat = None;
    if let Some(rl) = limits.rate_limit {
        let limit = u64::from(rl.limit.get());
        // Time in units of `1/limit` ms, where one token's emission interval is exactly
        // `period_ms` units: integer arithmetic with no rounding anywhere.
        let per_ms = i128::from(rl.limit.get());
        let interval = i128::from(rl.period_seconds.get()) * 1000;
        let period = interval * per_ms;
        let now = i128::from(now_ms) * per_ms;
        let frac = i128::from(state.rate_tat_frac).min(per_ms - 1);
        let tat = (i128::from(state.rate_tat_ms) * per_ms + frac).max(now);
        let candidate = tat + interval;
        let backlog = candidate - now;
        let units_per_second = per_ms * 1000;
        if backlog > period {
            return LimitDecision::RateLimited(LimitInfo {
                limit,
                remaining: 0,
                reset_seconds: ceil_div_u64(tat - now, units_per_second),
                retry_after_seconds: Some(ceil_div_u64(backlog - period, units_per_second).max(1)),
            });
        }
        let remaining = u64::try_from((period - backlog) / interval).unwrap_or(0);
        rate_info = Some(LimitInfo {
            limit,
            remaining: remaining.min(limit),
            reset_seconds: ceil_div_u64(backlog, units_per_second),
            retry_after_seconds: None,
        });
        let whole = i64::try_from(candidate.div_euclid(per_ms)).unwrap_or(i64::MAX);
        let frac = u32::try_from(candidate.rem_euclid(per_ms)).unwrap_or(0);
        new_tat = Some((whole, frac));
    }
    let mut quota_info = None;
    if let Some(q) = limits.quota {
        let start = period_start(q.period, now_ms);
        let used = if state.quota_period_start_ms == start {
            state.quota_used
        } else {
            0
        };
        let limit = q.limit.get();
        let reset_seconds = match period_end(q.period, now_ms) {
            Some(end) => ceil_div_u64(i128::from(end) - i128::from(now_ms), 1000),
            None => TOTAL_QUOTA_RETRY_SECONDS,
        };
        if used >= limit {
            return LimitDecision::QuotaExceeded(LimitInfo {
                limit,
                remaining: 0,
                reset_seconds,
                retry_after_seconds: Some(reset_seconds.max(1)),
            });
        }
        state.quota_period_start_ms = start;
        state.quota_used = used + 1;
        quota_info = Some(LimitInfo {
            limit,
            remaining: limit - used - 1,
            reset_seconds,
            retry_after_seconds: None,
        });
    }
    if let Some((whole, frac)) = new_tat {
        state.rate_tat_ms = whole;
        state.rate_tat_frac = frac;
    }
    LimitDecision::Allowed(rate_info.or(quota_info))
}

/// `ceil(n / d)` for `d > 0`, clamped to `0..=u64::MAX`.
fn ceil_div_u64(n: i128, d: i128) -> u64 {
    if n <= 0 {
        return 0;
    }
    u64::try_from((n + d - 1) / d).unwrap_or(u64::MAX)
}

const DAY_MS: i64 = 86_400_000;

/// Start of the quota period containing `now_ms` (UTC).
pub fn period_start(period: QuotaPeriod, now_ms: i64) -> i64 {
    match period {
        QuotaPeriod::Day => now_ms.div_euclid(DAY_MS) * DAY_MS,
        QuotaPeriod::Month => {
            let (y, m, _) = civil_from_days(now_ms.div_euclid(DAY_MS));
            days_from_civil(y, m, 1) * DAY_MS
        }
        QuotaPeriod::Total => 0,
    }
}

/// End of the quota period containing `now_ms`, or `None` for `total`.
pub fn period_end(period: QuotaPeriod, now_ms: i64) -> Option<i64> {
    match period {
        QuotaPeriod::Day => Some(period_start(period, now_ms) + DAY_MS),
        QuotaPeriod::Month => {
            let (y, m, _) = civil_from_days(now_ms.div_euclid(DAY_MS));
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            Some(days_from_civil(ny, nm, 1) * DAY_MS)
        }
        QuotaPeriod::Total => None,
    }
}

// Howard Hinnant's days-from-civil algorithms (proleptic Gregorian, day 0 = 1970-01-01).
/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian `(year, month, day)` of a day number (0 = 1970-01-01).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::num::{NonZeroU32, NonZeroU64};

    fn rl(limit: u32, period: u32) -> Option<RateLimit> {
        Some(RateLimit {
            limit: NonZeroU32::new(limit).expect("nz"),
            period_seconds: NonZeroU32::new(period).expect("nz"),
        })
    }

    #[test]
    fn rate_limit_allows_burst_then_refills() {
        let limits = Limits {
            rate_limit: rl(3, 60),
            quota: None,
        };
        let mut st = LimitState::default();
        let t0 = 1_700_000_000_000;
        for expected_remaining in [2, 1, 0] {
            match admit(&limits, &mut st, t0) {
                LimitDecision::Allowed(Some(i)) => assert_eq!(i.remaining, expected_remaining),
                other => panic!("unexpected {other:?}"),
            }
        }
        let LimitDecision::RateLimited(info) = admit(&limits, &mut st, t0) else {
            panic!("expected rate limited");
        };
        assert_eq!(info.retry_after_seconds, Some(20));
        // One token back after 20 s.
        assert!(matches!(
            admit(&limits, &mut st, t0 + 20_000),
            LimitDecision::Allowed(_)
        ));
        assert!(matches!(
            admit(&limits, &mut st, t0 + 20_000),
            LimitDecision::RateLimited(_)
        ));
    }

    #[test]
    fn burst_equals_limit_when_the_interval_is_not_whole_milliseconds() {
        let t0 = 1_700_000_000_123;
        // 3 per second (333.3 ms apart), 7 per minute, and more than one per millisecond.
        for (limit, period) in [(3, 1), (7, 60), (100_000, 60), (6, 1)] {
            let limits = Limits {
                rate_limit: rl(limit, period),
                quota: None,
            };
            let mut st = LimitState::default();
            for i in 0..limit {
                match admit(&limits, &mut st, t0) {
                    LimitDecision::Allowed(Some(info)) => {
                        assert_eq!(info.remaining, u64::from(limit - i - 1), "{limit}/{period}")
                    }
                    other => panic!("{limit}/{period}s: request {i} refused: {other:?}"),
                }
            }
            assert!(
                matches!(admit(&limits, &mut st, t0), LimitDecision::RateLimited(_)),
                "{limit}/{period}s: request {} allowed",
                limit + 1
            );
            // Exactly one token is back after one interval, not before.
            let period_ms = i64::from(period) * 1000;
            let back = t0 + (period_ms + i64::from(limit) - 1) / i64::from(limit);
            assert!(
                matches!(
                    admit(&limits, &mut st, back - 1),
                    LimitDecision::RateLimited(_)
                ),
                "{limit}/{period}s"
            );
            assert!(
                matches!(admit(&limits, &mut st, back), LimitDecision::Allowed(_)),
                "{limit}/{period}s"
            );
        }
    }

    #[test]
    fn sustained_rate_matches_the_limit() {
        // 100,000 per minute, offered 3,000 per second for ten minutes: a burst of 100,000 and
        // then exactly the refill rate.
        let limits = Limits {
            rate_limit: rl(100_000, 60),
            quota: None,
        };
        let mut st = LimitState::default();
        let t0 = 1_700_000_000_000;
        let mut allowed = 0u64;
        for ms in 0..600_000i64 {
            for _ in 0..3 {
                if matches!(admit(&limits, &mut st, t0 + ms), LimitDecision::Allowed(_)) {
                    allowed += 1;
                }
            }
        }
        // 100,000 burst + 599.999 s of refill at 1666.67/s.
        let expected = 100_000 + 599_999 * 100_000 / 60_000;
        assert!(allowed.abs_diff(expected) <= 1, "{allowed} vs {expected}");
    }

    #[test]
    fn state_stored_without_the_fraction_still_decodes() {
        let st: LimitState =
            serde_json::from_str(r#"{"rate_tat_ms":5,"quota_period_start_ms":0,"quota_used":2}"#)
                .expect("decode");
        assert_eq!(st.rate_tat_frac, 0);
        assert_eq!(st.quota_used, 2);
    }

    #[test]
    fn throttled_requests_spend_no_quota() {
        let limits = Limits {
            rate_limit: rl(1, 60),
            quota: Some(Quota {
                limit: NonZeroU64::new(5).expect("nz"),
                period: QuotaPeriod::Day,
            }),
        };
        let mut st = LimitState::default();
        let t0 = 1_700_000_000_000;
        assert!(matches!(
            admit(&limits, &mut st, t0),
            LimitDecision::Allowed(_)
        ));
        for _ in 0..10 {
            assert!(matches!(
                admit(&limits, &mut st, t0 + 1),
                LimitDecision::RateLimited(_)
            ));
        }
        assert_eq!(st.quota_used, 1);
    }

    #[test]
    fn quota_exhausts_and_resets_next_period() {
        let limits = Limits {
            rate_limit: None,
            quota: Some(Quota {
                limit: NonZeroU64::new(2).expect("nz"),
                period: QuotaPeriod::Month,
            }),
        };
        let mut st = LimitState::default();
        // 2026-01-31T23:59:00Z
        let t = days_from_civil(2026, 1, 31) * DAY_MS + 86_340_000;
        assert!(matches!(
            admit(&limits, &mut st, t),
            LimitDecision::Allowed(_)
        ));
        assert!(matches!(
            admit(&limits, &mut st, t),
            LimitDecision::Allowed(_)
        ));
        let LimitDecision::QuotaExceeded(info) = admit(&limits, &mut st, t) else {
            panic!("expected quota exceeded");
        };
        assert_eq!(info.retry_after_seconds, Some(60));
        assert!(matches!(
            admit(&limits, &mut st, t + 60_000),
            LimitDecision::Allowed(_)
        ));
    }

    #[test]
    fn calendar() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
        assert_eq!(
            civil_from_days(days_from_civil(1999, 12, 31)),
            (1999, 12, 31)
        );
        let t = days_from_civil(2026, 12, 15) * DAY_MS + 5;
        assert_eq!(
            period_start(QuotaPeriod::Month, t),
            days_from_civil(2026, 12, 1) * DAY_MS
        );
        assert_eq!(
            period_end(QuotaPeriod::Month, t),
            Some(days_from_civil(2027, 1, 1) * DAY_MS)
        );
    }
}
