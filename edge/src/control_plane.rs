//! The edge's requests to the control plane: the signed snapshot (conditional on its ETag),
//! shards by digest (with the KV copy as fallback) and usage reports.

use keygate_shared::snapshot::Digest32;
use wasm_bindgen::prelude::*;
use worker::js_sys::{Promise, Uint8Array};
use worker::wasm_bindgen_futures::JsFuture;
use worker::{Env, Fetch, Headers, Method, Request, RequestInit};

use crate::config::EdgeConfig;

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

/// The control plane's answer to a snapshot request.
#[derive(Debug)]
pub enum Fetched {
    /// 304: the held snapshot is current.
    NotModified,
    /// A snapshot to verify.
    New {
        /// The signed manifest.
        bytes: Vec<u8>,
        /// Its ETag, for the next conditional request.
        etag: Option<String>,
    },
}

/// Asks for the current snapshot, conditionally on `etag`.
pub async fn fetch_snapshot(cfg: &EdgeConfig, etag: Option<&str>) -> Result<Fetched, String> {
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

/// Fetches the current snapshot from the control plane, unconditionally.
pub async fn fetch_snapshot_bytes(cfg: &EdgeConfig) -> Result<Vec<u8>, String> {
    match fetch_snapshot(cfg, None).await? {
        Fetched::New { bytes, .. } => Ok(bytes),
        Fetched::NotModified => Err("unexpected 304".into()),
    }
}

/// Fetches a shard by digest: from the control plane, else from the KV copy.
pub async fn fetch_shard(
    cfg: &EdgeConfig,
    env: &Env,
    digest: &Digest32,
) -> Result<Vec<u8>, String> {
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

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = ["crypto", "subtle"], js_name = digest, catch)]
    fn subtle_digest(algorithm: &str, data: &Uint8Array) -> Result<Promise, JsValue>;
}

/// SHA-256 by the runtime's WebCrypto. A cold isolate's first shard is hashed while the Wasm
/// module still runs baseline-compiled code, where the portable SHA-256 spent about 7 ms on a
/// 100 KB shard; the runtime's native digest takes a fraction of that.
pub async fn web_crypto_sha256(bytes: &[u8]) -> Result<Digest32, String> {
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
