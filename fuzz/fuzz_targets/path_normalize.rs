//! `path::normalize` on arbitrary request paths, against a plain model of the route an origin
//! decodes from a path (docs/edge.md, "Paths"):
//!
//! - it never panics, and the normal form is a fixed point, which the edge's fast path sees as
//!   normal (borrowed) when it has no escape and no segment starting with `.`;
//! - the normal form is absolute ASCII with no `//`, dot segment, `;`, `\` or NUL, and its
//!   escapes are uppercase hex of bytes that are neither unreserved nor `/`, `\` or NUL;
//! - decoded once, as an origin decodes it, the normal form has exactly the segments of the
//!   normal form (no escape turns into a separator or a dot segment), and they are the
//!   segments the model resolves from the input: the route judged is the route reached;
//! - it refuses exactly the paths the model cannot resolve safely;
//! - a path already free of every rewritten form is left as it was.
#![no_main]

use std::borrow::Cow;

use keygate_shared::path::normalize;
use libfuzzer_sys::fuzz_target;

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Percent-decodes one segment; `None` for a malformed escape.
fn decode(segment: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(segment.len());
    let mut i = 0;
    while let Some(&b) = segment.get(i) {
        if b == b'%' {
            let h = hex(*segment.get(i + 1)?)?;
            let l = hex(*segment.get(i + 2)?)?;
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(out)
}

/// The route an origin resolves from a request path, written independently of `normalize`:
/// each segment loses its `;` parameter and is decoded once; empty and `.` segments go, `..`
/// removes the one before. The decoded segments and whether a trailing slash is kept, or
/// `None` where that is unsafe: not absolute, a `\` or NUL (raw or encoded), an encoded `/`, a
/// malformed escape, or `..` above the root.
fn model(path: &str) -> Option<(Vec<Vec<u8>>, bool)> {
    let rest = path.strip_prefix('/')?;
    let mut segments: Vec<Vec<u8>> = Vec::new();
    let mut trailing = false;
    for raw in rest.split('/') {
        let raw = raw.split(';').next().unwrap_or_default().as_bytes();
        let seg = decode(raw)?;
        if seg.iter().any(|&b| matches!(b, b'/' | b'\\' | 0)) {
            return None;
        }
        trailing = true;
        match seg.as_slice() {
            b"" | b"." => {}
            b".." => {
                segments.pop()?;
            }
            _ => {
                segments.push(seg);
                trailing = false;
            }
        }
    }
    let trailing = trailing || segments.is_empty();
    Some((segments, trailing))
}

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let result = normalize(path);
    let expected = model(path);
    assert_eq!(result.is_ok(), expected.is_some(), "{path:?}: {result:?}");
    let (Ok(once), Some((want, want_trailing))) = (result, expected) else {
        return;
    };
    let n: &str = &once;
    // Idempotent, and a normal path comes back borrowed (the edge's fast path), but for one
    // with an escape or a segment starting with `.` (`/.well-known`), which the fast path
    // leaves to the full pass, which rebuilds the same text.
    let twice = normalize(n).expect("a normalised path normalises");
    assert_eq!(twice, n);
    if !n.contains('%') && !n.contains("/.") {
        assert!(
            matches!(twice, Cow::Borrowed(_)),
            "{n:?} is not seen as normal"
        );
    }
    // The result is what the origin is sent: absolute, ASCII, one spelling per path.
    assert!(n.starts_with('/'));
    assert!(n.is_ascii());
    for bad in ["//", "/./", "/../", ";", "\\", "\0", " "] {
        assert!(!n.contains(bad), "{n:?} contains {bad:?}");
    }
    assert!(!n.ends_with("/.") && !n.ends_with("/.."), "{n:?}");
    // Escapes are upper-case hex and never of an unreserved byte, `/`, `\` or NUL.
    let b = n.as_bytes();
    for (i, _) in n.match_indices('%') {
        let hex = &b[i + 1..i + 3];
        assert!(hex
            .iter()
            .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(c)));
        let v = u8::from_str_radix(std::str::from_utf8(hex).expect("ascii"), 16).expect("hex");
        assert!(
            !(v.is_ascii_alphanumeric() || b"-._~/\\\0".contains(&v)),
            "{n:?}"
        );
    }
    // Decoded once, as the origin does, the normal form keeps its own segments, which are
    // those the model resolved from the request: no spelling changes the route.
    let body = &n[1..];
    let raw_segments: Vec<&str> = if body.is_empty() {
        Vec::new()
    } else {
        body.strip_suffix('/').unwrap_or(body).split('/').collect()
    };
    let decoded: Vec<Vec<u8>> = raw_segments
        .iter()
        .map(|s| decode(s.as_bytes()).expect("escapes are well formed"))
        .collect();
    for s in &decoded {
        assert!(!s.is_empty() && s != b"." && s != b"..", "{n:?}");
        assert!(!s.iter().any(|&c| matches!(c, b'/' | b'\\' | 0)), "{n:?}");
    }
    assert_eq!(decoded, want, "{path:?} -> {n:?}");
    assert_eq!(n.ends_with('/'), want_trailing, "{path:?} -> {n:?}");
    // A path already free of every rewritten form is left as it was.
    let kept = |c: u8| c.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@/".contains(&c);
    if path.starts_with('/')
        && path.bytes().all(kept)
        && !path.contains("//")
        && !path.split('/').any(|s| s == "." || s == "..")
    {
        assert_eq!(n, path);
    }
});
