//! The signed snapshot format, version 1.
//!
//! A snapshot is a signed **manifest** plus **shards**:
//!
//! - Keys are split into `2^shard_bits` shards by the leading bits of their key hash. A shard is
//!   the postcard encoding of [`Shard`] (records sorted by hash) and is addressed by its SHA-256
//!   digest, so it is immutable and can be cached anywhere.
//! - The manifest ([`Manifest`], postcard) holds the snapshot version, the validity window, the
//!   digest of every shard and the project policies. It is signed with Ed25519 over
//!   `SIGNING_CONTEXT || manifest_bytes`.
//! - On the wire the signed manifest is JSON ([`SignedSnapshot`]): `format`, `key_id`, and the
//!   manifest bytes and signature in unpadded base64url.
//!
//! An edge isolate verifies the manifest once, then fetches and checks only the shards that
//! requests need, so a snapshot of a million keys never has to be held whole.
//!
//! Changing any encoding here needs a new `FORMAT_VERSION` and a golden vector for the old one.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::eval::{Lookup, SnapshotView};
use crate::key::KeyHash;
use crate::policy::{KeyRecord, ProjectPolicy};
use crate::record::{self, Entry, WireProject, WireRecord};

/// The newest manifest format this crate reads and writes. Format 2 adds each project's route
/// matching; [`SnapshotSigner::sign`] writes format 1 whenever no project needs more, so edges
/// from before format 2 keep reading what a newer control plane publishes until a project opts
/// in.
pub const FORMAT_VERSION: u16 = 2;
/// The oldest manifest format this crate reads.
pub const MIN_FORMAT_VERSION: u16 = 1;
/// The shard format, unchanged since format 1.
pub const SHARD_FORMAT: u16 = 1;

/// The lowest manifest format that can carry `manifest`.
pub fn format_for(manifest: &Manifest) -> u16 {
    if manifest
        .projects
        .iter()
        .all(|p| p.route_matching.is_exact())
    {
        1
    } else {
        2
    }
}
/// Domain separation for manifest signatures.
pub const SIGNING_CONTEXT: &[u8] = b"keygate-snapshot-manifest-v1\0";
/// How far in the future `issued_at` may be before a snapshot is refused (clock skew).
pub const MAX_CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;
/// Largest number of shard bits (4096 shards).
pub const MAX_SHARD_BITS: u8 = 12;
/// Keys per shard the builder aims for.
pub const TARGET_KEYS_PER_SHARD: u64 = 1024;

/// Why a snapshot or shard was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The bytes do not decode.
    #[error("malformed snapshot: {0}")]
    Malformed(String),
    /// A format this crate does not read.
    #[error("unsupported snapshot format {0}")]
    UnsupportedFormat(u16),
    /// Signed with a key that is not trusted.
    #[error("unknown signing key id {0:?}")]
    UnknownKeyId(String),
    /// The signature does not verify.
    #[error("bad snapshot signature")]
    BadSignature,
    /// Older than the snapshot already held.
    #[error("snapshot version {offered} is older than the held version {held}")]
    Rollback {
        /// Version held.
        held: u64,
        /// Version offered.
        offered: u64,
    },
    /// Past its validity window.
    #[error("snapshot expired at {valid_until_ms}")]
    Expired {
        /// End of validity, Unix ms.
        valid_until_ms: i64,
    },
    /// Issued in the future, beyond the allowed clock skew.
    #[error("snapshot issued in the future at {issued_at_ms}")]
    NotYetValid {
        /// Issue time, Unix ms.
        issued_at_ms: i64,
    },
    /// A shard whose digest is not the manifest's.
    #[error("shard {index} does not match the manifest digest")]
    ShardDigestMismatch {
        /// Shard index.
        index: u32,
    },
    /// A shard index outside the manifest, or a shard whose contents belong elsewhere.
    #[error("shard {index} is out of place")]
    ShardMisplaced {
        /// Shard index.
        index: u32,
    },
}

/// A SHA-256 digest, hex in JSON.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest32(pub [u8; 32]);

impl Digest32 {
    /// SHA-256 of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Digest32(Sha256::digest(bytes).into())
    }
    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    /// Parses hex.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Digest32(out))
    }
}

impl core::fmt::Debug for Digest32 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Digest32({})", self.to_hex())
    }
}

impl Serialize for Digest32 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_hex())
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Digest32 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            Digest32::from_hex(&s).ok_or_else(|| serde::de::Error::custom("invalid digest"))
        } else {
            <[u8; 32]>::deserialize(d).map(Digest32)
        }
    }
}

/// The signed part of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT_VERSION`].
    pub format: u16,
    /// Rises with every committed change.
    pub version: u64,
    /// Unix ms.
    pub issued_at_ms: i64,
    /// Unix ms; past this the snapshot must not be used.
    pub valid_until_ms: i64,
    /// Keys are sharded by this many leading bits of their hash.
    pub shard_bits: u8,
    /// Number of keys in all shards.
    pub key_count: u64,
    /// Digest of each shard, by index.
    pub shard_digests: Vec<Digest32>,
    /// Project policies, sorted by id.
    pub projects: Vec<ProjectPolicy>,
}

/// One shard: the records whose hash starts with `index` in its leading `shard_bits` bits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// Always [`FORMAT_VERSION`].
    pub format: u16,
    /// As in the manifest.
    pub shard_bits: u8,
    /// This shard's index.
    pub index: u32,
    /// Records, sorted by hash.
    pub records: Vec<KeyRecord>,
}

/// A manifest written in format 1: the same fields, project policies without route matching.
#[derive(Serialize)]
struct ManifestV1<'m> {
    format: u16,
    version: u64,
    issued_at_ms: i64,
    valid_until_ms: i64,
    shard_bits: u8,
    key_count: u64,
    shard_digests: &'m [Digest32],
    projects: Vec<ProjectV1<'m>>,
}

#[derive(Serialize)]
struct ProjectV1<'m> {
    project_id: &'m str,
    routes: &'m [crate::policy::Route],
    default_route_policy: crate::policy::DefaultRoutePolicy,
}

impl<'m> ManifestV1<'m> {
    fn of(m: &'m Manifest) -> Self {
        ManifestV1 {
            format: 1,
            version: m.version,
            issued_at_ms: m.issued_at_ms,
            valid_until_ms: m.valid_until_ms,
            shard_bits: m.shard_bits,
            key_count: m.key_count,
            shard_digests: &m.shard_digests,
            projects: m
                .projects
                .iter()
                .map(|p| ProjectV1 {
                    project_id: &p.project_id,
                    routes: &p.routes,
                    default_route_policy: p.default_route_policy,
                })
                .collect(),
        }
    }
}

/// The fields every manifest format starts with.
#[derive(Deserialize)]
struct FormatOnly {
    format: u16,
}

/// A format-1 [`Manifest`]: projects without route matching.
#[derive(Deserialize)]
struct WireManifestV1 {
    format: u16,
    version: u64,
    issued_at_ms: i64,
    valid_until_ms: i64,
    shard_bits: u8,
    key_count: u64,
    shard_digests: Vec<Digest32>,
    projects: Vec<record::WireProjectV1>,
}

/// [`Manifest`] as read from the wire: project policies are checked one by one.
#[derive(Deserialize)]
struct WireManifest {
    format: u16,
    version: u64,
    issued_at_ms: i64,
    valid_until_ms: i64,
    shard_bits: u8,
    key_count: u64,
    shard_digests: Vec<Digest32>,
    projects: Vec<WireProject>,
}

/// [`Shard`] as read from the wire: records are checked one by one.
#[derive(Deserialize)]
struct WireShard {
    format: u16,
    shard_bits: u8,
    index: u32,
    records: Vec<WireRecord>,
}

/// A shard that matched its manifest digest, its records decoded one by one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedShard {
    /// The shard's index.
    pub index: u32,
    /// Records by hash, in the shard's order (sorted by hash).
    pub entries: Vec<(KeyHash, Entry)>,
}

impl VerifiedShard {
    /// Every record, or the first unusable one's `(key_id, reason)`.
    pub fn into_records(self) -> Result<Vec<KeyRecord>, (String, String)> {
        self.entries
            .into_iter()
            .map(|(_, e)| match e {
                Entry::Usable(r) => Ok(r),
                Entry::Unusable { key_id, reason } => Err((key_id, reason)),
            })
            .collect()
    }

    /// The records this build could not decode: `(key_id, reason)`.
    pub fn unusable(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().filter_map(|(_, e)| match e {
            Entry::Unusable { key_id, reason } => Some((key_id.as_str(), reason.as_str())),
            Entry::Usable(_) => None,
        })
    }
}

/// The JSON wire form of a signed manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedSnapshot {
    /// Always [`FORMAT_VERSION`].
    pub format: u16,
    /// Id of the signing key.
    pub key_id: String,
    /// Postcard bytes of the [`Manifest`], unpadded base64url.
    pub manifest: String,
    /// Ed25519 signature, unpadded base64url.
    pub signature: String,
}

/// An encoded shard and its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedShard {
    /// SHA-256 of `bytes`.
    pub digest: Digest32,
    /// Postcard bytes of a [`Shard`].
    pub bytes: Vec<u8>,
}

/// The shards of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltShards {
    /// Shard bits.
    pub shard_bits: u8,
    /// Number of keys.
    pub key_count: u64,
    /// Shards by index.
    pub shards: Vec<EncodedShard>,
}

impl BuiltShards {
    /// Digests in index order, for the manifest.
    pub fn digests(&self) -> Vec<Digest32> {
        self.shards.iter().map(|s| s.digest).collect()
    }
}

/// Shard bits that give about [`TARGET_KEYS_PER_SHARD`] keys per shard.
pub fn shard_bits_for(key_count: u64) -> u8 {
    let mut bits = 0u8;
    while bits < MAX_SHARD_BITS && (key_count >> bits) > TARGET_KEYS_PER_SHARD {
        bits += 1;
    }
    bits
}

/// The shard a key hash belongs to.
pub fn shard_index(hash: &KeyHash, shard_bits: u8) -> u32 {
    if shard_bits == 0 {
        return 0;
    }
    let b = hash.as_bytes();
    let lead = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    lead >> (32 - u32::from(shard_bits.min(MAX_SHARD_BITS)))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, SnapshotError> {
    postcard::to_allocvec(value).map_err(|e| SnapshotError::Malformed(e.to_string()))
}

/// Splits records into shards (sorted, encoded, digested). `shard_bits` defaults to
/// [`shard_bits_for`] the record count.
pub fn build_shards(
    mut records: Vec<KeyRecord>,
    shard_bits: Option<u8>,
) -> Result<BuiltShards, SnapshotError> {
    let key_count = records.len() as u64;
    let bits = shard_bits
        .unwrap_or_else(|| shard_bits_for(key_count))
        .min(MAX_SHARD_BITS);
    records.sort_unstable_by_key(|r| r.hash);
    let count = 1usize << bits;
    let mut buckets: Vec<Vec<KeyRecord>> = (0..count).map(|_| Vec::new()).collect();
    for r in records {
        let i = shard_index(&r.hash, bits) as usize;
        buckets[i].push(r);
    }
    let mut shards = Vec::with_capacity(count);
    for (index, records) in buckets.into_iter().enumerate() {
        shards.push(encode_shard(bits, index as u32, records)?);
    }
    Ok(BuiltShards {
        shard_bits: bits,
        key_count,
        shards,
    })
}

/// Encodes shard `index` of `shard_bits`: `records` must be sorted by hash and belong there.
pub fn encode_shard(
    shard_bits: u8,
    index: u32,
    records: Vec<KeyRecord>,
) -> Result<EncodedShard, SnapshotError> {
    let bytes = encode(&Shard {
        format: SHARD_FORMAT,
        shard_bits,
        index,
        records,
    })?;
    Ok(EncodedShard {
        digest: Digest32::of(&bytes),
        bytes,
    })
}

/// The id of a signing key: the first 8 bytes of SHA-256 of the public key, in hex.
pub fn key_id_of(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

/// An Ed25519 signing key with its id. `Debug` prints only the id.
pub struct SnapshotSigner {
    key: SigningKey,
    key_id: String,
}

impl core::fmt::Debug for SnapshotSigner {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "SnapshotSigner({})", self.key_id)
    }
}

impl SnapshotSigner {
    /// Wraps a signing key.
    pub fn new(key: SigningKey) -> Self {
        let key_id = key_id_of(&key.verifying_key());
        SnapshotSigner { key, key_id }
    }
    /// From the 32-byte seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self::new(SigningKey::from_bytes(seed))
    }
    /// The 32-byte seed, for storage.
    pub fn seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }
    /// The key id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }
    /// The public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }
    /// The public key in unpadded base64url.
    pub fn public_key_base64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.key.verifying_key().as_bytes())
    }
    /// Signs a manifest, giving the JSON wire bytes.
    /// The manifest's `format` is set to [`format_for`] it.
    pub fn sign(&self, manifest: &Manifest) -> Result<Vec<u8>, SnapshotError> {
        let format = format_for(manifest);
        let bytes = if format == 1 {
            encode(&ManifestV1::of(manifest))?
        } else if manifest.format == format {
            encode(manifest)?
        } else {
            encode(&Manifest {
                format,
                ..manifest.clone()
            })?
        };
        let mut msg = Vec::with_capacity(SIGNING_CONTEXT.len() + bytes.len());
        msg.extend_from_slice(SIGNING_CONTEXT);
        msg.extend_from_slice(&bytes);
        let sig = self.key.sign(&msg);
        let signed = SignedSnapshot {
            format,
            key_id: self.key_id.clone(),
            manifest: URL_SAFE_NO_PAD.encode(&bytes),
            signature: URL_SAFE_NO_PAD.encode(sig.to_bytes()),
        };
        serde_json::to_vec(&signed).map_err(|e| SnapshotError::Malformed(e.to_string()))
    }
}

/// Public keys an edge accepts snapshots from (more than one during a signing-key rotation).
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<(String, VerifyingKey)>,
}

impl TrustedKeys {
    /// No keys.
    pub fn new() -> Self {
        Self::default()
    }
    /// Trusts a key.
    pub fn add(&mut self, key: VerifyingKey) {
        let id = key_id_of(&key);
        if !self.keys.iter().any(|(k, _)| *k == id) {
            self.keys.push((id, key));
        }
    }
    /// Parses a list of unpadded base64url public keys separated by commas or whitespace.
    pub fn from_base64url_list(list: &str) -> Result<Self, SnapshotError> {
        let mut out = TrustedKeys::new();
        for item in list.split([',', ' ', '\n', '\t']).filter(|s| !s.is_empty()) {
            out.add(parse_public_key(item)?);
        }
        Ok(out)
    }
    /// Whether no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
    fn get(&self, key_id: &str) -> Option<&VerifyingKey> {
        self.keys.iter().find(|(k, _)| k == key_id).map(|(_, v)| v)
    }
}

/// Parses an unpadded base64url Ed25519 public key.
pub fn parse_public_key(b64: &str) -> Result<VerifyingKey, SnapshotError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(b64.trim().trim_end_matches('='))
        .map_err(|_| SnapshotError::Malformed("public key is not base64url".into()))?;
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|_| SnapshotError::Malformed("public key is not 32 bytes".into()))?;
    VerifyingKey::from_bytes(&arr)
        .map_err(|_| SnapshotError::Malformed("public key is not a valid Ed25519 point".into()))
}

/// A manifest whose signature, version and validity were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedManifest {
    /// With the project policies that decoded; the others are in `unusable_projects`.
    manifest: Manifest,
    key_id: String,
    /// `(project_id, reason)` of each policy this build could not decode: their keys are
    /// refused with `key_unavailable`.
    unusable_projects: Vec<(String, String)>,
}

impl VerifiedManifest {
    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    /// The id of the key that signed it.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }
    /// `(project_id, reason)` of each project policy this build could not decode.
    pub fn unusable_projects(&self) -> &[(String, String)] {
        &self.unusable_projects
    }
    /// The snapshot version.
    pub fn version(&self) -> u64 {
        self.manifest.version
    }
    /// Whether it is still valid at `now_ms`.
    pub fn is_valid_at(&self, now_ms: i64) -> bool {
        now_ms < self.manifest.valid_until_ms
    }
    /// Number of shards.
    pub fn shard_count(&self) -> u32 {
        self.manifest.shard_digests.len() as u32
    }
    /// The digest the manifest commits to for shard `index`.
    pub fn shard_digest(&self, index: u32) -> Option<Digest32> {
        self.manifest.shard_digests.get(index as usize).copied()
    }

    /// Checks a shard's bytes against the manifest and decodes it.
    pub fn verify_shard(&self, index: u32, bytes: &[u8]) -> Result<VerifiedShard, SnapshotError> {
        self.verify_shard_hashed(index, bytes, Digest32::of(bytes))
    }

    /// [`verify_shard`](Self::verify_shard) with `sha256`, the SHA-256 of `bytes`, computed by
    /// the caller: a runtime with a native digest (the Worker has WebCrypto) hashes a large shard
    /// many times faster than this crate's portable code runs in a freshly started Wasm module.
    pub fn verify_shard_hashed(
        &self,
        index: u32,
        bytes: &[u8],
        sha256: Digest32,
    ) -> Result<VerifiedShard, SnapshotError> {
        let expected = self
            .shard_digest(index)
            .ok_or(SnapshotError::ShardMisplaced { index })?;
        if sha256 != expected {
            return Err(SnapshotError::ShardDigestMismatch { index });
        }
        let shard: WireShard =
            postcard::from_bytes(bytes).map_err(|e| SnapshotError::Malformed(e.to_string()))?;
        if shard.format != SHARD_FORMAT {
            return Err(SnapshotError::UnsupportedFormat(shard.format));
        }
        let bits = self.manifest.shard_bits;
        let in_place = shard.index == index
            && shard.shard_bits == bits
            && shard
                .records
                .iter()
                .all(|r| shard_index(&r.hash(), bits) == index);
        if !in_place {
            return Err(SnapshotError::ShardMisplaced { index });
        }
        Ok(VerifiedShard {
            index,
            entries: shard
                .records
                .into_iter()
                .map(|w| (w.hash(), record::decode_record(w)))
                .collect(),
        })
    }
}

/// Verifies a signed snapshot: format, trusted key id, signature, validity at `now_ms`, and
/// no rollback below `held_version`. A snapshot of the same version as the one held is accepted
/// (the control plane re-signs an unchanged snapshot to extend its validity).
pub fn verify_snapshot(
    wire: &[u8],
    trusted: &TrustedKeys,
    held_version: Option<u64>,
    now_ms: i64,
) -> Result<VerifiedManifest, SnapshotError> {
    let (wire, key_id) = signed_manifest(wire, trusted)?;
    let mut projects = Vec::with_capacity(wire.projects.len());
    let mut unusable_projects = Vec::new();
    for p in wire.projects {
        match record::decode_project(p) {
            Ok(p) => projects.push(p),
            Err(bad) => unusable_projects.push(bad),
        }
    }
    let manifest = Manifest {
        format: wire.format,
        version: wire.version,
        issued_at_ms: wire.issued_at_ms,
        valid_until_ms: wire.valid_until_ms,
        shard_bits: wire.shard_bits,
        key_count: wire.key_count,
        shard_digests: wire.shard_digests,
        projects,
    };
    if manifest.shard_bits > MAX_SHARD_BITS
        || manifest.shard_digests.len() != 1usize << manifest.shard_bits
    {
        return Err(SnapshotError::Malformed(
            "shard count does not match shard bits".into(),
        ));
    }
    if let Some(held) = held_version {
        if manifest.version < held {
            return Err(SnapshotError::Rollback {
                held,
                offered: manifest.version,
            });
        }
    }
    if now_ms >= manifest.valid_until_ms {
        return Err(SnapshotError::Expired {
            valid_until_ms: manifest.valid_until_ms,
        });
    }
    if manifest.issued_at_ms > now_ms + MAX_CLOCK_SKEW_MS {
        return Err(SnapshotError::NotYetValid {
            issued_at_ms: manifest.issued_at_ms,
        });
    }
    Ok(VerifiedManifest {
        manifest,
        key_id,
        unusable_projects,
    })
}

/// The version of a signed snapshot whose signature verifies, whatever its validity: a floor
/// below which a cold isolate accepts nothing (the KV copy's version, for instance), so that
/// an older snapshot replayed to it is refused even before it holds one.
pub fn signed_version(wire: &[u8], trusted: &TrustedKeys) -> Result<u64, SnapshotError> {
    signed_manifest(wire, trusted).map(|(m, _)| m.version)
}

/// Checks the format, the key id and the signature, and decodes the manifest.
fn signed_manifest(
    wire: &[u8],
    trusted: &TrustedKeys,
) -> Result<(WireManifest, String), SnapshotError> {
    let signed: SignedSnapshot =
        serde_json::from_slice(wire).map_err(|e| SnapshotError::Malformed(e.to_string()))?;
    if !(MIN_FORMAT_VERSION..=FORMAT_VERSION).contains(&signed.format) {
        return Err(SnapshotError::UnsupportedFormat(signed.format));
    }
    let key = trusted
        .get(&signed.key_id)
        .ok_or_else(|| SnapshotError::UnknownKeyId(signed.key_id.clone()))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(&signed.manifest)
        .map_err(|_| SnapshotError::Malformed("manifest is not base64url".into()))?;
    let sig_bytes: [u8; 64] = URL_SAFE_NO_PAD
        .decode(&signed.signature)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or(SnapshotError::BadSignature)?;
    let mut msg = Vec::with_capacity(SIGNING_CONTEXT.len() + bytes.len());
    msg.extend_from_slice(SIGNING_CONTEXT);
    msg.extend_from_slice(&bytes);
    key.verify(&msg, &Signature::from_bytes(&sig_bytes))
        .map_err(|_| SnapshotError::BadSignature)?;
    let malformed = |e: postcard::Error| SnapshotError::Malformed(e.to_string());
    // The format inside the signed bytes decides the layout; it must be the one outside.
    let format = postcard::from_bytes::<FormatOnly>(&bytes)
        .map_err(malformed)?
        .format;
    if format != signed.format {
        return Err(SnapshotError::Malformed(format!(
            "the manifest says format {format}, its envelope {}",
            signed.format
        )));
    }
    let wire: WireManifest = if format == 1 {
        let v1: WireManifestV1 = postcard::from_bytes(&bytes).map_err(malformed)?;
        WireManifest {
            format: v1.format,
            version: v1.version,
            issued_at_ms: v1.issued_at_ms,
            valid_until_ms: v1.valid_until_ms,
            shard_bits: v1.shard_bits,
            key_count: v1.key_count,
            shard_digests: v1.shard_digests,
            projects: v1.projects.into_iter().map(Into::into).collect(),
        }
    } else {
        postcard::from_bytes(&bytes).map_err(malformed)?
    };
    Ok((wire, signed.key_id))
}

/// Hashes a [`KeyHash`] by eight of its bytes: they are already uniformly distributed.
///
/// Not the leading bytes: every key of a shard shares its leading `shard_bits` bits, and the
/// hash map takes its tag from the top bits of this value. Identical tags would make every
/// lookup compare against every entry in a probe group.
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyHashHasher(u64);

impl Hasher for KeyHashHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // A `KeyHash` writes its 32 bytes in one call; take bytes 8 to 15.
        let chosen = bytes.get(8..16).unwrap_or(bytes);
        for &b in chosen {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_usize(&mut self, _: usize) {}
}

/// A map from key hash to record.
pub type KeyMap = HashMap<KeyHash, Entry, BuildHasherDefault<KeyHashHasher>>;

/// FNV-1a, for the project map: its keys come from the signed snapshot, not from requests, so
/// a keyed hash buys nothing, and this is several times faster on short ids.
#[derive(Debug, Clone, Copy)]
struct ProjectIdHasher(u64);

impl Default for ProjectIdHasher {
    fn default() -> Self {
        ProjectIdHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for ProjectIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

type ProjectMap = HashMap<String, ProjectPolicy, BuildHasherDefault<ProjectIdHasher>>;

/// An in-memory view of a verified snapshot whose shards are loaded on demand.
///
/// Shards and projects are shared behind `Arc`, so a clone is cheap: a holder can keep an
/// immutable index per request and swap in a clone with one more shard loaded.
#[derive(Debug, Clone)]
pub struct SnapshotIndex {
    manifest: Arc<VerifiedManifest>,
    projects: Arc<ProjectMap>,
    /// Ids of the projects whose policy did not decode.
    unusable_projects: Arc<Vec<String>>,
    shards: Vec<Option<Arc<KeyMap>>>,
    loaded: u32,
}

impl SnapshotIndex {
    /// An index with no shard loaded.
    pub fn new(manifest: VerifiedManifest) -> Self {
        let projects = manifest
            .manifest
            .projects
            .iter()
            .map(|p| (p.project_id.clone(), p.clone()))
            .collect();
        let shards = vec![None; manifest.manifest.shard_digests.len()];
        let unusable_projects = manifest
            .unusable_projects
            .iter()
            .map(|(id, _)| id.clone())
            .collect();
        SnapshotIndex {
            manifest: Arc::new(manifest),
            projects: Arc::new(projects),
            unusable_projects: Arc::new(unusable_projects),
            shards,
            loaded: 0,
        }
    }

    /// The verified manifest.
    pub fn manifest(&self) -> &VerifiedManifest {
        &self.manifest
    }

    /// Verifies and loads shard `index`.
    pub fn load_shard(&mut self, index: u32, bytes: &[u8]) -> Result<(), SnapshotError> {
        self.load_shard_hashed(index, bytes, Digest32::of(bytes))
    }

    /// [`load_shard`](Self::load_shard) with the SHA-256 of `bytes` computed by the caller (see
    /// [`VerifiedManifest::verify_shard_hashed`]).
    pub fn load_shard_hashed(
        &mut self,
        index: u32,
        bytes: &[u8],
        sha256: Digest32,
    ) -> Result<(), SnapshotError> {
        let shard = self.manifest.verify_shard_hashed(index, bytes, sha256)?;
        self.insert_verified(shard);
        Ok(())
    }

    /// [`load_shard_hashed`](Self::load_shard_hashed) for a shard the caller verified already
    /// (to log its unusable records before it joins the index).
    pub fn insert_shard(&mut self, shard: VerifiedShard) {
        self.insert_verified(shard);
    }

    /// Takes over the already-loaded shards of `previous` whose digest is unchanged, so a
    /// refresh only fetches what changed.
    pub fn adopt_unchanged(&mut self, previous: &SnapshotIndex) {
        for (i, slot) in self.shards.iter_mut().enumerate() {
            if slot.is_some() {
                continue;
            }
            let same = previous.manifest.shard_digest(i as u32)
                == self.manifest.shard_digest(i as u32)
                && previous.manifest.manifest.shard_bits == self.manifest.manifest.shard_bits;
            if let (true, Some(Some(map))) = (same, previous.shards.get(i)) {
                *slot = Some(Arc::clone(map));
                self.loaded += 1;
            }
        }
    }

    fn insert_verified(&mut self, shard: VerifiedShard) {
        let i = shard.index as usize;
        let map: KeyMap = shard.entries.into_iter().collect();
        if let Some(slot) = self.shards.get_mut(i) {
            if slot.is_none() {
                self.loaded += 1;
            }
            *slot = Some(Arc::new(map));
        }
    }

    /// Drops loaded shard `index` (its keys then ask for it again); false if it was not
    /// loaded. A holder with a memory budget calls it to keep the loaded shards within it.
    pub fn unload_shard(&mut self, index: u32) -> bool {
        match self.shards.get_mut(index as usize) {
            Some(slot @ Some(_)) => {
                *slot = None;
                self.loaded -= 1;
                true
            }
            _ => false,
        }
    }

    /// Whether shard `index` is loaded.
    pub fn is_loaded(&self, index: u32) -> bool {
        matches!(self.shards.get(index as usize), Some(Some(_)))
    }

    /// Number of loaded shards.
    pub fn loaded_shards(&self) -> u32 {
        self.loaded
    }
}

impl SnapshotView for SnapshotIndex {
    fn key(&self, hash: &KeyHash) -> Lookup<'_> {
        let index = shard_index(hash, self.manifest.manifest.shard_bits);
        match self.shards.get(index as usize) {
            Some(Some(map)) => map.get(hash).map_or(Lookup::Absent, entry_lookup),
            Some(None) => Lookup::NotLoaded { shard: index },
            None => Lookup::Absent,
        }
    }
    fn project(&self, project_id: &str) -> Option<&ProjectPolicy> {
        self.projects.get(project_id)
    }
    fn project_unusable(&self, project_id: &str) -> bool {
        !self.unusable_projects.is_empty() && self.unusable_projects.iter().any(|p| p == project_id)
    }
}

fn entry_lookup(entry: &Entry) -> Lookup<'_> {
    match entry {
        Entry::Usable(r) => Lookup::Found(r),
        Entry::Unusable { key_id, .. } => Lookup::Unusable { key_id },
    }
}

/// A fully loaded view built straight from records (the control plane's `/v1/verify`, tests).
#[derive(Debug, Clone, Default)]
pub struct MemoryView {
    projects: ProjectMap,
    keys: KeyMap,
}

impl MemoryView {
    /// Builds a view.
    pub fn new(projects: Vec<ProjectPolicy>, records: Vec<KeyRecord>) -> Self {
        MemoryView {
            projects: projects
                .into_iter()
                .map(|p| (p.project_id.clone(), p))
                .collect(),
            keys: records
                .into_iter()
                .map(|r| (r.hash, Entry::Usable(r)))
                .collect(),
        }
    }
    /// Inserts or replaces a record.
    pub fn upsert_key(&mut self, record: KeyRecord) {
        self.keys.insert(record.hash, Entry::Usable(record));
    }
    /// Inserts or replaces a project.
    pub fn upsert_project(&mut self, project: ProjectPolicy) {
        self.projects.insert(project.project_id.clone(), project);
    }
    /// Number of keys.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }
}

impl SnapshotView for MemoryView {
    fn key(&self, hash: &KeyHash) -> Lookup<'_> {
        self.keys.get(hash).map_or(Lookup::Absent, entry_lookup)
    }
    fn project(&self, project_id: &str) -> Option<&ProjectPolicy> {
        self.projects.get(project_id)
    }
}
