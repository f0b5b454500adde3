//! Leak reports (`POST /v1/leaks`): keys found in public places by a secret-scanning partner
//! or by `keygate scan --revoke`. Every live key reported is revoked at once, with the reporter
//! and the source in the audit log.

use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use super::bump_version;
use crate::db::models::KeyRow;
use crate::db::schema::api_keys;
use crate::db::{write_tx, DbConn};
use crate::error::StoreError;

/// Most keys in one report.
pub const MAX_KEYS: usize = 100;
/// Longest `source`.
const MAX_SOURCE_CHARS: usize = 100;
/// Longest `url`.
const MAX_URL_CHARS: usize = 2000;

/// Body of `POST /v1/leaks`. `Debug` shows how many keys, not the keys.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LeakReport {
    /// The leaked keys, in full (1 to 100).
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 100))]
    pub keys: Vec<String>,
    /// Who found them, e.g. `github-secret-scanning` (1 to 100 characters once trimmed, no
    /// control characters).
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub source: String,
    /// Where they were found (http or https URL, at most 2000 characters).
    pub url: Option<String>,
}

impl std::fmt::Debug for LeakReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeakReport")
            .field("keys", &format_args!("[{} redacted]", self.keys.len()))
            .field("source", &self.source)
            .field("url", &self.url)
            .finish()
    }
}

/// What happened to one reported key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LeakStatus {
    /// It was live and is now revoked.
    Revoked,
    /// It was already revoked.
    AlreadyRevoked,
    /// Well formed, but no key has that hash.
    Unknown,
    /// Not a key (bad shape or checksum).
    Malformed,
}

/// One item of the answer, in the order of the request's `keys`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeakResult {
    /// The key's start; `null` for a malformed key.
    pub start: Option<String>,
    /// The key's id, for revoked and already revoked keys.
    pub key_id: Option<String>,
    /// The outcome.
    pub status: LeakStatus,
}

/// Answer of `POST /v1/leaks`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeakOutcome {
    /// One per reported key, in order.
    pub items: Vec<LeakResult>,
}

fn check(report: &LeakReport) -> Result<(String, Option<String>), StoreError> {
    if report.keys.is_empty() {
        return Err(StoreError::validation("keys", "must not be empty"));
    }
    if report.keys.len() > MAX_KEYS {
        return Err(StoreError::validation(
            "keys",
            format!("at most {MAX_KEYS} keys per report"),
        ));
    }
    let source = report.source.trim();
    if source.is_empty() {
        return Err(StoreError::validation("source", "must not be empty"));
    }
    if source.chars().count() > MAX_SOURCE_CHARS || source.chars().any(char::is_control) {
        return Err(StoreError::validation(
            "source",
            format!("must be at most {MAX_SOURCE_CHARS} characters, without control characters"),
        ));
    }
    let url = match report.url.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(u) => {
            let lower = u.to_ascii_lowercase();
            if !(lower.starts_with("https://") || lower.starts_with("http://"))
                || u.chars().count() > MAX_URL_CHARS
                || u.chars().any(|c| c.is_control() || c.is_whitespace())
            {
                return Err(StoreError::validation(
                    "url",
                    format!("must be an http or https URL of at most {MAX_URL_CHARS} characters"),
                ));
            }
            Some(u.to_owned())
        }
    };
    Ok((source.to_owned(), url))
}

fn find_by_hash(conn: &mut DbConn, hash_hex: &str) -> Result<Option<KeyRow>, StoreError> {
    let rows: Vec<KeyRow> = api_keys::table
        .filter(api_keys::key_hash.eq(hash_hex))
        .load(conn)?;
    Ok(rows.into_iter().next())
}

/// Handles a report: revokes every live key in it, in one transaction.
pub fn report(
    conn: &mut DbConn,
    now: i64,
    actor: &str,
    report: LeakReport,
) -> Result<LeakOutcome, StoreError> {
    let (source, url) = check(&report)?;
    // Parse and hash first: malformed keys never reach the database.
    let parsed: Vec<Option<(String, String)>> = report
        .keys
        .iter()
        .map(|k| {
            keygate_shared::key::parse(k)
                .ok()
                .map(|p| (p.start(), p.hash().to_hex()))
        })
        .collect();
    let reason = format!("leaked: reported by {source}");
    // The version bump must be the transaction's first statement (it orders concurrent
    // writers), so look first whether there is anything to revoke at all.
    let mut any_live = false;
    for (_, hash) in parsed.iter().flatten() {
        if find_by_hash(conn, hash)?.is_some_and(|r| r.revoked_at.is_none()) {
            any_live = true;
            break;
        }
    }
    write_tx(conn, |conn| {
        let mut bumped = false;
        if any_live {
            bump_version(conn)?;
            bumped = true;
        }
        let mut items = Vec::with_capacity(parsed.len());
        for p in &parsed {
            let Some((start, hash)) = p else {
                items.push(LeakResult {
                    start: None,
                    key_id: None,
                    status: LeakStatus::Malformed,
                });
                continue;
            };
            let Some(row) = find_by_hash(conn, hash)? else {
                items.push(LeakResult {
                    start: Some(start.clone()),
                    key_id: None,
                    status: LeakStatus::Unknown,
                });
                continue;
            };
            if row.revoked_at.is_some() {
                items.push(LeakResult {
                    start: Some(start.clone()),
                    key_id: Some(row.id.into_string()),
                    status: LeakStatus::AlreadyRevoked,
                });
                continue;
            }
            if !bumped {
                bump_version(conn)?;
                bumped = true;
            }
            let mut extra = serde_json::Map::new();
            extra.insert(
                "leak".to_owned(),
                serde_json::json!({ "source": source, "url": url, "reported_by": actor }),
            );
            super::keys::mark_revoked(conn, now, actor, &row, Some(reason.clone()), extra)?;
            items.push(LeakResult {
                start: Some(start.clone()),
                key_id: Some(row.id.into_string()),
                status: LeakStatus::Revoked,
            });
        }
        Ok(LeakOutcome { items })
    })
}
