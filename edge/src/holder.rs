//! The isolate's snapshot: loaded on first need, refreshed in the background with conditional
//! requests, accepted only after signature, version and validity checks, kept when the control
//! plane is down, and refused (fail closed) once past its validity. Shards load lazily.
//!
//! A snapshot the control plane has not confirmed for longer than the refresh interval may still
//! admit a key revoked since (an isolate that had no traffic for a while), so a request that
//! finds one asks the control plane first, for at most [`REVALIDATE_WAIT_MS`]. Under steady
//! traffic the background refresh starts a tenth of the interval early, so no request waits.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use futures_util::future::{select, Either};
use keygate_shared::snapshot::{signed_version, verify_snapshot, Digest32};
use keygate_shared::SnapshotIndex;
use wasm_bindgen::prelude::*;
use worker::js_sys::{Promise, Uint8Array};
use worker::wasm_bindgen_futures::JsFuture;
use worker::{
    console_error, console_log, Delay, Env, Fetch, Headers, Method, Request, RequestInit,
};

use crate::config::EdgeConfig;

/// KV key of the signed manifest copy.
pub const KV_SNAPSHOT: &str = "snapshot";
/// KV key listing the shard digests already copied.
pub const KV_STORED_SHARDS: &str = "snapshot:shards";
/// After this long a refresh still marked as running is assumed lost.
const REFRESH_TIMEOUT_MS: i64 = 30_000;
/// How often a request waiting for another request's load checks whether it is done.
pub const LOAD_POLL_MS: i64 = 5;
/// Shards copied to KV per scheduled run, to stay within the subrequest budget.
pub const KV_SHARDS_PER_RUN: usize = 200;
/// The longest a request holding a stale snapshot waits for the control plane before it is
/// decided on that snapshot (the last good one, as when the control plane is down).
pub const REVALIDATE_WAIT_MS: i64 = 1_000;

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

/// What a usable snapshot's timing calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Use { refresh: bool },
    Revalidate { start: bool, deadline_ms: i64 },
}

/// The timing facts [`step`] decides on.
#[derive(Debug, Clone, Copy)]
struct Timing {
    /// When the control plane last confirmed the held snapshot.
    confirmed_at_ms: i64,
    /// When the last refresh started.
    last_attempt_ms: i64,
    /// A refresh is running.
    refreshing: bool,
    /// The last refresh that finished failed.
    last_failed: bool,
}

impl Timing {
    fn of(s: &HolderState, held: &Held) -> Self {
        Timing {
            confirmed_at_ms: held.confirmed_at_ms,
            last_attempt_ms: s.last_attempt_ms,
            refreshing: s.refreshing,
            last_failed: s.last_failed,
        }
    }
}

/// The rule behind [`plan`] for a usable snapshot.
fn step(t: Timing, refresh_ms: i64, now_ms: i64) -> Step {
    let since_attempt = now_ms - t.last_attempt_ms;
    let due = since_attempt >= refresh_ms - refresh_ms / 10;
    // A refresh that never finished (a hung fetch) must not block the next one forever.
    let refreshing = t.refreshing && since_attempt < REFRESH_TIMEOUT_MS;
    // While the control plane is known to be down, nobody waits for it: the last good
    // snapshot serves and refreshes go on in the background.
    let stale = now_ms - t.confirmed_at_ms > refresh_ms && !t.last_failed;
    let deadline_ms = t.last_attempt_ms + REVALIDATE_WAIT_MS;
    if stale && refreshing && now_ms < deadline_ms {
        return Step::Revalidate {
            start: false,
            deadline_ms,
        };
    }
    let refresh = due && !refreshing;
    if stale && refresh {
        Step::Revalidate {
            start: true,
            deadline_ms: now_ms + REVALIDATE_WAIT_MS,
        }
    } else {
        // Fresh; or stale with a refresh that has run past its deadline, or with the last
        // attempt moments ago: the snapshot held serves.
        Step::Use { refresh }
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
            .map(|h| (Rc::clone(&h.index), Timing::of(&s, h)));
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
        let step = step(Timing::of(&s, h), cfg.refresh_ms, now_ms);
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

fn control_plane_request(
    cfg: &EdgeConfig,
    path: &str,
    etag: Option<&str>,
) -> worker::Result<Request> {
    let headers = Headers::new();
    headers.set("Authorization", &format!("Bearer {}", cfg.edge_token))?;
    if let Some(e) = etag {
        headers.set("If-None-Match", e)?;
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Get).with_headers(headers);
    Request::new_with_init(&format!("{}{}", cfg.control_plane_url, path), &init)
}

enum Fetched {
    NotModified,
    New {
        bytes: Vec<u8>,
        etag: Option<String>,
    },
}

async fn fetch_snapshot(cfg: &EdgeConfig, etag: Option<&str>) -> Result<Fetched, String> {
    let req = control_plane_request(cfg, "/v1/snapshot", etag).map_err(|e| e.to_string())?;
    let mut resp = Fetch::Request(req)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    match resp.status_code() {
        304 => Ok(Fetched::NotModified),
        200 => {
            let etag = resp.headers().get("ETag").ok().flatten();
            let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
            Ok(Fetched::New { bytes, etag })
        }
        s => Err(format!("control plane answered {s} for the snapshot")),
    }
}

/// Fetches a shard by digest: from the control plane, else from the KV copy.
async fn fetch_shard(cfg: &EdgeConfig, env: &Env, digest: &Digest32) -> Result<Vec<u8>, String> {
    let hex = digest.to_hex();
    let from_cp = async {
        let req = control_plane_request(cfg, &format!("/v1/snapshot/shards/{hex}"), None)
            .map_err(|e| e.to_string())?;
        let mut resp = Fetch::Request(req)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if resp.status_code() != 200 {
            return Err(format!(
                "control plane answered {} for shard {hex}",
                resp.status_code()
            ));
        }
        resp.bytes().await.map_err(|e| e.to_string())
    };
    match from_cp.await {
        Ok(b) => Ok(b),
        Err(cp_err) => {
            let kv = env.kv("SNAPSHOT_KV").map_err(|e| e.to_string())?;
            match kv.get(&format!("shard:{hex}")).bytes().await {
                Ok(Some(b)) => Ok(b),
                _ => Err(cp_err),
            }
        }
    }
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
    match verify_snapshot(&bytes, &cfg.trusted_keys, held_version(), now_ms) {
        // Not confirmed by the control plane: confirmed_at stays that of the copy's issue.
        Ok(m) => {
            let issued = m.manifest().issued_at_ms;
            install(SnapshotIndex::new(m), None, issued);
        }
        Err(e) => console_error!("keygate-edge: KV snapshot refused: {e}"),
    }
}

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = ["crypto", "subtle"], js_name = digest, catch)]
    fn subtle_digest(algorithm: &str, data: &Uint8Array) -> Result<Promise, JsValue>;
}

/// SHA-256 by the runtime's WebCrypto. A cold isolate's first shard is hashed while the Wasm
/// module still runs baseline-compiled code, where the portable SHA-256 spent about 7 ms on a
/// 100 KB shard; the runtime's native digest takes a fraction of that.
async fn web_crypto_sha256(bytes: &[u8]) -> Result<Digest32, String> {
    let promise =
        subtle_digest("SHA-256", &Uint8Array::from(bytes)).map_err(|e| format!("{e:?}"))?;
    let digest = JsFuture::from(promise)
        .await
        .map_err(|e| format!("{e:?}"))?;
    let out: [u8; 32] = Uint8Array::new(&digest)
        .to_vec()
        .try_into()
        .map_err(|_| "digest is not 32 bytes".to_owned())?;
    Ok(Digest32(out))
}

/// Loads shard `shard` into the held snapshot (or, if a refresh replaced it meanwhile, into
/// `index` alone) and returns the index to evaluate against.
pub async fn load_shard(
    cfg: &EdgeConfig,
    env: &Env,
    index: Rc<SnapshotIndex>,
    shard: u32,
) -> Result<Rc<SnapshotIndex>, String> {
    let digest = index
        .manifest()
        .shard_digest(shard)
        .ok_or_else(|| format!("no shard {shard} in the manifest"))?;
    let bytes = fetch_shard(cfg, env, &digest).await?;
    let sha256 = match web_crypto_sha256(&bytes).await {
        Ok(d) => d,
        Err(e) => {
            console_error!("keygate-edge: WebCrypto digest failed ({e}); hashing in Wasm");
            Digest32::of(&bytes)
        }
    };
    let verified = index
        .manifest()
        .verify_shard_hashed(shard, &bytes, sha256)
        .map_err(|e| format!("shard refused: {e}"))?;
    note_unusable(&verified);
    let mut mine = (*index).clone();
    mine.insert_shard(verified);
    let updated = STATE.with(|s| {
        let mut s = s.borrow_mut();
        let held = s.held.as_mut()?;
        if held.index.manifest().version() != index.manifest().version()
            || held.index.manifest().shard_digest(shard) != Some(digest)
        {
            return None;
        }
        if !held.index.is_loaded(shard) {
            let mut next = (*held.index).clone();
            // Same manifest: takes the shard verified and decoded above, without doing it again.
            next.adopt_unchanged(&mine);
            held.index = Rc::new(next);
        }
        Some(Rc::clone(&held.index))
    });
    Ok(updated.unwrap_or_else(|| Rc::new(mine)))
}

/// Logs each record of a shard that this build cannot decode (refused alone, with
/// `key_unavailable`) and keeps its id for the status endpoint.
fn note_unusable(shard: &keygate_shared::snapshot::VerifiedShard) {
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

/// The scheduled job: copies the current snapshot and its shards into KV, so a cold isolate can
/// start while the control plane is down.
pub async fn sync_kv(cfg: &EdgeConfig, env: &Env, now_ms: i64) -> Result<String, String> {
    let kv = env.kv("SNAPSHOT_KV").map_err(|e| e.to_string())?;
    let Fetched::New { bytes, .. } = fetch_snapshot(cfg, None).await? else {
        return Err("unexpected 304".into());
    };
    let manifest = verify_snapshot(&bytes, &cfg.trusted_keys, None, now_ms)
        .map_err(|e| format!("snapshot refused: {e}"))?;
    let mut stored: Vec<String> = kv
        .get(KV_STORED_SHARDS)
        .json::<Vec<String>>()
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    let wanted: Vec<Digest32> = manifest.manifest().shard_digests.clone();
    let mut copied = 0usize;
    for (i, digest) in wanted.iter().enumerate() {
        let hex = digest.to_hex();
        if stored.contains(&hex) {
            continue;
        }
        if copied >= KV_SHARDS_PER_RUN {
            break;
        }
        let shard_bytes = fetch_shard(cfg, env, digest).await?;
        manifest
            .verify_shard(i as u32, &shard_bytes)
            .map_err(|e| format!("shard refused: {e}"))?;
        kv.put_bytes(&format!("shard:{hex}"), &shard_bytes)
            .map_err(|e| e.to_string())?
            .execute()
            .await
            .map_err(|e| e.to_string())?;
        stored.push(hex);
        copied += 1;
    }
    // Forget digests the current snapshot no longer uses (their values expire with no harm).
    let current: Vec<String> = wanted.iter().map(Digest32::to_hex).collect();
    stored.retain(|d| current.contains(d));
    kv.put(KV_STORED_SHARDS, &stored)
        .map_err(|e| e.to_string())?
        .execute()
        .await
        .map_err(|e| e.to_string())?;
    let complete = current.iter().all(|d| stored.contains(d));
    // Only a snapshot whose shards are all in KV is worth starting from.
    if complete {
        kv.put_bytes(KV_SNAPSHOT, &bytes)
            .map_err(|e| e.to_string())?
            .execute()
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(format!(
        "snapshot version {} copied to KV ({copied} new shards{})",
        manifest.version(),
        if complete { "" } else { ", more next run" }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: i64 = 2_000;

    fn timing(confirmed_at_ms: i64, last_attempt_ms: i64, refreshing: bool) -> Timing {
        Timing {
            confirmed_at_ms,
            last_attempt_ms,
            refreshing,
            last_failed: false,
        }
    }

    /// A request every 10 ms for a minute, each refresh answered 40 ms after it starts: no
    /// request ever waits, and the snapshot deciding each one was confirmed within the interval.
    #[test]
    fn steady_traffic_never_waits_and_stays_within_the_interval() {
        let (mut confirmed, mut last_attempt, mut running) = (0, 0, None::<i64>);
        for now in (10..60_000).step_by(10) {
            if running.is_some_and(|started| now >= started + 40) {
                confirmed = running.take().unwrap_or(confirmed);
            }
            match step(timing(confirmed, last_attempt, running.is_some()), R, now) {
                Step::Use { refresh } => {
                    if refresh {
                        running = Some(now);
                        last_attempt = now;
                    }
                }
                other => panic!("waited at {now}: {other:?}"),
            }
            assert!(
                now - confirmed <= R,
                "decided at {now} on a snapshot confirmed at {confirmed}"
            );
        }
    }

    #[test]
    fn after_idling_the_first_request_revalidates_and_the_next_ones_wait_for_it() {
        let now = 60_000;
        assert_eq!(
            step(timing(10_000, 10_000, false), R, now),
            Step::Revalidate {
                start: true,
                deadline_ms: now + REVALIDATE_WAIT_MS
            }
        );
        // The refresh that request started is running.
        assert_eq!(
            step(timing(10_000, now, true), R, now + 5),
            Step::Revalidate {
                start: false,
                deadline_ms: now + REVALIDATE_WAIT_MS
            }
        );
        // Past its deadline nobody waits any more, and no second refresh starts.
        assert_eq!(
            step(timing(10_000, now, true), R, now + REVALIDATE_WAIT_MS),
            Step::Use { refresh: false }
        );
        // A refresh lost for longer than the timeout no longer counts as running.
        assert_eq!(
            step(timing(10_000, now, true), R, now + REFRESH_TIMEOUT_MS),
            Step::Revalidate {
                start: true,
                deadline_ms: now + REFRESH_TIMEOUT_MS + REVALIDATE_WAIT_MS
            }
        );
    }

    #[test]
    fn with_the_control_plane_down_the_held_snapshot_serves_without_waiting() {
        // A stale snapshot whose last refresh attempt has not finished yet or failed moments
        // ago serves without a new attempt.
        assert_eq!(
            step(timing(0, 9_900, false), R, 10_000),
            Step::Use { refresh: false }
        );
        // Once the last attempt is known to have failed, requests neither wait for the next
        // one nor for a running one; refreshes go on in the background.
        let down = Timing {
            last_failed: true,
            ..timing(0, 9_900, false)
        };
        assert_eq!(
            step(down, R, 9_900 + R - R / 10),
            Step::Use { refresh: true }
        );
        let running = Timing {
            refreshing: true,
            ..down
        };
        assert_eq!(step(running, R, 9_950), Step::Use { refresh: false });
        // The control plane back (last attempt succeeded) but the snapshot idle: wait again.
        let back = Timing {
            last_failed: false,
            ..down
        };
        assert!(matches!(
            step(back, R, 9_900 + R),
            Step::Revalidate { start: true, .. }
        ));
    }

    #[test]
    fn a_fresh_snapshot_refreshes_in_the_background_a_tenth_early() {
        assert_eq!(
            step(timing(0, 0, false), R, R - R / 10 - 1),
            Step::Use { refresh: false }
        );
        assert_eq!(
            step(timing(0, 0, false), R, R - R / 10),
            Step::Use { refresh: true }
        );
        // Confirmed exactly one interval ago still counts as fresh.
        assert_eq!(step(timing(0, 0, true), R, R), Step::Use { refresh: false });
    }
}
