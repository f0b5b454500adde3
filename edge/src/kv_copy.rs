//! The KV copy of the snapshot, kept by the cron trigger so that a cold isolate can start while
//! the control plane is unreachable.
//!
//! KV writes are the scarce resource (the Workers Free plan allows 1,000 a day), so a run writes
//! only what changed: the shards the copy lacks, the list of shards when it changed, and the
//! manifest when its version or signature window changed. A cold isolate may use the copy only
//! while it is younger than `SNAPSHOT_MAX_STALENESS_SECONDS` counted from the last time the
//! control plane confirmed it, so the copy's small [`CopyMeta`] record is rewritten once half of
//! that bound has passed even when nothing else changed: at most 288 writes a day at the
//! default 600 s, plus a few per published change.

use keygate_shared::snapshot::{verify_snapshot, Digest32};
use serde::{Deserialize, Serialize};
use worker::kv::KvStore;
use worker::Env;

use crate::config::EdgeConfig;
use crate::control_plane::{fetch_shard, fetch_snapshot_bytes};

/// KV key of the signed manifest copy.
pub const KV_SNAPSHOT: &str = "snapshot";
/// KV key listing the shard digests already copied.
pub const KV_STORED_SHARDS: &str = "snapshot:shards";
/// KV key of the copy's [`CopyMeta`].
pub const KV_COPY_META: &str = "snapshot:copy";
/// Shards copied to KV per scheduled run, to stay within the subrequest budget.
pub const KV_SHARDS_PER_RUN: usize = 200;

/// What the copy in KV is, and when the control plane last confirmed it. Not signed: whoever can
/// write the namespace can stretch how long a cold isolate trusts the copy, up to the signed
/// validity, but cannot change what it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyMeta {
    /// The manifest's version.
    pub version: u64,
    /// The manifest's `issued_at_ms` (the control plane re-signs a version with a new window).
    pub issued_at_ms: i64,
    /// When a scheduled run last fetched this manifest from the control plane.
    pub confirmed_at_ms: i64,
}

/// What a scheduled run must write for the manifest it fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestWrite {
    /// The copy holds this manifest, confirmed recently enough: write nothing.
    Nothing,
    /// The copy holds this manifest; only its confirmation time is due.
    Confirmation,
    /// The manifest is new to the copy (or the copy is empty): shards, list and manifest.
    Manifest,
}

/// Decides the writes for a fetched manifest (`version`, `issued_at_ms`) at `now_ms`, given the
/// copy's record. `max_staleness_ms` is the edge's bound; without one the copy is useful for the
/// whole signed window and needs no confirmation.
pub fn plan(
    stored: Option<CopyMeta>,
    version: u64,
    issued_at_ms: i64,
    now_ms: i64,
    max_staleness_ms: Option<i64>,
) -> ManifestWrite {
    let Some(s) = stored else {
        return ManifestWrite::Manifest;
    };
    if s.version != version || s.issued_at_ms != issued_at_ms {
        return ManifestWrite::Manifest;
    }
    match max_staleness_ms {
        Some(max) if now_ms - s.confirmed_at_ms >= max / 2 => ManifestWrite::Confirmation,
        _ => ManifestWrite::Nothing,
    }
}

/// When a cold isolate may count the copy as last confirmed: the recorded confirmation if it is
/// about this manifest, else its issue time; never later than now nor earlier than the issue.
pub fn confirmed_at(meta: Option<CopyMeta>, version: u64, issued_at_ms: i64, now_ms: i64) -> i64 {
    match meta {
        Some(m) if m.version == version && m.issued_at_ms == issued_at_ms => m
            .confirmed_at_ms
            .clamp(issued_at_ms, now_ms.max(issued_at_ms)),
        _ => issued_at_ms,
    }
}

/// Reads the copy's record; a missing or unreadable one counts as none.
pub async fn read_meta(kv: &KvStore) -> Option<CopyMeta> {
    kv.get(KV_COPY_META).json::<CopyMeta>().await.ok().flatten()
}

/// What one scheduled run did.
#[derive(Debug, Serialize)]
pub struct SyncReport {
    /// The control plane's current version.
    pub version: u64,
    /// Shards written this run.
    pub shards_copied: usize,
    /// KV writes this run, all keys counted.
    pub writes: usize,
    /// Whether the copy now holds the whole snapshot.
    pub complete: bool,
}

impl std::fmt::Display for SyncReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "snapshot version {}: {} KV writes ({} shards){}",
            self.version,
            self.writes,
            self.shards_copied,
            if self.complete { "" } else { ", more next run" }
        )
    }
}

async fn put(kv: &KvStore, key: &str, bytes: &[u8]) -> Result<(), String> {
    kv.put_bytes(key, bytes)
        .map_err(|e| e.to_string())?
        .execute()
        .await
        .map_err(|e| e.to_string())
}

/// The scheduled job: brings the KV copy up to the control plane's current snapshot, writing
/// only what changed.
pub async fn sync(cfg: &EdgeConfig, env: &Env, now_ms: i64) -> Result<SyncReport, String> {
    let kv = env.kv("SNAPSHOT_KV").map_err(|e| e.to_string())?;
    let bytes = fetch_snapshot_bytes(cfg).await?;
    let manifest = verify_snapshot(&bytes, &cfg.trusted_keys, None, now_ms)
        .map_err(|e| format!("snapshot refused: {e}"))?;
    let version = manifest.version();
    let issued_at_ms = manifest.manifest().issued_at_ms;
    let stored_meta = read_meta(&kv).await;
    let meta = CopyMeta {
        version,
        issued_at_ms,
        confirmed_at_ms: now_ms,
    };
    let meta_json = serde_json::to_vec(&meta).map_err(|e| e.to_string())?;
    let mut report = SyncReport {
        version,
        shards_copied: 0,
        writes: 0,
        complete: true,
    };
    match plan(
        stored_meta,
        version,
        issued_at_ms,
        now_ms,
        cfg.max_staleness_ms,
    ) {
        ManifestWrite::Nothing => return Ok(report),
        ManifestWrite::Confirmation => {
            put(&kv, KV_COPY_META, &meta_json).await?;
            report.writes = 1;
            return Ok(report);
        }
        ManifestWrite::Manifest => {}
    }

    let before: Vec<String> = kv
        .get(KV_STORED_SHARDS)
        .json::<Vec<String>>()
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    let mut stored = before.clone();
    let wanted: Vec<Digest32> = manifest.manifest().shard_digests.clone();
    for (i, digest) in wanted.iter().enumerate() {
        let hex = digest.to_hex();
        if stored.contains(&hex) {
            continue;
        }
        if report.shards_copied >= KV_SHARDS_PER_RUN {
            break;
        }
        let shard_bytes = fetch_shard(cfg, env, digest).await?;
        manifest
            .verify_shard(i as u32, &shard_bytes)
            .map_err(|e| format!("shard refused: {e}"))?;
        put(&kv, &format!("shard:{hex}"), &shard_bytes).await?;
        stored.push(hex);
        report.shards_copied += 1;
        report.writes += 1;
    }
    // Forget digests the current snapshot no longer uses (their values stay, unused).
    let current: Vec<String> = wanted.iter().map(Digest32::to_hex).collect();
    stored.retain(|d| current.contains(d));
    if stored != before {
        let list = serde_json::to_vec(&stored).map_err(|e| e.to_string())?;
        put(&kv, KV_STORED_SHARDS, &list).await?;
        report.writes += 1;
    }
    report.complete = current.iter().all(|d| stored.contains(d));
    // Only a snapshot whose shards are all in KV is worth starting from; until then the record
    // keeps describing the previous copy, so the next run carries on.
    if report.complete {
        put(&kv, KV_SNAPSHOT, &bytes).await?;
        put(&kv, KV_COPY_META, &meta_json).await?;
        report.writes += 2;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Option<i64> = Some(600_000);

    fn meta(version: u64, issued: i64, confirmed: i64) -> Option<CopyMeta> {
        Some(CopyMeta {
            version,
            issued_at_ms: issued,
            confirmed_at_ms: confirmed,
        })
    }

    #[test]
    fn an_empty_copy_gets_the_manifest() {
        assert_eq!(plan(None, 1, 0, 0, MAX), ManifestWrite::Manifest);
    }

    #[test]
    fn a_new_version_or_a_new_signature_window_rewrites_the_manifest() {
        assert_eq!(
            plan(meta(1, 10, 10), 2, 10, 20, MAX),
            ManifestWrite::Manifest
        );
        assert_eq!(
            plan(meta(1, 10, 10), 1, 50, 60, MAX),
            ManifestWrite::Manifest
        );
        assert_eq!(
            plan(meta(1, 10, 10), 2, 10, 20, None),
            ManifestWrite::Manifest
        );
    }

    #[test]
    fn an_unchanged_snapshot_writes_nothing_until_its_confirmation_is_half_stale() {
        let at = 1_000_000;
        assert_eq!(plan(meta(3, 0, at), 3, 0, at, MAX), ManifestWrite::Nothing);
        assert_eq!(
            plan(meta(3, 0, at), 3, 0, at + 299_999, MAX),
            ManifestWrite::Nothing
        );
        assert_eq!(
            plan(meta(3, 0, at), 3, 0, at + 300_000, MAX),
            ManifestWrite::Confirmation
        );
        // Without a staleness bound the copy needs no confirmation at all.
        assert_eq!(
            plan(meta(3, 0, at), 3, 0, at + 86_000_000, None),
            ManifestWrite::Nothing
        );
    }

    #[test]
    fn a_minute_cron_stays_within_the_free_plan_when_nothing_changes() {
        // A day of one run a minute over an unchanged snapshot.
        let mut stored = meta(7, 0, 0);
        let mut writes = 0;
        for minute in 1..=1_440i64 {
            let now = minute * 60_000;
            match plan(stored, 7, 0, now, MAX) {
                ManifestWrite::Nothing => {}
                ManifestWrite::Confirmation | ManifestWrite::Manifest => {
                    writes += 1;
                    stored = meta(7, 0, now);
                }
            }
        }
        assert_eq!(writes, 288);
    }

    #[test]
    fn the_confirmation_counts_only_for_its_own_manifest() {
        assert_eq!(confirmed_at(meta(4, 100, 900), 4, 100, 1_000), 900);
        assert_eq!(confirmed_at(meta(4, 100, 900), 5, 100, 1_000), 100);
        assert_eq!(confirmed_at(meta(4, 100, 900), 4, 200, 1_000), 200);
        assert_eq!(confirmed_at(None, 4, 100, 1_000), 100);
        // A record from the future (a clock that jumped) counts as now; one before the issue as
        // the issue.
        assert_eq!(confirmed_at(meta(4, 100, 5_000), 4, 100, 1_000), 1_000);
        assert_eq!(confirmed_at(meta(4, 100, 50), 4, 100, 1_000), 100);
    }
}
