//! Snapshot publishing.
//!
//! Snapshots are built lazily: a poll reads the version counter (or trusts the one read less
//! than the version memory ago, see [`SnapshotService::current_from_memory`]), and when it
//! differs from the cached snapshot's, a new one is published. The first build in a process
//! streams all projects and keys out of one read transaction (so the version and the contents
//! agree); later ones read all projects and only the keys `key_changes` lists as changed after
//! the held version, and re-encode only the shards those keys fall in: every other shard keeps
//! its bytes and digest. The result is what a full build would publish (see
//! `keygate_shared::shard_store`). It is cached per version; the same version is re-signed with
//! a fresh validity window once half of the window has passed, or when the active signing key
//! changed. Shards of the previous few versions stay servable for edges mid-refresh.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use actix_web::web::Bytes;
use keygate_shared::policy::ProjectPolicy;
use keygate_shared::shard_store::{Applied, ShardStore};
use keygate_shared::snapshot::{Digest32, Manifest, FORMAT_VERSION};
use sha2::{Digest, Sha256};

use crate::db::DbConn;
use crate::domain::current_version;
use crate::error::ApiError;
use crate::keyring::{active_key_id, Keyring};
use crate::metrics::Metrics;

mod records;

/// Expired keys are dropped from snapshots this long after their expiry.
pub const EXPIRED_RETENTION_MS: i64 = 30 * 86_400_000;
/// Shard sets of this many recent versions stay servable.
const RECENT_SHARD_SETS: usize = 4;
/// How often the active signing-key pointer is re-read from disk.
const KEYRING_RECHECK_MS: i64 = 5_000;
/// By default, how long a version read from the database answers polls without another read.
/// Writes made through this process are seen at once ([`SnapshotService::note_write`]); this
/// bounds how late one made elsewhere (another replica, the CLI, a background job) is noticed.
pub const VERSION_MEMORY_MS: i64 = 100;

/// The last version read from the database.
#[derive(Debug, Clone, Copy)]
struct VersionSeen {
    version: u64,
    read_at_ms: i64,
    /// [`SnapshotService::note_write`]'s count when the read started.
    writes: u64,
}

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

/// The shards of the latest build, kept to apply the next change to.
#[derive(Debug)]
struct Held {
    /// The version they publish.
    version: u64,
    store: ShardStore,
    /// The projects left out at that version.
    left_out: std::collections::BTreeSet<String>,
}

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
    held: Mutex<Option<Held>>,
    writes: AtomicU64,
    version_seen: Mutex<Option<VersionSeen>>,
    version_memory_ms: i64,
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
            held: Mutex::new(None),
            writes: AtomicU64::new(0),
            version_seen: Mutex::new(None),
            version_memory_ms: VERSION_MEMORY_MS,
        }
    }

    /// Sets how long a version read answers polls (0: every poll reads it).
    pub fn with_version_memory_ms(mut self, ms: i64) -> Self {
        self.version_memory_ms = ms.max(0);
        self
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

    /// Called after every request that may have written: the next poll reads the version
    /// from the database instead of trusting the one remembered.
    pub fn note_write(&self) {
        self.writes.fetch_add(1, Ordering::SeqCst);
    }

    /// The current snapshot when it can be told without the database: the version was read
    /// less than the version memory (by default [`VERSION_MEMORY_MS`]) ago, nothing was written through this process since, and
    /// the snapshot of that version needs no re-signing. This is what answers most polls.
    pub fn current_from_memory(&self, now: i64) -> Option<Arc<Published>> {
        let seen = (*lock(&self.version_seen))?;
        if seen.writes != self.writes.load(Ordering::SeqCst)
            || !(seen.read_at_ms..seen.read_at_ms + self.version_memory_ms).contains(&now)
        {
            return None;
        }
        // The keyring held, without the periodic look at the disk: that happens on the next
        // version read, at most the version memory later.
        let keyring = self
            .keyring
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        self.fresh(seen.version, now, keyring.active().key_id())
    }

    /// The current snapshot, building or re-signing it if needed. Blocking: call from
    /// `web::block`.
    pub fn current(
        &self,
        conn: &mut DbConn,
        now: i64,
        metrics: &Metrics,
    ) -> Result<Arc<Published>, ApiError> {
        // Counted before the read, so a write that ends during it makes the next poll read again.
        let writes = self.writes.load(Ordering::SeqCst);
        let version = current_version(conn)? as u64;
        metrics.observe_version_read();
        *lock(&self.version_seen) = Some(VersionSeen {
            version,
            read_at_ms: now,
            writes,
        });
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
        let mut held = lock(&self.held);
        let (version, projects, shards_changed) = match held.as_mut() {
            Some(h) => match self.update(conn, h, now)? {
                Some((version, projects, changed)) => (version, projects, Some(changed)),
                None => {
                    let (version, projects) = self.rebuild(conn, &mut held, now)?;
                    (version, projects, None)
                }
            },
            None => {
                let (version, projects) = self.rebuild(conn, &mut held, now)?;
                (version, projects, None)
            }
        };
        let store = &held
            .as_ref()
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("no shards held after a build")))?
            .store;
        let shards: ShardSet = store
            .shards()
            .iter()
            .map(|s| (s.digest.0, Bytes::from_owner(s.bytes.clone())))
            .collect();
        let manifest = Manifest {
            format: FORMAT_VERSION,
            version,
            issued_at_ms: now,
            valid_until_ms: now + self.validity_ms,
            shard_bits: store.shard_bits(),
            key_count: store.key_count(),
            shard_digests: store.digests(),
            projects,
        };
        drop(held);
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
        match shards_changed {
            Some(changed) => tracing::info!(
                version,
                keys = published.key_count,
                shards_changed = changed,
                elapsed_ms,
                "snapshot published: changed shards re-encoded"
            ),
            None => tracing::info!(
                version,
                keys = published.key_count,
                elapsed_ms,
                "snapshot built"
            ),
        }
        Ok(published)
    }

    /// Reads everything and replaces the held shards.
    fn rebuild(
        &self,
        conn: &mut DbConn,
        held: &mut Option<Held>,
        now: i64,
    ) -> Result<(u64, Vec<ProjectPolicy>), ApiError> {
        // Free the old shards before the new ones are built (the published snapshots still
        // share the bytes they serve).
        *held = None;
        let full = records::read_full(conn, now)?;
        *held = Some(Held {
            version: full.version,
            store: full.store,
            left_out: full.projects.left_out,
        });
        Ok((full.version, full.projects.policies))
    }

    /// Applies the keys changed since the held version to the held shards. `None` when only a
    /// full rebuild gives the right result: the set of projects left out changed, the version
    /// went back (a restored database), or the held shards could not be changed.
    fn update(
        &self,
        conn: &mut DbConn,
        held: &mut Held,
        now: i64,
    ) -> Result<Option<(u64, Vec<ProjectPolicy>, usize)>, ApiError> {
        let delta = records::read_delta(conn, held.version)?;
        if delta.version < held.version || delta.projects.left_out != held.left_out {
            return Ok(None);
        }
        let changes = records::changes(&delta.rows, &delta.projects.left_out, now);
        match held.store.apply(changes, Some(now - EXPIRED_RETENTION_MS)) {
            Ok(applied) => {
                held.version = delta.version;
                let changed = match applied {
                    Applied::Shards(s) => s.len(),
                    Applied::Rebuilt => held.store.shards().len(),
                };
                Ok(Some((delta.version, delta.projects.policies, changed)))
            }
            Err(e) => {
                tracing::error!(error = %e, "held shards could not be changed; rebuilding");
                Ok(None)
            }
        }
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
