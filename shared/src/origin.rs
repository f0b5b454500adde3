//! The edge-to-origin signature: `Keygate-Signature: t=<unix seconds>,v1=<hex>` where `v1` is
//! HMAC-SHA256, keyed with the secret the edge and the origin share, over
//! `"{t}\n{METHOD}\n{path}\n{key_id}"` (method uppercase, path without query).

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The header name.
pub const SIGNATURE_HEADER: &str = "Keygate-Signature";
/// The default tolerance for the timestamp, in seconds.
pub const DEFAULT_TOLERANCE_SECONDS: i64 = 300;

/// Why a signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OriginSignatureError {
    /// The header is not `t=...,v1=...`.
    #[error("malformed signature header")]
    Malformed,
    /// The timestamp is outside the tolerance window.
    #[error("signature timestamp outside the tolerance window")]
    Stale,
    /// The MAC does not match.
    #[error("signature mismatch")]
    Mismatch,
}

fn mac(secret: &[u8], timestamp: i64, method: &str, path: &str, key_id: &str) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut m = match <Hmac<Sha256> as Mac>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return [0; 32],
    };
    m.update(timestamp.to_string().as_bytes());
    m.update(b"\n");
    m.update(method.to_ascii_uppercase().as_bytes());
    m.update(b"\n");
    m.update(path.as_bytes());
    m.update(b"\n");
    m.update(key_id.as_bytes());
    m.finalize().into_bytes().into()
}

/// The header value for a request forwarded at `timestamp` (Unix seconds).
pub fn sign(secret: &[u8], timestamp: i64, method: &str, path: &str, key_id: &str) -> String {
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac(secret, timestamp, method, path, key_id))
    )
}

/// Checks a header value at `now` (Unix seconds), accepting timestamps within
/// `tolerance_seconds` either side. Compares in constant time.
pub fn verify(
    secret: &[u8],
    header: &str,
    method: &str,
    path: &str,
    key_id: &str,
    now: i64,
    tolerance_seconds: i64,
) -> Result<(), OriginSignatureError> {
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => {
                timestamp = Some(
                    v.parse::<i64>()
                        .map_err(|_| OriginSignatureError::Malformed)?,
                )
            }
            Some(("v1", v)) => candidates.push(v),
            _ => return Err(OriginSignatureError::Malformed),
        }
    }
    let t = timestamp.ok_or(OriginSignatureError::Malformed)?;
    if candidates.is_empty() {
        return Err(OriginSignatureError::Malformed);
    }
    // `abs_diff`: the timestamp is attacker-supplied, and `now - t` overflows for extreme values.
    if now.abs_diff(t) > tolerance_seconds.max(0).unsigned_abs() {
        return Err(OriginSignatureError::Stale);
    }
    let expected = mac(secret, t, method, path, key_id);
    let mut ok = false;
    for c in candidates {
        let mut got = [0u8; 32];
        if hex::decode_to_slice(c, &mut got).is_ok() {
            ok |= bool::from(got.ct_eq(&expected));
        }
    }
    if ok {
        Ok(())
    } else {
        Err(OriginSignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let h = sign(b"s3cret", 1_700_000_000, "get", "/orders/1", "key_1");
        assert!(h.starts_with("t=1700000000,v1="));
        assert_eq!(
            verify(
                b"s3cret",
                &h,
                "GET",
                "/orders/1",
                "key_1",
                1_700_000_100,
                300
            ),
            Ok(())
        );
        assert_eq!(
            verify(
                b"s3cret",
                &h,
                "GET",
                "/orders/1",
                "key_1",
                1_700_000_400,
                300
            ),
            Err(OriginSignatureError::Stale)
        );
        assert_eq!(
            verify(
                b"other",
                &h,
                "GET",
                "/orders/1",
                "key_1",
                1_700_000_000,
                300
            ),
            Err(OriginSignatureError::Mismatch)
        );
        assert_eq!(
            verify(
                b"s3cret",
                &h,
                "POST",
                "/orders/1",
                "key_1",
                1_700_000_000,
                300
            ),
            Err(OriginSignatureError::Mismatch)
        );
        assert_eq!(
            verify(
                b"s3cret",
                &h,
                "GET",
                "/orders/2",
                "key_1",
                1_700_000_000,
                300
            ),
            Err(OriginSignatureError::Mismatch)
        );
        assert_eq!(
            verify(
                b"s3cret",
                &h,
                "GET",
                "/orders/1",
                "key_2",
                1_700_000_000,
                300
            ),
            Err(OriginSignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"s3cret", "garbage", "GET", "/", "k", 0, 300),
            Err(OriginSignatureError::Malformed)
        );
    }

    #[test]
    fn extreme_timestamps_are_stale_not_a_panic() {
        for t in [i64::MIN, i64::MAX, -1] {
            let h = sign(b"s3cret", t, "GET", "/", "k");
            assert_eq!(
                verify(b"s3cret", &h, "GET", "/", "k", 1_700_000_000, 300),
                Err(OriginSignatureError::Stale),
                "{t}"
            );
        }
        let h = sign(b"s3cret", i64::MIN, "GET", "/", "k");
        assert_eq!(
            verify(b"s3cret", &h, "GET", "/", "k", i64::MAX, i64::MAX),
            Err(OriginSignatureError::Stale)
        );
        let h = sign(b"s3cret", 1_700_000_000, "GET", "/", "k");
        assert_eq!(
            verify(b"s3cret", &h, "GET", "/", "k", 1_700_000_000, -5),
            Ok(())
        );
    }
}
