//! The isolate's snapshot: loaded on first need, refreshed in the background with conditional
//! requests, accepted only after signature, version and validity checks, kept when the control
//! plane is down, and refused (fail closed) once past its validity. Shards load lazily.
//!
//! A snapshot the control plane has not confirmed for longer than the refresh interval may still
//! admit a key revoked since (an isolate that had no traffic for a while), so a request that
//! finds one asks the control plane first, for at most [`REVALIDATE_WAIT_MS`]. Under steady
//! traffic the background refresh starts a tenth of the interval early, so no request waits.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use futures_util::future::{select, Either};
use keygate_shared::snapshot::{signed_version, verify_snapshot, Digest32, VerifiedShard};
use keygate_shared::SnapshotIndex;
use worker::{console_error, console_log, Delay, Env};

use crate::config::EdgeConfig;
use crate::control_plane::{fetch_shard, fetch_snapshot, web_crypto_sha256, Fetched};
use crate::freshness::{step, Step, Timing};
pub use crate::freshness::{LOAD_POLL_MS, REFRESH_TIMEOUT_MS, REVALIDATE_WAIT_MS};
use crate::kv_copy::{self, KV_SNAPSHOT};
use crate::shard_cache::{self, Lookup};

struct Held {
    index: Rc<SnapshotIndex>,
    etag: Option<String>,
    /// Last time the control plane confirmed this snapshot (200 or 304).
    confirmed_at_ms: i64,
}

#[derive(Default)]
struct HolderState {
    held: Option<Held>,
    last_attempt_ms: i64,
    refreshing: bool,
    /// The last refresh that finished failed: the control plane is down or refusing.
    last_failed: bool,
    /// When the running load for requests with nothing usable started.
    loading_since: Option<i64>,
    /// Ids of keys whose snapshot record this build could not decode, as last seen (at most
    /// [`MAX_UNUSABLE_LISTED`]), and how many were seen in all: refused alone, reported by the
    /// status endpoint.
    unusable_keys: Vec<String>,
    unusable_seen: u64,
    /// The held snapshot's loaded shards, oldest load first (see [`MAX_LOADED_SHARDS`]).
    load_order: VecDeque<u32>,
}

/// How many shards an isolate keeps decoded at once. A shard of about 1,000 keys takes about
/// 0.4 MB of Wasm memory, so this keeps the snapshot's share of the isolate's 128 MB near
/// 50 MB whatever the key count (a whole million-key snapshot would take 400 MB); beyond it the
/// shard loaded longest ago is dropped, and loaded again, from the location's cache, when a key
/// in it comes back. Snapshots of up to about 130,000 keys (128 shards) stay loaded whole.
pub const MAX_LOADED_SHARDS: u32 = 128;

/// Drops the shards of `index` loaded longest ago until at most [`MAX_LOADED_SHARDS`] are.
fn evict(index: &mut SnapshotIndex, order: &mut VecDeque<u32>) {
    while index.loaded_shards() > MAX_LOADED_SHARDS {
        let Some(oldest) = order.pop_front() else {
            return;
        };
        index.unload_shard(oldest);
    }
}

/// How many unusable key ids the status endpoint lists.
pub const MAX_UNUSABLE_LISTED: usize = 100;

thread_local! {
    static STATE: RefCell<HolderState> = RefCell::new(HolderState::default());
}

/// Why no snapshot can be used.
#[derive(Debug)]
pub struct Unavailable;

fn usable(held: &Held, cfg: &EdgeConfig, now_ms: i64) -> bool {
    held.index.manifest().is_valid_at(now_ms)
        && cfg
            .max_staleness_ms
            .is_none_or(|max| now_ms - held.confirmed_at_ms <= max)
}

/// What to do before deciding a request.
#[derive(Debug)]
pub enum Plan {
    /// Use this snapshot; `refresh` says whether to start a background refresh.
    Use {
        /// The snapshot.
        index: Rc<SnapshotIndex>,
        /// Start a background refresh.
        refresh: bool,
    },
    /// The snapshot held is usable but older than the refresh interval: ask the control plane
    /// (or wait for the refresh already asking it) until `deadline_ms`, then decide on the
    /// snapshot held by then, `index` if nothing newer came.
    Revalidate {
        /// The snapshot to fall back on.
        index: Rc<SnapshotIndex>,
        /// This request starts the refresh.
        start: bool,
        /// When to stop waiting.
        deadline_ms: i64,
    },
    /// Nothing usable is held: refresh now, then look again.
    RefreshNow,
    /// Nothing usable, and a refresh was tried too recently.
    Unavailable,
}

fn timing_of(s: &HolderState, held: &Held) -> Timing {
    Timing {
        confirmed_at_ms: held.confirmed_at_ms,
        last_attempt_ms: s.last_attempt_ms,
        refreshing: s.refreshing,
        last_failed: s.last_failed,
    }
}

/// Decides, without I/O, whether the held snapshot can serve `now_ms`.
pub fn plan(cfg: &EdgeConfig, now_ms: i64) -> Plan {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let current = s
            .held
            .as_ref()
            .filter(|h| usable(h, cfg, now_ms))
            .map(|h| (Rc::clone(&h.index), timing_of(&s, h)));
        if let Some((index, timing)) = current {
            let step = step(timing, cfg.refresh_ms, now_ms);
            if let Step::Use { refresh: true } | Step::Revalidate { start: true, .. } = step {
                s.refreshing = true;
                s.last_attempt_ms = now_ms;
            }
            return match step {
                Step::Use { refresh } => Plan::Use { index, refresh },
                Step::Revalidate { start, deadline_ms } => Plan::Revalidate {
                    index,
                    start,
                    deadline_ms,
                },
            };
        }
        let due = now_ms - s.last_attempt_ms >= cfg.refresh_ms;
        // Requests that arrive while a load runs wait for it rather than fail.
        if due || s.held.is_none() || s.loading_since.is_some() {
            s.last_attempt_ms = now_ms;
            Plan::RefreshNow
        } else {
            Plan::Unavailable
        }
    })
}

/// The held snapshot if [`plan`] would use it as it is: usable at `now_ms`, and confirmed within
/// the refresh interval or with no refresh to wait for.
pub fn decidable(cfg: &EdgeConfig, now_ms: i64) -> Option<Rc<SnapshotIndex>> {
    STATE.with(|s| {
        let s = s.borrow();
        let h = s.held.as_ref().filter(|h| usable(h, cfg, now_ms))?;
        let step = step(timing_of(&s, h), cfg.refresh_ms, now_ms);
        matches!(step, Step::Use { .. }).then(|| Rc::clone(&h.index))
    })
}

/// Carries out [`Plan::Revalidate`]: the starting request runs the refresh itself until the
/// deadline and leaves any unfinished rest to `wait_until`; the others check every
/// [`LOAD_POLL_MS`] whether it is done. Returns the snapshot to decide on.
pub async fn revalidate(
    cfg: &Rc<EdgeConfig>,
    env: &Env,
    ctx: &worker::Context,
    now_ms: i64,
    index: Rc<SnapshotIndex>,
    start: bool,
    deadline_ms: i64,
) -> Rc<SnapshotIndex> {
    let budget = (deadline_ms - now_ms).max(0);
    if start {
        let (c, e) = (Rc::clone(cfg), env.clone());
        let refresh = Box::pin(async move { refresh(&c, &e, now_ms).await });
        let timer = Delay::from(Duration::from_millis(budget as u64));
        if let Either::Right(((), unfinished)) = select(refresh, timer).await {
            ctx.wait_until(unfinished);
        }
    } else {
        let mut waited = 0;
        while waited < budget && STATE.with(|s| s.borrow().refreshing) {
            Delay::from(Duration::from_millis(LOAD_POLL_MS as u64)).await;
            waited += LOAD_POLL_MS;
        }
    }
    current(cfg, now_ms).unwrap_or(index)
}

/// Loads a snapshot for a request that has nothing usable ([`Plan::RefreshNow`]). Requests that
/// need one at the same time (a cold isolate under traffic) share a single load, so the control
/// plane sees one manifest request and each shard is fetched and verified once: the first
/// request loads, the others check every [`LOAD_POLL_MS`] until it is done. (They cannot await
/// the first request's I/O: the runtime ties I/O to the request that started it.) A load still
/// running after [`REFRESH_TIMEOUT_MS`] is assumed lost and a new one starts.
pub async fn load_now(cfg: &EdgeConfig, env: &Env, now_ms: i64) {
    let running = STATE.with(|s| {
        let mut s = s.borrow_mut();
        match s.loading_since {
            Some(since) if now_ms - since < REFRESH_TIMEOUT_MS => true,
            _ => {
                s.loading_since = Some(now_ms);
                false
            }
        }
    });
    if !running {
        // Cleared also when the loading request is canceled mid-load, so waiters move on.
        struct Done;
        impl Drop for Done {
            fn drop(&mut self) {
                STATE.with(|s| s.borrow_mut().loading_since = None);
            }
        }
        let _done = Done;
        refresh(cfg, env, now_ms).await;
        return;
    }
    let mut waited = 0;
    while waited < REFRESH_TIMEOUT_MS && STATE.with(|s| s.borrow().loading_since.is_some()) {
        Delay::from(Duration::from_millis(LOAD_POLL_MS as u64)).await;
        waited += LOAD_POLL_MS;
    }
}

/// The held snapshot if it is usable at `now_ms`.
pub fn current(cfg: &EdgeConfig, now_ms: i64) -> Option<Rc<SnapshotIndex>> {
    STATE.with(|s| {
        s.borrow()
            .held
            .as_ref()
            .filter(|h| usable(h, cfg, now_ms))
            .map(|h| Rc::clone(&h.index))
    })
}

/// The version held, if any.
pub fn held_version() -> Option<u64> {
    STATE.with(|s| {
        s.borrow()
            .held
            .as_ref()
            .map(|h| h.index.manifest().version())
    })
}

/// Installs a freshly verified snapshot, keeping the shards it shares with the old one.
fn install(mut index: SnapshotIndex, etag: Option<String>, now_ms: i64) {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        if let Some(old) = s.held.as_ref() {
            if old.index.manifest().version() > index.manifest().version() {
                return;
            }
            index.adopt_unchanged(&old.index);
        }
        console_log!(
            "keygate-edge: snapshot version {} ({} keys) installed",
            index.manifest().version(),
            index.manifest().manifest().key_count
        );
        for (project_id, reason) in index.manifest().unusable_projects() {
            console_error!(
                "keygate-edge: project {project_id} cannot be used by this build, its keys are refused (key_unavailable): {reason}"
            );
        }
        // Shards taken over from the previous snapshot keep their place in the load order.
        s.load_order.retain(|&i| index.is_loaded(i));
        s.held = Some(Held {
            index: Rc::new(index),
            etag,
            confirmed_at_ms: now_ms,
        });
    })
}

/// Asks the control plane for a newer snapshot; with no snapshot held and the control plane
/// unreachable, falls back to the KV copy. Keeps the held snapshot on any failure.
pub async fn refresh(cfg: &EdgeConfig, env: &Env, now_ms: i64) {
    let (etag, held) = STATE.with(|s| {
        let s = s.borrow();
        (
            s.held.as_ref().and_then(|h| h.etag.clone()),
            s.held.as_ref().map(|h| h.index.manifest().version()),
        )
    });
    // A cold isolate holds nothing to compare an offered snapshot with: the KV copy's version,
    // read alongside the control plane's answer, is its floor.
    let (fetched, floor) = if held.is_none() {
        futures_util::future::join(fetch_snapshot(cfg, etag.as_deref()), kv_floor(cfg, env)).await
    } else {
        (fetch_snapshot(cfg, etag.as_deref()).await, None)
    };
    let at_least = held.max(floor);
    let outcome = match fetched {
        Ok(Fetched::NotModified) => {
            STATE.with(|s| {
                if let Some(h) = s.borrow_mut().held.as_mut() {
                    h.confirmed_at_ms = now_ms;
                }
            });
            Ok(())
        }
        Ok(Fetched::New { bytes, etag }) => {
            match verify_snapshot(&bytes, &cfg.trusted_keys, at_least, now_ms) {
                Ok(m) => {
                    install(SnapshotIndex::new(m), etag, now_ms);
                    Ok(())
                }
                Err(e) => Err(format!("snapshot refused: {e}")),
            }
        }
        Err(e) => Err(e),
    };
    let failed = outcome.is_err();
    if let Err(e) = outcome {
        console_error!("keygate-edge: refresh failed: {e}");
        if held.is_none() {
            load_from_kv(cfg, env, now_ms).await;
        }
    }
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        s.refreshing = false;
        s.last_failed = failed;
    });
}

/// The version of the KV copy of the snapshot, when its signature verifies (whatever its age).
async fn kv_floor(cfg: &EdgeConfig, env: &Env) -> Option<u64> {
    let kv = env.kv("SNAPSHOT_KV").ok()?;
    let bytes = kv.get(KV_SNAPSHOT).bytes().await.ok()??;
    signed_version(&bytes, &cfg.trusted_keys).ok()
}

async fn load_from_kv(cfg: &EdgeConfig, env: &Env, now_ms: i64) {
    let Ok(kv) = env.kv("SNAPSHOT_KV") else {
        return;
    };
    let Ok(Some(bytes)) = kv.get(KV_SNAPSHOT).bytes().await else {
        return;
    };
    let meta = kv_copy::read_meta(&kv).await;
    match verify_snapshot(&bytes, &cfg.trusted_keys, held_version(), now_ms) {
        // Counted as confirmed when the scheduled copy last saw the control plane serve it, so
        // the staleness bound still holds for a cold isolate.
        Ok(m) => {
            let confirmed =
                kv_copy::confirmed_at(meta, m.version(), m.manifest().issued_at_ms, now_ms);
            install(SnapshotIndex::new(m), None, confirmed);
        }
        Err(e) => console_error!("keygate-edge: KV snapshot refused: {e}"),
    }
}

/// What the shard cache has done for this isolate, reported by the status endpoint.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ShardCacheCounts {
    /// Shards taken from the cache (verified).
    pub hits: u64,
    /// Lookups that found nothing.
    pub misses: u64,
    /// Cached shards that failed verification, and were fetched from the network instead.
    pub refused: u64,
    /// Lookups or stores that failed (no Cache API, a throw, a timeout).
    pub failures: u64,
    /// Stores of verified shards that the runtime accepted (it does not report every failure:
    /// `workerd` hides a cache that disconnects).
    pub stored: u64,
}

thread_local! {
    static SHARD_CACHE: RefCell<ShardCacheCounts> = RefCell::new(ShardCacheCounts::default());
}

/// What the shard cache has done for this isolate so far.
pub fn shard_cache_counts() -> ShardCacheCounts {
    SHARD_CACHE.with(|c| *c.borrow())
}

fn count(f: impl FnOnce(&mut ShardCacheCounts)) {
    SHARD_CACHE.with(|c| f(&mut c.borrow_mut()));
}

/// Counts a failure of the shard cache, logging only an isolate's first: without a Cache API
/// every shard load would log twice. The status endpoint shows the count.
fn note_cache_failure(what: &str) {
    let first = SHARD_CACHE.with(|c| {
        let mut c = c.borrow_mut();
        c.failures += 1;
        c.failures == 1
    });
    if first {
        console_error!(
            "keygate-edge: shard cache {what}; shards come from the network (further failures are only counted: status endpoint, shard_cache)"
        );
    }
}

/// Verifies `bytes` as shard `shard` of `index`'s manifest, whatever their source.
async fn verify_shard(
    index: &SnapshotIndex,
    shard: u32,
    bytes: &[u8],
) -> Result<VerifiedShard, String> {
    let sha256 = match web_crypto_sha256(bytes).await {
        Ok(d) => d,
        Err(e) => {
            console_error!("keygate-edge: WebCrypto digest failed ({e}); hashing in Wasm");
            Digest32::of(bytes)
        }
    };
    index
        .manifest()
        .verify_shard_hashed(shard, bytes, sha256)
        .map_err(|e| format!("shard refused: {e}"))
}

/// Shard `shard` of `index`, verified: from the location's cache, else from the control plane
/// (else the KV copy), which then goes into the cache once the verdict no longer waits for it.
async fn obtain_shard(
    cfg: &EdgeConfig,
    env: &Env,
    ctx: &worker::Context,
    index: &SnapshotIndex,
    shard: u32,
    digest: Digest32,
) -> Result<VerifiedShard, String> {
    match shard_cache::get(&digest).await {
        Lookup::Hit(bytes) => match verify_shard(index, shard, &bytes).await {
            Ok(verified) => {
                count(|c| c.hits += 1);
                return Ok(verified);
            }
            Err(e) => {
                count(|c| c.refused += 1);
                console_error!(
                    "keygate-edge: cached shard {} refused ({e}); fetching it from the control plane",
                    digest.to_hex()
                );
            }
        },
        Lookup::Miss => count(|c| c.misses += 1),
        Lookup::Failed(e) => note_cache_failure(&format!("lookup failed ({e})")),
    }
    let bytes = fetch_shard(cfg, env, &digest).await?;
    let verified = verify_shard(index, shard, &bytes).await?;
    // Only bytes that verified are stored (a refused entry is overwritten by them).
    ctx.wait_until(async move {
        match shard_cache::put_verified(&digest, &bytes).await {
            Ok(()) => count(|c| c.stored += 1),
            Err(e) => note_cache_failure(&format!("store failed ({e})")),
        }
    });
    Ok(verified)
}

/// Loads shard `shard` into the held snapshot (or, if a refresh replaced it meanwhile, into
/// `index` alone) and returns the index to evaluate against.
pub async fn load_shard(
    cfg: &EdgeConfig,
    env: &Env,
    ctx: &worker::Context,
    index: Rc<SnapshotIndex>,
    shard: u32,
) -> Result<Rc<SnapshotIndex>, String> {
    let digest = index
        .manifest()
        .shard_digest(shard)
        .ok_or_else(|| format!("no shard {shard} in the manifest"))?;
    let verified = obtain_shard(cfg, env, ctx, &index, shard, digest).await?;
    note_unusable(&verified);
    let mut verified = Some(verified);
    let updated = STATE.with(|s| {
        let mut s = s.borrow_mut();
        let HolderState {
            held, load_order, ..
        } = &mut *s;
        let held = held.as_mut()?;
        if held.index.manifest().version() != index.manifest().version()
            || held.index.manifest().shard_digest(shard) != Some(digest)
        {
            return None;
        }
        if let (false, Some(v)) = (held.index.is_loaded(shard), verified.take()) {
            let mut next = (*held.index).clone();
            // Same manifest: takes the shard verified and decoded above, without doing it again.
            next.insert_shard(v);
            load_order.push_back(shard);
            evict(&mut next, load_order);
            held.index = Rc::new(next);
        }
        Some(Rc::clone(&held.index))
    });
    if let Some(held) = updated {
        return Ok(held);
    }
    // A refresh replaced the held snapshot meanwhile: this request decides on its own copy.
    let mut mine = (*index).clone();
    if let Some(v) = verified {
        mine.insert_shard(v);
    }
    Ok(Rc::new(mine))
}

/// Logs each record of a shard that this build cannot decode (refused alone, with
/// `key_unavailable`) and keeps its id for the status endpoint.
fn note_unusable(shard: &VerifiedShard) {
    let bad: Vec<(&str, &str)> = shard.unusable().collect();
    if bad.is_empty() {
        return;
    }
    for (key_id, reason) in &bad {
        console_error!(
            "keygate-edge: key {key_id} in shard {} cannot be used by this build and is refused (key_unavailable): {reason}",
            shard.index
        );
    }
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        s.unusable_seen += bad.len() as u64;
        for (key_id, _) in bad {
            if !s.unusable_keys.iter().any(|k| k == key_id)
                && s.unusable_keys.len() < MAX_UNUSABLE_LISTED
            {
                s.unusable_keys.push(key_id.to_owned());
            }
        }
    });
}

/// Key ids refused as unusable (at most [`MAX_UNUSABLE_LISTED`]), and how many records were.
pub fn unusable_keys() -> (Vec<String>, u64) {
    STATE.with(|s| {
        let s = s.borrow();
        (s.unusable_keys.clone(), s.unusable_seen)
    })
}
