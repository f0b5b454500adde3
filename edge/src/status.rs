//! The edge's own endpoints, behind the edge token: `GET /.well-known/keygate/status` reports
//! the snapshot held, `POST /.well-known/keygate/sync-kv` runs the KV copy now.

use worker::{Env, Request, Response, Result};

use crate::config::EdgeConfig;
use crate::forward::to_response;
use crate::holder;
use crate::prepare::SYNC_PATH;
use crate::respond::problem;

fn subtle_eq(a: &[u8], b: &[u8]) -> bool {
    // Constant time in the contents; the length of the edge token is not a secret.
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The size of the Wasm instance's linear memory, where the snapshot lives: it only grows, so
/// it is the most this isolate's Rust side has held at once.
fn wasm_memory_bytes() -> Option<u32> {
    use wasm_bindgen::JsCast;
    let memory = wasm_bindgen::memory()
        .dyn_into::<worker::js_sys::WebAssembly::Memory>()
        .ok()?;
    memory
        .buffer()
        .dyn_into::<worker::js_sys::ArrayBuffer>()
        .ok()
        .map(|b| b.byte_length())
}

/// Answers the internal endpoint at the normalised `path`.
pub async fn endpoint(
    req: &Request,
    path: &str,
    env: &Env,
    cfg: &EdgeConfig,
    now: i64,
) -> Result<Response> {
    let auth = req.headers().get("Authorization")?.unwrap_or_default();
    let expected = format!("Bearer {}", cfg.edge_token);
    if !subtle_eq(auth.as_bytes(), expected.as_bytes()) {
        return to_response(problem(
            401,
            "unauthorized",
            "Unauthorized",
            "This endpoint needs the edge token.",
        ));
    }
    if path == SYNC_PATH {
        return match crate::kv_copy::sync(cfg, env, now).await {
            Ok(report) => Response::from_json(&serde_json::json!({
                "ok": true,
                "message": report.to_string(),
                "version": report.version,
                "writes": report.writes,
                "shards_copied": report.shards_copied,
                "complete": report.complete,
            })),
            Err(e) => to_response(problem(502, "sync_failed", "KV sync failed", &e)),
        };
    }
    let status = match holder::current(cfg, now) {
        Some(i) => {
            let m = i.manifest();
            let (unusable_keys, unusable_seen) = holder::unusable_keys();
            serde_json::json!({
                "version": m.version(),
                "key_id": m.key_id(),
                "key_count": m.manifest().key_count,
                "shards": m.shard_count(),
                "loaded_shards": i.loaded_shards(),
                "max_loaded_shards": holder::MAX_LOADED_SHARDS,
                "issued_at_ms": m.manifest().issued_at_ms,
                "valid_until_ms": m.manifest().valid_until_ms,
                "unusable_keys": unusable_keys,
                "unusable_records_seen": unusable_seen,
                "unusable_projects": m.unusable_projects().iter().map(|(id, _)| id).collect::<Vec<_>>(),
                "shard_cache": holder::shard_cache_counts(),
                "wasm_memory_bytes": wasm_memory_bytes(),
            })
        }
        None => serde_json::json!({ "version": null }),
    };
    Response::from_json(&status)
}

#[cfg(test)]
mod tests {
    use super::subtle_eq;

    #[test]
    fn the_token_comparison_needs_every_byte() {
        assert!(subtle_eq(b"Bearer abc", b"Bearer abc"));
        assert!(!subtle_eq(b"Bearer abd", b"Bearer abc"));
        assert!(!subtle_eq(b"Bearer ab", b"Bearer abc"));
    }
}
