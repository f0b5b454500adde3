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
    keyed(secret).map_or([0; 32], |k| mac_with(k, timestamp, method, path, key_id))
}

fn keyed(secret: &[u8]) -> Option<Hmac<Sha256>> {
    // HMAC accepts keys of any length, so this cannot fail.
    <Hmac<Sha256> as Mac>::new_from_slice(secret).ok()
}

fn mac_with(
    mut m: Hmac<Sha256>,
    timestamp: i64,
    method: &str,
    path: &str,
    key_id: &str,
) -> [u8; 32] {
    m.update(timestamp.to_string().as_bytes());
    m.update(b"\n");
    if method.bytes().any(|b| b.is_ascii_lowercase()) {
        m.update(method.to_ascii_uppercase().as_bytes());
    } else {
        m.update(method.as_bytes());
    }
    m.update(b"\n");
    m.update(path.as_bytes());
    m.update(b"\n");
    m.update(key_id.as_bytes());
    m.finalize().into_bytes().into()
}

fn header_value(timestamp: i64, mac: [u8; 32]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(88);
    out.push_str("t=");
    out.push_str(&timestamp.to_string());
    out.push_str(",v1=");
    // Byte by byte: this runs for every forwarded request, and `hex::encode` goes through
    // `char` iterators that cost more than the HMAC's formatting should in the edge's Wasm.
    for b in mac {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

/// The header value for a request forwarded at `timestamp` (Unix seconds).
pub fn sign(secret: &[u8], timestamp: i64, method: &str, path: &str, key_id: &str) -> String {
    header_value(timestamp, mac(secret, timestamp, method, path, key_id))
}

/// [`sign`] with the key set up once: the edge signs every forwarded request with the same
/// secret, and the keyed HMAC state (two SHA-256 blocks) need not be recomputed each time.
#[derive(Clone)]
pub struct OriginSigner {
    keyed: Option<Hmac<Sha256>>,
}

impl OriginSigner {
    /// A signer for `secret`.
    pub fn new(secret: &[u8]) -> Self {
        OriginSigner {
            keyed: keyed(secret),
        }
    }

    /// The same value as [`sign`] with this signer's secret.
    pub fn sign(&self, timestamp: i64, method: &str, path: &str, key_id: &str) -> String {
        let mac = self
            .keyed
            .clone()
            .map_or([0; 32], |k| mac_with(k, timestamp, method, path, key_id));
        header_value(timestamp, mac)
    }
}

/// Never shows the secret.
impl std::fmt::Debug for OriginSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OriginSigner { .. }")
    }
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
    fn a_signer_signs_as_sign_does() {
        let signer = OriginSigner::new(b"s3cret");
        for method in ["GET", "get", "Post"] {
            assert_eq!(
                signer.sign(1_700_000_000, method, "/orders/1", "key_1"),
                sign(b"s3cret", 1_700_000_000, method, "/orders/1", "key_1")
            );
        }
        assert_ne!(
            signer.sign(1_700_000_000, "GET", "/orders/1", "key_1"),
            OriginSigner::new(b"other").sign(1_700_000_000, "GET", "/orders/1", "key_1")
        );
        assert!(!format!("{signer:?}").contains("s3cret"));
    }

    #[test]
    fn the_header_carries_the_hmac_in_lowercase_hex() {
        use hmac::Mac;
        let mut m = Hmac::<Sha256>::new_from_slice(b"s3cret").expect("any key length");
        m.update(b"1700000000\nGET\n/orders/1\nkey_1");
        let expected = format!("t=1700000000,v1={}", hex::encode(m.finalize().into_bytes()));
        assert_eq!(
            sign(b"s3cret", 1_700_000_000, "GET", "/orders/1", "key_1"),
            expected
        );
    }

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
