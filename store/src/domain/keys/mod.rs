//! API keys: issue, list, update, rotate, revoke. Only the SHA-256 of a key and its start are
//! stored; the plaintext leaves the process once, in the response that creates it.
//!
//! The operations are here; the API's request and response bodies in [`views`]; how a row
//! becomes a view or a snapshot record in [`rows`]; the checks of a key spec in [`checks`].

mod checks;
mod rows;
mod search;
mod views;

pub use rows::{record_from_row, StoredPolicy};
pub use search::{MAX_NAME_PREFIX_CHARS, MAX_START_CHARS};
pub use views::{
    CreatedKey, KeyListQuery, KeyPage, KeySpec, KeyView, PreviousKey, RevokeKey, RotateKey,
    RotatedKey, UpdateKey,
};

use diesel::prelude::*;
use keygate_shared::{KeyPrefix, KeyStatus, PlaintextKey};

use super::{audit, bump_version, check_name, events, projects, Page};
use crate::db::models::{KeyChanges, KeyRow};
use crate::db::schema::{api_keys, key_changes};
use crate::db::{write_tx, DbConn};
use crate::error::{ConflictCode, StoreError};
use crate::ids::{KeyId, ProjectId};
use checks::{check_edge_decodes, check_expiry, check_metadata, check_restrictions, check_scopes};
use rows::status_at;

/// Longest rotation grace: 30 days.
pub const MAX_GRACE_SECONDS: u32 = 30 * 86_400;
const MAX_LIST_ITEMS: usize = 100;
const MAX_METADATA_BYTES: usize = 4096;
/// Longest revocation reason.
pub const MAX_REASON_CHARS: usize = 500;

type Metadata = serde_json::Map<String, serde_json::Value>;
/// Loads a key row.
pub fn find_row(conn: &mut DbConn, id: &KeyId) -> Result<KeyRow, StoreError> {
    // `load` on the concrete connection keeps the prepared statement cached (see
    // verify::lookup); the id is the primary key.
    let query = api_keys::table.find(id);
    let rows: Vec<KeyRow> = crate::with_backend!(conn, |c| query.load(c))?;
    rows.into_iter()
        .next()
        .ok_or_else(|| StoreError::not_found("key", id))
}

/// Issues a key in a project.
pub fn create(
    conn: &mut DbConn,
    now: i64,
    actor: &str,
    project_id: &ProjectId,
    spec: KeySpec,
) -> Result<CreatedKey, StoreError> {
    let name = check_name("name", &spec.name)?;
    let scopes = check_scopes(spec.scopes)?;
    check_restrictions(spec.kind, &spec.restrictions)?;
    check_expiry(spec.expires_at, now)?;
    check_metadata(&spec.metadata)?;
    let policy = StoredPolicy {
        scopes,
        referrers: spec.restrictions.referrers,
        ips: spec.restrictions.ips,
        rate_limit: spec.rate_limit,
        quota: spec.quota,
        metadata: spec.metadata,
    }
    .to_json()?;
    write_tx(conn, |conn| {
        let version = bump_version(conn)?;
        let project = projects::find_row(conn, project_id)?;
        let prefix = KeyPrefix::parse(&project.key_prefix).map_err(StoreError::internal)?;
        let key =
            PlaintextKey::generate(&mut rand::rngs::OsRng, &prefix, spec.kind, spec.environment);
        let row = KeyRow {
            id: KeyId::generate(),
            project_id: project.id,
            name,
            kind: spec.kind,
            environment: spec.environment,
            key_hash: key.hash().to_hex(),
            key_start: key.start(),
            policy,
            expires_at: spec.expires_at,
            created_at: now,
            updated_at: now,
            revoked_at: None,
            revoked_reason: None,
            rotated_to: None,
            rotated_from: None,
            last_used_at: None,
        };
        check_edge_decodes(&row)?;
        diesel::insert_into(api_keys::table)
            .values(&row)
            .execute(conn)?;
        mark_changed(conn, &row.id, version)?;
        let view = KeyView::from_row(&row, now)?;
        audit::record(
            conn,
            now,
            actor,
            "key.create",
            &view.id,
            serde_json::json!({ "before": null, "after": view }),
        )?;
        events::emit(
            conn,
            now,
            events::KEY_CREATED,
            &serde_json::json!({ "key": view }),
        )?;
        Ok(CreatedKey {
            view,
            key: key.into_string(),
        })
    })
}

/// One key.
pub fn get(conn: &mut DbConn, now: i64, id: &KeyId) -> Result<KeyView, StoreError> {
    KeyView::from_row(&find_row(conn, id)?, now)
}

/// A page of a project's keys, newest first, optionally only those whose name or start begins
/// with a prefix (see [`search`]).
pub fn list(
    conn: &mut DbConn,
    now: i64,
    project_id: &ProjectId,
    q: KeyListQuery,
) -> Result<KeyPage, StoreError> {
    let page = Page::parse(q.limit, q.cursor, "key")?;
    let name = search::prefix_range(
        "name_prefix",
        q.name_prefix.as_deref(),
        MAX_NAME_PREFIX_CHARS,
        true,
    )?;
    let start = search::prefix_range("start", q.start.as_deref(), MAX_START_CHARS, false)?;
    projects::find_row(conn, project_id)?;
    let mut query = api_keys::table
        .filter(api_keys::project_id.eq(project_id.to_owned()))
        .into_boxed();
    if let Some(env) = q.environment {
        query = query.filter(api_keys::environment.eq(env.as_str()));
    }
    match q.status {
        None => {}
        Some(KeyStatus::Revoked) => query = query.filter(api_keys::revoked_at.is_not_null()),
        Some(KeyStatus::Expired) => {
            query = query
                .filter(api_keys::revoked_at.is_null())
                .filter(api_keys::expires_at.le(now))
        }
        Some(KeyStatus::Active) => {
            query = query.filter(api_keys::revoked_at.is_null()).filter(
                api_keys::expires_at
                    .is_null()
                    .or(api_keys::expires_at.gt(now)),
            )
        }
    }
    // A search reads the range of the prefix on `api_keys_project_name (project_id,
    // lower(name), id)` or `api_keys_project_start (project_id, key_start, id)`, then sorts
    // the matches by id: its cost is the number of keys matching the prefix, not the size of
    // the project. Checked with EXPLAIN QUERY PLAN on SQLite ("SEARCH api_keys USING INDEX
    // api_keys_project_name (project_id=? AND <expr>>? AND <expr><?)") and EXPLAIN on
    // PostgreSQL ("Index Scan using api_keys_project_name ... Index Cond: ((project_id = $1)
    // AND (lower(name) >= $2) AND (lower(name) < $3))").
    if let Some(r) = &name {
        query = query.filter(search::lower(api_keys::name).ge(r.low.clone()));
        if let Some(high) = &r.high {
            query = query.filter(search::lower(api_keys::name).lt(high.clone()));
        }
    }
    if let Some(r) = &start {
        query = query.filter(api_keys::key_start.ge(r.low.clone()));
        if let Some(high) = &r.high {
            query = query.filter(api_keys::key_start.lt(high.clone()));
        }
    }
    let searching = name.is_some() || start.is_some();
    if let Some(b) = &page.before {
        if searching && matches!(conn, DbConn::Sqlite(_)) {
            // Without statistics SQLite prefers `api_keys_project_id (project_id, id)` for
            // `id < ?`, which walks every older key of the project looking for matches; the
            // unary `+` keeps the cursor off that index so the prefix range is used.
            query = query.filter(
                diesel::dsl::sql::<diesel::sql_types::Bool>("+\"api_keys\".\"id\" < ")
                    .bind::<diesel::sql_types::Text, _>(b.clone()),
            );
        } else {
            query = query.filter(api_keys::id.lt(b.clone()));
        }
    }
    let rows: Vec<KeyRow> = if searching {
        // The page's ids first, then their rows: the matches are sorted by id, and sorting
        // ids read from the index (covering when no status or environment filter needs the
        // row) is far cheaper than sorting whole rows when a prefix matches many keys.
        let ids: Vec<KeyId> = query
            .select(api_keys::id)
            .order(api_keys::id.desc())
            .limit(page.limit + 1)
            .load(conn)?;
        api_keys::table
            .filter(api_keys::id.eq_any(ids))
            .order(api_keys::id.desc())
            .load(conn)?
    } else {
        query
            .order(api_keys::id.desc())
            .limit(page.limit + 1)
            .load(conn)?
    };
    let (rows, next_cursor) = page.finish(rows, |r| &r.id);
    let items = rows
        .iter()
        .map(|r| KeyView::from_row(r, now))
        .collect::<Result<_, _>>()?;
    Ok(KeyPage { items, next_cursor })
}

/// Applies a partial update.
pub fn update(
    conn: &mut DbConn,
    now: i64,
    actor: &str,
    id: &KeyId,
    input: UpdateKey,
) -> Result<KeyView, StoreError> {
    if input.kind.is_some() {
        return Err(StoreError::validation(
            "kind",
            "cannot be changed after the key is created",
        ));
    }
    if input.environment.is_some() {
        return Err(StoreError::validation(
            "environment",
            "cannot be changed after the key is created",
        ));
    }
    let name = input
        .name
        .as_deref()
        .map(|n| check_name("name", n))
        .transpose()?;
    let scopes = input.scopes.map(check_scopes).transpose()?;
    if let Some(Some(e)) = input.expires_at {
        check_expiry(Some(e), now)?;
    }
    if let Some(m) = &input.metadata {
        check_metadata(m)?;
    }
    write_tx(conn, |conn| {
        let version = bump_version(conn)?;
        let row = find_row(conn, id)?;
        if row.revoked_at.is_some() {
            return Err(StoreError::Conflict {
                code: ConflictCode::KeyNotActive,
                detail: format!("key {id:?} is revoked and cannot be changed"),
            });
        }
        let before = KeyView::from_row(&row, now)?;
        let kind = before.kind;
        let restrictions = input
            .restrictions
            .unwrap_or_else(|| before.restrictions.clone());
        check_restrictions(kind, &restrictions)?;
        let expires_at = match input.expires_at {
            None => row.expires_at,
            Some(new) => {
                // A rotated key must not outlive the end of its grace period.
                let extends = match (new, row.expires_at) {
                    (_, None) => false,
                    (None, Some(_)) => true,
                    (Some(n), Some(cur)) => n > cur,
                };
                if row.rotated_to.is_some() && extends {
                    return Err(StoreError::validation(
                        "expires_at",
                        "a rotated key's expiry cannot be extended",
                    ));
                }
                new
            }
        };
        let mut policy = StoredPolicy::parse(&row)?;
        if let Some(sc) = scopes {
            policy.scopes = sc;
        }
        policy.referrers = restrictions.referrers;
        policy.ips = restrictions.ips;
        if let Some(v) = input.rate_limit {
            policy.rate_limit = v;
        }
        if let Some(v) = input.quota {
            policy.quota = v;
        }
        if let Some(v) = input.metadata {
            policy.metadata = v;
        }
        let changes = KeyChanges {
            name: name.unwrap_or_else(|| row.name.clone()),
            policy: policy.to_json()?,
            expires_at,
            updated_at: now,
        };
        check_edge_decodes(&KeyRow {
            policy: changes.policy.clone(),
            expires_at: changes.expires_at,
            ..row.clone()
        })?;
        diesel::update(api_keys::table.find(id))
            .set(&changes)
            .execute(conn)?;
        mark_changed(conn, id, version)?;
        let after = KeyView::from_row(&find_row(conn, id)?, now)?;
        audit::record(
            conn,
            now,
            actor,
            "key.update",
            id,
            serde_json::json!({ "before": before, "after": after }),
        )?;
        Ok(after)
    })
}

/// Replaces a key with a new one of the same spec; the old key keeps working for
/// `grace_seconds`, but never past its own expiry.
pub fn rotate(
    conn: &mut DbConn,
    now: i64,
    actor: &str,
    id: &KeyId,
    input: RotateKey,
) -> Result<RotatedKey, StoreError> {
    if input.grace_seconds > MAX_GRACE_SECONDS {
        return Err(StoreError::validation(
            "grace_seconds",
            format!("must be between 0 and {MAX_GRACE_SECONDS} (30 days)"),
        ));
    }
    write_tx(conn, |conn| {
        let version = bump_version(conn)?;
        let old = find_row(conn, id)?;
        match status_at(&old, now) {
            KeyStatus::Active => {}
            status => {
                let s = if status == KeyStatus::Revoked {
                    "revoked"
                } else {
                    "expired"
                };
                return Err(StoreError::Conflict {
                    code: ConflictCode::KeyNotActive,
                    detail: format!("key {id:?} is {s} and cannot be rotated"),
                });
            }
        }
        if let Some(to) = &old.rotated_to {
            return Err(StoreError::Conflict {
                code: ConflictCode::AlreadyRotated,
                detail: format!("key {id:?} was already rotated to {to:?}"),
            });
        }
        let before = KeyView::from_row(&old, now)?;
        let project = projects::find_row(conn, &old.project_id)?;
        let prefix = KeyPrefix::parse(&project.key_prefix).map_err(StoreError::internal)?;
        let key =
            PlaintextKey::generate(&mut rand::rngs::OsRng, &prefix, old.kind, old.environment);
        let new_row = KeyRow {
            id: KeyId::generate(),
            key_hash: key.hash().to_hex(),
            key_start: key.start(),
            created_at: now,
            updated_at: now,
            revoked_at: None,
            revoked_reason: None,
            rotated_to: None,
            rotated_from: Some(old.id.clone()),
            last_used_at: None,
            ..old.clone()
        };
        diesel::insert_into(api_keys::table)
            .values(&new_row)
            .execute(conn)?;
        let grace_end = now + i64::from(input.grace_seconds) * 1000;
        let old_expiry = Some(old.expires_at.map_or(grace_end, |e| e.min(grace_end)));
        diesel::update(api_keys::table.find(id))
            .set((
                api_keys::expires_at.eq(old_expiry),
                api_keys::rotated_to.eq(Some(new_row.id.clone())),
                api_keys::updated_at.eq(now),
            ))
            .execute(conn)?;
        mark_changed(conn, &new_row.id, version)?;
        mark_changed(conn, id, version)?;
        let after_old = KeyView::from_row(&find_row(conn, id)?, now)?;
        let view = KeyView::from_row(&new_row, now)?;
        audit::record(
            conn,
            now,
            actor,
            "key.rotate",
            id,
            serde_json::json!({
                "before": before,
                "after": after_old,
                "new_key_id": view.id,
                "grace_seconds": input.grace_seconds,
            }),
        )?;
        audit::record(
            conn,
            now,
            actor,
            "key.create",
            &view.id,
            serde_json::json!({ "before": null, "after": view, "rotated_from": id }),
        )?;
        events::emit(
            conn,
            now,
            events::KEY_CREATED,
            &serde_json::json!({ "key": view }),
        )?;
        events::emit(
            conn,
            now,
            events::KEY_ROTATED,
            &serde_json::json!({
                "key": after_old,
                "new_key": view,
                "grace_seconds": input.grace_seconds,
            }),
        )?;
        Ok(RotatedKey {
            view,
            key: key.into_string(),
            previous: PreviousKey {
                id: old.id.clone(),
                expires_at: old_expiry,
            },
        })
    })
}

/// Revokes a key at once.
pub fn revoke(
    conn: &mut DbConn,
    now: i64,
    actor: &str,
    id: &KeyId,
    input: RevokeKey,
) -> Result<KeyView, StoreError> {
    let reason = input
        .reason
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty());
    if reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > MAX_REASON_CHARS)
    {
        return Err(StoreError::validation(
            "reason",
            format!("must be at most {MAX_REASON_CHARS} characters"),
        ));
    }
    write_tx(conn, |conn| {
        bump_version(conn)?;
        let row = find_row(conn, id)?;
        if row.revoked_at.is_some() {
            return Err(StoreError::Conflict {
                code: ConflictCode::AlreadyRevoked,
                detail: format!("key {id:?} is already revoked"),
            });
        }
        mark_revoked(
            conn,
            now,
            actor,
            &row,
            reason.clone(),
            serde_json::Map::new(),
        )
    })
}

/// Records that key `id` changed at snapshot `version`, inside the transaction that bumped the
/// version to it: a publish then reads only the keys changed since the snapshot it holds.
/// Every write to what a key publishes goes through here.
pub fn mark_changed(conn: &mut DbConn, id: &KeyId, version: i64) -> Result<(), StoreError> {
    // Writers are serialised by the version bump, so update-then-insert cannot race.
    let n = diesel::update(key_changes::table.find(id))
        .set(key_changes::version.eq(version))
        .execute(conn)?;
    if n == 0 {
        diesel::insert_into(key_changes::table)
            .values((key_changes::key_id.eq(id), key_changes::version.eq(version)))
            .execute(conn)?;
    }
    Ok(())
}

/// Revokes a live key row inside the caller's transaction (which has bumped the snapshot
/// version): sets `revoked_at`, writes the `key.revoke` audit entry (before/after views plus
/// `audit_extra`) and emits `key.revoked`. Every revocation path goes through here, so none
/// forgets the audit entry or the event.
pub fn mark_revoked(
    conn: &mut DbConn,
    now: i64,
    actor: &str,
    row: &KeyRow,
    reason: Option<String>,
    audit_extra: serde_json::Map<String, serde_json::Value>,
) -> Result<KeyView, StoreError> {
    let before = KeyView::from_row(row, now)?;
    // The caller's transaction bumped the version: this is the value it bumped it to.
    let version = super::current_version(conn)?;
    diesel::update(api_keys::table.find(&row.id))
        .set((
            api_keys::revoked_at.eq(Some(now)),
            api_keys::revoked_reason.eq(reason.clone()),
            api_keys::updated_at.eq(now),
        ))
        .execute(conn)?;
    mark_changed(conn, &row.id, version)?;
    let after = KeyView::from_row(&find_row(conn, &row.id)?, now)?;
    let mut details = serde_json::Map::new();
    details.insert(
        "before".to_owned(),
        serde_json::to_value(&before).map_err(StoreError::internal)?,
    );
    details.insert(
        "after".to_owned(),
        serde_json::to_value(&after).map_err(StoreError::internal)?,
    );
    details.extend(audit_extra);
    audit::record(
        conn,
        now,
        actor,
        "key.revoke",
        &row.id,
        serde_json::Value::Object(details),
    )?;
    events::emit(
        conn,
        now,
        events::KEY_REVOKED,
        &serde_json::json!({ "key": after, "reason": reason, "actor": actor }),
    )?;
    Ok(after)
}
