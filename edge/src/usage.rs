//! Verification counts per key, minute and outcome, buffered in the isolate and posted to the
//! control plane in batches, never on the response path.

use std::collections::HashMap;

use keygate_shared::limits::{civil_from_days, days_from_civil};
use keygate_shared::Code;
use serde::Serialize;

/// One row of `POST /v1/usage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageItem {
    /// Key id.
    pub key_id: String,
    /// Start of the minute, RFC 3339 UTC.
    pub minute: String,
    /// Outcome code.
    pub code: &'static str,
    /// Number of requests.
    pub count: u64,
}

/// Counts waiting to be posted.
#[derive(Debug, Default)]
pub struct UsageBuffer {
    counts: HashMap<(String, i64, Code), u64>,
    last_flush_ms: i64,
}

/// Rows past which a flush is due whatever the time.
const MAX_ROWS: usize = 500;

impl UsageBuffer {
    /// Counts one verdict at `now_ms`.
    pub fn record(&mut self, key_id: &str, code: Code, now_ms: i64) {
        let minute = now_ms.div_euclid(60_000) * 60_000;
        *self
            .counts
            .entry((key_id.to_owned(), minute, code))
            .or_insert(0) += 1;
        if self.last_flush_ms == 0 {
            self.last_flush_ms = now_ms;
        }
    }

    /// Takes the buffered rows when a flush is due (`interval_ms` since the last one, or the
    /// buffer is large).
    pub fn take_if_due(&mut self, now_ms: i64, interval_ms: i64) -> Option<Vec<UsageItem>> {
        if self.counts.is_empty() {
            return None;
        }
        if now_ms - self.last_flush_ms < interval_ms && self.counts.len() < MAX_ROWS {
            return None;
        }
        self.last_flush_ms = now_ms;
        let items = self
            .counts
            .drain()
            .map(|((key_id, minute, code), count)| UsageItem {
                key_id,
                minute: rfc3339_minute(minute),
                code: code.as_str(),
                count,
            })
            .collect();
        Some(items)
    }

    /// Puts rows back after a failed post, so a control-plane outage loses no counts.
    pub fn restore(&mut self, items: Vec<UsageItem>, now_ms: i64) {
        for item in items {
            let Some(minute) = parse_minute(&item.minute) else {
                continue;
            };
            let Some(code) = code_from_str(item.code) else {
                continue;
            };
            *self.counts.entry((item.key_id, minute, code)).or_insert(0) += item.count;
        }
        if self.last_flush_ms == 0 {
            self.last_flush_ms = now_ms;
        }
    }
}

fn code_from_str(s: &str) -> Option<Code> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
}

fn rfc3339_minute(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let secs = ms.div_euclid(1000).rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:00Z",
        secs / 3600,
        (secs / 60) % 60
    )
}

fn parse_minute(s: &str) -> Option<i64> {
    // Only our own format is read back: YYYY-MM-DDTHH:MM:00Z.
    let b = s.as_bytes();
    if b.len() != 20 {
        return None;
    }
    let num = |r: core::ops::Range<usize>| s.get(r)?.parse::<u32>().ok();
    let (y, m, d, h, mi) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
    );
    let days = days_from_civil(i64::from(y), m, d);
    Some((days * 86_400 + i64::from(h * 3600 + mi * 60)) * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_and_flushes() {
        let mut b = UsageBuffer::default();
        let t = 1_764_307_230_000; // 2025-11-28T05:20:30Z
        b.record("key_1", Code::Valid, t);
        b.record("key_1", Code::Valid, t + 1000);
        b.record("key_1", Code::RateLimited, t + 2000);
        assert!(b.take_if_due(t + 5000, 10_000).is_none());
        let mut items = b.take_if_due(t + 10_000, 10_000).expect("due");
        items.sort_by_key(|i| i.code);
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].minute, "2025-11-28T05:20:00Z");
        let valid = items.iter().find(|i| i.code == "valid").expect("valid");
        assert_eq!(valid.count, 2);
        b.restore(items, t + 11_000);
        let again = b.take_if_due(t + 30_000, 10_000).expect("restored");
        assert_eq!(again.iter().map(|i| i.count).sum::<u64>(), 3);
        assert_eq!(
            parse_minute("2025-11-28T05:20:00Z"),
            Some(1_764_307_200_000)
        );
    }
}
