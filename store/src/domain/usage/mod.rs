//! Usage posted by the edge: counts per key, minute and verdict code, rolled up into hours and
//! days as they arrive (so reading a year of hours never scans minutes); the last minute each
//! key was used; and the client IPs and referrer origins the edge saw per key. Old rows are
//! pruned by the `usage.prune` job, each granularity on its own retention.
//!
//! Recording reports is here; the API's bodies in [`views`]; reading series and sightings
//! back, and pruning, in [`read`].

mod read;
mod views;

pub use read::{prune, series, sightings, Scope};
pub use views::{
    Pruned, Retention, SightingKind, SightingList, SightingReport, SightingView, SightingsQuery,
    UsageAccepted, UsageItem, UsagePoint, UsageQuery, UsageReport, UsageSeries,
};

use std::collections::BTreeMap;
use std::net::IpAddr;

use diesel::dsl::case_when;
use diesel::prelude::*;
use diesel::upsert::excluded;
use keygate_shared::Code;
use serde::{Deserialize, Serialize};

use crate::db::schema::{api_keys, key_sightings, key_usage, key_usage_daily, key_usage_hourly};
use crate::db::{write_tx, DbConn};
use crate::error::StoreError;
use crate::with_backend;

/// Most items in one report.
pub const MAX_ITEMS: usize = 5000;
/// Most sightings in one report.
pub const MAX_SIGHTINGS: usize = 5000;
/// Longest sighting value (an origin or an IP address).
pub const MAX_SIGHTING_VALUE: usize = 255;
/// Default number of sightings listed.
pub const DEFAULT_SIGHTINGS: i64 = 100;
/// Most sightings listed at once.
pub const MAX_SIGHTINGS_LISTED: i64 = 1000;
const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;

/// The size of a usage bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    /// One minute; windows of at most 31 days.
    #[default]
    Minute,
    /// One hour (UTC); windows of at most 366 days.
    Hour,
    /// One day (UTC); windows of at most 1830 days.
    Day,
}

impl Granularity {
    /// The bucket's length.
    pub fn bucket_ms(self) -> i64 {
        match self {
            Granularity::Minute => MINUTE_MS,
            Granularity::Hour => HOUR_MS,
            Granularity::Day => DAY_MS,
        }
    }

    /// The longest window one query may span, in days.
    pub fn max_window_days(self) -> i64 {
        match self {
            Granularity::Minute => 31,
            Granularity::Hour => 366,
            Granularity::Day => 1830,
        }
    }

    /// The name used in queries and answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Minute => "minute",
            Granularity::Hour => "hour",
            Granularity::Day => "day",
        }
    }

    /// The start of the bucket that holds `ms`.
    pub fn floor(self, ms: i64) -> i64 {
        ms.div_euclid(self.bucket_ms()) * self.bucket_ms()
    }
}

fn check_key_id(field: String, key_id: &str) -> Result<(), StoreError> {
    if key_id.is_empty() || key_id.chars().count() > 64 {
        return Err(StoreError::validation(field, "must be a key id"));
    }
    Ok(())
}

/// The stored form of a sighting's value: canonical IP text, or a lowercase origin.
fn sighting_value(i: usize, kind: SightingKind, value: &str) -> Result<String, StoreError> {
    let field = || format!("sightings[{i}].value");
    if value.is_empty() || value.len() > MAX_SIGHTING_VALUE {
        return Err(StoreError::validation(
            field(),
            format!("must be 1 to {MAX_SIGHTING_VALUE} characters"),
        ));
    }
    match kind {
        SightingKind::Ip => value
            .parse::<IpAddr>()
            .map(|ip| ip.to_string())
            .map_err(|_| StoreError::validation(field(), "must be an IPv4 or IPv6 address")),
        SightingKind::Referrer => keygate_shared::referrer::canonical_origin(value)
            .filter(|o| o.len() <= MAX_SIGHTING_VALUE)
            .ok_or_else(|| {
                StoreError::validation(
                    field(),
                    "must be an origin such as https://shop.example.com or http://localhost:3000",
                )
            }),
    }
}

/// Upserts merged counts into one of the three count tables.
macro_rules! add_counts {
    ($conn:expr, $table:ident, $bucket:ident, $rows:expr) => {
        for ((key_id, bucket, code), count) in $rows {
            let row = (
                $table::key_id.eq(*key_id),
                $table::$bucket.eq(*bucket),
                $table::code.eq(*code),
                $table::count.eq(*count),
            );
            // Upserts do not compile through the multi-connection; run the same statement
            // on the concrete one.
            with_backend!(&mut *$conn, |c| diesel::insert_into($table::table)
                .values(row)
                .on_conflict(($table::key_id, $table::$bucket, $table::code))
                .do_update()
                .set($table::count.eq($table::count + excluded($table::count)))
                .execute(c))?;
        }
    };
}
type Counts<'a> = BTreeMap<(&'a str, i64, &'static str), i64>;

/// Adds the counts to the minute, hour and day tables, moves each key's `last_used_at` forward
/// to its latest `valid` minute, and merges the sightings, all in one transaction.
pub fn record(conn: &mut DbConn, report: UsageReport) -> Result<UsageAccepted, StoreError> {
    if report.items.len() > MAX_ITEMS {
        return Err(StoreError::validation(
            "items",
            format!("at most {MAX_ITEMS} items"),
        ));
    }
    if report.sightings.len() > MAX_SIGHTINGS {
        return Err(StoreError::validation(
            "sightings",
            format!("at most {MAX_SIGHTINGS} sightings"),
        ));
    }
    // Rows are merged first, so each is written once, and written in key order, so two
    // concurrent reports lock rows in the same order (no deadlocks on PostgreSQL).
    let mut minutes: Counts<'_> = BTreeMap::new();
    let mut hours: Counts<'_> = BTreeMap::new();
    let mut days: Counts<'_> = BTreeMap::new();
    let mut last_used: BTreeMap<&str, i64> = BTreeMap::new();
    for (i, item) in report.items.iter().enumerate() {
        check_key_id(format!("items[{i}].key_id"), &item.key_id)?;
        if item.count == 0 {
            return Err(StoreError::validation(
                format!("items[{i}].count"),
                "must be positive",
            ));
        }
        let key = item.key_id.as_str();
        let code = item.code.as_str();
        let n = i64::from(item.count);
        let minute = Granularity::Minute.floor(item.minute);
        *minutes.entry((key, minute, code)).or_default() += n;
        *hours
            .entry((key, Granularity::Hour.floor(minute), code))
            .or_default() += n;
        *days
            .entry((key, Granularity::Day.floor(minute), code))
            .or_default() += n;
        if item.code == Code::Valid {
            let m = last_used.entry(key).or_insert(minute);
            *m = (*m).max(minute);
        }
    }
    // (key, kind, value) -> (first seen, last seen, count)
    let mut seen: BTreeMap<(&str, SightingKind, String), (i64, i64, i64)> = BTreeMap::new();
    for (i, s) in report.sightings.iter().enumerate() {
        check_key_id(format!("sightings[{i}].key_id"), &s.key_id)?;
        let value = sighting_value(i, s.kind, &s.value)?;
        if s.last_seen < s.first_seen {
            return Err(StoreError::validation(
                format!("sightings[{i}].last_seen"),
                "must not be before first_seen",
            ));
        }
        if s.count == 0 {
            return Err(StoreError::validation(
                format!("sightings[{i}].count"),
                "must be positive",
            ));
        }
        let e = seen.entry((s.key_id.as_str(), s.kind, value)).or_insert((
            s.first_seen,
            s.last_seen,
            0,
        ));
        e.0 = e.0.min(s.first_seen);
        e.1 = e.1.max(s.last_seen);
        e.2 += i64::from(s.count);
    }

    write_tx(conn, |conn| {
        add_counts!(conn, key_usage, minute, &minutes);
        add_counts!(conn, key_usage_hourly, hour, &hours);
        add_counts!(conn, key_usage_daily, day, &days);
        for (key_id, minute) in &last_used {
            // Usage is not a change to the key: `updated_at` and the snapshot version stay.
            diesel::update(
                api_keys::table.filter(api_keys::id.eq(*key_id)).filter(
                    api_keys::last_used_at
                        .is_null()
                        .or(api_keys::last_used_at.lt(*minute)),
                ),
            )
            .set(api_keys::last_used_at.eq(Some(*minute)))
            .execute(conn)?;
        }
        for ((key_id, kind, value), (first, last, count)) in &seen {
            use key_sightings::dsl as s;
            let row = (
                s::key_id.eq(*key_id),
                s::kind.eq(kind.as_str()),
                s::value.eq(value),
                s::first_seen_at.eq(*first),
                s::last_seen_at.eq(*last),
                s::count.eq(*count),
            );
            with_backend!(&mut *conn, |c| diesel::insert_into(s::key_sightings)
                .values(row)
                .on_conflict((s::key_id, s::kind, s::value))
                .do_update()
                .set((
                    s::first_seen_at.eq(case_when(
                        excluded(s::first_seen_at).lt(s::first_seen_at),
                        excluded(s::first_seen_at),
                    )
                    .otherwise(s::first_seen_at)),
                    s::last_seen_at.eq(case_when(
                        excluded(s::last_seen_at).gt(s::last_seen_at),
                        excluded(s::last_seen_at),
                    )
                    .otherwise(s::last_seen_at)),
                    s::count.eq(s::count + excluded(s::count)),
                ))
                .execute(c))?;
        }
        Ok::<_, StoreError>(())
    })?;
    Ok(UsageAccepted {
        accepted: report.items.len(),
        sightings: report.sightings.len(),
    })
}
