//! Snapshot signing keys, kept in the data directory:
//!
//! ```text
//! <data_dir>/signing-keys/          mode 0700
//!     <key_id>.key                  32-byte Ed25519 seed, mode 0600
//!     active                        the key id that signs new snapshots
//!     retiring.json                 earlier keys still published until `retire_after`
//! ```
//!
//! The first start creates a key. `keygate signing-key rotate` makes a new active key and keeps
//! the previous one listed as retiring, so edges can trust both while they are updated.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use keygate_shared::SnapshotSigner;
use serde::{Deserialize, Serialize};

use crate::files::{ensure_private_dir, write_secret};

/// How long a replaced key stays listed by default: seven days.
pub const DEFAULT_RETIRE_AFTER_MS: i64 = 7 * 86_400_000;

/// A retiring key's entry in `retiring.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RetiringEntry {
    /// Key id.
    pub key_id: String,
    /// Unix ms after which the key is no longer listed.
    pub retire_after_ms: i64,
}

/// A published public key.
#[derive(Debug, Clone)]
pub struct PublicKeyInfo {
    /// Key id.
    pub key_id: String,
    /// Unpadded base64url public key.
    pub public_key: String,
    /// Whether it signs new snapshots.
    pub active: bool,
    /// For retiring keys.
    pub retire_after_ms: Option<i64>,
}

/// The active signer and the retiring public keys.
#[derive(Debug)]
pub struct Keyring {
    active: Arc<SnapshotSigner>,
    retiring: Vec<(RetiringEntry, String)>,
}

fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("signing-keys")
}

fn read_signer(dir: &Path, key_id: &str) -> anyhow::Result<SnapshotSigner> {
    let valid_id = !key_id.is_empty() && key_id.bytes().all(|b| b.is_ascii_hexdigit());
    if !valid_id {
        anyhow::bail!("invalid signing key id {key_id:?} in {}", dir.display());
    }
    let path = dir.join(format!("{key_id}.key"));
    let bytes =
        fs::read(&path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let seed: [u8; 32] = bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("{} is not a 32-byte key", path.display()))?;
    let signer = SnapshotSigner::from_seed(&seed);
    if signer.key_id() != key_id {
        anyhow::bail!("{} does not hold key {key_id}", path.display());
    }
    Ok(signer)
}

fn create_key(dir: &Path) -> anyhow::Result<SnapshotSigner> {
    let mut seed = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
    let signer = SnapshotSigner::from_seed(&seed);
    write_secret(&dir.join(format!("{}.key", signer.key_id())), &seed)?;
    Ok(signer)
}

/// The active key id recorded in the data directory, if any.
pub fn active_key_id(data_dir: &Path) -> Option<String> {
    fs::read_to_string(dir(data_dir).join("active"))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn read_retiring(dir: &Path) -> anyhow::Result<Vec<RetiringEntry>> {
    let path = dir.join("retiring.json");
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| anyhow::anyhow!("{} is not valid: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}

impl Keyring {
    /// Loads the keyring, creating the first key if there is none.
    pub fn load_or_create(data_dir: &Path) -> anyhow::Result<Keyring> {
        let d = dir(data_dir);
        ensure_private_dir(&d)?;
        if active_key_id(data_dir).is_none() {
            let signer = create_key(&d)?;
            write_secret(&d.join("active"), signer.key_id().as_bytes())?;
            tracing::info!(key_id = signer.key_id(), "created snapshot signing key");
        }
        Keyring::load(data_dir)
    }

    /// Loads an existing keyring.
    pub fn load(data_dir: &Path) -> anyhow::Result<Keyring> {
        let d = dir(data_dir);
        let id = active_key_id(data_dir)
            .ok_or_else(|| anyhow::anyhow!("no active signing key in {}", d.display()))?;
        let active = Arc::new(read_signer(&d, &id)?);
        let mut retiring = Vec::new();
        for entry in read_retiring(&d)? {
            if entry.key_id == id {
                continue;
            }
            let signer = read_signer(&d, &entry.key_id)?;
            let public = signer.public_key_base64url();
            retiring.push((entry, public));
        }
        Ok(Keyring { active, retiring })
    }

    /// Makes a new active key; the previous active key is listed as retiring until
    /// `now_ms + retire_after_ms`. Keys past their retirement are dropped from the list (their
    /// files are kept, so an operator can still inspect them).
    pub fn rotate(data_dir: &Path, now_ms: i64, retire_after_ms: i64) -> anyhow::Result<Keyring> {
        let old = Keyring::load_or_create(data_dir)?;
        let d = dir(data_dir);
        let signer = create_key(&d)?;
        let mut retiring: Vec<RetiringEntry> = read_retiring(&d)?
            .into_iter()
            .filter(|e| e.retire_after_ms > now_ms && e.key_id != old.active.key_id())
            .collect();
        retiring.push(RetiringEntry {
            key_id: old.active.key_id().to_owned(),
            retire_after_ms: now_ms + retire_after_ms,
        });
        let json = serde_json::to_vec_pretty(&retiring)?;
        write_secret(&d.join("retiring.json"), &json)?;
        // The pointer moves last: a crash before this leaves the old key active.
        write_secret(&d.join("active"), signer.key_id().as_bytes())?;
        Keyring::load(data_dir)
    }

    /// The signer of new snapshots.
    pub fn active(&self) -> &Arc<SnapshotSigner> {
        &self.active
    }

    /// The active key and the retiring keys not yet past their retirement.
    pub fn public_keys(&self, now_ms: i64) -> Vec<PublicKeyInfo> {
        let mut out = vec![PublicKeyInfo {
            key_id: self.active.key_id().to_owned(),
            public_key: self.active.public_key_base64url(),
            active: true,
            retire_after_ms: None,
        }];
        for (entry, public) in &self.retiring {
            if entry.retire_after_ms > now_ms {
                out.push(PublicKeyInfo {
                    key_id: entry.key_id.clone(),
                    public_key: public.clone(),
                    active: false,
                    retire_after_ms: Some(entry.retire_after_ms),
                });
            }
        }
        out
    }
}
