//! Usage counts posted by the edge: a count per key, per minute, per verdict code.

use diesel::prelude::*;
use diesel::upsert::excluded;
use keygate_shared::Code;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::db::schema::key_usage;
use crate::db::{write_tx, DbConn};
use crate::error::ApiError;
use crate::with_backend;

const MAX_ITEMS: usize = 5000;
const MINUTE_MS: i64 = 60_000;
/// Longest window of one usage query: 31 days.
pub const MAX_WINDOW_MS: i64 = 31 * 86_400_000;

/// One count.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageItem {
    /// `key_...`.
    pub key_id: String,
    /// RFC 3339; truncated to the minute.
    #[serde(with = "crate::timefmt::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub minute: i64,
    /// Verdict code.
    #[schema(value_type = crate::schemas::VerifyCodeSchema)]
    pub code: Code,
    /// Positive.
    #[schema(minimum = 1)]
    pub count: u32,
}

/// Body of `POST /v1/usage`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageReport {
    /// At most 5000 items.
    pub items: Vec<UsageItem>,
}

/// Answer of `POST /v1/usage`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UsageAccepted {
    /// Number of items added.
    pub accepted: usize,
}

/// Query of `GET /v1/keys/{key_id}/usage`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// RFC 3339; default 24 hours before `to`.
    #[serde(default, with = "crate::timefmt::opt_rfc3339")]
    #[param(value_type = Option<String>, format = DateTime)]
    pub from: Option<i64>,
    /// RFC 3339; default now.
    #[serde(default, with = "crate::timefmt::opt_rfc3339")]
    #[param(value_type = Option<String>, format = DateTime)]
    pub to: Option<i64>,
}

/// One minute's count of one code.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UsagePoint {
    /// RFC 3339.
    #[serde(with = "crate::timefmt::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub minute: i64,
    /// Verdict code.
    pub code: String,
    /// Requests.
    pub count: i64,
}

/// A key's usage.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UsageSeries {
    /// By minute, then code.
    pub items: Vec<UsagePoint>,
}

/// Adds the counts.
pub fn record(conn: &mut DbConn, report: UsageReport) -> Result<UsageAccepted, ApiError> {
    if report.items.len() > MAX_ITEMS {
        return Err(ApiError::validation(
            "items",
            format!("at most {MAX_ITEMS} items"),
        ));
    }
    for (i, item) in report.items.iter().enumerate() {
        if item.key_id.is_empty() || item.key_id.len() > 64 {
            return Err(ApiError::validation(
                format!("items[{i}].key_id"),
                "must be a key id",
            ));
        }
        if item.count == 0 {
            return Err(ApiError::validation(
                format!("items[{i}].count"),
                "must be positive",
            ));
        }
    }
    let n = report.items.len();
    write_tx(conn, |conn| {
        for item in &report.items {
            let minute = item.minute.div_euclid(MINUTE_MS) * MINUTE_MS;
            let row = (
                key_usage::key_id.eq(&item.key_id),
                key_usage::minute.eq(minute),
                key_usage::code.eq(item.code.as_str()),
                key_usage::count.eq(i64::from(item.count)),
            );
            // Upserts do not compile through the multi-connection; run the same statement
            // on the concrete one.
            with_backend!(&mut *conn, |c| diesel::insert_into(key_usage::table)
                .values(row)
                .on_conflict((key_usage::key_id, key_usage::minute, key_usage::code))
                .do_update()
                .set(key_usage::count.eq(key_usage::count + excluded(key_usage::count)))
                .execute(c))?;
        }
        Ok::<_, ApiError>(())
    })?;
    Ok(UsageAccepted { accepted: n })
}

/// A key's counts between `from` and `to`.
pub fn series(
    conn: &mut DbConn,
    now: i64,
    key_id: &str,
    q: UsageQuery,
) -> Result<UsageSeries, ApiError> {
    super::keys::find_row(conn, key_id)?;
    let to = q.to.unwrap_or(now);
    let from = q.from.unwrap_or(to - 86_400_000);
    if from > to {
        return Err(ApiError::validation("from", "must not be after `to`"));
    }
    if to - from > MAX_WINDOW_MS {
        return Err(ApiError::validation(
            "from",
            "the window may span at most 31 days",
        ));
    }
    let rows: Vec<(i64, String, i64)> = key_usage::table
        .filter(key_usage::key_id.eq(key_id))
        .filter(key_usage::minute.ge(from.div_euclid(MINUTE_MS) * MINUTE_MS))
        .filter(key_usage::minute.le(to))
        .order((key_usage::minute.asc(), key_usage::code.asc()))
        .select((key_usage::minute, key_usage::code, key_usage::count))
        .load(conn)?;
    Ok(UsageSeries {
        items: rows
            .into_iter()
            .map(|(minute, code, count)| UsagePoint {
                minute,
                code,
                count,
            })
            .collect(),
    })
}
