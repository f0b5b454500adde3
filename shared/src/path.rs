//! Request paths as the origin will see them (docs/edge.md, "Paths").
//!
//! Route scopes are only worth something if every spelling of a path that reaches a route at
//! the origin also matches that route at the edge. So the edge decides on one normalised path
//! and forwards exactly that path, and `/v1/verify` normalises its `path` the same way:
//!
//! - percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded, and other
//!   escapes are kept, in uppercase hex (`%3b` becomes `%3B`);
//! - a `;` parameter is removed from its segment (`/admin;x` → `/admin`, `/a/..;/admin` →
//!   `/admin`): servlet containers and many frameworks drop it before routing, so it must not
//!   hide a segment from the edge; a `;` meant literally is sent as `%3B`, which is kept;
//! - dot segments are resolved (`/a/./b/../c` → `/a/c`) and repeated slashes merged
//!   (`//admin` → `/admin`); a trailing slash is kept;
//! - bytes that a URL parser would percent-encode (space, `"`, `<`, `>`, `` ` ``, `{`, `}`,
//!   controls, non-ASCII) are percent-encoded, so the result is a fixed point of the runtime's
//!   `fetch`, and what was matched and signed is what the origin receives.
//!
//! Refused with [`PathError`] (the edge answers 400 `invalid_path`): an encoded `/` or `\`
//! (origins disagree on whether it separates segments), a `\` (URL parsers turn it into `/`), a
//! NUL, a malformed escape, and a `..` that would climb above the root.

use std::borrow::Cow;

/// Why a path cannot be normalised safely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// Does not start with `/`.
    #[error("the path must start with /")]
    NotAbsolute,
    /// `%2F` or `%5C`.
    #[error("the path contains an encoded / or \\")]
    EncodedSeparator,
    /// A raw `\`.
    #[error("the path contains a backslash")]
    Backslash,
    /// A NUL byte, raw or encoded.
    #[error("the path contains a NUL byte")]
    Nul,
    /// `%` not followed by two hex digits.
    #[error("the path contains a malformed percent-escape")]
    BadEscape,
    /// A `..` segment with nothing left to remove.
    #[error("the path climbs above the root")]
    AboveRoot,
}

/// Bytes kept as they are in a normalised path: unreserved, sub-delimiters but `;`, `:`, `@`
/// and `/`. Everything else but `%` and `;` is percent-encoded or refused.
const KEEP: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b'='
                    | b':'
                    | b'@'
                    | b'/'
            );
        i += 1;
    }
    t
};

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn push_escaped(out: &mut String, b: u8) {
    out.push('%');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 0xf)]));
}

/// Whether `path` is already in normal form, checked in one pass: this runs on every request,
/// and almost every path is. Dot segments are found by their leading `/.`, which also sends a
/// few harmless paths (`/.well-known`) the slow way.
fn is_normal(path: &[u8]) -> bool {
    if path.first() != Some(&b'/') {
        return false;
    }
    let mut prev = b'/';
    for &b in &path[1..] {
        if !KEEP[usize::from(b)] || (prev == b'/' && (b == b'/' || b == b'.')) {
            return false;
        }
        prev = b;
    }
    true
}

/// The normalised form of a request path (without its query), or why there is none.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    if is_normal(path.as_bytes()) {
        return Ok(Cow::Borrowed(path));
    }
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    // Each output segment, decoded as far as it is safe to; `None` for an empty path.
    let mut segments: Vec<String> = Vec::new();
    let mut trailing_slash = false;
    for raw in path[1..].split('/') {
        let segment = normalize_segment(raw.as_bytes())?;
        trailing_slash = false;
        match segment.as_str() {
            "" | "." => trailing_slash = true,
            ".." => {
                segments.pop().ok_or(PathError::AboveRoot)?;
                trailing_slash = true;
            }
            _ => segments.push(segment),
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || segments.is_empty() {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// One segment: unreserved escapes decoded, other escapes in uppercase hex, a `;` parameter
/// dropped, bytes outside [`KEEP`] escaped.
fn normalize_segment(raw: &[u8]) -> Result<String, PathError> {
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        match b {
            b'%' => {
                let (Some(h), Some(l)) = (
                    raw.get(i + 1).copied().and_then(hex_val),
                    raw.get(i + 2).copied().and_then(hex_val),
                ) else {
                    return Err(PathError::BadEscape);
                };
                let v = h << 4 | l;
                match v {
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    0 => return Err(PathError::Nul),
                    v if is_unreserved(v) => out.push(char::from(v)),
                    v => push_escaped(&mut out, v),
                }
                i += 3;
                continue;
            }
            b';' => break,
            b'\\' => return Err(PathError::Backslash),
            0 => return Err(PathError::Nul),
            b if KEEP[usize::from(b)] => out.push(char::from(b)),
            b => push_escaped(&mut out, b),
        }
        i += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_paths_are_borrowed() {
        for p in [
            "/",
            "/orders/1",
            "/a-b_c~d/e.f",
            "/x:y@z/!$&'()*+,=",
            "/orders/",
        ] {
            assert!(matches!(normalize(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn spellings_resolve() {
        for (raw, want) in [
            ("//admin", "/admin"),
            ("/./admin", "/admin"),
            ("/x/../admin", "/admin"),
            ("/%2e/admin", "/admin"),
            ("/a/%2E%2E/x", "/x"),
            ("/orders/%2e%2e/admin/users", "/admin/users"),
            ("/%61dmin", "/admin"),
            ("/admin;x", "/admin"),
            ("/public/..;/admin", "/admin"),
            ("/admin/.", "/admin/"),
            ("/admin/x/..", "/admin/"),
            ("/admin//users//", "/admin/users/"),
            ("/a/%7e/%41", "/a/~/A"),
            ("/a%3bb", "/a%3Bb"),
            ("/a%252e%252e/admin", "/a%252e%252e/admin"),
            ("/caf\u{e9}", "/caf%C3%A9"),
            ("/a b", "/a%20b"),
            ("/admin.", "/admin."),
            ("/.../admin", "/.../admin"),
            ("/.well-known/x", "/.well-known/x"),
        ] {
            assert_eq!(normalize(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn unsafe_paths_are_refused() {
        for (raw, err) in [
            ("admin", PathError::NotAbsolute),
            ("", PathError::NotAbsolute),
            ("/admin%2fusers", PathError::EncodedSeparator),
            ("/admin%5Cusers", PathError::EncodedSeparator),
            ("/admin\\users", PathError::Backslash),
            ("/a%00", PathError::Nul),
            ("/a\0", PathError::Nul),
            ("/a%zz", PathError::BadEscape),
            ("/a%2", PathError::BadEscape),
            ("/..", PathError::AboveRoot),
            ("/a/../..", PathError::AboveRoot),
            ("/%2e%2e/admin", PathError::AboveRoot),
            ("/..;/admin", PathError::AboveRoot),
        ] {
            assert_eq!(normalize(raw), Err(err), "{raw}");
        }
    }

    #[test]
    fn normal_form_is_a_fixed_point() {
        for raw in ["//a/./b/../c;d/%7e%2a", "/x/%C3%A9/", "/a b/\"q\""] {
            let once = normalize(raw).expect("normalises").into_owned();
            assert_eq!(normalize(&once).as_deref(), Ok(once.as_str()), "{raw}");
            assert!(is_normal(once.as_bytes()) || once.contains('%'), "{once}");
        }
    }
}
