//! Referrer patterns (contract section 3) and their matcher.
//!
//! A [`ReferrerPattern`] can only be built by [`ReferrerPattern::parse`], so one that exists is
//! valid. Matching takes the request's `Origin`, else its `Referer`:
//!
//! - scheme, host and port come from `Origin` when present, else from `Referer`;
//! - a pattern with a path is checked against the `Referer`'s path; when an `Origin` is present
//!   the `Referer` must be of that same origin, otherwise the path cannot be known and the
//!   pattern does not match;
//! - query and fragment are ignored; hosts compare case-insensitively, IDNs in punycode;
//! - a URL with userinfo (`https://example.com@evil.com/`) never matches.

use core::fmt;

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

impl ReferrerPattern {
    /// Parses a pattern, refusing every invalid form of contract section 3.
    pub fn parse(input: &str) -> Result<Self, PatternError> {
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
            let base = normalize_host(base).ok_or(PatternError::Host)?;
            if base.starts_with('[') {
                return Err(PatternError::MisplacedWildcard);
            }
            check_not_public_suffix(&base)?;
            HostPattern::Subdomains(base)
        } else {
            if host_s.contains('*') {
                return Err(PatternError::MisplacedWildcard);
            }
            HostPattern::Exact(normalize_host(host_s).ok_or(PatternError::Host)?)
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
                        PathPattern::Prefix(prefix.to_owned())
                    }
                } else if p.contains('*') {
                    return Err(PatternError::MisplacedWildcard);
                } else {
                    PathPattern::Exact(p.to_owned())
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
        let origin = origin.filter(|o| !o.is_empty());
        let referer = referer.filter(|r| !r.is_empty());
        let primary = match origin.or(referer) {
            Some(v) => v,
            None => return false,
        };
        let Some(site) = RequestUrl::parse(primary) else {
            return false;
        };
        if !self.matches_origin(&site) {
            return false;
        }
        match &self.path {
            PathPattern::Any => true,
            pattern_path => {
                let path_source = if origin.is_some() {
                    // The Origin has no path: take it from a same-origin Referer.
                    match referer.and_then(RequestUrl::parse) {
                        Some(r) if r.same_origin(&site) => r,
                        _ => return false,
                    }
                } else {
                    site
                };
                match pattern_path {
                    PathPattern::Prefix(p) => path_source.path.starts_with(p.as_str()),
                    PathPattern::Exact(p) => path_source.path == *p,
                    PathPattern::Any => true,
                }
            }
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
        match &self.host {
            HostPattern::Exact(h) => site.host == *h,
            HostPattern::Subdomains(base) => {
                site.host.len() > base.len() + 1
                    && site.host.ends_with(base.as_str())
                    && site.host.as_bytes()[site.host.len() - base.len() - 1] == b'.'
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
    patterns.iter().any(|p| p.matches(origin, referer))
}

fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse::<u16>().ok().filter(|&n| n != 0)
}

/// Splits `host[:port]` or `[v6][:port]`.
fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if authority.starts_with('[') {
        let end = authority.find(']')?;
        let host = &authority[..=end];
        let rest = &authority[end + 1..];
        if rest.is_empty() {
            Some((host, None))
        } else {
            rest.strip_prefix(':').map(|p| (host, Some(p)))
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => Some((h, Some(p))),
            None => Some((authority, None)),
        }
    }
}

/// Lowercases, converts IDNs to punycode and checks the label syntax.
fn normalize_host(host: &str) -> Option<String> {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let v6: core::net::Ipv6Addr = inner.parse().ok()?;
        return Some(format!("[{v6}]"));
    }
    let ascii = if host.is_ascii() {
        host.to_ascii_lowercase()
    } else {
        to_punycode(host)?
    };
    if ascii.is_empty() || ascii.len() > 253 {
        return None;
    }
    let labels_ok = ascii.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    labels_ok.then_some(ascii)
}

#[cfg(feature = "validation")]
fn to_punycode(host: &str) -> Option<String> {
    idna::domain_to_ascii(host).ok()
}

#[cfg(not(feature = "validation"))]
fn to_punycode(_host: &str) -> Option<String> {
    // Without the IDN tables a non-ASCII host cannot be compared; browsers send punycode.
    None
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

#[cfg(not(feature = "validation"))]
fn check_not_public_suffix(base: &str) -> Result<(), PatternError> {
    // Without the list, refuse at least every single-label base (`*.com`).
    if base.contains('.') || base == "localhost" {
        Ok(())
    } else {
        Err(PatternError::PublicSuffixWildcard(base.to_owned()))
    }
}

/// The parts of an `Origin` or `Referer` value that matching needs.
struct RequestUrl<'a> {
    scheme: Scheme,
    host: String,
    port: u16,
    path: &'a str,
}

impl<'a> RequestUrl<'a> {
    fn parse(value: &'a str) -> Option<Self> {
        let value = value.trim();
        let (scheme_s, rest) = value.split_once("://")?;
        let scheme = Scheme::parse(scheme_s)?;
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..end];
        if authority.contains('@') {
            return None;
        }
        let after = &rest[end..];
        let path_end = after.find(['?', '#']).unwrap_or(after.len());
        let path = if after[..path_end].is_empty() {
            "/"
        } else {
            &after[..path_end]
        };
        let (host_s, port_s) = split_host_port(authority)?;
        let host = normalize_host(host_s)?;
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

    fn same_origin(&self, other: &RequestUrl<'_>) -> bool {
        self.scheme == other.scheme && self.host == other.host && self.port == other.port
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

impl<'de> Deserialize<'de> for ReferrerPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ReferrerPattern::parse(&s).map_err(serde::de::Error::custom)
    }
}
