//! The append-only audit log: actor, action, target, time and the before/after of the policy.
//! Never a secret: details hold views (which have no key, hash or password), never rows.
//! Triggers in the database refuse UPDATE and DELETE on the table.

use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use super::Page;
use crate::db::models::AuditRow;
use crate::db::schema::audit_log;
use crate::db::DbConn;
use crate::error::StoreError;
use crate::ids::new_id;

/// Appends an entry.
pub fn record(
    conn: &mut DbConn,
    now: i64,
    actor: &str,
    action: &str,
    target_id: &str,
    details: serde_json::Value,
) -> Result<(), StoreError> {
    let row = AuditRow {
        id: new_id("aud"),
        at: now,
        actor: actor.to_owned(),
        action: action.to_owned(),
        target_id: target_id.to_owned(),
        details: details.to_string(),
    };
    diesel::insert_into(audit_log::table)
        .values(&row)
        .execute(conn)?;
    Ok(())
}

/// An audit entry as the API shows it.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    /// `aud_...`.
    pub id: String,
    /// When (RFC 3339).
    #[serde(with = "crate::timefmt::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: i64,
    /// `adm_...`, `tok_...` or `cli`.
    pub actor: String,
    /// `project.create`, `key.revoke`, ...
    pub action: String,
    /// The id of the changed resource.
    pub target_id: String,
    /// Before/after views of the change.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub details: serde_json::Value,
}

/// A page of audit entries.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditPage {
    /// Newest first.
    pub items: Vec<AuditEntry>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Query of `GET /v1/audit`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only entries about this resource.
    pub target_id: Option<String>,
    /// Only entries whose action starts with this (`key.` or `key.revoke`).
    pub action: Option<String>,
    /// Only entries by this actor (`adm_...`, `tok_...`, `rule:<rule>`, `system`).
    pub actor: Option<String>,
    /// 1 to 200; default 50.
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 200))]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    #[cfg_attr(feature = "openapi", param(pattern = "^(aud_[0-9A-Za-z]{26})?$"))]
    pub cursor: Option<String>,
}

/// Lists entries, newest first.
pub fn list(conn: &mut DbConn, q: AuditQuery) -> Result<AuditPage, StoreError> {
    let page = Page::parse(q.limit, q.cursor, "aud")?;
    let mut query = audit_log::table.into_boxed();
    if let Some(t) = q.target_id {
        query = query.filter(audit_log::target_id.eq(t));
    }
    if let Some(a) = q.action.filter(|a| !a.is_empty()) {
        // A prefix match: LIKE's own wildcards in it are taken literally. Actions are lower
        // case, and SQLite's LIKE ignores ASCII case where PostgreSQL's does not.
        let escaped = a
            .to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        query = query.filter(audit_log::action.like(format!("{escaped}%")).escape('\\'));
    }
    if let Some(a) = q.actor.filter(|a| !a.is_empty()) {
        query = query.filter(audit_log::actor.eq(a));
    }
    if let Some(b) = &page.before {
        query = query.filter(audit_log::id.lt(b.clone()));
    }
    let rows: Vec<AuditRow> = query
        .order(audit_log::id.desc())
        .limit(page.limit + 1)
        .load(conn)?;
    let (rows, next_cursor) = page.finish(rows, |r| &r.id);
    let items = rows
        .into_iter()
        .map(|r| AuditEntry {
            details: serde_json::from_str(&r.details).unwrap_or(serde_json::Value::Null),
            id: r.id,
            at: r.at,
            actor: r.actor,
            action: r.action,
            target_id: r.target_id,
        })
        .collect();
    Ok(AuditPage { items, next_cursor })
}
