//! Raised alerts: listing, reading and acknowledging them.

use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use super::Rule;
use crate::db::schema::alerts;
use crate::db::{write_tx, DbConn};
use crate::domain::{audit, Page};
use crate::error::{ConflictCode, StoreError};

/// `open` until someone acknowledges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    /// Not yet looked at.
    Open,
    /// Looked at.
    Acknowledged,
}

impl AlertStatus {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Open => "open",
            AlertStatus::Acknowledged => "acknowledged",
        }
    }
}

/// An alert.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AlertView {
    /// `alr_...`.
    pub id: String,
    /// The key's project.
    pub project_id: String,
    /// The key.
    pub key_id: String,
    /// The rule that fired.
    pub rule: Rule,
    /// One line: what was seen.
    pub summary: String,
    /// The evidence: counts, thresholds, sample values.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub details: serde_json::Value,
    /// `open` or `acknowledged`.
    pub status: AlertStatus,
    /// RFC 3339.
    #[serde(with = "crate::timefmt::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub raised_at: i64,
    /// RFC 3339, or null.
    #[serde(with = "crate::timefmt::opt_rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub acknowledged_at: Option<i64>,
    /// Who acknowledged it.
    pub acknowledged_by: Option<String>,
    /// `revoked` when the rule revoked the key; null otherwise.
    pub action: Option<String>,
}

/// A page of alerts.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AlertPage {
    /// Newest first.
    pub items: Vec<AlertView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Query of `GET /v1/alerts`.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
pub struct AlertQuery {
    /// `open` or `acknowledged`; default both.
    #[cfg_attr(feature = "openapi", param(value_type = Option<AlertStatus>))]
    pub status: Option<AlertStatus>,
    /// Only this project's alerts.
    pub project_id: Option<String>,
    /// Only this key's alerts.
    pub key_id: Option<String>,
    /// Only this rule's alerts.
    #[cfg_attr(feature = "openapi", param(value_type = Option<Rule>))]
    pub rule: Option<Rule>,
    /// 1 to 200; default 50.
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 200))]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    #[cfg_attr(feature = "openapi", param(pattern = "^(alr_[0-9A-Za-z]{26})?$"))]
    pub cursor: Option<String>,
}

/// Body of `POST /v1/alerts/{alert_id}/acknowledge`.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Acknowledge {
    /// Kept in the audit log.
    pub note: Option<String>,
}

type AlertRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
);

fn alert_of(r: AlertRow) -> Result<AlertView, StoreError> {
    let (id, project_id, key_id, rule, summary, details, status, raised_at, ack_at, ack_by, action) =
        r;
    Ok(AlertView {
        rule: Rule::parse(&rule)
            .ok_or_else(|| StoreError::internal(anyhow::anyhow!("stored rule {rule:?}")))?,
        status: if status == "acknowledged" {
            AlertStatus::Acknowledged
        } else {
            AlertStatus::Open
        },
        details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
        id,
        project_id,
        key_id,
        summary,
        raised_at,
        acknowledged_at: ack_at,
        acknowledged_by: ack_by,
        action,
    })
}

macro_rules! alert_columns {
    () => {
        (
            alerts::id,
            alerts::project_id,
            alerts::key_id,
            alerts::rule,
            alerts::summary,
            alerts::details,
            alerts::status,
            alerts::raised_at,
            alerts::acknowledged_at,
            alerts::acknowledged_by,
            alerts::action,
        )
    };
}

/// Lists alerts, newest first.
pub fn list(conn: &mut DbConn, q: AlertQuery) -> Result<AlertPage, StoreError> {
    let page = Page::parse(q.limit, q.cursor, "alr")?;
    let mut query = alerts::table.select(alert_columns!()).into_boxed();
    if let Some(s) = q.status {
        query = query.filter(alerts::status.eq(s.as_str()));
    }
    if let Some(p) = q.project_id {
        query = query.filter(alerts::project_id.eq(p));
    }
    if let Some(k) = q.key_id {
        query = query.filter(alerts::key_id.eq(k));
    }
    if let Some(r) = q.rule {
        query = query.filter(alerts::rule.eq(r.as_str()));
    }
    if let Some(b) = &page.before {
        query = query.filter(alerts::id.lt(b.clone()));
    }
    let rows: Vec<AlertRow> = query
        .order(alerts::id.desc())
        .limit(page.limit + 1)
        .load(conn)?;
    let (rows, next_cursor) = page.finish(rows, |r| &r.0);
    Ok(AlertPage {
        items: rows.into_iter().map(alert_of).collect::<Result<_, _>>()?,
        next_cursor,
    })
}

/// One alert.
pub fn get(conn: &mut DbConn, id: &str) -> Result<AlertView, StoreError> {
    let rows: Vec<AlertRow> = alerts::table.find(id).select(alert_columns!()).load(conn)?;
    rows.into_iter()
        .next()
        .map(alert_of)
        .transpose()?
        .ok_or_else(|| StoreError::not_found("alert", id))
}

/// Marks an alert as looked at.
pub fn acknowledge(
    conn: &mut DbConn,
    now: i64,
    actor: &str,
    id: &str,
    input: Acknowledge,
) -> Result<AlertView, StoreError> {
    let note = input
        .note
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty());
    if note.as_ref().is_some_and(|n| n.chars().count() > 500) {
        return Err(StoreError::validation(
            "note",
            "must be at most 500 characters",
        ));
    }
    write_tx(conn, |conn| {
        let alert = get(conn, id)?;
        if alert.status == AlertStatus::Acknowledged {
            return Err(StoreError::Conflict {
                code: ConflictCode::AlreadyAcknowledged,
                detail: format!("alert {id:?} is already acknowledged"),
            });
        }
        diesel::update(alerts::table.find(id))
            .set((
                alerts::status.eq(AlertStatus::Acknowledged.as_str()),
                alerts::acknowledged_at.eq(Some(now)),
                alerts::acknowledged_by.eq(Some(actor)),
            ))
            .execute(conn)?;
        audit::record(
            conn,
            now,
            actor,
            "alert.acknowledge",
            id,
            serde_json::json!({ "key_id": alert.key_id, "rule": alert.rule, "note": note }),
        )?;
        get(conn, id)
    })
}
