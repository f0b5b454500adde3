//! Snapshot shards in the Workers Cache API, so that the isolates of one location fetch each
//! shard from the control plane once between them (docs/edge.md, "Shards in the Cache API").
//!
//! Shards are content-addressed and immutable, so an entry is keyed by its SHA-256 alone, on a
//! synthetic URL in a cache of the Worker's own ([`CACHE_NAME`]): the key carries no token and
//! names no real host, and the shard request itself (which needs the edge token) never goes
//! through the cache. The cache is not trusted: what it returns is verified against the signed
//! manifest exactly like a shard from the network, and only verified bytes are stored.
//!
//! The Cache API is bound here directly rather than through `worker::Cache`, which panics when
//! `caches` is missing; every failure here (no Cache API, no cache configured, a throw, a slow
//! answer) is a miss for the caller, never an error.

use std::time::Duration;

use futures_util::future::{select, Either};
use keygate_shared::snapshot::Digest32;
use wasm_bindgen::prelude::*;
use worker::js_sys::{Promise, Uint8Array};
use worker::wasm_bindgen_futures::JsFuture;
use worker::{web_sys, Delay};

/// The cache's name (`caches.open`): apart from the zone's default cache, which holds
/// responses for the zone's real URLs.
pub const CACHE_NAME: &str = "keygate-shards";
/// Host of the cache keys: reserved (RFC 2606), so no request can ever be for it.
pub const KEY_HOST: &str = "keygate-shards.invalid";
/// How long a lookup may take, body included, before the shard is fetched from the network
/// instead: a cache that hangs must not hold the request longer than a fetch would.
pub const LOOKUP_TIMEOUT_MS: u64 = 250;
/// What a stored shard says about itself: immutable, like the control plane's answer.
const CACHE_CONTROL: &str = "public, max-age=31536000, immutable";

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = caches, js_name = open, catch)]
    fn caches_open(name: &str) -> Result<Promise, JsValue>;

    type JsCache;

    #[wasm_bindgen(method, js_name = match, catch)]
    fn lookup(this: &JsCache, key: &str) -> Result<Promise, JsValue>;

    #[wasm_bindgen(method, catch)]
    fn put(this: &JsCache, key: &str, response: &web_sys::Response) -> Result<Promise, JsValue>;
}

/// The cache key of the shard with this digest.
pub fn key(digest: &Digest32) -> String {
    format!("https://{KEY_HOST}/{}", digest.to_hex())
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    /// Bytes stored under the digest: to be verified before use.
    Hit(Vec<u8>),
    /// Nothing stored.
    Miss,
    /// The cache failed or was too slow; why.
    Failed(String),
}

fn js_error(e: JsValue) -> String {
    e.as_string()
        .or_else(|| {
            e.dyn_ref::<worker::js_sys::Error>()
                .map(|e| String::from(e.message()))
        })
        .unwrap_or_else(|| format!("{e:?}"))
}

async fn open() -> Result<JsCache, String> {
    let cache = JsFuture::from(caches_open(CACHE_NAME).map_err(js_error)?)
        .await
        .map_err(js_error)?;
    Ok(cache.unchecked_into())
}

async fn lookup_bytes(key: String) -> Result<Option<Vec<u8>>, String> {
    let cache = open().await?;
    let found = JsFuture::from(cache.lookup(&key).map_err(js_error)?)
        .await
        .map_err(js_error)?;
    if found.is_undefined() || found.is_null() {
        return Ok(None);
    }
    let response: web_sys::Response = found.dyn_into().map_err(js_error)?;
    let body = JsFuture::from(response.array_buffer().map_err(js_error)?)
        .await
        .map_err(js_error)?;
    Ok(Some(Uint8Array::new(&body).to_vec()))
}

/// Looks the shard with this digest up, for at most [`LOOKUP_TIMEOUT_MS`].
pub async fn get(digest: &Digest32) -> Lookup {
    let lookup = Box::pin(lookup_bytes(key(digest)));
    let timer = Delay::from(Duration::from_millis(LOOKUP_TIMEOUT_MS));
    match select(lookup, timer).await {
        Either::Left((Ok(Some(bytes)), _)) => Lookup::Hit(bytes),
        Either::Left((Ok(None), _)) => Lookup::Miss,
        Either::Left((Err(e), _)) => Lookup::Failed(e),
        Either::Right(_) => Lookup::Failed(format!("no answer within {LOOKUP_TIMEOUT_MS} ms")),
    }
}

/// Stores verified shard bytes under their digest. Run it with `wait_until`: the verdict does
/// not wait for the cache.
pub async fn put_verified(digest: &Digest32, bytes: &[u8]) -> Result<(), String> {
    let headers = web_sys::Headers::new().map_err(js_error)?;
    headers
        .set("Cache-Control", CACHE_CONTROL)
        .map_err(js_error)?;
    headers
        .set("Content-Type", "application/octet-stream")
        .map_err(js_error)?;
    let init = web_sys::ResponseInit::new();
    init.set_headers(&headers);
    let body = Uint8Array::from(bytes);
    let response = web_sys::Response::new_with_opt_buffer_source_and_init(Some(&body), &init)
        .map_err(js_error)?;
    let cache = open().await?;
    JsFuture::from(cache.put(&key(digest), &response).map_err(js_error)?)
        .await
        .map_err(js_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_names_only_the_digest_on_a_reserved_host() {
        let d = Digest32([0xab; 32]);
        assert_eq!(
            key(&d),
            format!("https://keygate-shards.invalid/{}", "ab".repeat(32))
        );
    }
}
