//! Webhook signatures, Stripe style: the `Keygate-Webhook-Signature` header is
//! `t=<unix seconds>,v1=<hex>`, where `v1` is HMAC-SHA256, keyed with the endpoint's signing
//! secret, over `"{t}.{body}"` (the raw request body bytes).
//!
//! While a signing secret is being rotated the header carries one `v1` per secret in force;
//! a receiver accepts the request if any of them matches its secret.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The header name.
pub const SIGNATURE_HEADER: &str = "Keygate-Webhook-Signature";
/// A sensible tolerance for the timestamp, in seconds.
pub const DEFAULT_TOLERANCE_SECONDS: u64 = 300;

/// Why a webhook signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookSignatureError {
    /// The header is not `t=<integer>,v1=<64 hex digits>[,v1=...]`.
    #[error("malformed webhook signature header")]
    Malformed,
    /// The timestamp is outside the tolerance window.
    #[error("webhook signature timestamp outside the tolerance window")]
    Stale,
    /// No `v1` matches.
    #[error("webhook signature mismatch")]
    Mismatch,
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut m = match <Hmac<Sha256> as Mac>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return [0; 32],
    };
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m.finalize().into_bytes().into()
}

/// The `v1` value (lowercase hex) of `body` sent at `timestamp` (Unix seconds).
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    hex::encode(mac(secret, timestamp, body))
}

/// The header value for `body` sent at `timestamp` (Unix seconds).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!("t={timestamp},v1={}", signature(secret, timestamp, body))
}

/// The header value signed with every secret in `secrets` (during a rotation: the new and the
/// old secret), one `v1` each.
pub fn sign_all<'s>(
    secrets: impl IntoIterator<Item = &'s [u8]>,
    timestamp: i64,
    body: &[u8],
) -> String {
    let mut header = format!("t={timestamp}");
    for s in secrets {
        header.push_str(",v1=");
        header.push_str(&signature(s, timestamp, body));
    }
    header
}

/// Checks a header value at `now` (Unix seconds): the timestamp must be within
/// `tolerance_seconds` either side of `now`, and one of the `v1` values must be the MAC of
/// `body` under `secret`. Unknown schemes (`v0=...`) are ignored. Compares in constant time.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_seconds: u64,
) -> Result<(), WebhookSignatureError> {
    let mut timestamp: Option<i64> = None;
    let mut candidates: Vec<[u8; 32]> = Vec::new();
    for part in header.split(',') {
        let (name, value) = part
            .trim()
            .split_once('=')
            .ok_or(WebhookSignatureError::Malformed)?;
        match name {
            "t" => {
                if timestamp.is_some()
                    || value.is_empty()
                    || !value.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(WebhookSignatureError::Malformed);
                }
                timestamp = Some(
                    value
                        .parse()
                        .map_err(|_| WebhookSignatureError::Malformed)?,
                );
            }
            "v1" => {
                let mut sig = [0u8; 32];
                hex::decode_to_slice(value, &mut sig)
                    .map_err(|_| WebhookSignatureError::Malformed)?;
                candidates.push(sig);
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(WebhookSignatureError::Malformed)?;
    if candidates.is_empty() {
        return Err(WebhookSignatureError::Malformed);
    }
    if now.abs_diff(timestamp) > tolerance_seconds {
        return Err(WebhookSignatureError::Stale);
    }
    let expected = mac(secret, timestamp, body);
    // Check every candidate, so the time taken does not tell which one matched.
    let mut any = subtle::Choice::from(0);
    for c in &candidates {
        any |= c.ct_eq(&expected);
    }
    if bool::from(any) {
        Ok(())
    } else {
        Err(WebhookSignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"whsec_test_secret";
    const BODY: &[u8] = br#"{"type":"key.leaked","data":{"key_id":"key_1"}}"#;
    const T: i64 = 1_700_000_000;

    #[test]
    fn sign_then_verify() {
        let h = sign(SECRET, T, BODY);
        assert!(h.starts_with("t=1700000000,v1="));
        assert_eq!(h.len(), "t=1700000000,v1=".len() + 64);
        assert_eq!(verify(SECRET, &h, BODY, T, 300), Ok(()));
        assert_eq!(verify(SECRET, &h, BODY, T + 300, 300), Ok(()));
        assert_eq!(verify(SECRET, &h, BODY, T - 300, 300), Ok(()));
    }

    #[test]
    fn known_vector() {
        // Same as Python: hmac.new(b"whsec_test_secret", b"1700000000." + body, sha256).
        let expected = {
            let mut m = <Hmac<Sha256> as Mac>::new_from_slice(SECRET).expect("key");
            m.update(b"1700000000.");
            m.update(BODY);
            hex::encode(m.finalize().into_bytes())
        };
        assert_eq!(sign(SECRET, T, BODY), format!("t=1700000000,v1={expected}"));
        // The vector of docs/leaks.md, computed with Python's hmac module.
        assert_eq!(
            expected,
            "51b6fb51901541685c838433f6563550cb7cfb61ccba1140b20412afca84be8c"
        );
    }

    #[test]
    fn stale_timestamps() {
        let h = sign(SECRET, T, BODY);
        assert_eq!(
            verify(SECRET, &h, BODY, T + 301, 300),
            Err(WebhookSignatureError::Stale)
        );
        assert_eq!(
            verify(SECRET, &h, BODY, T - 301, 300),
            Err(WebhookSignatureError::Stale)
        );
    }

    #[test]
    fn mismatches() {
        let h = sign(SECRET, T, BODY);
        assert_eq!(
            verify(b"other secret", &h, BODY, T, 300),
            Err(WebhookSignatureError::Mismatch)
        );
        assert_eq!(
            verify(SECRET, &h, b"{}", T, 300),
            Err(WebhookSignatureError::Mismatch)
        );
        // A signature for another timestamp does not carry over.
        let moved = h.replacen("t=1700000000", "t=1700000001", 1);
        assert_eq!(
            verify(SECRET, &moved, BODY, T, 300),
            Err(WebhookSignatureError::Mismatch)
        );
    }

    #[test]
    fn several_v1_values_for_rotation() {
        let old: &[u8] = b"old secret";
        let new: &[u8] = b"new secret";
        let h = sign_all([new, old], T, BODY);
        assert_eq!(h.matches("v1=").count(), 2);
        assert_eq!(verify(new, &h, BODY, T, 300), Ok(()));
        assert_eq!(verify(old, &h, BODY, T, 300), Ok(()));
        assert_eq!(
            verify(b"third", &h, BODY, T, 300),
            Err(WebhookSignatureError::Mismatch)
        );
        // Unknown schemes and spaces after commas are tolerated.
        let with_v0 = format!("t={T}, v0=abc, v1={}", signature(old, T, BODY));
        assert_eq!(verify(old, &with_v0, BODY, T, 300), Ok(()));
    }

    #[test]
    fn malformed_headers() {
        let v1 = signature(SECRET, T, BODY);
        for h in [
            String::new(),
            "garbage".to_owned(),
            format!("v1={v1}"),
            format!("t={T}"),
            format!("t=,v1={v1}"),
            format!("t=-5,v1={v1}"),
            format!("t=12x,v1={v1}"),
            format!("t={T},t={T},v1={v1}"),
            format!("t={T},v1=zz"),
            format!("t={T},v1={}", &v1[..62]),
            format!("t=99999999999999999999999,v1={v1}"),
        ] {
            assert_eq!(
                verify(SECRET, &h, BODY, T, 300),
                Err(WebhookSignatureError::Malformed),
                "{h}"
            );
        }
    }
}
