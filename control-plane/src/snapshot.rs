//! Snapshot publishing.
//!
//! Snapshots are built lazily: a request reads the version counter, and when it differs from the
//! cached snapshot's, all projects and keys are read in one read transaction (so the version and
//! the contents agree) and signed. The result is cached per version; the same version is re-signed
//! with a fresh validity window once half of the window has passed, or when the active signing
//! key changed. Shards of the previous few versions stay servable for edges mid-refresh.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use actix_web::web::Bytes;
use diesel::prelude::*;
use keygate_shared::snapshot::{build_shards, Digest32, Manifest, FORMAT_VERSION};
use sha2::{Digest, Sha256};

use crate::db::models::{KeyRow, ProjectRow};
use crate::db::schema::{api_keys, projects};
use crate::db::{read_tx, DbConn};
use crate::domain::{current_version, keys, projects::ProjectView};
use crate::error::ApiError;
use crate::keyring::{active_key_id, Keyring};
use crate::metrics::Metrics;

/// Expired keys are dropped from snapshots this long after their expiry.
pub const EXPIRED_RETENTION_MS: i64 = 30 * 86_400_000;
/// Shard sets of this many recent versions stay servable.
const RECENT_SHARD_SETS: usize = 4;
/// How often the active signing-key pointer is re-read from disk.
const KEYRING_RECHECK_MS: i64 = 5_000;

/// One signed snapshot, ready to serve.
#[derive(Debug)]
pub struct Published {
    /// Snapshot version.
    pub version: u64,
    /// The signed JSON wire bytes.
    pub wire: Bytes,
    /// `"<version>-<16 hex>"`, quoted.
    pub etag: String,
    /// Unix ms.
    pub issued_at_ms: i64,
    /// Unix ms.
    pub valid_until_ms: i64,
    /// Signing key id.
    pub key_id: String,
    /// Number of keys.
    pub key_count: u64,
    manifest: Manifest,
    shards: Arc<ShardSet>,
}

type ShardSet = HashMap<[u8; 32], Bytes>;

/// Builds, signs, caches and serves snapshots.
#[derive(Debug)]
pub struct SnapshotService {
    data_dir: PathBuf,
    validity_ms: i64,
    keyring: RwLock<Arc<Keyring>>,
    keyring_checked_ms: Mutex<i64>,
    current: Mutex<Option<Arc<Published>>>,
    recent: Mutex<VecDeque<Arc<ShardSet>>>,
    build_lock: Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves only caches behind: keep going.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SnapshotService {
    /// A service signing with `keyring`.
    pub fn new(data_dir: PathBuf, validity_seconds: i64, keyring: Keyring) -> Self {
        SnapshotService {
            data_dir,
            validity_ms: validity_seconds * 1000,
            keyring: RwLock::new(Arc::new(keyring)),
            keyring_checked_ms: Mutex::new(0),
            current: Mutex::new(None),
            recent: Mutex::new(VecDeque::new()),
            build_lock: Mutex::new(()),
        }
    }

    /// The keyring in force, re-read when `keygate signing-key rotate` moved the pointer.
    pub fn keyring(&self, now: i64) -> Arc<Keyring> {
        let due = {
            let mut checked = lock(&self.keyring_checked_ms);
            let due = now - *checked >= KEYRING_RECHECK_MS;
            if due {
                *checked = now;
            }
            due
        };
        let held = self
            .keyring
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if due && active_key_id(&self.data_dir).is_some_and(|id| id != held.active().key_id()) {
            match Keyring::load(&self.data_dir) {
                Ok(k) => {
                    let k = Arc::new(k);
                    tracing::info!(
                        key_id = k.active().key_id(),
                        "signing key changed; reloaded"
                    );
                    *self
                        .keyring
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = k.clone();
                    return k;
                }
                Err(e) => tracing::error!(error = %e, "cannot reload signing keys"),
            }
        }
        held
    }

    /// The current snapshot, building or re-signing it if needed. Blocking: call from
    /// `web::block`.
    pub fn current(
        &self,
        conn: &mut DbConn,
        now: i64,
        metrics: &Metrics,
    ) -> Result<Arc<Published>, ApiError> {
        let version = current_version(conn)? as u64;
        let keyring = self.keyring(now);
        if let Some(p) = self.fresh(version, now, keyring.active().key_id()) {
            return Ok(p);
        }
        let _guard = lock(&self.build_lock);
        // Another request may have built it while this one waited.
        if let Some(p) = self.fresh(version, now, keyring.active().key_id()) {
            return Ok(p);
        }
        let held = lock(&self.current).clone();
        let published = match held.filter(|p| p.version == version) {
            Some(p) => Arc::new(self.sign(&keyring, p.manifest.clone(), p.shards.clone(), now)?),
            None => Arc::new(self.build(conn, &keyring, now, metrics)?),
        };
        *lock(&self.current) = Some(published.clone());
        Ok(published)
    }

    fn fresh(&self, version: u64, now: i64, key_id: &str) -> Option<Arc<Published>> {
        let held = lock(&self.current).clone()?;
        let half = (held.valid_until_ms - held.issued_at_ms) / 2;
        (held.version == version && now < held.issued_at_ms + half && held.key_id == key_id)
            .then_some(held)
    }

    fn build(
        &self,
        conn: &mut DbConn,
        keyring: &Keyring,
        now: i64,
        metrics: &Metrics,
    ) -> Result<Published, ApiError> {
        let started = std::time::Instant::now();
        let (version, project_rows, key_rows) = read_tx(conn, |conn| {
            let version = current_version(conn)?;
            let p: Vec<ProjectRow> = projects::table.order(projects::id.asc()).load(conn)?;
            let k: Vec<KeyRow> = api_keys::table
                .filter(
                    api_keys::expires_at
                        .is_null()
                        .or(api_keys::expires_at.gt(now - EXPIRED_RETENTION_MS)),
                )
                .load(conn)?;
            Ok::<_, ApiError>((version as u64, p, k))
        })?;
        // Never publish what the edge's decoder would refuse, and never let one such row stop
        // every other change from reaching the edges: a project or key that does not convert,
        // or would not decode at the edge as written, is left out (its keys are then unknown
        // there: refused) and named in the log. The API refuses such input when it is written;
        // this catches rows written otherwise.
        let mut projects = Vec::with_capacity(project_rows.len());
        let mut left_out = std::collections::HashSet::new();
        for row in project_rows {
            let id = row.id.clone();
            let checked = ProjectView::from_row(row).and_then(|v| {
                let p = v.policy();
                keygate_shared::record::edge_round_trip_project(&p)
                    .map_err(ApiError::internal)
                    .map(|()| p)
            });
            match checked {
                Ok(p) => projects.push(p),
                Err(e) => {
                    tracing::error!(project_id = %id, error = %format!("{e:#}"), "project left out of the snapshot: the edge could not use it; its keys are refused");
                    left_out.insert(id);
                }
            }
        }
        let mut records = Vec::with_capacity(key_rows.len());
        for row in &key_rows {
            if left_out.contains(&row.project_id) {
                continue;
            }
            let checked = keys::record_from_row(row).and_then(|r| {
                keygate_shared::record::edge_round_trip(&r)
                    .map_err(ApiError::internal)
                    .map(|()| r)
            });
            match checked {
                Ok(r) => records.push(r),
                Err(e) => {
                    tracing::error!(key_id = %row.id, error = %format!("{e:#}"), "key left out of the snapshot: the edge could not use it; it is refused there");
                }
            }
        }
        let built = build_shards(records, None).map_err(ApiError::internal)?;
        let shards: ShardSet = built
            .shards
            .iter()
            .map(|s| (s.digest.0, Bytes::from(s.bytes.clone())))
            .collect();
        let manifest = Manifest {
            format: FORMAT_VERSION,
            version,
            issued_at_ms: now,
            valid_until_ms: now + self.validity_ms,
            shard_bits: built.shard_bits,
            key_count: built.key_count,
            shard_digests: built.digests(),
            projects,
        };
        let shards = Arc::new(shards);
        {
            let mut recent = lock(&self.recent);
            recent.push_front(shards.clone());
            recent.truncate(RECENT_SHARD_SETS);
        }
        let published = self.sign(keyring, manifest, shards, now)?;
        let elapsed_ms = started.elapsed().as_millis() as i64;
        metrics.observe_build(elapsed_ms);
        metrics.observe_snapshot(published.version, published.key_count);
        tracing::info!(
            version,
            keys = published.key_count,
            elapsed_ms,
            "snapshot built"
        );
        Ok(published)
    }

    fn sign(
        &self,
        keyring: &Keyring,
        mut manifest: Manifest,
        shards: Arc<ShardSet>,
        now: i64,
    ) -> Result<Published, ApiError> {
        manifest.issued_at_ms = now;
        manifest.valid_until_ms = now + self.validity_ms;
        let signer = keyring.active();
        let wire = signer.sign(&manifest).map_err(ApiError::internal)?;
        let digest = Sha256::digest(&wire);
        let etag = format!("\"{}-{}\"", manifest.version, &hex::encode(digest)[..16]);
        Ok(Published {
            version: manifest.version,
            wire: Bytes::from(wire),
            etag,
            issued_at_ms: manifest.issued_at_ms,
            valid_until_ms: manifest.valid_until_ms,
            key_id: signer.key_id().to_owned(),
            key_count: manifest.key_count,
            manifest,
            shards,
        })
    }

    /// A shard of the current or a recent snapshot.
    pub fn shard(&self, digest: &Digest32) -> Option<Bytes> {
        lock(&self.recent)
            .iter()
            .find_map(|set| set.get(&digest.0).cloned())
    }

    /// Whether any snapshot was built yet in this process.
    pub fn has_current(&self) -> bool {
        lock(&self.current).is_some()
    }
}
