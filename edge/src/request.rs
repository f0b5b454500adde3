//! Where a request carries its key, and how the forwarded URL and headers lose it.

/// Where the key was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// `Authorization: Bearer <key>`.
    Authorization,
    /// `X-API-Key: <key>`.
    ApiKeyHeader,
    /// `?key=<key>`.
    Query,
}

/// The key a request presents, in the contract's order of precedence: `Authorization: Bearer`,
/// else `X-API-Key`, else the `key` query parameter. An `Authorization` header of another
/// scheme (say, Basic credentials meant for the origin) is not a key and is left alone.
pub fn extract_key(
    authorization: Option<&str>,
    x_api_key: Option<&str>,
    query: Option<&str>,
) -> Option<(String, KeySource)> {
    if let Some(token) = authorization.and_then(bearer_token) {
        return Some((token.to_owned(), KeySource::Authorization));
    }
    if let Some(k) = x_api_key.map(str::trim).filter(|k| !k.is_empty()) {
        return Some((k.to_owned(), KeySource::ApiKeyHeader));
    }
    query
        .and_then(|q| query_param(q, "key"))
        .filter(|k| !k.is_empty())
        .map(|k| (k, KeySource::Query))
}

fn bearer_token(header: &str) -> Option<&str> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim();
    (!token.is_empty()).then_some(token)
}

/// The first value of `name` in a raw query string, percent-decoded.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k) == name).then(|| percent_decode(v))
        })
        .next()
}

/// The raw query without any `key` parameter; every other parameter keeps its exact bytes and
/// order. `None` when nothing is left.
pub fn strip_key_param(query: &str) -> Option<String> {
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let k = pair.split_once('=').map_or(*pair, |(k, _)| k);
            percent_decode(k) != "key"
        })
        .collect();
    let joined = kept.join("&");
    (!joined.is_empty()).then_some(joined)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex_val(bytes[i + 1]), hex_val(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Joins the origin base URL (which may carry a path prefix) with the request path and query.
pub fn forward_url(origin_base: &str, path: &str, query: Option<&str>) -> String {
    let base = origin_base.trim_end_matches('/');
    let mut url = String::with_capacity(base.len() + path.len() + 1);
    url.push_str(base);
    if !path.starts_with('/') {
        url.push('/');
    }
    url.push_str(path);
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

/// The path and query of an absolute URL whose path and query a URL parser would leave as they
/// are (`http://h:1/a/b?x=1` → `/a/b`, `x=1`), without parsing it; `None` for anything else,
/// which the caller then parses in full. The runtime's `request.url` keeps the request line's
/// path as sent (`/../admin`, `/%2e%2e/x`, `/a\b`), while its `fetch` to the origin resolves it
/// as a URL parser does, so only a path with no dot segment, no encoded dot and no byte a parser
/// would encode or rewrite is taken as it is.
pub fn split_normalised_url(url: &str) -> Option<(&str, Option<&str>)> {
    let (_, rest) = url.split_once("://")?;
    let rest = &rest[rest.find(['/', '?', '#'])?..];
    if !rest.starts_with('/') {
        return None;
    }
    let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    if !is_plain(path) || path.contains("/.") || has_encoded_dot(path) {
        return None;
    }
    if query.is_some_and(|q| !is_plain(q)) {
        return None;
    }
    Some((path, query))
}

/// Printable ASCII that a URL parser keeps as it is in a path or a special URL's query.
fn is_plain(s: &str) -> bool {
    s.bytes().all(|b| {
        (0x21..0x7f).contains(&b)
            && !matches!(b, b'"' | b'<' | b'>' | b'`' | b'{' | b'}' | b'\\' | b'\'')
    })
}

/// Whether `s` holds `%2e` in either case: a parser reads it as `.` in a dot segment.
fn has_encoded_dot(s: &str) -> bool {
    s.as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && w[1] == b'2' && (w[2] | 0x20) == b'e')
}

/// The path and query of a URL (`http://h:1/a/b?x` → `/a/b?x`): what the origin receives and
/// the signature covers.
pub fn url_path_and_query(url: &str) -> &str {
    let after_scheme = url.split_once("://").map_or(url, |(_, r)| r);
    let start = after_scheme.find(['/', '?']).unwrap_or(after_scheme.len());
    let rest = &after_scheme[start..];
    let end = rest.find('#').unwrap_or(rest.len());
    if rest[..end].is_empty() {
        "/"
    } else {
        &rest[..end]
    }
}

/// Whether a raw query has a parameter named `name` (percent-decoded), without allocating for
/// the common case of a query that does not mention it at all.
pub fn query_has_param(query: &str, name: &str) -> bool {
    (query.contains(name) || query.contains('%'))
        && query.split('&').any(|pair| {
            let k = pair.split_once('=').map_or(pair, |(k, _)| k);
            percent_decode(k) == name
        })
}

/// Whether a header name is in the edge's own namespace (`Keygate-*`, or `Keygate_*`, which
/// CGI-style origins fold into the same variable): a client may not send one to the origin.
pub fn is_keygate_header(name: &str) -> bool {
    name.len() >= 8
        && name.as_bytes()[..7].eq_ignore_ascii_case(b"keygate")
        && matches!(name.as_bytes()[7], b'-' | b'_')
}

/// Request headers never forwarded besides the key's own. The runtime's `fetch` already sets
/// `Host` from the target URL and drops hop-by-hop headers (`Connection`, `Keep-Alive`, `TE`,
/// ...), so deleting those here would only cost time; the end-to-end suite checks that none of
/// them reaches the origin. `Proxy-Authorization` is the client's credential for its own proxy.
pub const FORWARD_STRIPPED: [&str; 1] = ["Proxy-Authorization"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_normalised_url_splits_as_a_parser_reads_it() {
        for raw in [
            "http://127.0.0.1:8787/",
            "http://example.com/orders/1",
            "https://api.example.com/a/b/?x=1&y=%20z",
            "http://h/a%2Fb?q=?&r=#frag",
            "http://h/?",
            "http://user:pw@h:1/p?q",
            "http://h/ä ö?ü",
            "http://[::1]:8080/v1/x?k=v",
        ] {
            let parsed = worker::Url::parse(raw).expect("url");
            assert_eq!(
                split_normalised_url(parsed.as_str()),
                Some((parsed.path(), parsed.query())),
                "{raw}"
            );
        }
        assert_eq!(split_normalised_url("/relative"), None);
        assert_eq!(split_normalised_url("http://h?q"), None);
    }

    /// The runtime hands over the request line's path unresolved: whatever is taken without
    /// parsing must be what the parser (and so the runtime's `fetch`) makes of it.
    #[test]
    fn a_raw_url_is_taken_as_is_only_when_a_parser_would_keep_it() {
        let segments = [
            "a", ".", "..", "%2e", "%2E%2e", ".%2e", "a%2Fb", "a\\b", "a b", "\"q\"", "é", "a;b",
            "%41", "~x", "a|b", "{x}", "`", "'", ".env", "",
        ];
        let queries = [
            None,
            Some("x=1"),
            Some("a b"),
            Some("'q'"),
            Some("k=%20"),
            Some("é"),
        ];
        let mut taken = 0;
        for a in segments {
            for b in segments {
                for q in queries {
                    let raw = match q {
                        Some(q) => format!("http://h/{a}/{b}?{q}"),
                        None => format!("http://h/{a}/{b}"),
                    };
                    let Some(split) = split_normalised_url(&raw) else {
                        continue;
                    };
                    taken += 1;
                    let parsed = worker::Url::parse(&raw).expect("url");
                    assert_eq!(split, (parsed.path(), parsed.query()), "{raw}");
                }
            }
        }
        assert!(taken > 100, "only {taken} taken as they are");
    }

    #[test]
    fn the_entry_module_strips_the_same_headers() {
        // edge/shim.mjs is the forwarder and keeps its own copy of the list.
        let shim = include_str!("../shim.mjs");
        let list = FORWARD_STRIPPED
            .iter()
            .map(|h| format!("{h:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        assert!(
            shim.contains(&format!("const FORWARD_STRIPPED = [{list}];")),
            "edge/shim.mjs must list {list}"
        );
    }

    #[test]
    fn precedence() {
        let q = Some("a=1&key=fromquery");
        assert_eq!(
            extract_key(Some("Bearer fromauth"), Some("fromheader"), q),
            Some(("fromauth".into(), KeySource::Authorization))
        );
        assert_eq!(
            extract_key(Some("Basic dXNlcjpwYXNz"), Some("fromheader"), q),
            Some(("fromheader".into(), KeySource::ApiKeyHeader))
        );
        assert_eq!(
            extract_key(None, None, q),
            Some(("fromquery".into(), KeySource::Query))
        );
        assert_eq!(
            extract_key(Some("bearer   spaced  "), None, None),
            Some(("spaced".into(), KeySource::Authorization))
        );
        assert_eq!(extract_key(None, Some("  "), Some("key=")), None);
        assert_eq!(extract_key(Some("Bearer"), None, None), None);
    }

    #[test]
    fn strips_only_key_and_keeps_encoding() {
        assert_eq!(
            strip_key_param("a=1&key=secret&b=%20x+y&c").as_deref(),
            Some("a=1&b=%20x+y&c")
        );
        assert_eq!(strip_key_param("key=s"), None);
        assert_eq!(strip_key_param("k%65y=s&z=1").as_deref(), Some("z=1"));
        assert_eq!(query_param("x=1&key=a%2Bb", "key").as_deref(), Some("a+b"));
    }

    #[test]
    fn forward_urls() {
        assert_eq!(
            forward_url("http://127.0.0.1:8788/", "/v1/orders", Some("a=1")),
            "http://127.0.0.1:8788/v1/orders?a=1"
        );
        assert_eq!(
            forward_url("https://api.internal/base", "/x", None),
            "https://api.internal/base/x"
        );
        assert_eq!(
            url_path_and_query("https://api.internal/base/x?y=1#f"),
            "/base/x?y=1"
        );
        assert_eq!(url_path_and_query("http://h:1"), "/");
        assert_eq!(url_path_and_query("http://h:1/a"), "/a");
    }

    #[test]
    fn keygate_headers_and_key_params_are_recognised() {
        for name in [
            "Keygate-Key-Id",
            "keygate-x",
            "KEYGATE_ENVIRONMENT",
            "Keygate_",
        ] {
            assert!(is_keygate_header(name), "{name}");
        }
        for name in ["Keygate", "Keygatex-a", "X-Keygate-Id", "Key-Id"] {
            assert!(!is_keygate_header(name), "{name}");
        }
        assert!(query_has_param("a=1&key=x", "key"));
        assert!(query_has_param("k%65y=x", "key"));
        assert!(!query_has_param("keys=1&monkey=2", "key"));
        assert!(!query_has_param("a=1", "key"));
    }
}
