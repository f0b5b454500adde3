//! Incremental shard publishing.
//!
//! A [`ShardStore`] holds a snapshot's shards as encoded bytes (the form they are served in) and
//! applies changes to them: only the shards a change touches are decoded, changed and encoded
//! again; every other shard keeps its bytes and digest, so edges and caches keep what they hold.
//! The result is always byte-for-byte what [`build_shards`] makes of the same records: when the
//! key count moves [`shard_bits_for`] to another value, every shard is rebuilt.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::key::KeyHash;
use crate::policy::KeyRecord;
use crate::snapshot::{
    build_shards, encode_shard, shard_bits_for, shard_index, BuiltShards, Digest32, Shard,
    SnapshotError,
};

/// One change to the published record set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardChange {
    /// Adds a record, or replaces the one with the same hash.
    Upsert(KeyRecord),
    /// Removes the record with this hash, if any.
    Remove(KeyHash),
}

impl ShardChange {
    fn hash(&self) -> &KeyHash {
        match self {
            ShardChange::Upsert(r) => &r.hash,
            ShardChange::Remove(h) => h,
        }
    }
}

/// A shard as held by a [`ShardStore`].
#[derive(Debug, Clone)]
pub struct StoredShard {
    /// SHA-256 of `bytes`.
    pub digest: Digest32,
    /// Postcard bytes of a [`Shard`], shared with whoever serves them.
    pub bytes: Arc<[u8]>,
    /// The earliest `expires_at_ms` among its records: which shards an expiry cut-off touches.
    min_expiry_ms: Option<i64>,
}

/// Which shards [`ShardStore::apply`] re-encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// These shard indexes have new bytes (possibly none); the rest kept theirs.
    Shards(Vec<u32>),
    /// The shard bits changed: every shard is new.
    Rebuilt,
}

/// The shards of a snapshot, kept encoded, changed shard by shard.
#[derive(Debug, Clone)]
pub struct ShardStore {
    shard_bits: u8,
    key_count: u64,
    shards: Vec<StoredShard>,
}

fn decode(bytes: &[u8]) -> Result<Shard, SnapshotError> {
    postcard::from_bytes(bytes).map_err(|e| SnapshotError::Malformed(e.to_string()))
}

fn min_expiry<'a>(records: impl Iterator<Item = &'a KeyRecord>) -> Option<i64> {
    records.filter_map(|r| r.expires_at_ms).min()
}

impl ShardStore {
    /// The store of [`build_shards`]`(records, None)`.
    pub fn build(records: Vec<KeyRecord>) -> Result<Self, SnapshotError> {
        // Each shard's earliest expiry, gathered before the records are consumed.
        let bits = shard_bits_for(records.len() as u64);
        let mut expiries = vec![None::<i64>; 1usize << bits];
        for r in &records {
            if let Some(e) = r.expires_at_ms {
                let slot = &mut expiries[shard_index(&r.hash, bits) as usize];
                *slot = Some(slot.map_or(e, |m| m.min(e)));
            }
        }
        let built = build_shards(records, None)?;
        Ok(Self::from_built(built, expiries))
    }

    fn from_built(built: BuiltShards, expiries: Vec<Option<i64>>) -> Self {
        ShardStore {
            shard_bits: built.shard_bits,
            key_count: built.key_count,
            shards: built
                .shards
                .into_iter()
                .zip(expiries)
                .map(|(s, min_expiry_ms)| StoredShard {
                    digest: s.digest,
                    bytes: s.bytes.into(),
                    min_expiry_ms,
                })
                .collect(),
        }
    }

    /// A builder that takes the records one shard at a time, for a full build that never holds
    /// every record at once. `expected_keys` picks the shard bits (see [`ShardStoreBuilder`]).
    pub fn builder(expected_keys: u64) -> ShardStoreBuilder {
        ShardStoreBuilder {
            shard_bits: shard_bits_for(expected_keys),
            key_count: 0,
            shards: Vec::with_capacity(1usize << shard_bits_for(expected_keys)),
        }
    }

    /// Shard bits.
    pub fn shard_bits(&self) -> u8 {
        self.shard_bits
    }

    /// Number of keys.
    pub fn key_count(&self) -> u64 {
        self.key_count
    }

    /// Shards by index.
    pub fn shards(&self) -> &[StoredShard] {
        &self.shards
    }

    /// Digests in index order, for the manifest.
    pub fn digests(&self) -> Vec<Digest32> {
        self.shards.iter().map(|s| s.digest).collect()
    }

    /// Applies `changes` in order (a later change to the same hash wins) and removes every
    /// record with `expires_at_ms <= expired_through`, as a fresh build that leaves those out
    /// would. On error the store is unchanged.
    pub fn apply(
        &mut self,
        changes: Vec<ShardChange>,
        expired_through: Option<i64>,
    ) -> Result<Applied, SnapshotError> {
        let bits = self.shard_bits;
        let mut by_shard: BTreeMap<u32, Vec<ShardChange>> = BTreeMap::new();
        for c in changes {
            by_shard
                .entry(shard_index(c.hash(), bits))
                .or_default()
                .push(c);
        }
        if let Some(cut) = expired_through {
            for (i, s) in self.shards.iter().enumerate() {
                if s.min_expiry_ms.is_some_and(|e| e <= cut) {
                    by_shard.entry(i as u32).or_default();
                }
            }
        }
        let mut touched: Vec<(u32, Vec<KeyRecord>)> = Vec::with_capacity(by_shard.len());
        let mut key_count = self.key_count;
        for (index, changes) in by_shard {
            let old = &self.shards[index as usize];
            let records = decode(&old.bytes)?.records;
            key_count -= records.len() as u64;
            let mut map: BTreeMap<KeyHash, KeyRecord> =
                records.into_iter().map(|r| (r.hash, r)).collect();
            for c in changes {
                match c {
                    ShardChange::Upsert(r) => map.insert(r.hash, r),
                    ShardChange::Remove(h) => map.remove(&h),
                };
            }
            if let Some(cut) = expired_through {
                map.retain(|_, r| r.expires_at_ms.is_none_or(|e| e > cut));
            }
            key_count += map.len() as u64;
            touched.push((index, map.into_values().collect()));
        }
        if shard_bits_for(key_count) != bits {
            return self.rebuild(touched).map(|()| Applied::Rebuilt);
        }
        let mut encoded = Vec::with_capacity(touched.len());
        for (index, records) in touched {
            let min_expiry_ms = min_expiry(records.iter());
            let shard = encode_shard(bits, index, records)?;
            encoded.push((index, shard, min_expiry_ms));
        }
        let mut changed = Vec::new();
        for (index, shard, min_expiry_ms) in encoded {
            let slot = &mut self.shards[index as usize];
            slot.min_expiry_ms = min_expiry_ms;
            if slot.digest != shard.digest {
                changed.push(index);
                *slot = StoredShard {
                    digest: shard.digest,
                    bytes: shard.bytes.into(),
                    min_expiry_ms,
                };
            }
        }
        self.key_count = key_count;
        Ok(Applied::Shards(changed))
    }

    /// Rebuilds every shard from the changed ones and the decoded rest.
    fn rebuild(&mut self, touched: Vec<(u32, Vec<KeyRecord>)>) -> Result<(), SnapshotError> {
        let mut records = Vec::with_capacity(self.key_count as usize);
        let mut changed = vec![false; self.shards.len()];
        for (index, rs) in touched {
            changed[index as usize] = true;
            records.extend(rs);
        }
        for (i, s) in self.shards.iter().enumerate() {
            if !changed[i] {
                records.extend(decode(&s.bytes)?.records);
            }
        }
        *self = Self::build(records)?;
        Ok(())
    }
}

/// Builds a [`ShardStore`] shard by shard, in index order: each shard's records are encoded as
/// they arrive and only the encoded bytes are kept. The shard bits are chosen from the expected
/// key count; when the records pushed come to a count that calls for other bits (some were left
/// out after counting), [`finish`](Self::finish) re-splits what it holds, so the result is always
/// [`ShardStore::build`] of the records pushed.
#[derive(Debug)]
pub struct ShardStoreBuilder {
    shard_bits: u8,
    key_count: u64,
    shards: Vec<StoredShard>,
}

impl ShardStoreBuilder {
    /// The shard bits the records are split by.
    pub fn shard_bits(&self) -> u8 {
        self.shard_bits
    }

    /// The number of shards to push.
    pub fn shard_count(&self) -> u32 {
        1u32 << self.shard_bits
    }

    /// The index of the next shard to push.
    pub fn next_index(&self) -> u32 {
        self.shards.len() as u32
    }

    /// Encodes the next shard from its records, in any order. A record that belongs to another
    /// shard, a second record with the same hash, or a push past the last shard is an error.
    pub fn push(&mut self, mut records: Vec<KeyRecord>) -> Result<(), SnapshotError> {
        let index = self.next_index();
        if index >= self.shard_count() {
            return Err(SnapshotError::Malformed(format!(
                "shard {index} pushed; there are {}",
                self.shard_count()
            )));
        }
        if let Some(r) = records
            .iter()
            .find(|r| shard_index(&r.hash, self.shard_bits) != index)
        {
            return Err(SnapshotError::Malformed(format!(
                "key {} does not belong to shard {index}",
                r.key_id
            )));
        }
        records.sort_unstable_by_key(|r| r.hash);
        if records.windows(2).any(|w| w[0].hash == w[1].hash) {
            return Err(SnapshotError::Malformed(format!(
                "shard {index} holds one key hash twice"
            )));
        }
        let min_expiry_ms = min_expiry(records.iter());
        self.key_count += records.len() as u64;
        let shard = encode_shard(self.shard_bits, index, records)?;
        self.shards.push(StoredShard {
            digest: shard.digest,
            bytes: shard.bytes.into(),
            min_expiry_ms,
        });
        Ok(())
    }

    /// The store, once every shard was pushed.
    pub fn finish(self) -> Result<ShardStore, SnapshotError> {
        if self.next_index() != self.shard_count() {
            return Err(SnapshotError::Malformed(format!(
                "{} of {} shards pushed",
                self.next_index(),
                self.shard_count()
            )));
        }
        let store = ShardStore {
            shard_bits: self.shard_bits,
            key_count: self.key_count,
            shards: self.shards,
        };
        if shard_bits_for(store.key_count) == store.shard_bits {
            return Ok(store);
        }
        let mut records = Vec::with_capacity(store.key_count as usize);
        for s in &store.shards {
            records.extend(decode(&s.bytes)?.records);
        }
        ShardStore::build(records)
    }
}

/// The key hashes of shard `index`, as bounds on their lowercase hex form: a hash belongs to the
/// shard exactly when its hex is `>= low` and, if there is an upper bound, `< high`. This lets a
/// database hand over one shard's keys through an index on the stored hex.
pub fn hex_bounds(shard_bits: u8, index: u32) -> (String, Option<String>) {
    let bits = u32::from(shard_bits.min(crate::snapshot::MAX_SHARD_BITS));
    if bits == 0 {
        return (String::new(), None);
    }
    let low = u64::from(index) << (32 - bits);
    let high = u64::from(index + 1) << (32 - bits);
    (
        format!("{low:08x}"),
        (high < 1u64 << 32).then(|| format!("{high:08x}")),
    )
}
