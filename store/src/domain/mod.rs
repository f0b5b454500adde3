//! Domain operations. Each takes a connection and `now`, checks its input, writes its change
//! and its audit entry in one transaction, and bumps the snapshot version when keys or projects
//! change.

pub mod accounts;
pub mod alerts;
pub mod audit;
pub mod events;
pub mod keys;
pub mod leaks;
pub mod projects;
pub mod usage;
pub mod webhooks;

use diesel::prelude::*;
use serde::Deserialize;

use crate::db::schema::snapshot_state;
use crate::db::DbConn;
use crate::error::StoreError;

/// Default and largest page sizes.
pub const DEFAULT_PAGE: i64 = 50;
/// Largest page size.
pub const MAX_PAGE: i64 = 200;

/// `limit` and `cursor` of a list.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// 1 to 200; default 50.
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 200))]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A checked page request: newest first, ids below `cursor`.
#[derive(Debug, Clone)]
pub struct Page {
    /// Page size.
    pub limit: i64,
    /// Exclusive upper bound on ids.
    pub before: Option<String>,
}

impl Page {
    /// Checks `limit` and `cursor`.
    pub fn parse(
        limit: Option<i64>,
        cursor: Option<String>,
        id_prefix: &str,
    ) -> Result<Page, StoreError> {
        let limit = limit.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(StoreError::validation(
                "limit",
                format!("must be between 1 and {MAX_PAGE}"),
            ));
        }
        let before = match cursor.filter(|c| !c.is_empty()) {
            None => None,
            Some(c) => {
                let ok = c.len() == id_prefix.len() + 1 + 26
                    && c.starts_with(id_prefix)
                    && c[id_prefix.len()..].starts_with('_')
                    && c[id_prefix.len() + 1..]
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric());
                if !ok {
                    return Err(StoreError::validation(
                        "cursor",
                        "is not a cursor from this list",
                    ));
                }
                Some(c)
            }
        };
        Ok(Page { limit, before })
    }

    /// Splits a fetched `limit + 1` rows into the page and the next cursor.
    pub fn finish<T>(&self, mut rows: Vec<T>, id: impl Fn(&T) -> &str) -> (Vec<T>, Option<String>) {
        let more = rows.len() as i64 > self.limit;
        rows.truncate(self.limit as usize);
        let next = if more {
            rows.last().map(|r| id(r).to_owned())
        } else {
            None
        };
        (rows, next)
    }
}

/// Bumps the snapshot version. The first statement of every transaction that changes keys or
/// projects: on PostgreSQL the row lock orders concurrent writers (each waits, then increments
/// the committed value), on SQLite the write lock taken by `BEGIN IMMEDIATE` does. Either way no
/// two commits share a version and none is lost.
pub fn bump_version(conn: &mut DbConn) -> Result<i64, StoreError> {
    diesel::update(snapshot_state::table.find(1))
        .set(snapshot_state::version.eq(snapshot_state::version + 1))
        .execute(conn)?;
    current_version(conn)
}

/// The snapshot version.
pub fn current_version(conn: &mut DbConn) -> Result<i64, StoreError> {
    // On the concrete connection, so the prepared statement is cached: snapshot polling reads
    // this on every request.
    let query = snapshot_state::table
        .find(1)
        .select(snapshot_state::version);
    // `load`, not `first`: see verify::lookup.
    let rows: Vec<i64> = crate::with_backend!(conn, |c| query.load(c))?;
    rows.into_iter()
        .next()
        .ok_or_else(|| StoreError::internal(anyhow::anyhow!("snapshot_state has no row")))
}

/// Whether a diesel error is a unique-constraint violation.
pub fn is_unique_violation(e: &diesel::result::Error) -> bool {
    matches!(
        e,
        diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)
    )
}

/// Checks a display name: 1 to 200 characters, not blank.
pub fn check_name(field: &str, name: &str) -> Result<String, StoreError> {
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Err(StoreError::validation(field, "must not be empty"));
    }
    if trimmed.chars().count() > 200 {
        return Err(StoreError::validation(
            field,
            "must be at most 200 characters",
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(StoreError::validation(
            field,
            "must not contain control characters",
        ));
    }
    Ok(trimmed.to_owned())
}

/// Deserializes a field that may be absent (`None`), `null` (`Some(None)`) or a value.
pub fn double_option<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_bounds_and_cursors() {
        assert_eq!(Page::parse(None, None, "key").unwrap().limit, DEFAULT_PAGE);
        for bad in [0, -1, MAX_PAGE + 1] {
            assert!(Page::parse(Some(bad), None, "key").is_err());
        }
        let ok = "key_01jd0000000000000000000000";
        assert_eq!(
            Page::parse(Some(2), Some(ok.into()), "key")
                .unwrap()
                .before
                .as_deref(),
            Some(ok)
        );
        for bad in [
            "prj_01jd0000000000000000000000",
            "key_short",
            "key_01jd00000000000000000000é",
            "key-01jd0000000000000000000000",
        ] {
            assert!(Page::parse(None, Some(bad.into()), "key").is_err(), "{bad}");
        }
        let page = Page::parse(Some(2), None, "key").unwrap();
        let (rows, next) = page.finish(vec!["a", "b", "c"], |r| r);
        assert_eq!(rows, ["a", "b"]);
        assert_eq!(next.as_deref(), Some("b"));
        let (rows, next) = page.finish(vec!["a", "b"], |r| r);
        assert_eq!(rows.len(), 2);
        assert_eq!(next, None);
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(check_name("name", "  Acme  ").unwrap(), "Acme");
        assert!(check_name("name", "   ").is_err());
        assert!(check_name("name", &"x".repeat(201)).is_err());
        assert!(check_name("name", "a\u{0}b").is_err());
    }
}
