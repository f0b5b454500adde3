//! The isolate's snapshot: loaded on first need, refreshed in the background with conditional
//! requests, accepted only after signature, version and validity checks, kept when the control
//! plane is down, and refused (fail closed) once past its validity. Shards load lazily.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use keygate_shared::snapshot::{verify_snapshot, Digest32};
use keygate_shared::SnapshotIndex;
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
    /// When the running load for requests with nothing usable started.
    loading_since: Option<i64>,
}

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
    /// Nothing usable is held: refresh now, then look again.
    RefreshNow,
    /// Nothing usable, and a refresh was tried too recently.
    Unavailable,
}

/// Decides, without I/O, whether the held snapshot can serve `now_ms`.
pub fn plan(cfg: &EdgeConfig, now_ms: i64) -> Plan {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let due = now_ms - s.last_attempt_ms >= cfg.refresh_ms;
        // A refresh that never finished (a hung fetch) must not block the next one forever.
        let refreshing = s.refreshing && now_ms - s.last_attempt_ms < REFRESH_TIMEOUT_MS;
        let current = s
            .held
            .as_ref()
            .filter(|h| usable(h, cfg, now_ms))
            .map(|h| Rc::clone(&h.index));
        match current {
            Some(index) => {
                let refresh = due && !refreshing;
                if refresh {
                    s.refreshing = true;
                    s.last_attempt_ms = now_ms;
                }
                Plan::Use { index, refresh }
            }
            // Requests that arrive while a load runs wait for it rather than fail.
            None if due || s.held.is_none() || s.loading_since.is_some() => {
                s.last_attempt_ms = now_ms;
                Plan::RefreshNow
            }
            None => Plan::Unavailable,
        }
    })
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
    let outcome = match fetch_snapshot(cfg, etag.as_deref()).await {
        Ok(Fetched::NotModified) => {
            STATE.with(|s| {
                if let Some(h) = s.borrow_mut().held.as_mut() {
                    h.confirmed_at_ms = now_ms;
                }
            });
            Ok(())
        }
        Ok(Fetched::New { bytes, etag }) => {
            match verify_snapshot(&bytes, &cfg.trusted_keys, held, now_ms) {
                Ok(m) => {
                    install(SnapshotIndex::new(m), etag, now_ms);
                    Ok(())
                }
                Err(e) => Err(format!("snapshot refused: {e}")),
            }
        }
        Err(e) => Err(e),
    };
    if let Err(e) = outcome {
        console_error!("keygate-edge: refresh failed: {e}");
        if held.is_none() {
            load_from_kv(cfg, env, now_ms).await;
        }
    }
    STATE.with(|s| s.borrow_mut().refreshing = false);
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
    let mut mine = (*index).clone();
    mine.load_shard(shard, &bytes)
        .map_err(|e| format!("shard refused: {e}"))?;
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
            // Already verified above; this only re-checks the digest.
            next.load_shard(shard, &bytes).ok()?;
            held.index = Rc::new(next);
        }
        Some(Rc::clone(&held.index))
    });
    Ok(updated.unwrap_or_else(|| Rc::new(mine)))
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
