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
use crate::record::{edge_encode, RecordError};
use crate::snapshot::{
    build_shards, encode_shard, shard_bits_for, shard_index, BuiltShards, Digest32, Shard,
    SnapshotError, MAX_SHARD_BITS, SHARD_FORMAT,
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

    /// A builder for a full build that takes records one at a time, in any order, and never
    /// holds them decoded (see [`ShardStoreBuilder`]).
    pub fn builder() -> ShardStoreBuilder {
        ShardStoreBuilder {
            buckets: (0..1usize << MAX_SHARD_BITS)
                .map(|_| Bucket::default())
                .collect(),
            key_count: 0,
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

/// Builds a [`ShardStore`] from records added one at a time, in any order, as a database hands
/// them over. Each record is encoded once (and checked as the edge will decode it) and only its
/// bytes are kept, in one of `2^MAX_SHARD_BITS` buckets by its hash's leading bits; `finish`
/// picks the shard bits from the count, joins the buckets of each shard and writes the shard's
/// bytes in hash order, freeing the buckets as it goes. So no more than the encoded records are
/// ever held, never the decoded records, and the result is byte for byte what
/// [`ShardStore::build`] makes of the same records (a shard's encoding is its header followed by
/// its records' encodings).
#[derive(Debug)]
pub struct ShardStoreBuilder {
    buckets: Vec<Bucket>,
    key_count: u64,
}

/// The largest page of a bucket: records are packed into pages allocated at their final size,
/// so the held bytes stay within a page per bucket of the records' own size (a growing `Vec`
/// would hold up to twice that).
const PAGE: usize = 4 * 1024;

#[derive(Debug, Default)]
struct Bucket {
    pages: Vec<Vec<u8>>,
    entries: Vec<Entry>,
    min_expiry_ms: Option<i64>,
}

/// Where a record's bytes are; sorted by `prefix`, the first 8 bytes of its hash (ties, which
/// practically never happen, are settled by the whole hash read back from the bytes).
#[derive(Debug, Clone, Copy)]
struct Entry {
    prefix: u64,
    page: u16,
    start: u16,
    len: u32,
}

impl Bucket {
    fn bytes(&self, e: &Entry) -> &[u8] {
        let start = usize::from(e.start);
        &self.pages[usize::from(e.page)][start..start + e.len as usize]
    }

    fn hash(&self, e: &Entry) -> Option<KeyHash> {
        // The hash is a record's first field.
        postcard::take_from_bytes::<KeyHash>(self.bytes(e))
            .ok()
            .map(|(h, _)| h)
    }

    fn push(&mut self, hash: &KeyHash, encoded: &[u8]) -> Option<()> {
        let fits = self
            .pages
            .last()
            .is_some_and(|p| p.capacity() - p.len() >= encoded.len());
        if !fits {
            // Pages grow from 1 KiB, so a small key set does not reserve a whole page per bucket.
            let size = (1024usize << self.pages.len().min(2)).min(PAGE);
            self.pages.push(Vec::with_capacity(size.max(encoded.len())));
        }
        let page = u16::try_from(self.pages.len() - 1).ok()?;
        let bytes = self.pages.last_mut()?;
        let start = u16::try_from(bytes.len()).ok()?;
        let len = u32::try_from(encoded.len()).ok()?;
        bytes.extend_from_slice(encoded);
        let mut prefix = [0u8; 8];
        prefix.copy_from_slice(&hash.as_bytes()[..8]);
        self.entries.push(Entry {
            prefix: u64::from_be_bytes(prefix),
            page,
            start,
            len,
        });
        Some(())
    }

    /// Sorts the entries by hash and drops all but the first of equal hashes.
    fn sort(&mut self) {
        let mut entries = std::mem::take(&mut self.entries);
        entries.sort_by(|a, b| {
            a.prefix
                .cmp(&b.prefix)
                .then_with(|| self.hash(a).cmp(&self.hash(b)))
        });
        entries.dedup_by(|b, a| a.prefix == b.prefix && self.hash(a) == self.hash(b));
        self.entries = entries;
    }
}

impl ShardStoreBuilder {
    /// Adds a record. A record the edge would not decode as it is is refused with the reason,
    /// and the builder is unchanged. A second record with a hash already added is ignored (the
    /// control plane's hashes are unique).
    pub fn add(&mut self, record: &KeyRecord) -> Result<(), RecordError> {
        let encoded = edge_encode(record)?;
        let bucket = &mut self.buckets[shard_index(&record.hash, MAX_SHARD_BITS) as usize];
        bucket
            .push(&record.hash, &encoded)
            .ok_or_else(|| RecordError {
                key_id: record.key_id.clone(),
                reason: "more than a shard can hold".to_owned(),
            })?;
        if let Some(e) = record.expires_at_ms {
            bucket.min_expiry_ms = Some(bucket.min_expiry_ms.map_or(e, |m| m.min(e)));
        }
        self.key_count += 1;
        Ok(())
    }

    /// Records added so far.
    pub fn key_count(&self) -> u64 {
        self.key_count
    }

    /// The store of every record added.
    pub fn finish(mut self) -> Result<ShardStore, SnapshotError> {
        let mut key_count = 0u64;
        for b in &mut self.buckets {
            b.sort();
            key_count += b.entries.len() as u64;
        }
        let bits = shard_bits_for(key_count);
        let per_shard = 1usize << (MAX_SHARD_BITS - bits);
        let mut shards = Vec::with_capacity(1usize << bits);
        let mut buckets = self.buckets.into_iter();
        for index in 0..(1u32 << bits) {
            let group: Vec<Bucket> = buckets.by_ref().take(per_shard).collect();
            let records: usize = group.iter().map(|b| b.entries.len()).sum();
            let size: usize = group
                .iter()
                .flat_map(|b| &b.entries)
                .map(|e| e.len as usize)
                .sum();
            let mut bytes = postcard::to_allocvec(&(SHARD_FORMAT, bits, index, records))
                .map_err(|e| SnapshotError::Malformed(e.to_string()))?;
            bytes.reserve_exact(size);
            let mut min_expiry_ms = None::<i64>;
            for b in group {
                for e in &b.entries {
                    bytes.extend_from_slice(b.bytes(e));
                }
                min_expiry_ms = match (min_expiry_ms, b.min_expiry_ms) {
                    (Some(x), Some(y)) => Some(x.min(y)),
                    (x, y) => x.or(y),
                };
            }
            shards.push(StoredShard {
                digest: Digest32::of(&bytes),
                bytes: bytes.into(),
                min_expiry_ms,
            });
        }
        Ok(ShardStore {
            shard_bits: bits,
            key_count,
            shards,
        })
    }
}
