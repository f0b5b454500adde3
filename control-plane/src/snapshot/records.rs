//! Reading what a snapshot publishes: every project, and every key or the keys changed since a
//! version, each checked as the edge will decode it.

use std::collections::BTreeSet;

use diesel::prelude::*;
use keygate_shared::policy::{KeyRecord, ProjectPolicy};
use keygate_shared::shard_store::{ShardChange, ShardStore};
use keygate_shared::KeyHash;

use super::EXPIRED_RETENTION_MS;
use crate::db::models::{KeyRow, ProjectRow};
use crate::db::schema::{api_keys, key_changes, projects};
use crate::db::{read_tx, DbConn};
use crate::domain::{current_version, keys, projects::ProjectView};
use crate::error::ApiError;

/// The projects a snapshot publishes, and the ids of those left out.
#[derive(Debug)]
pub(super) struct Projects {
    /// Policies, sorted by project id.
    pub policies: Vec<ProjectPolicy>,
    /// Projects the edge could not use: they and their keys are left out.
    pub left_out: BTreeSet<String>,
}

/// Everything at one version, built into shards.
#[derive(Debug)]
pub(super) struct Full {
    pub version: u64,
    pub projects: Projects,
    pub store: ShardStore,
}

/// What changed since a version.
#[derive(Debug)]
pub(super) struct Delta {
    pub version: u64,
    pub projects: Projects,
    /// Key rows changed after the held version, up to `version` (by `key_changes`).
    pub rows: Vec<KeyRow>,
}

/// Reads every project and every key not expired for longer than the retention, in one read
/// transaction (so the version and the contents agree), and builds the shards from them.
///
/// Streamed: the keys are read in one pass in the table's own order (row by row on both
/// backends) and handed over in chunks to a second thread, which converts, checks and encodes
/// each ([`ShardStore::builder`]). Neither all rows nor all decoded records are ever held, only
/// the encoded records that become the shards.
pub(super) fn read_full(conn: &mut DbConn, now: i64) -> Result<Full, ApiError> {
    read_tx(conn, |conn| {
        let version = current_version(conn)? as u64;
        let p: Vec<ProjectRow> = projects::table.order(projects::id.asc()).load(conn)?;
        let projects = check_projects(p);
        let left_out = &projects.left_out;
        let store = std::thread::scope(|scope| -> Result<ShardStore, ApiError> {
            let (send, receive) = std::sync::mpsc::sync_channel::<Vec<KeyRow>>(2);
            let encoder = scope.spawn(move || {
                let mut builder = ShardStore::builder();
                for rows in receive {
                    for row in rows
                        .iter()
                        .filter(|r| !left_out.contains(r.project_id.as_str()))
                    {
                        let added = record_for(row).and_then(|r| {
                            builder.add(&r).map_err(keygate_store::StoreError::internal)
                        });
                        if let Err(e) = added {
                            left_out_key(row, &e);
                        }
                    }
                }
                builder.finish()
            });
            let sent = stream_keys(conn, now, |rows| send.send(rows).is_ok());
            drop(send);
            let built = encoder
                .join()
                .map_err(|_| ApiError::internal(anyhow::anyhow!("the shard encoder panicked")))?
                .map_err(ApiError::internal);
            sent?;
            built
        })?;
        Ok(Full {
            version,
            projects,
            store,
        })
    })
}

/// Rows handed over at a time.
const CHUNK: usize = 1024;

/// Reads every key row a snapshot may publish, one at a time, and hands them to `take` in
/// chunks until it returns `false`.
fn stream_keys(
    conn: &mut DbConn,
    now: i64,
    mut take: impl FnMut(Vec<KeyRow>) -> bool,
) -> Result<(), ApiError> {
    let query = api_keys::table.filter(
        api_keys::expires_at
            .is_null()
            .or(api_keys::expires_at.gt(now - EXPIRED_RETENTION_MS)),
    );
    let mut chunk = Vec::with_capacity(CHUNK);
    // Row by row on both: PostgreSQL's default mode would buffer the whole result first.
    macro_rules! drain {
        ($rows:expr) => {
            for row in $rows {
                chunk.push(row?);
                if chunk.len() == CHUNK
                    && !take(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)))
                {
                    return Ok(());
                }
            }
        };
    }
    match conn {
        DbConn::Postgresql(c) => {
            drain!(query.load_iter::<KeyRow, diesel::pg::PgRowByRowLoadingMode>(c)?)
        }
        DbConn::Sqlite(c) => {
            drain!(query.load_iter::<KeyRow, diesel::connection::DefaultLoadingMode>(c)?)
        }
    }
    if !chunk.is_empty() {
        take(chunk);
    }
    Ok(())
}

/// Reads every project and the keys changed after version `since`, in one read transaction.
pub(super) fn read_delta(conn: &mut DbConn, since: u64) -> Result<Delta, ApiError> {
    let (version, project_rows, rows) = read_tx(conn, |conn| {
        let version = current_version(conn)?;
        let p: Vec<ProjectRow> = projects::table.order(projects::id.asc()).load(conn)?;
        let k: Vec<KeyRow> = key_changes::table
            .inner_join(api_keys::table)
            .filter(key_changes::version.gt(since as i64))
            .filter(key_changes::version.le(version))
            .select(api_keys::all_columns)
            .load(conn)?;
        Ok::<_, ApiError>((version as u64, p, k))
    })?;
    Ok(Delta {
        version,
        projects: check_projects(project_rows),
        rows,
    })
}

/// The shard changes of changed rows: each key is published as a fresh read would publish it,
/// or removed when a fresh read would leave it out. A row whose stored hash does not parse
/// cannot be placed and is skipped (a fresh read leaves it out too).
pub(super) fn changes(rows: &[KeyRow], left_out: &BTreeSet<String>, now: i64) -> Vec<ShardChange> {
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let Some(hash) = KeyHash::from_hex(&row.key_hash) else {
            tracing::error!(key_id = %row.id, "key left out of the snapshot: its stored hash does not parse");
            continue;
        };
        let retained = row
            .expires_at
            .is_none_or(|e| e > now - EXPIRED_RETENTION_MS);
        let record = (retained && !left_out.contains(row.project_id.as_str()))
            .then(|| checked_record(row))
            .flatten();
        out.push(match record {
            Some(r) => ShardChange::Upsert(r),
            None => ShardChange::Remove(hash),
        });
    }
    out
}

// Never publish what the edge's decoder would refuse, and never let one such row stop every
// other change from reaching the edges: a project or key that does not convert, or would not
// decode at the edge as written, is left out (its keys are then unknown there: refused) and
// named in the log. The API refuses such input when it is written; this catches rows written
// otherwise.

fn check_projects(rows: Vec<ProjectRow>) -> Projects {
    let mut policies = Vec::with_capacity(rows.len());
    let mut left_out = BTreeSet::new();
    for row in rows {
        let id = row.id.clone();
        let checked = ProjectView::from_row(row).and_then(|v| {
            let p = v.policy();
            keygate_shared::record::edge_round_trip_project(&p)
                .map_err(keygate_store::StoreError::internal)
                .map(|()| p)
        });
        match checked {
            Ok(p) => policies.push(p),
            Err(e) => {
                tracing::error!(project_id = %id, error = %format!("{e:#}"), "project left out of the snapshot: the edge could not use it; its keys are refused");
                left_out.insert(id.into_string());
            }
        }
    }
    Projects { policies, left_out }
}

/// The record of a row, when its hash is in the one spelling every path finds.
fn record_for(row: &KeyRow) -> Result<KeyRecord, keygate_store::StoreError> {
    let r = keys::record_from_row(row)?;
    // Only the canonical (lowercase) hex is found by `/v1/verify`, so any other spelling is
    // left out on every path alike.
    if r.hash.to_hex() != row.key_hash {
        return Err(keygate_store::StoreError::internal(anyhow::anyhow!(
            "its stored hash is not lowercase hex"
        )));
    }
    Ok(r)
}

fn left_out_key(row: &KeyRow, e: &keygate_store::StoreError) {
    tracing::error!(key_id = %row.id, error = %format!("{e:#}"), "key left out of the snapshot: the edge could not use it; it is refused there");
}

fn checked_record(row: &KeyRow) -> Option<KeyRecord> {
    let checked = record_for(row).and_then(|r| {
        keygate_shared::record::edge_round_trip(&r)
            .map_err(keygate_store::StoreError::internal)
            .map(|()| r)
    });
    match checked {
        Ok(r) => Some(r),
        Err(e) => {
            left_out_key(row, &e);
            None
        }
    }
}
