//! The edge-to-origin signature, `Keygate-Signature` (README, "Verifying requests at the
//! origin").
//!
//! Version 2, which the edge sends: `t=<unix seconds>,v2=<hex>`, where `v2` is HMAC-SHA256,
//! keyed with the secret the edge and the origin share, over
//! `"{t}\n{METHOD}\n{path_and_query}\n{key_id}\n{project_id}\n{environment}"` (method
//! uppercase; the path the origin receives, with `?` and the query when there is one).
//!
//! Version 1 covered only `"{t}\n{METHOD}\n{path}\n{key_id}"`, leaving the query, the project
//! and the environment open to whoever sits between the edge and the origin. During the
//! transition an edge with `ORIGIN_SIGNATURE_V1=true` sends both (`t=..,v1=..,v2=..`), so an origin
//! still on a version-1 verifier keeps working; [`verify`] checks `v2` when it is there and
//! accepts a header with only `v1` (answering [`Version::V1`], so the origin can log or refuse
//! it); [`verify_v2`] accepts version 2 only.

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
    /// The header is not `t=...,v2=...` (or `v1=`).
    #[error("malformed signature header")]
    Malformed,
    /// The timestamp is outside the tolerance window.
    #[error("signature timestamp outside the tolerance window")]
    Stale,
    /// The MAC does not match.
    #[error("signature mismatch")]
    Mismatch,
    /// Only a version-1 MAC, where version 2 is required.
    #[error("signature version 1 only")]
    VersionOneOnly,
}

/// The version of the MAC a header was accepted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `v1`: method, path and key id only.
    V1,
    /// `v2`: also the query, the project and the environment.
    V2,
}

/// What a signature covers: the request as the origin receives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signed<'a> {
    /// The method (compared uppercase).
    pub method: &'a str,
    /// The path, and `?query` when there is one.
    pub path_and_query: &'a str,
    /// `Keygate-Key-Id`.
    pub key_id: &'a str,
    /// `Keygate-Project-Id`.
    pub project_id: &'a str,
    /// `Keygate-Environment`.
    pub environment: &'a str,
}

impl Signed<'_> {
    fn path(&self) -> &str {
        self.path_and_query
            .split_once('?')
            .map_or(self.path_and_query, |(p, _)| p)
    }
}

fn keyed(secret: &[u8]) -> Option<Hmac<Sha256>> {
    // HMAC accepts keys of any length, so this cannot fail.
    <Hmac<Sha256> as Mac>::new_from_slice(secret).ok()
}

fn update_method(m: &mut Hmac<Sha256>, method: &str) {
    if method.bytes().any(|b| b.is_ascii_lowercase()) {
        m.update(method.to_ascii_uppercase().as_bytes());
    } else {
        m.update(method.as_bytes());
    }
}

fn mac_v1(mut m: Hmac<Sha256>, timestamp: i64, req: &Signed<'_>) -> [u8; 32] {
    m.update(timestamp.to_string().as_bytes());
    m.update(b"\n");
    update_method(&mut m, req.method);
    m.update(b"\n");
    m.update(req.path().as_bytes());
    m.update(b"\n");
    m.update(req.key_id.as_bytes());
    m.finalize().into_bytes().into()
}

fn mac_v2(mut m: Hmac<Sha256>, timestamp: i64, req: &Signed<'_>) -> [u8; 32] {
    m.update(timestamp.to_string().as_bytes());
    m.update(b"\n");
    update_method(&mut m, req.method);
    for part in [
        req.path_and_query,
        req.key_id,
        req.project_id,
        req.environment,
    ] {
        m.update(b"\n");
        m.update(part.as_bytes());
    }
    m.finalize().into_bytes().into()
}

fn push_hex(out: &mut String, mac: [u8; 32]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Byte by byte: this runs for every forwarded request, and `hex::encode` goes through
    // `char` iterators that cost more than the HMAC's formatting should in the edge's Wasm.
    for b in mac {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
}

/// Signs requests with one secret, keyed once: the edge signs every forwarded request with the
/// same secret, and the keyed HMAC state (two SHA-256 blocks) need not be recomputed each time.
#[derive(Clone)]
pub struct OriginSigner {
    keyed: Option<Hmac<Sha256>>,
    with_v1: bool,
}

impl OriginSigner {
    /// A signer for `secret` that writes version 2 only.
    pub fn new(secret: &[u8]) -> Self {
        OriginSigner {
            keyed: keyed(secret),
            with_v1: false,
        }
    }

    /// Also writes the version-1 MAC, for origins not yet on a version-2 verifier.
    pub fn with_v1(mut self, on: bool) -> Self {
        self.with_v1 = on;
        self
    }

    /// The header value for `req` forwarded at `timestamp` (Unix seconds).
    pub fn sign(&self, timestamp: i64, req: &Signed<'_>) -> String {
        let Some(k) = &self.keyed else {
            return String::new();
        };
        let mut out = String::with_capacity(if self.with_v1 { 160 } else { 88 });
        out.push_str("t=");
        out.push_str(&timestamp.to_string());
        if self.with_v1 {
            out.push_str(",v1=");
            push_hex(&mut out, mac_v1(k.clone(), timestamp, req));
        }
        out.push_str(",v2=");
        push_hex(&mut out, mac_v2(k.clone(), timestamp, req));
        out
    }
}

/// [`OriginSigner::sign`] with a one-off signer (version 2 only).
pub fn sign(secret: &[u8], timestamp: i64, req: &Signed<'_>) -> String {
    OriginSigner::new(secret).sign(timestamp, req)
}

/// Never shows the secret.
impl std::fmt::Debug for OriginSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OriginSigner")
            .field("with_v1", &self.with_v1)
            .finish_non_exhaustive()
    }
}

/// Checks a header value for `req` at `now` (Unix seconds), accepting timestamps within
/// `tolerance_seconds` either side, in constant time: the `v2` MAC when the header has one,
/// else (during the transition) the `v1` MAC. Answers the version that matched.
pub fn verify(
    secret: &[u8],
    header: &str,
    req: &Signed<'_>,
    now: i64,
    tolerance_seconds: i64,
) -> Result<Version, OriginSignatureError> {
    let parsed = Parsed::read(header)?;
    if now.abs_diff(parsed.t) > tolerance_seconds.max(0).unsigned_abs() {
        return Err(OriginSignatureError::Stale);
    }
    let k = keyed(secret).ok_or(OriginSignatureError::Mismatch)?;
    let (version, candidates, expected) = if parsed.v2.is_empty() {
        (Version::V1, &parsed.v1, mac_v1(k, parsed.t, req))
    } else {
        (Version::V2, &parsed.v2, mac_v2(k, parsed.t, req))
    };
    let mut ok = false;
    for c in candidates {
        let mut got = [0u8; 32];
        if hex::decode_to_slice(c, &mut got).is_ok() {
            ok |= bool::from(got.ct_eq(&expected));
        }
    }
    if ok {
        Ok(version)
    } else {
        Err(OriginSignatureError::Mismatch)
    }
}

/// [`verify`], accepting version 2 only: for origins once every edge sends it.
pub fn verify_v2(
    secret: &[u8],
    header: &str,
    req: &Signed<'_>,
    now: i64,
    tolerance_seconds: i64,
) -> Result<(), OriginSignatureError> {
    match verify(secret, header, req, now, tolerance_seconds)? {
        Version::V2 => Ok(()),
        Version::V1 => Err(OriginSignatureError::VersionOneOnly),
    }
}

struct Parsed<'h> {
    t: i64,
    v1: Vec<&'h str>,
    v2: Vec<&'h str>,
}

impl<'h> Parsed<'h> {
    fn read(header: &'h str) -> Result<Self, OriginSignatureError> {
        let mut t = None;
        let (mut v1, mut v2) = (Vec::new(), Vec::new());
        for part in header.split(',') {
            match part.trim().split_once('=') {
                Some(("t", v)) => {
                    t = Some(
                        v.parse::<i64>()
                            .map_err(|_| OriginSignatureError::Malformed)?,
                    )
                }
                Some(("v1", v)) => v1.push(v),
                Some(("v2", v)) => v2.push(v),
                _ => return Err(OriginSignatureError::Malformed),
            }
        }
        let t = t.ok_or(OriginSignatureError::Malformed)?;
        if v1.is_empty() && v2.is_empty() {
            return Err(OriginSignatureError::Malformed);
        }
        Ok(Parsed { t, v1, v2 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: Signed<'static> = Signed {
        method: "GET",
        path_and_query: "/orders/1?expand=items",
        key_id: "key_1",
        project_id: "prj_1",
        environment: "live",
    };

    fn at(now: i64, header: &str, req: &Signed<'_>) -> Result<Version, OriginSignatureError> {
        verify(b"s3cret", header, req, now, 300)
    }

    #[test]
    fn known_answer_vectors() {
        // Also in the README, for origins in other languages.
        assert_eq!(
            sign(b"s3cret", 1_700_000_000, &REQ),
            "t=1700000000,v2=ab8e238c0d8881b9ad87f9e989152257d4ee665d59c4782c4da7196f7b481dba"
        );
        let both = OriginSigner::new(b"s3cret")
            .with_v1(true)
            .sign(1_700_000_000, &REQ);
        assert!(both.starts_with("t=1700000000,v1="), "{both}");
        // The MACs are HMAC-SHA256 over the documented strings.
        let mac = |msg: &str| {
            let mut m = Hmac::<Sha256>::new_from_slice(b"s3cret").expect("any key length");
            m.update(msg.as_bytes());
            hex::encode(m.finalize().into_bytes())
        };
        assert_eq!(
            both,
            format!(
                "t=1700000000,v1={},v2={}",
                mac("1700000000\nGET\n/orders/1\nkey_1"),
                mac("1700000000\nGET\n/orders/1?expand=items\nkey_1\nprj_1\nlive")
            )
        );
    }

    #[test]
    fn v2_covers_every_field() {
        let h = sign(
            b"s3cret",
            1_700_000_000,
            &Signed {
                method: "get",
                ..REQ
            },
        );
        assert_eq!(at(1_700_000_100, &h, &REQ), Ok(Version::V2));
        for changed in [
            Signed {
                method: "POST",
                ..REQ
            },
            Signed {
                path_and_query: "/orders/1",
                ..REQ
            },
            Signed {
                path_and_query: "/orders/1?expand=all",
                ..REQ
            },
            Signed {
                path_and_query: "/orders/2?expand=items",
                ..REQ
            },
            Signed {
                key_id: "key_2",
                ..REQ
            },
            Signed {
                project_id: "prj_2",
                ..REQ
            },
            Signed {
                environment: "test",
                ..REQ
            },
        ] {
            assert_eq!(
                at(1_700_000_000, &h, &changed),
                Err(OriginSignatureError::Mismatch),
                "{changed:?}"
            );
        }
        assert_eq!(
            at(1_700_000_400, &h, &REQ),
            Err(OriginSignatureError::Stale)
        );
        assert_eq!(
            verify(b"other", &h, &REQ, 1_700_000_000, 300),
            Err(OriginSignatureError::Mismatch)
        );
        assert_eq!(at(0, "garbage", &REQ), Err(OriginSignatureError::Malformed));
        assert_eq!(at(0, "t=1", &REQ), Err(OriginSignatureError::Malformed));
    }

    #[test]
    fn the_transition_accepts_v1_alone_and_prefers_v2() {
        let both = OriginSigner::new(b"s3cret")
            .with_v1(true)
            .sign(1_700_000_000, &REQ);
        let (t_v1, v2) = both.rsplit_once(",v2=").expect("v2 part");
        // A version-1 header: the query, project and environment are not covered.
        let other_project = Signed {
            project_id: "prj_2",
            path_and_query: "/orders/1",
            ..REQ
        };
        assert_eq!(at(1_700_000_000, t_v1, &other_project), Ok(Version::V1));
        assert_eq!(
            verify_v2(b"s3cret", t_v1, &REQ, 1_700_000_000, 300),
            Err(OriginSignatureError::VersionOneOnly)
        );
        // With both, v2 decides: a valid v1 does not rescue a changed project.
        assert_eq!(at(1_700_000_000, &both, &REQ), Ok(Version::V2));
        assert_eq!(
            at(1_700_000_000, &both, &other_project),
            Err(OriginSignatureError::Mismatch)
        );
        // A forged v2 beside a valid v1 is refused.
        let forged = format!("{t_v1},v2={}", "0".repeat(v2.len()));
        assert_eq!(
            at(1_700_000_000, &forged, &REQ),
            Err(OriginSignatureError::Mismatch)
        );
    }

    #[test]
    fn extreme_timestamps_are_stale_not_a_panic() {
        for t in [i64::MIN, i64::MAX, -1] {
            let h = sign(b"s3cret", t, &REQ);
            assert_eq!(
                at(1_700_000_000, &h, &REQ),
                Err(OriginSignatureError::Stale),
                "{t}"
            );
        }
        let h = sign(b"s3cret", i64::MIN, &REQ);
        assert_eq!(
            verify(b"s3cret", &h, &REQ, i64::MAX, i64::MAX),
            Err(OriginSignatureError::Stale)
        );
        let h = sign(b"s3cret", 1_700_000_000, &REQ);
        assert_eq!(
            verify(b"s3cret", &h, &REQ, 1_700_000_000, -5),
            Ok(Version::V2)
        );
        assert!(!format!("{:?}", OriginSigner::new(b"s3cret")).contains("s3cret"));
    }
}
