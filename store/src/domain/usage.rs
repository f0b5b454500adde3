//! Usage posted by the edge: counts per key, minute and verdict code, rolled up into hours and
//! days as they arrive (so reading a year of hours never scans minutes); the last minute each
//! key was used; and the client IPs and referrer origins the edge saw per key. Old rows are
//! pruned by the `usage.prune` job, each granularity on its own retention.

use std::collections::BTreeMap;
use std::net::IpAddr;

use diesel::dsl::{case_when, sql};
use diesel::prelude::*;
use diesel::sql_types::BigInt;
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

/// One count.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UsageItem {
    /// `key_...` (1 to 64 characters).
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 64))]
    pub key_id: String,
    /// RFC 3339; truncated to the minute.
    #[serde(with = "crate::timefmt::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub minute: i64,
    /// Verdict code.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schemas::VerifyCodeSchema))]
    pub code: Code,
    /// 1 to 4294967295.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 4294967295_u32, format = Int64))]
    pub count: u32,
}

/// What a sighting is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SightingKind {
    /// A client IP address (`CF-Connecting-IP`).
    Ip,
    /// A referrer origin (`Origin`, else `Referer`), `scheme://host[:port]`.
    Referrer,
}

impl SightingKind {
    /// The stored and serialized name.
    pub fn as_str(self) -> &'static str {
        match self {
            SightingKind::Ip => "ip",
            SightingKind::Referrer => "referrer",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "ip" => Ok(SightingKind::Ip),
            "referrer" => Ok(SightingKind::Referrer),
            other => Err(StoreError::internal(anyhow::anyhow!(
                "stored sighting kind {other:?}"
            ))),
        }
    }
}

/// A value the edge saw for a key during one flush interval.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SightingReport {
    /// `key_...` (1 to 64 characters).
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 64))]
    pub key_id: String,
    /// `ip` or `referrer`.
    pub kind: SightingKind,
    /// An IPv4 or IPv6 address, or an origin `scheme://host[:port]` (at most 255 characters).
    pub value: String,
    /// RFC 3339.
    #[serde(with = "crate::timefmt::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub first_seen: i64,
    /// RFC 3339; not before `first_seen`.
    #[serde(with = "crate::timefmt::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub last_seen: i64,
    /// Requests: 1 to 4294967295.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 4294967295_u32, format = Int64))]
    pub count: u32,
}

/// Body of `POST /v1/usage`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UsageReport {
    /// At most 5000 items.
    pub items: Vec<UsageItem>,
    /// At most 5000 sightings.
    #[serde(default)]
    pub sightings: Vec<SightingReport>,
}

/// Answer of `POST /v1/usage`.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageAccepted {
    /// Number of items added.
    pub accepted: usize,
    /// Number of sightings added.
    pub sightings: usize,
}

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

/// Query of `GET /v1/keys/{key_id}/usage` and `GET /v1/projects/{project_id}/usage`.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// RFC 3339; default 24 hours before `to`. Rounded down to the start of its bucket.
    #[serde(default, with = "crate::timefmt::opt_rfc3339")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<String>, format = DateTime))]
    pub from: Option<i64>,
    /// RFC 3339; default now.
    #[serde(default, with = "crate::timefmt::opt_rfc3339")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<String>, format = DateTime))]
    pub to: Option<i64>,
    /// `minute` (default), `hour` or `day`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", param(value_type = Option<Granularity>))]
    pub granularity: Granularity,
}

/// One bucket's count of one code.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsagePoint {
    /// Start of the bucket, RFC 3339.
    #[serde(with = "crate::timefmt::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub start: i64,
    /// Verdict code.
    pub code: String,
    /// Requests.
    pub count: i64,
}

/// Usage of a key or a project.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageSeries {
    /// The bucket size.
    pub granularity: Granularity,
    /// Start of the first bucket of the window, RFC 3339.
    #[serde(with = "crate::timefmt::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub from: i64,
    /// End of the window, RFC 3339: buckets starting after it are left out.
    #[serde(with = "crate::timefmt::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub to: i64,
    /// Non-zero counts, by bucket start, then code.
    pub items: Vec<UsagePoint>,
    /// Sum over the window per code.
    #[cfg_attr(feature = "openapi", schema(example = json!({"valid": 120, "rate_limited": 3})))]
    pub totals: BTreeMap<String, i64>,
}

/// Query of `GET /v1/keys/{key_id}/sightings`.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
pub struct SightingsQuery {
    /// Only this kind; default both.
    #[cfg_attr(feature = "openapi", param(value_type = Option<SightingKind>))]
    pub kind: Option<SightingKind>,
    /// 1 to 1000; default 100.
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 1000))]
    pub limit: Option<i64>,
}

/// A client IP or referrer origin seen for a key.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SightingView {
    /// `ip` or `referrer`.
    pub kind: SightingKind,
    /// The address or origin.
    pub value: String,
    /// RFC 3339.
    #[serde(with = "crate::timefmt::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub first_seen_at: i64,
    /// RFC 3339.
    #[serde(with = "crate::timefmt::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub last_seen_at: i64,
    /// Requests seen with this value.
    pub count: i64,
}

/// A key's sightings.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SightingList {
    /// Newest `first_seen_at` first.
    pub items: Vec<SightingView>,
}

/// How long each kind of usage row is kept, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Minute counts.
    pub minute_ms: i64,
    /// Hour counts.
    pub hour_ms: i64,
    /// Day counts.
    pub day_ms: i64,
    /// Sightings, by `last_seen_at`.
    pub sighting_ms: i64,
}

/// Rows deleted by one [`prune`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Minute counts.
    pub minutes: usize,
    /// Hour counts.
    pub hours: usize,
    /// Day counts.
    pub days: usize,
    /// Sightings.
    pub sightings: usize,
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

/// Whose usage: one key, or every key of a project (revoked and expired ones included).
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// `key_...`.
    Key(&'a str),
    /// `prj_...`.
    Project(&'a str),
}

/// Sums one count table per bucket and code over the keys of `$keys` (a subquery of ids).
macro_rules! load_buckets {
    ($conn:expr, $table:ident, $bucket:ident, $keys:expr, $from:expr, $to:expr) => {
        $table::table
            .filter($table::key_id.eq_any($keys))
            .filter($table::$bucket.ge($from))
            .filter($table::$bucket.le($to))
            .group_by(($table::$bucket, $table::code))
            // PostgreSQL's SUM of BIGINT is NUMERIC; the cast keeps one type on both backends.
            .select((
                $table::$bucket,
                $table::code,
                sql::<BigInt>(concat!(
                    "CAST(SUM(",
                    stringify!($table),
                    ".count) AS BIGINT)"
                )),
            ))
            .order(($table::$bucket.asc(), $table::code.asc()))
            .load::<(i64, String, i64)>($conn)
    };
}

fn load(
    conn: &mut DbConn,
    scope: Scope<'_>,
    g: Granularity,
    from: i64,
    to: i64,
) -> QueryResult<Vec<(i64, String, i64)>> {
    let by_key = |id| {
        api_keys::table
            .filter(api_keys::id.eq(id))
            .select(api_keys::id)
    };
    let by_project = |id| {
        api_keys::table
            .filter(api_keys::project_id.eq(id))
            .select(api_keys::id)
    };
    match (scope, g) {
        (Scope::Key(id), Granularity::Minute) => {
            load_buckets!(conn, key_usage, minute, by_key(id), from, to)
        }
        (Scope::Key(id), Granularity::Hour) => {
            load_buckets!(conn, key_usage_hourly, hour, by_key(id), from, to)
        }
        (Scope::Key(id), Granularity::Day) => {
            load_buckets!(conn, key_usage_daily, day, by_key(id), from, to)
        }
        (Scope::Project(id), Granularity::Minute) => {
            load_buckets!(conn, key_usage, minute, by_project(id), from, to)
        }
        (Scope::Project(id), Granularity::Hour) => {
            load_buckets!(conn, key_usage_hourly, hour, by_project(id), from, to)
        }
        (Scope::Project(id), Granularity::Day) => {
            load_buckets!(conn, key_usage_daily, day, by_project(id), from, to)
        }
    }
}

/// Usage of a key or a project between `from` and `to`, per bucket and code.
pub fn series(
    conn: &mut DbConn,
    now: i64,
    scope: Scope<'_>,
    q: UsageQuery,
) -> Result<UsageSeries, StoreError> {
    match scope {
        Scope::Key(id) => {
            super::keys::find_row(conn, id)?;
        }
        Scope::Project(id) => {
            super::projects::find_row(conn, id)?;
        }
    }
    let g = q.granularity;
    let to = q.to.unwrap_or(now);
    let from = q.from.unwrap_or(to - DAY_MS);
    if from > to {
        return Err(StoreError::validation("from", "must not be after `to`"));
    }
    let max_days = g.max_window_days();
    if to - from > max_days * DAY_MS {
        return Err(StoreError::validation(
            "from",
            format!(
                "the window may span at most {max_days} days at {} granularity",
                g.as_str()
            ),
        ));
    }
    let from = g.floor(from);
    let rows = load(conn, scope, g, from, to)?;
    let mut totals = BTreeMap::new();
    let items = rows
        .into_iter()
        .map(|(start, code, count)| {
            *totals.entry(code.clone()).or_default() += count;
            UsagePoint { start, code, count }
        })
        .collect();
    Ok(UsageSeries {
        granularity: g,
        from,
        to,
        items,
        totals,
    })
}

/// A key's sightings, newest `first_seen_at` first.
pub fn sightings(
    conn: &mut DbConn,
    key_id: &str,
    q: SightingsQuery,
) -> Result<SightingList, StoreError> {
    let limit = q.limit.unwrap_or(DEFAULT_SIGHTINGS);
    if !(1..=MAX_SIGHTINGS_LISTED).contains(&limit) {
        return Err(StoreError::validation(
            "limit",
            format!("must be between 1 and {MAX_SIGHTINGS_LISTED}"),
        ));
    }
    super::keys::find_row(conn, key_id)?;
    use key_sightings::dsl as s;
    let mut query = s::key_sightings
        .filter(s::key_id.eq(key_id.to_owned()))
        .into_boxed();
    if let Some(kind) = q.kind {
        query = query.filter(s::kind.eq(kind.as_str()));
    }
    let rows: Vec<(String, String, i64, i64, i64)> = query
        .order((s::first_seen_at.desc(), s::kind.asc(), s::value.asc()))
        .limit(limit)
        .select((
            s::kind,
            s::value,
            s::first_seen_at,
            s::last_seen_at,
            s::count,
        ))
        .load(conn)?;
    let items = rows
        .into_iter()
        .map(|(kind, value, first_seen_at, last_seen_at, count)| {
            Ok(SightingView {
                kind: SightingKind::parse(&kind)?,
                value,
                first_seen_at,
                last_seen_at,
                count,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(SightingList { items })
}

/// Deletes the rows older than their retention at `now`: count rows whose bucket started
/// before `now - retention`, sightings last seen before it. One short transaction per table,
/// so usage posts are not held up behind one long delete.
pub fn prune(conn: &mut DbConn, now: i64, r: &Retention) -> Result<Pruned, StoreError> {
    let minutes = write_tx(conn, |c| {
        diesel::delete(key_usage::table.filter(key_usage::minute.lt(now - r.minute_ms))).execute(c)
    })?;
    let hours = write_tx(conn, |c| {
        diesel::delete(key_usage_hourly::table.filter(key_usage_hourly::hour.lt(now - r.hour_ms)))
            .execute(c)
    })?;
    let days = write_tx(conn, |c| {
        diesel::delete(key_usage_daily::table.filter(key_usage_daily::day.lt(now - r.day_ms)))
            .execute(c)
    })?;
    let sightings = write_tx(conn, |c| {
        diesel::delete(
            key_sightings::table.filter(key_sightings::last_seen_at.lt(now - r.sighting_ms)),
        )
        .execute(c)
    })?;
    Ok(Pruned {
        minutes,
        hours,
        days,
        sightings,
    })
}
