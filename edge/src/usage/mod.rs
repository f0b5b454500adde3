//! What the edge reports to `POST /v1/usage`: verdict counts per key, minute and outcome, and
//! per key the distinct client IPs and referrer origins it saw, with when each was first and
//! last seen. Buffered in the isolate and posted in batches, never on the response path.
//!
//! Each key keeps at most [`MAX_VALUES_PER_KIND`] distinct IPs and as many referrer origins
//! per flush interval; values beyond that are counted in [`Batch::dropped`] and not reported, so
//! a key called from a botnet cannot grow the buffer or the report without bound.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::IpAddr;

use keygate_shared::limits::civil_from_days;
use keygate_shared::referrer::write_request_origin;
use keygate_shared::Code;
use serde::{Serialize, Serializer};

/// Distinct values kept per key and kind between two flushes.
pub const MAX_VALUES_PER_KIND: usize = 64;
/// Rows (counts, or sightings) past which a flush is due whatever the time.
const MAX_ROWS: usize = 500;
/// Most counts, and most sightings, in one post; the rest waits for the next one. Keeps every
/// post well inside the control plane's limits (5000 of each, 2 MiB).
const MAX_POST_ROWS: usize = 1000;

/// One count of `POST /v1/usage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageItem {
    /// Key id.
    pub key_id: String,
    /// Start of the minute (Unix ms); sent as RFC 3339.
    #[serde(serialize_with = "ser_minute")]
    pub minute: i64,
    /// Outcome.
    pub code: Code,
    /// Requests.
    pub count: u64,
}

/// What a sighting is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SightingKind {
    /// `CF-Connecting-IP`.
    Ip,
    /// The origin of `Origin`, else of `Referer`.
    Referrer,
}

/// One sighting of `POST /v1/usage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sighting {
    /// Key id.
    pub key_id: String,
    /// IP or referrer.
    pub kind: SightingKind,
    /// The address, or the origin `scheme://host[:port]`.
    pub value: String,
    /// Unix ms; sent as RFC 3339.
    #[serde(serialize_with = "ser_ms")]
    pub first_seen: i64,
    /// Unix ms; sent as RFC 3339.
    #[serde(serialize_with = "ser_ms")]
    pub last_seen: i64,
    /// Requests.
    pub count: u64,
}

/// One post's worth of usage.
#[derive(Debug, Default, Serialize)]
pub struct Batch {
    /// Counts.
    pub items: Vec<UsageItem>,
    /// Sightings.
    pub sightings: Vec<Sighting>,
    /// Distinct values seen beyond [`MAX_VALUES_PER_KIND`] since the last flush, not reported.
    #[serde(skip)]
    pub dropped: u64,
}

/// The facts of one request that sightings are made of.
#[derive(Debug, Clone, Copy, Default)]
pub struct Caller<'a> {
    /// `CF-Connecting-IP`, parsed.
    pub ip: Option<IpAddr>,
    /// `Origin`.
    pub origin: Option<&'a str>,
    /// `Referer`.
    pub referer: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    first: i64,
    last: i64,
    count: u64,
}

impl Seen {
    fn at(now: i64) -> Self {
        Seen {
            first: now,
            last: now,
            count: 1,
        }
    }
    fn merge(&mut self, other: Seen) {
        self.first = self.first.min(other.first);
        self.last = self.last.max(other.last);
        self.count += other.count;
    }
}

/// Everything buffered for one key.
#[derive(Debug, Default)]
struct KeyUsage {
    counts: HashMap<(i64, Code), u64>,
    ips: HashMap<IpAddr, Seen>,
    referrers: HashMap<String, Seen>,
}

/// Counts and sightings waiting to be posted.
#[derive(Debug, Default)]
pub struct UsageBuffer {
    keys: HashMap<String, KeyUsage>,
    /// Count rows buffered.
    rows: usize,
    /// Sighting rows buffered.
    sighting_rows: usize,
    dropped: u64,
    /// Reused for each request's referrer origin, so a known origin costs no allocation.
    origin: String,
    last_flush_ms: i64,
}

/// Adds `seen` under `value` unless the set is full; whether a new row was added.
fn add_seen<K: Eq + std::hash::Hash>(
    set: &mut HashMap<K, Seen>,
    value: K,
    seen: Seen,
    dropped: &mut u64,
) -> bool {
    let len = set.len();
    match set.entry(value) {
        Entry::Occupied(mut e) => {
            e.get_mut().merge(seen);
            false
        }
        Entry::Vacant(e) if len < MAX_VALUES_PER_KIND => {
            e.insert(seen);
            true
        }
        Entry::Vacant(_) => {
            *dropped += 1;
            false
        }
    }
}

impl UsageBuffer {
    /// Counts one verdict for `key_id` at `now_ms`, and what the request showed of its caller.
    /// Allocates only for a key, minute, IP or origin not yet in the buffer.
    pub fn record(&mut self, key_id: &str, code: Code, caller: &Caller<'_>, now_ms: i64) {
        let minute = now_ms.div_euclid(60_000) * 60_000;
        let has_origin = write_request_origin(caller.origin, caller.referer, &mut self.origin);
        if !self.keys.contains_key(key_id) {
            self.keys.insert(key_id.to_owned(), KeyUsage::default());
        }
        let Some(k) = self.keys.get_mut(key_id) else {
            return;
        };
        match k.counts.entry((minute, code)) {
            Entry::Occupied(mut e) => *e.get_mut() += 1,
            Entry::Vacant(e) => {
                e.insert(1);
                self.rows += 1;
            }
        }
        if let Some(ip) = caller.ip {
            match k.ips.get_mut(&ip) {
                Some(s) => s.merge(Seen::at(now_ms)),
                None => {
                    if add_seen(&mut k.ips, ip, Seen::at(now_ms), &mut self.dropped) {
                        self.sighting_rows += 1;
                    }
                }
            }
        }
        if has_origin {
            match k.referrers.get_mut(self.origin.as_str()) {
                Some(s) => s.merge(Seen::at(now_ms)),
                None => {
                    let origin = self.origin.clone();
                    if add_seen(
                        &mut k.referrers,
                        origin,
                        Seen::at(now_ms),
                        &mut self.dropped,
                    ) {
                        self.sighting_rows += 1;
                    }
                }
            }
        }
        if self.last_flush_ms == 0 {
            self.last_flush_ms = now_ms;
        }
    }

    /// Takes a batch when a flush is due (`interval_ms` since the last one, or the buffer is
    /// large). A batch holds at most 1000 counts and 1000 sightings; the rest stays buffered.
    pub fn take_if_due(&mut self, now_ms: i64, interval_ms: i64) -> Option<Batch> {
        if self.rows == 0 && self.sighting_rows == 0 {
            return None;
        }
        let large = self.rows >= MAX_ROWS || self.sighting_rows >= MAX_ROWS;
        if now_ms - self.last_flush_ms < interval_ms && !large {
            return None;
        }
        self.last_flush_ms = now_ms;
        let mut batch = Batch {
            items: Vec::with_capacity(self.rows.min(MAX_POST_ROWS)),
            sightings: Vec::with_capacity(self.sighting_rows.min(MAX_POST_ROWS)),
            dropped: std::mem::take(&mut self.dropped),
        };
        for (key_id, k) in self.keys.drain() {
            for ((minute, code), count) in k.counts {
                batch.items.push(UsageItem {
                    key_id: key_id.clone(),
                    minute,
                    code,
                    count,
                });
            }
            let ips = k
                .ips
                .into_iter()
                .map(|(ip, s)| (SightingKind::Ip, ip.to_string(), s));
            let referrers = k
                .referrers
                .into_iter()
                .map(|(o, s)| (SightingKind::Referrer, o, s));
            for (kind, value, s) in ips.chain(referrers) {
                batch.sightings.push(Sighting {
                    key_id: key_id.clone(),
                    kind,
                    value,
                    first_seen: s.first,
                    last_seen: s.last,
                    count: s.count,
                });
            }
        }
        self.rows = 0;
        self.sighting_rows = 0;
        // Rare (after failed posts piled up): keep the excess for the next flush.
        let extra = Batch {
            items: split_off(&mut batch.items, MAX_POST_ROWS),
            sightings: split_off(&mut batch.sightings, MAX_POST_ROWS),
            dropped: 0,
        };
        if !extra.items.is_empty() || !extra.sightings.is_empty() {
            self.restore(extra, now_ms);
        }
        Some(batch)
    }

    /// Puts a batch back after a failed post, so a control-plane outage loses nothing (but
    /// sightings beyond the per-key cap).
    pub fn restore(&mut self, batch: Batch, now_ms: i64) {
        for item in batch.items {
            let k = self.keys.entry(item.key_id).or_default();
            match k.counts.entry((item.minute, item.code)) {
                Entry::Occupied(mut e) => *e.get_mut() += item.count,
                Entry::Vacant(e) => {
                    e.insert(item.count);
                    self.rows += 1;
                }
            }
        }
        for s in batch.sightings {
            let k = self.keys.entry(s.key_id).or_default();
            let seen = Seen {
                first: s.first_seen,
                last: s.last_seen,
                count: s.count,
            };
            let added = match s.kind {
                SightingKind::Ip => match s.value.parse::<IpAddr>() {
                    Ok(ip) => add_seen(&mut k.ips, ip, seen, &mut self.dropped),
                    Err(_) => false,
                },
                SightingKind::Referrer => {
                    add_seen(&mut k.referrers, s.value, seen, &mut self.dropped)
                }
            };
            if added {
                self.sighting_rows += 1;
            }
        }
        self.dropped += batch.dropped;
        if self.last_flush_ms == 0 {
            self.last_flush_ms = now_ms;
        }
    }
}

fn split_off<T>(v: &mut Vec<T>, at: usize) -> Vec<T> {
    if v.len() > at {
        v.split_off(at)
    } else {
        Vec::new()
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` of Unix milliseconds.
fn rfc3339_ms(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let secs = in_day / 1000;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60,
        in_day % 1000
    )
}

fn ser_ms<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339_ms(*ms))
}

fn ser_minute<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    // Whole minutes: the same instant without the `.000`.
    let t = rfc3339_ms(*ms);
    s.serialize_str(&format!("{}Z", t.get(..19).unwrap_or(&t)))
}

#[cfg(test)]
mod tests;
