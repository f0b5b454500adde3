//! The edge-to-origin signature (`Keygate-Signature`): `verify` never panics on any header or
//! request; a fresh signature verifies, only inside the tolerance window, and stops verifying
//! when a signed field (one character changed, or one added), the timestamp or a digit of the
//! MAC changes; a version-1 fallback is taken only when no `v2` is present.
//!
//! Input: the timestamp (eight bytes, little-endian), then
//! `header \n method \n path_and_query \n key_id \n project_id \n environment`.
#![no_main]

use keygate_shared::origin::{
    sign, verify, verify_v2, OriginSignatureError, OriginSigner, Signed, Version,
};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"fuzz-origin-secret";
const TOLERANCE: i64 = 300;

fuzz_target!(|data: &[u8]| {
    let t = data.get(..8).map_or(1_700_000_000, |b| {
        i64::from_le_bytes(b.try_into().expect("8 bytes"))
    });
    let Ok(text) = std::str::from_utf8(data.get(8..).unwrap_or_default()) else {
        return;
    };
    let mut parts = text.splitn(6, '\n');
    let mut next = || parts.next().unwrap_or("");
    let header = next();
    let req = Signed {
        method: next(),
        path_and_query: next(),
        key_id: next(),
        project_id: next(),
        environment: next(),
    };

    // Whatever the header: an answer, never a panic, and version 2 only where `verify` says 2.
    let any = verify(SECRET, header, &req, t, TOLERANCE);
    let v2 = verify_v2(SECRET, header, &req, t, TOLERANCE);
    match any {
        Ok(Version::V2) => assert_eq!(v2, Ok(())),
        Ok(Version::V1) => assert_eq!(v2, Err(OriginSignatureError::VersionOneOnly)),
        Err(e) => assert_eq!(v2, Err(e)),
    }
    // An empty secret and a negative tolerance are answered too.
    let _ = verify(b"", header, &req, t, -1);

    let signed = sign(SECRET, t, &req);
    assert_eq!(verify(SECRET, &signed, &req, t, TOLERANCE), Ok(Version::V2));
    assert_eq!(verify_v2(SECRET, &signed, &req, t, 0), Ok(()));
    assert_eq!(
        verify(b"another secret", &signed, &req, t, TOLERANCE),
        Err(OriginSignatureError::Mismatch)
    );
    for (now, ok) in [
        (t.checked_add(TOLERANCE), true),
        (t.checked_sub(TOLERANCE), true),
        (t.checked_add(TOLERANCE + 1), false),
        (t.checked_sub(TOLERANCE + 1), false),
    ] {
        if let Some(now) = now {
            let got = verify(SECRET, &signed, &req, now, TOLERANCE);
            let want = if ok {
                Ok(Version::V2)
            } else {
                Err(OriginSignatureError::Stale)
            };
            assert_eq!(got, want, "t={t} now={now}");
        }
    }

    // A changed digit of the MAC, or a changed timestamp, is a mismatch.
    let mac_at = signed.find(",v2=").expect("v2") + 4;
    let pos = mac_at + usize::from(data.first().copied().unwrap_or(0)) % 64;
    let mut tampered = signed.clone().into_bytes();
    tampered[pos] = if tampered[pos] == b'0' { b'1' } else { b'0' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    assert_eq!(
        verify(SECRET, &tampered, &req, t, TOLERANCE),
        Err(OriginSignatureError::Mismatch)
    );
    if let Some(later) = t.checked_add(1) {
        let moved = signed.replacen(&format!("t={t},"), &format!("t={later},"), 1);
        assert_eq!(
            verify(SECRET, &moved, &req, t, TOLERANCE),
            Err(OriginSignatureError::Mismatch)
        );
    }
    // During the transition the edge also sends `v1`: the header still verifies as version 2,
    // and with its `v2` part cut off (an older edge) as version 1, which `verify_v2` refuses.
    let both = OriginSigner::new(SECRET).with_v1(true).sign(t, &req);
    assert_eq!(verify(SECRET, &both, &req, t, TOLERANCE), Ok(Version::V2));
    let v1_only = both.split(",v2=").next().expect("header");
    assert_eq!(verify(SECRET, v1_only, &req, t, TOLERANCE), Ok(Version::V1));
    assert_eq!(
        verify_v2(SECRET, v1_only, &req, t, TOLERANCE),
        Err(OriginSignatureError::VersionOneOnly)
    );
    // A forged `v2` next to a good `v1` does not fall back to `v1`.
    let forged = format!("{v1_only},v2={}", "0".repeat(64));
    assert_eq!(
        verify(SECRET, &forged, &req, t, TOLERANCE),
        Err(OriginSignatureError::Mismatch)
    );

    // Each signed field is bound. Fields are joined with newlines, so the property holds for
    // the values the edge signs, none of which has one: a normalised path escapes control
    // bytes, a method is an HTTP token, and the ids and environment are the control plane's.
    if text.matches('\n').count() > 5 {
        return;
    }
    let path = format!("{}x", req.path_and_query);
    let key = format!("{}x", req.key_id);
    let project = format!("{}x", req.project_id);
    let env = format!("{}x", req.environment);
    let method = format!("{}x", req.method);
    for other in [
        Signed {
            method: &method,
            ..req
        },
        Signed {
            path_and_query: &path,
            ..req
        },
        Signed {
            key_id: &key,
            ..req
        },
        Signed {
            project_id: &project,
            ..req
        },
        Signed {
            environment: &env,
            ..req
        },
    ] {
        assert_eq!(
            verify(SECRET, &signed, &other, t, TOLERANCE),
            Err(OriginSignatureError::Mismatch),
            "{other:?}"
        );
    }
    // One character changed anywhere in a field (to a digit, which has no case) is a mismatch.
    let k = usize::from(data.get(1).copied().unwrap_or(0));
    let changed = |field: &str| -> Option<String> {
        let n = field.chars().count();
        (n > 0).then(|| {
            let at = k % n;
            field
                .chars()
                .enumerate()
                .map(|(i, c)| match (i == at, c == '0') {
                    (false, _) => c,
                    (true, true) => '1',
                    (true, false) => '0',
                })
                .collect()
        })
    };
    let fields = [
        req.method,
        req.path_and_query,
        req.key_id,
        req.project_id,
        req.environment,
    ];
    for (i, field) in fields.into_iter().enumerate() {
        let Some(other) = changed(field) else {
            continue;
        };
        let mut f = fields;
        f[i] = &other;
        let other = Signed {
            method: f[0],
            path_and_query: f[1],
            key_id: f[2],
            project_id: f[3],
            environment: f[4],
        };
        assert_eq!(
            verify(SECRET, &signed, &other, t, TOLERANCE),
            Err(OriginSignatureError::Mismatch),
            "{other:?}"
        );
    }
    // The method is compared upper-case, so its case is not bound.
    let upper = req.method.to_ascii_uppercase();
    assert_eq!(
        verify(
            SECRET,
            &signed,
            &Signed {
                method: &upper,
                ..req
            },
            t,
            TOLERANCE
        ),
        Ok(Version::V2)
    );
});
