//! Referrer patterns (docs/referrers.md) and their matcher.
//!
//! A [`ReferrerPattern`] can only be built by [`ReferrerPattern::parse`] (an admin's input, in
//! the control plane) or [`ReferrerPattern::decode`] (its canonical form, from a snapshot), so one
//! that exists is valid. Matching takes the request's `Origin`, else its `Referer`:
//!
//! - scheme, host and port come from `Origin` when present, else from `Referer`;
//! - a pattern with a path is checked against the `Referer`'s path; when an `Origin` is present
//!   the `Referer` must be of that same origin, otherwise the path cannot be known and the
//!   pattern does not match;
//! - query and fragment are ignored; hosts compare case-insensitively, IDNs in punycode;
//! - a URL with userinfo (`https://example.com@evil.com/`) never matches.

use core::fmt;
use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// Why a pattern was refused at creation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PatternError {
    /// Empty or whitespace.
    #[error("pattern is empty or contains whitespace")]
    Empty,
    /// `*` alone.
    #[error("a bare `*` would allow every site")]
    BareWildcard,
    /// A `*` other than the whole left-most label or the last path segment.
    #[error("`*` is allowed only as the whole left-most host label or the last path segment")]
    MisplacedWildcard,
    /// `*.com`, `*.co.uk`, `*.github.io`.
    #[error("a wildcard over the public suffix {0:?} would allow unrelated sites")]
    PublicSuffixWildcard(String),
    /// `user@host`.
    #[error("patterns may not contain userinfo (`@`)")]
    Userinfo,
    /// `?...`.
    #[error("patterns may not contain a query")]
    Query,
    /// `#...`.
    #[error("patterns may not contain a fragment")]
    Fragment,
    /// Not `http` or `https`.
    #[error("scheme must be http or https")]
    Scheme,
    /// Not a valid host name.
    #[error("invalid host")]
    Host,
    /// Not a number in 1..=65535 or `*`.
    #[error("invalid port")]
    Port,
    /// A path that does not start with `/`.
    #[error("invalid path")]
    Path,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
    fn parse(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("http") {
            Some(Scheme::Http)
        } else if s.eq_ignore_ascii_case("https") {
            Some(Scheme::Https)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum HostPattern {
    Exact(String),
    /// Any subdomain of this base, at any depth; not the base itself.
    Subdomains(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum PortPattern {
    SchemeDefault,
    Exact(u16),
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum PathPattern {
    Any,
    /// Ends with `/`.
    Prefix(String),
    Exact(String),
}

/// A valid referrer pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReferrerPattern {
    text: String,
    scheme: Option<Scheme>,
    host: HostPattern,
    port: PortPattern,
    path: PathPattern,
}

/// How far [`ReferrerPattern::parse_as`] checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// An admin's input: IDNs converted, wildcards over public suffixes refused.
    #[cfg(feature = "validation")]
    Create,
    /// A canonical pattern from a signed snapshot: ASCII only, structure only.
    Decode,
}

impl ReferrerPattern {
    /// Parses an admin's pattern, refusing every invalid form of docs/referrers.md: the control
    /// plane's check at creation. Needs the `validation` feature (public-suffix list and IDN
    /// tables), which the Worker leaves out: it only ever [`decode`](Self::decode)s.
    #[cfg(feature = "validation")]
    pub fn parse(input: &str) -> Result<Self, PatternError> {
        Self::parse_as(input, Mode::Create)
    }

    /// Reads a pattern in the canonical form that [`parse`](Self::parse) gives ([`as_str`]
    /// (Self::as_str)), as a signed snapshot carries it. The same code in every build of this
    /// crate: it checks the structure but not the creation-time policy (public suffixes), which
    /// the control plane applied, so whatever `parse` accepted decodes here, with or without
    /// the `validation` feature.
    pub fn decode(canonical: &str) -> Result<Self, PatternError> {
        Self::parse_as(canonical, Mode::Decode)
    }

    fn parse_as(input: &str, mode: Mode) -> Result<Self, PatternError> {
        if input.is_empty() || input.chars().any(char::is_whitespace) {
            return Err(PatternError::Empty);
        }
        if input == "*" {
            return Err(PatternError::BareWildcard);
        }
        if input.contains('#') {
            return Err(PatternError::Fragment);
        }
        if input.contains('?') {
            return Err(PatternError::Query);
        }
        let (scheme, rest) = match input.split_once("://") {
            Some((s, rest)) => (Some(Scheme::parse(s).ok_or(PatternError::Scheme)?), rest),
            None => (None, input),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(&rest[i..])),
            None => (rest, None),
        };
        if authority.contains('@') {
            return Err(PatternError::Userinfo);
        }
        let (host_s, port_s) = split_host_port(authority).ok_or(PatternError::Host)?;
        let port = match port_s {
            None => PortPattern::SchemeDefault,
            Some("*") => PortPattern::Any,
            Some(p) => PortPattern::Exact(parse_port(p).ok_or(PatternError::Port)?),
        };
        let host = if let Some(base) = host_s.strip_prefix("*.") {
            if base.contains('*') {
                return Err(PatternError::MisplacedWildcard);
            }
            let base = pattern_host(base, mode).ok_or(PatternError::Host)?;
            if base.starts_with('[') {
                return Err(PatternError::MisplacedWildcard);
            }
            #[cfg(feature = "validation")]
            if mode == Mode::Create {
                check_not_public_suffix(&base)?;
            }
            HostPattern::Subdomains(base)
        } else {
            if host_s.contains('*') {
                return Err(PatternError::MisplacedWildcard);
            }
            HostPattern::Exact(pattern_host(host_s, mode).ok_or(PatternError::Host)?)
        };
        let path = match path {
            None => PathPattern::Any,
            Some(p) => {
                if let Some(prefix) = p.strip_suffix('*') {
                    if !prefix.ends_with('/') || prefix.contains('*') {
                        return Err(PatternError::MisplacedWildcard);
                    }
                    if prefix == "/" {
                        PathPattern::Any
                    } else {
                        PathPattern::Prefix(encode_path(prefix))
                    }
                } else if p.contains('*') {
                    return Err(PatternError::MisplacedWildcard);
                } else {
                    PathPattern::Exact(encode_path(p))
                }
            }
        };
        let pattern = ReferrerPattern {
            text: String::new(),
            scheme,
            host,
            port,
            path,
        };
        Ok(ReferrerPattern {
            text: pattern.canonical(),
            ..pattern
        })
    }

    fn canonical(&self) -> String {
        let mut s = String::new();
        match self.scheme {
            Some(Scheme::Http) => s.push_str("http://"),
            Some(Scheme::Https) => s.push_str("https://"),
            None => {}
        }
        match &self.host {
            HostPattern::Exact(h) => s.push_str(h),
            HostPattern::Subdomains(h) => {
                s.push_str("*.");
                s.push_str(h);
            }
        }
        match self.port {
            PortPattern::SchemeDefault => {}
            PortPattern::Any => s.push_str(":*"),
            PortPattern::Exact(p) => {
                s.push(':');
                s.push_str(&p.to_string());
            }
        }
        match &self.path {
            PathPattern::Any => {}
            PathPattern::Prefix(p) => {
                s.push_str(p);
                s.push('*');
            }
            PathPattern::Exact(p) => s.push_str(p),
        }
        s
    }

    /// The canonical text (host lowercased and in punycode).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether a request with these `Origin` and `Referer` headers matches.
    pub fn matches(&self, origin: Option<&str>, referer: Option<&str>) -> bool {
        let needs_path = !matches!(self.path, PathPattern::Any);
        RequestSite::parse(origin, referer, needs_path).is_some_and(|r| self.matches_site(&r))
    }

    fn matches_site(&self, request: &RequestSite<'_>) -> bool {
        if !self.matches_origin(&request.site) {
            return false;
        }
        match &self.path {
            PathPattern::Any => true,
            PathPattern::Prefix(p) => request.path.is_some_and(|x| x.starts_with(p.as_str())),
            PathPattern::Exact(p) => request.path == Some(p.as_str()),
        }
    }

    fn matches_origin(&self, site: &RequestUrl<'_>) -> bool {
        if let Some(s) = self.scheme {
            if s != site.scheme {
                return false;
            }
        }
        let port_ok = match self.port {
            PortPattern::Any => true,
            PortPattern::Exact(p) => site.port == p,
            PortPattern::SchemeDefault => site.port == site.scheme.default_port(),
        };
        if !port_ok {
            return false;
        }
        // Pattern hosts are lowercase; request hosts may be in any case.
        let host = site.host.as_bytes();
        match &self.host {
            HostPattern::Exact(h) => host.eq_ignore_ascii_case(h.as_bytes()),
            HostPattern::Subdomains(base) => {
                let base = base.as_bytes();
                host.len() > base.len() + 1
                    && host[host.len() - base.len()..].eq_ignore_ascii_case(base)
                    && host[host.len() - base.len() - 1] == b'.'
            }
        }
    }
}

/// Whether any of `patterns` matches.
pub fn any_matches(
    patterns: &[ReferrerPattern],
    origin: Option<&str>,
    referer: Option<&str>,
) -> bool {
    if patterns.is_empty() {
        return false;
    }
    // Parse the headers once for all the patterns.
    let needs_path = patterns.iter().any(|p| !matches!(p.path, PathPattern::Any));
    match RequestSite::parse(origin, referer, needs_path) {
        Some(request) => patterns.iter().any(|p| p.matches_site(&request)),
        None => false,
    }
}

/// The site a request comes from, as an origin `scheme://host[:port]`: lowercase, IDNs in
/// punycode, the port only when it is not the scheme's default. Taken from `Origin` when
/// present, else from `Referer` (the header that matching uses); `false` when that header does
/// not parse. Written into `out` (cleared first), so a caller that checks the value against a
/// set it already holds allocates nothing.
pub fn write_request_origin(origin: Option<&str>, referer: Option<&str>, out: &mut String) -> bool {
    out.clear();
    match RequestSite::parse(origin, referer, false) {
        Some(r) => {
            r.site.write_origin(out);
            true
        }
        None => false,
    }
}

/// `value` in the canonical form of [`write_request_origin`], if it is an origin: `http` or
/// `https`, a valid host, an optional port, and nothing after them (no path, query or
/// fragment; no userinfo).
pub fn canonical_origin(value: &str) -> Option<String> {
    let (_, rest) = value.split_once("://")?;
    if rest.contains(['/', '?', '#']) {
        return None;
    }
    let mut out = String::with_capacity(value.len());
    write_request_origin(Some(value), None, &mut out).then_some(out)
}

/// Percent-encodes what browsers percent-encode in a URL path (non-ASCII, controls, and
/// `"` `<` `>` `` ` `` `{` `}`), so that a pattern path written as text (`/café/*`) matches the
/// `Referer` a browser sends (`/caf%C3%A9/...`). Existing escapes are kept as written.
fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for &b in path.as_bytes() {
        if b.is_ascii_graphic() && !matches!(b, b'"' | b'<' | b'>' | b'`' | b'{' | b'}') {
            out.push(char::from(b));
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse::<u16>().ok().filter(|&n| n != 0)
}

/// Splits `host[:port]` or `[v6][:port]`.
fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    let b = authority.as_bytes();
    if b.first() == Some(&b'[') {
        let end = b.iter().position(|&c| c == b']')?;
        let host = &authority[..=end];
        let rest = &authority[end + 1..];
        if rest.is_empty() {
            Some((host, None))
        } else {
            rest.strip_prefix(':').map(|p| (host, Some(p)))
        }
    } else {
        // `:` is ASCII, so its index is a char boundary.
        match b.iter().rposition(|&c| c == b':') {
            Some(i) => Some((&authority[..i], Some(&authority[i + 1..]))),
            None => Some((authority, None)),
        }
    }
}

/// Bytes allowed in a host label: letters (either case), digits, `-` and `_`.
const LABEL_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
        i += 1;
    }
    t
};

/// Whether an ASCII host name has valid labels: 1 to 63 label bytes each, not starting or
/// ending with `-`, 253 bytes in all. One pass; this runs on every request.
fn ascii_labels_ok(host: &[u8]) -> bool {
    if host.is_empty() || host.len() > 253 {
        return false;
    }
    let mut label_len = 0usize;
    let mut prev = b'.';
    for &c in host {
        if c == b'.' {
            if label_len == 0 || prev == b'-' {
                return false;
            }
            label_len = 0;
        } else {
            if !LABEL_BYTE[usize::from(c)] || (label_len == 0 && c == b'-') {
                return false;
            }
            label_len += 1;
            if label_len > 63 {
                return false;
            }
        }
        prev = c;
    }
    label_len > 0 && prev != b'-'
}

/// A request's host, checked like [`ascii_host`] but borrowed as sent when it is a plain name:
/// compare it case-insensitively. Browsers send IDNs in punycode, so a request host that is
/// not ASCII matches nothing; this is the same in every build, so `/v1/verify` and the edge
/// agree.
fn request_host(host: &str) -> Option<Cow<'_, str>> {
    if host.is_ascii() && !host.starts_with('[') {
        ascii_labels_ok(host.as_bytes()).then_some(Cow::Borrowed(host))
    } else {
        ascii_host(host).map(Cow::Owned)
    }
}

/// A pattern's host: at creation IDNs are converted to punycode; a decoded pattern is ASCII.
fn pattern_host(host: &str, mode: Mode) -> Option<String> {
    match mode {
        #[cfg(feature = "validation")]
        Mode::Create if !host.is_ascii() => {
            let ascii = idna::domain_to_ascii(host).ok()?;
            ascii_labels_ok(ascii.as_bytes()).then_some(ascii)
        }
        _ => ascii_host(host),
    }
}

/// Lowercases an ASCII host name and checks the label syntax; IPv6 literals in brackets are
/// written in their canonical form.
fn ascii_host(host: &str) -> Option<String> {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let v6: core::net::Ipv6Addr = inner.parse().ok()?;
        return Some(format!("[{v6}]"));
    }
    if !host.is_ascii() {
        return None;
    }
    let ascii = host.to_ascii_lowercase();
    ascii_labels_ok(ascii.as_bytes()).then_some(ascii)
}

#[cfg(feature = "validation")]
fn check_not_public_suffix(base: &str) -> Result<(), PatternError> {
    // A single label (`*.com`, `*.localhost`) is a TLD or a bare name: refuse the known TLDs.
    match psl::suffix(base.as_bytes()) {
        Some(s) if s.is_known() && s.as_bytes() == base.as_bytes() => {
            Err(PatternError::PublicSuffixWildcard(base.to_owned()))
        }
        _ => Ok(()),
    }
}

/// The parts of an `Origin` or `Referer` value that matching needs. Parsing allocates only
/// for hosts that need converting (IDNs, IPv6 literals).
#[derive(Debug, PartialEq, Eq)]
struct RequestUrl<'a> {
    scheme: Scheme,
    /// Validated; ASCII, in the case it was sent.
    host: Cow<'a, str>,
    port: u16,
    path: &'a str,
}

impl<'a> RequestUrl<'a> {
    fn parse(value: &'a str) -> Option<Self> {
        let value = value.trim_ascii();
        let b = value.as_bytes();
        let (scheme, rest) = if starts_with_ignore_case(b, b"https://") {
            (Scheme::Https, &value[8..])
        } else if starts_with_ignore_case(b, b"http://") {
            (Scheme::Http, &value[7..])
        } else {
            return None;
        };
        Self::parse_plain(scheme, rest).or_else(|| Self::parse_general(scheme, rest))
    }

    /// Everything after `scheme://`.
    fn parse_general(scheme: Scheme, rest: &'a str) -> Option<Self> {
        let mut end = rest.len();
        for (i, &c) in rest.as_bytes().iter().enumerate() {
            match c {
                b'/' | b'?' | b'#' => {
                    end = i;
                    break;
                }
                // Userinfo (`https://example.com@evil.com/`) never matches.
                b'@' => return None,
                _ => {}
            }
        }
        let authority = &rest[..end];
        let after = &rest[end..];
        let path_end = after
            .bytes()
            .position(|c| c == b'?' || c == b'#')
            .unwrap_or(after.len());
        let path = if path_end == 0 {
            "/"
        } else {
            &after[..path_end]
        };
        let (host_s, port_s) = split_host_port(authority)?;
        let host = request_host(host_s)?;
        let port = match port_s {
            None => scheme.default_port(),
            Some(p) => parse_port(p)?,
        };
        Some(RequestUrl {
            scheme,
            host,
            port,
            path,
        })
    }

    /// The common case in one pass: an ASCII host name, an optional port, then the path.
    /// `None` means "not this simple", not "invalid": the general parser then decides, so
    /// this only ever accepts what the general parser accepts, with the same result.
    fn parse_plain(scheme: Scheme, rest: &'a str) -> Option<Self> {
        let b = rest.as_bytes();
        let mut i = 0;
        let mut label_len = 0usize;
        let mut prev = b'.';
        while let Some(&c) = b.get(i) {
            if c == b'.' {
                if label_len == 0 || prev == b'-' {
                    return None;
                }
                label_len = 0;
            } else if LABEL_BYTE[usize::from(c)] {
                if label_len == 0 && c == b'-' {
                    return None;
                }
                label_len += 1;
            } else {
                break;
            }
            prev = c;
            i += 1;
        }
        if label_len == 0 || label_len > 63 || prev == b'-' || i > 253 {
            return None;
        }
        // Labels longer than 63 bytes before the last one: leave them to the general parser.
        if i > 63 && !ascii_labels_ok(&b[..i]) {
            return None;
        }
        let host = &rest[..i];
        let mut port = scheme.default_port();
        if b.get(i) == Some(&b':') {
            let start = i + 1;
            let mut end = start;
            while b.get(end).is_some_and(u8::is_ascii_digit) {
                end += 1;
            }
            port = parse_port(&rest[start..end])?;
            i = end;
        }
        match b.get(i) {
            None | Some(b'/' | b'?' | b'#') => {}
            Some(_) => return None,
        }
        let after = &rest[i..];
        let path_end = after
            .bytes()
            .position(|c| c == b'?' || c == b'#')
            .unwrap_or(after.len());
        let path = if path_end == 0 {
            "/"
        } else {
            &after[..path_end]
        };
        Some(RequestUrl {
            scheme,
            host: Cow::Borrowed(host),
            port,
            path,
        })
    }

    fn write_origin(&self, out: &mut String) {
        out.push_str(match self.scheme {
            Scheme::Http => "http://",
            Scheme::Https => "https://",
        });
        // The host is ASCII (punycode or a bracketed IPv6 literal) once parsed.
        out.extend(self.host.chars().map(|c| c.to_ascii_lowercase()));
        if self.port != self.scheme.default_port() {
            use core::fmt::Write as _;
            let _ = write!(out, ":{}", self.port);
        }
    }

    fn same_origin(&self, other: &RequestUrl<'_>) -> bool {
        self.scheme == other.scheme
            && self.port == other.port
            && self.host.eq_ignore_ascii_case(&other.host)
    }
}

fn starts_with_ignore_case(value: &[u8], prefix: &[u8]) -> bool {
    value.len() >= prefix.len() && value[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// What a request offers to match against: its site, from `Origin` or else `Referer`, and its
/// path when that can be known.
struct RequestSite<'a> {
    site: RequestUrl<'a>,
    /// The `Referer`'s path: when an `Origin` is present, only from a same-origin `Referer`.
    path: Option<&'a str>,
}

impl<'a> RequestSite<'a> {
    fn parse(origin: Option<&'a str>, referer: Option<&'a str>, needs_path: bool) -> Option<Self> {
        let origin = origin.filter(|o| !o.is_empty());
        let referer = referer.filter(|r| !r.is_empty());
        match origin {
            Some(o) => {
                let site = RequestUrl::parse(o)?;
                // The Origin has no path: take it from a same-origin Referer.
                let path = if needs_path {
                    referer
                        .and_then(RequestUrl::parse)
                        .filter(|r| r.same_origin(&site))
                        .map(|r| r.path)
                } else {
                    None
                };
                Some(RequestSite { site, path })
            }
            None => {
                let site = RequestUrl::parse(referer?)?;
                let path = Some(site.path);
                Some(RequestSite { site, path })
            }
        }
    }
}

impl fmt::Display for ReferrerPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for ReferrerPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// An admin's pattern (JSON, with the `validation` feature: [`ReferrerPattern::parse`]), or a
/// canonical one ([`ReferrerPattern::decode`]): a binary encoding, or any format in a build
/// without the feature.
impl<'de> Deserialize<'de> for ReferrerPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[cfg(feature = "validation")]
        let create = d.is_human_readable();
        let s = String::deserialize(d)?;
        #[cfg(feature = "validation")]
        if create {
            return ReferrerPattern::parse(&s).map_err(serde::de::Error::custom);
        }
        ReferrerPattern::decode(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn request_origin_is_reduced_and_lowercased() {
        let origin = |o: Option<&str>, r: Option<&str>| {
            let mut out = String::from("stale");
            write_request_origin(o, r, &mut out).then_some(out)
        };
        assert_eq!(
            origin(Some("HTTPS://Shop.Example.COM"), None).as_deref(),
            Some("https://shop.example.com")
        );
        assert_eq!(
            origin(None, Some("http://Example.com:8080/app/page?q=1#f")).as_deref(),
            Some("http://example.com:8080")
        );
        // The scheme's default port is left out; Origin wins over Referer.
        assert_eq!(
            origin(Some("https://a.example:443"), Some("https://b.example/x")).as_deref(),
            Some("https://a.example")
        );
        assert_eq!(
            origin(Some("http://[::1]:3000"), None).as_deref(),
            Some("http://[::1]:3000")
        );
        for bad in [
            "null",
            "ftp://example.com",
            "https://user@example.com/",
            "https://",
        ] {
            assert_eq!(
                origin(Some(bad), Some("https://ok.example/")),
                None,
                "{bad}"
            );
        }
        assert_eq!(origin(None, None), None);

        assert_eq!(
            canonical_origin("HTTPS://Example.com:443").as_deref(),
            Some("https://example.com")
        );
        assert_eq!(
            canonical_origin("http://localhost:3000").as_deref(),
            Some("http://localhost:3000")
        );
        for bad in [
            "https://example.com/",
            "https://example.com/app",
            "https://example.com?x",
            "example.com",
            "ftp://example.com",
            "https://exa mple.com",
        ] {
            assert_eq!(canonical_origin(bad), None, "{bad}");
        }
    }

    fn both(rest: &str) -> (Option<RequestUrl<'_>>, Option<RequestUrl<'_>>) {
        (
            RequestUrl::parse_plain(Scheme::Https, rest),
            RequestUrl::parse_general(Scheme::Https, rest),
        )
    }

    #[test]
    fn the_one_pass_parser_agrees_with_the_general_one() {
        for rest in [
            "example.com",
            "Example.COM:8443/a/b?c#d",
            "example.com:443",
            "example.com:0",
            "example.com:65536",
            "example.com:",
            "example.com:8a",
            "example.com.",
            ".example.com",
            "-a.com",
            "a-.com",
            "a..b",
            "example.com@evil.com/",
            "user:pw@example.com",
            "bücher.example/",
            "[::1]:8080/x",
            "a:b:80",
            "localhost?x",
            "localhost#x",
            "",
            "/path",
            &format!("{}.com", "a".repeat(64)),
            &format!("{}.{}", "a".repeat(64), "b".repeat(3)),
            &format!("{}.com", "a.".repeat(130)),
        ] {
            let (plain, general) = both(rest);
            if let Some(p) = &plain {
                assert_eq!(Some(p), general.as_ref(), "{rest:?}");
            }
        }
        assert!(both("Example.COM:8443/a/b?c#d").0.is_some());
    }

    proptest! {
        #[test]
        fn one_pass_parser_never_disagrees(rest in "[a-zA-Z0-9._:@/?#\\[\\]ü-]{0,40}") {
            let (plain, general) = both(&rest);
            if let Some(p) = plain {
                prop_assert_eq!(Some(p), general);
            }
        }
    }
}
