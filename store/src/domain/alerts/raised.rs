//! Raised alerts: listing, reading and acknowledging them.

use diesel::deserialize::FromSqlRow;
use diesel::expression::AsExpression;
use diesel::prelude::*;
use diesel::sql_types::Text;
use serde::{Deserialize, Serialize};

use super::Rule;
use crate::db::schema::alerts;
use crate::db::{write_tx, DbConn};
use crate::domain::{audit, Page};
use crate::error::{ConflictCode, StoreError};
use crate::ids::{AlertId, KeyId, ProjectId};

/// `open` until someone acknowledges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    /// Not yet looked at.
    Open,
    /// Looked at.
    Acknowledged,
}

impl AlertStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Open => "open",
            AlertStatus::Acknowledged => "acknowledged",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<AlertStatus> {
        match s {
            "open" => Some(AlertStatus::Open),
            "acknowledged" => Some(AlertStatus::Acknowledged),
            _ => None,
        }
    }
}

keygate_shared::text_column!(AlertStatus, AlertStatus::parse, AlertStatus::as_str);

/// An alert.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AlertView {
    /// `alr_...`.
    pub id: AlertId,
    /// The key's project.
    pub project_id: ProjectId,
    /// The key.
    pub key_id: KeyId,
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

/// An alert as stored.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = alerts)]
struct AlertRow {
    id: AlertId,
    project_id: ProjectId,
    key_id: KeyId,
    rule: Rule,
    summary: String,
    /// JSON.
    details: String,
    status: AlertStatus,
    raised_at: i64,
    acknowledged_at: Option<i64>,
    acknowledged_by: Option<String>,
    action: Option<String>,
}

fn alert_of(r: AlertRow) -> AlertView {
    AlertView {
        rule: r.rule,
        status: r.status,
        details: serde_json::from_str(&r.details).unwrap_or(serde_json::Value::Null),
        id: r.id,
        project_id: r.project_id,
        key_id: r.key_id,
        summary: r.summary,
        raised_at: r.raised_at,
        acknowledged_at: r.acknowledged_at,
        acknowledged_by: r.acknowledged_by,
        action: r.action,
    }
}

/// Lists alerts, newest first.
pub fn list(conn: &mut DbConn, q: AlertQuery) -> Result<AlertPage, StoreError> {
    let page = Page::parse(q.limit, q.cursor, "alr")?;
    let mut query = alerts::table.select(AlertRow::as_select()).into_boxed();
    if let Some(s) = q.status {
        query = query.filter(alerts::status.eq(s));
    }
    if let Some(p) = q.project_id {
        query = query.filter(alerts::project_id.eq(p));
    }
    if let Some(k) = q.key_id {
        query = query.filter(alerts::key_id.eq(k));
    }
    if let Some(r) = q.rule {
        query = query.filter(alerts::rule.eq(r));
    }
    if let Some(b) = &page.before {
        query = query.filter(alerts::id.lt(b.clone()));
    }
    let rows: Vec<AlertRow> = query
        .order(alerts::id.desc())
        .limit(page.limit + 1)
        .load(conn)?;
    let (rows, next_cursor) = page.finish(rows, |r| &r.id);
    Ok(AlertPage {
        items: rows.into_iter().map(alert_of).collect(),
        next_cursor,
    })
}

/// One alert.
pub fn get(conn: &mut DbConn, id: &AlertId) -> Result<AlertView, StoreError> {
    let rows: Vec<AlertRow> = alerts::table
        .find(id)
        .select(AlertRow::as_select())
        .load(conn)?;
    rows.into_iter()
        .next()
        .map(alert_of)
        .ok_or_else(|| StoreError::not_found("alert", id))
}

/// Marks an alert as looked at.
pub fn acknowledge(
    conn: &mut DbConn,
    now: i64,
    actor: &str,
    id: &AlertId,
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
                detail: format!("alert {:?} is already acknowledged", id.as_str()),
            });
        }
        diesel::update(alerts::table.find(id))
            .set((
                alerts::status.eq(AlertStatus::Acknowledged),
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
