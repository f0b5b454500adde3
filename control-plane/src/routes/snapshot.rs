//! `/v1/snapshot`, its shards and its public keys.

use actix_web::http::header;
use actix_web::{get, web, HttpRequest, HttpResponse};
use keygate_shared::snapshot::Digest32;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{Authed, SnapshotReaders};
use crate::error::{blocking, ApiError, Problem};
use crate::state::AppState;

/// The active signing key.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PublicKey {
    /// Always `Ed25519`.
    pub algorithm: String,
    /// Key id (first 8 bytes of SHA-256 of the public key, hex).
    pub key_id: String,
    /// Unpadded base64url.
    pub public_key: String,
}

/// A published signing key.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PublicKeyEntry {
    /// Key id.
    pub key_id: String,
    /// Unpadded base64url.
    pub public_key: String,
    /// `active` (signs new snapshots) or `retiring` (trust until `retire_after`).
    pub status: String,
    /// RFC 3339, for retiring keys.
    #[serde(with = "crate::timefmt::opt_rfc3339")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub retire_after: Option<i64>,
}

/// Every key an edge should trust now.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PublicKeyList {
    /// The active key first.
    pub items: Vec<PublicKeyEntry>,
}

fn etag_matches(req: &HttpRequest, etag: &str) -> bool {
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/") == etag)
}

/// The current signed snapshot manifest (JSON wire form).
#[utoipa::path(
    operation_id = "get_snapshot",
    tag = "snapshot",
    responses(
        (status = 200, description = "Signed snapshot; `ETag` set", content_type = "application/json", body = Object),
        (status = 304, description = "Unchanged (If-None-Match)"),
        super::problems::AuthErrors,
    )
)]
#[get("/snapshot")]
pub async fn get(
    state: web::Data<AppState>,
    _auth: Authed<SnapshotReaders>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let now = state.clock.now_ms();
    let published = match state.snapshots.current_from_memory(now) {
        Some(p) => p,
        None => {
            let st = state.clone();
            blocking(move || {
                let mut c = st.pool.get()?;
                st.snapshots.current(&mut c, now, &st.metrics)
            })
            .await?
        }
    };
    let cache = (header::CACHE_CONTROL, "no-cache");
    if etag_matches(&req, &published.etag) {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, published.etag.clone()))
            .insert_header(("Keygate-Snapshot-Version", published.version.to_string()))
            .insert_header(cache)
            .finish());
    }
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((header::ETAG, published.etag.clone()))
        .insert_header(cache)
        .insert_header(("Keygate-Snapshot-Version", published.version.to_string()))
        .body(published.wire.clone()))
}

/// A shard of the current or a recent snapshot, by the SHA-256 the manifest lists.
#[utoipa::path(
    operation_id = "get_snapshot_shard",
    tag = "snapshot",
    params(("digest_hex" = String, Path, description = "SHA-256 of the shard, lowercase hex")),
    responses(
        (status = 200, description = "Shard bytes (postcard); immutable", content_type = "application/octet-stream", body = Vec<u8>),
        super::problems::AuthErrors,
        (status = 404, description = "shard_not_found", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/snapshot/shards/{digest_hex}")]
pub async fn shard(
    state: web::Data<AppState>,
    _auth: Authed<SnapshotReaders>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let hex = path.into_inner();
    let digest = Digest32::from_hex(&hex)
        .filter(|_| hex.len() == 64)
        .ok_or_else(|| ApiError::ShardNotFound(hex.clone()))?;
    let mut bytes = state.snapshots.shard(&digest);
    if bytes.is_none() {
        // Nothing cached yet after a restart, or the manifest came from another replica that
        // saw a newer version first: bring this process up to the current version (a version
        // read, and a build only if it changed) and look again.
        let st = state.clone();
        let now = state.clock.now_ms();
        blocking(move || {
            let mut c = st.pool.get()?;
            st.snapshots.current(&mut c, now, &st.metrics)
        })
        .await?;
        bytes = state.snapshots.shard(&digest);
    }
    let bytes = bytes.ok_or(ApiError::ShardNotFound(hex))?;
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
        .body(bytes))
}

/// The active snapshot signing key.
#[utoipa::path(
    operation_id = "get_public_key",
    tag = "snapshot",
    responses(
        (status = 200, body = PublicKey),
        super::problems::AuthErrors,
    )
)]
#[get("/snapshot/public-key")]
pub async fn public_key(
    state: web::Data<AppState>,
    _auth: Authed<SnapshotReaders>,
) -> Result<HttpResponse, ApiError> {
    let keyring = state.snapshots.keyring(state.clock.now_ms());
    let signer = keyring.active();
    Ok(HttpResponse::Ok().json(PublicKey {
        algorithm: "Ed25519".to_owned(),
        key_id: signer.key_id().to_owned(),
        public_key: signer.public_key_base64url(),
    }))
}

/// The active and retiring signing keys; trust them all during a signing-key rotation.
#[utoipa::path(
    operation_id = "list_public_keys",
    tag = "snapshot",
    responses(
        (status = 200, body = PublicKeyList),
        super::problems::AuthErrors,
    )
)]
#[get("/snapshot/public-keys")]
pub async fn public_keys(
    state: web::Data<AppState>,
    _auth: Authed<SnapshotReaders>,
) -> Result<HttpResponse, ApiError> {
    let now = state.clock.now_ms();
    let items = state
        .snapshots
        .keyring(now)
        .public_keys(now)
        .into_iter()
        .map(|k| PublicKeyEntry {
            key_id: k.key_id,
            public_key: k.public_key,
            status: if k.active { "active" } else { "retiring" }.to_owned(),
            retire_after: k.retire_after_ms,
        })
        .collect();
    Ok(HttpResponse::Ok().json(PublicKeyList { items }))
}
