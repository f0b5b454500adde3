//! Reading usage back: series at a granularity, sightings per key, and pruning by retention.

use std::collections::BTreeMap;

use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool};

use super::{
    Granularity, Pruned, Retention, SightingKind, SightingList, SightingView, SightingsQuery,
    UsagePoint, UsageQuery, UsageSeries, DAY_MS, DEFAULT_SIGHTINGS, MAX_SIGHTINGS_LISTED,
};
use crate::db::schema::{key_sightings, key_usage, key_usage_daily, key_usage_hourly};
use crate::db::{write_tx, DbConn};
use crate::error::StoreError;
use crate::ids::{KeyId, ProjectId};

/// Whose usage: one key, or every key of a project (revoked and expired ones included).
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// `key_...`.
    Key(&'a KeyId),
    /// `prj_...`.
    Project(&'a ProjectId),
}

/// Sums one count table per bucket and code over the rows of `$scope`. A project's rows are
/// found with a correlated `EXISTS`, so that both backends read the window's rows by time (the
/// bucket indexes) and look each key up by id; `key_id IN (the project's ids)` made SQLite probe
/// the usage table once per key of the project, which at a million keys took seconds even with
/// no usage at all.
macro_rules! load_buckets {
    ($conn:expr, $table:ident, $bucket:ident, $scope:expr, $from:expr, $to:expr) => {{
        let whose: Box<dyn BoxableExpression<$table::table, _, SqlType = Bool>> = match $scope {
            Scope::Key(id) => Box::new($table::key_id.eq(id.to_string())),
            Scope::Project(id) => Box::new(
                sql::<Bool>(concat!(
                    "EXISTS (SELECT 1 FROM api_keys WHERE api_keys.id = ",
                    stringify!($table),
                    ".key_id AND api_keys.project_id = "
                ))
                .bind::<diesel::sql_types::Text, _>(id.to_string())
                .sql(")"),
            ),
        };
        $table::table
            .filter(whose)
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
    }};
}

fn load(
    conn: &mut DbConn,
    scope: Scope<'_>,
    g: Granularity,
    from: i64,
    to: i64,
) -> QueryResult<Vec<(i64, String, i64)>> {
    match g {
        Granularity::Minute => load_buckets!(conn, key_usage, minute, scope, from, to),
        Granularity::Hour => load_buckets!(conn, key_usage_hourly, hour, scope, from, to),
        Granularity::Day => load_buckets!(conn, key_usage_daily, day, scope, from, to),
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
            crate::domain::keys::find_row(conn, id)?;
        }
        Scope::Project(id) => {
            crate::domain::projects::find_row(conn, id)?;
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
    key_id: &KeyId,
    q: SightingsQuery,
) -> Result<SightingList, StoreError> {
    let limit = q.limit.unwrap_or(DEFAULT_SIGHTINGS);
    if !(1..=MAX_SIGHTINGS_LISTED).contains(&limit) {
        return Err(StoreError::validation(
            "limit",
            format!("must be between 1 and {MAX_SIGHTINGS_LISTED}"),
        ));
    }
    crate::domain::keys::find_row(conn, key_id)?;
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
