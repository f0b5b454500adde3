//! docs/referrers.md, row by row: which requests each pattern lets through, which patterns are
//! refused at creation, and the tricks people try against referrer restrictions.
#![cfg(feature = "validation")]

use keygate_shared::referrer::any_matches;
use keygate_shared::{PatternError, ReferrerPattern};

fn pattern(s: &str) -> ReferrerPattern {
    let parsed = ReferrerPattern::parse(s);
    assert!(parsed.is_ok(), "{s:?} should parse: {parsed:?}");
    parsed.expect("checked above")
}

/// A request's `Origin` and `Referer` headers.
#[derive(Debug, Clone, Copy)]
enum Req {
    /// Only `Origin`.
    Origin(&'static str),
    /// Only `Referer`.
    Referer(&'static str),
    /// Both.
    Both(&'static str, &'static str),
}

impl Req {
    fn headers(self) -> (Option<&'static str>, Option<&'static str>) {
        match self {
            Req::Origin(o) => (Some(o), None),
            Req::Referer(r) => (None, Some(r)),
            Req::Both(o, r) => (Some(o), Some(r)),
        }
    }
}

use Req::{Both, Origin, Referer};

/// `(pattern, requests that match, requests that do not)`.
type Row = (&'static str, &'static [Req], &'static [Req]);

/// One row per line of the contract's table, then the attacks.
const TABLE: &[Row] = &[
    (
        "example.com",
        &[
            Origin("https://example.com"),
            Origin("http://example.com"),
            Origin("https://example.com:443"),
            Origin("http://example.com:80"),
            Referer("https://example.com/"),
            Referer("https://example.com/any/path?q=1#frag"),
            Referer("http://example.com/deep/er/path"),
        ],
        &[
            Origin("https://www.example.com"),
            Origin("https://example.org"),
            Origin("https://example.com:8443"),
            Origin("http://example.com:443"),
            Origin("https://example.com:80"),
            Origin("ftp://example.com"),
            Origin("ws://example.com"),
            Referer("https://example.com:8080/"),
        ],
    ),
    (
        "https://example.com",
        &[
            Origin("https://example.com"),
            Origin("https://example.com:443"),
            Referer("https://example.com/checkout"),
        ],
        &[
            Origin("http://example.com"),
            Referer("http://example.com/checkout"),
            Origin("https://example.com:8443"),
            Origin("https://api.example.com"),
        ],
    ),
    (
        "*.example.com",
        &[
            Origin("https://a.example.com"),
            Origin("http://a.example.com"),
            Origin("https://a.b.c.example.com"),
            Referer("https://shop.example.com/cart"),
        ],
        &[
            Origin("https://example.com"),
            Referer("https://example.com/"),
            Origin("https://.example.com"),
            Origin("https://a.example.com:8443"),
            Origin("https://aexample.com"),
            Origin("https://a.example.com.evil.com"),
            Origin("https://example.com.evil.com"),
        ],
    ),
    (
        "example.com/app/*",
        &[
            Referer("https://example.com/app/"),
            Referer("https://example.com/app/page"),
            Referer("http://example.com/app/a/b/c?x=1#y"),
            // With an Origin, the path comes from a Referer of the same origin.
            Both("https://example.com", "https://example.com/app/page"),
        ],
        &[
            Referer("https://example.com/application"),
            Referer("https://example.com/ap"),
            Referer("https://example.com/"),
            Referer("https://example.com/other/app/"),
            Referer("https://other.com/app/page"),
            // An Origin carries no path: it cannot satisfy a path pattern on its own.
            Origin("https://example.com"),
            // Nor with a Referer from another origin (scheme, host or port).
            Both("https://example.com", "https://other.com/app/page"),
            Both("https://example.com", "http://example.com/app/page"),
            Both("https://example.com", "https://example.com:8443/app/page"),
            // The Origin decides the site, even when the Referer would match.
            Both("https://evil.com", "https://example.com/app/page"),
        ],
    ),
    (
        "example.com/app/page",
        &[
            Referer("https://example.com/app/page"),
            Referer("https://example.com/app/page?tab=2"),
            Referer("https://example.com/app/page#section"),
            Both("https://example.com", "https://example.com/app/page"),
        ],
        &[
            Referer("https://example.com/app/page/"),
            Referer("https://example.com/app/page2"),
            Referer("https://example.com/app/"),
            Referer("https://example.com/APP/PAGE"),
            Origin("https://example.com"),
        ],
    ),
    (
        "localhost:3000",
        &[
            Origin("http://localhost:3000"),
            Origin("https://localhost:3000"),
            Referer("http://localhost:3000/dev"),
        ],
        &[
            Origin("http://localhost"),
            Origin("http://localhost:3001"),
            Origin("http://localhost:30000"),
            Origin("http://127.0.0.1:3000"),
            Origin("http://localhost.evil.com:3000"),
        ],
    ),
    (
        "localhost:*",
        &[
            Origin("http://localhost:1"),
            Origin("http://localhost:3000"),
            Origin("https://localhost:65535"),
            Origin("http://localhost"),
            Referer("http://localhost:5173/app"),
        ],
        &[
            Origin("http://127.0.0.1:3000"),
            Origin("http://localhost.evil.com:3000"),
            Origin("http://evillocalhost:3000"),
            Origin("http://localhost:0"),
            Origin("http://localhost:65536"),
        ],
    ),
    // Attacks and normalisation.
    (
        "https://example.com",
        &[
            // Schemes and hosts compare case-insensitively.
            Origin("HTTPS://EXAMPLE.COM"),
            Origin("Https://Example.Com"),
            Referer("HTTPS://Example.com/Path"),
            // Surrounding whitespace in a header value is not part of it.
            Origin(" https://example.com "),
        ],
        &[
            Origin("https://example.com.evil.com"),
            Origin("https://evilexample.com"),
            Origin("https://example.com@evil.com"),
            Referer("https://example.com@evil.com/"),
            Referer("https://example.com:443@evil.com/"),
            // Userinfo never matches, even when the host is the right one.
            Referer("https://evil.com@example.com/"),
            Referer("https://user:pass@example.com/"),
            Origin("https://example.com."),
            Origin("https://example.com\\.evil.com"),
            Origin("https://exa mple.com"),
            Origin("https://example.com:"),
            Origin("https://example.com:44a"),
            Origin("https://example.com:-443"),
            Origin("null"),
            Origin("example.com"),
            Origin("//example.com"),
            Origin("https:/example.com"),
            Origin("javascript://example.com"),
            Origin("https://"),
        ],
    ),
    (
        "EXAMPLE.Com",
        &[Origin("https://example.com"), Origin("http://Example.COM")],
        &[Origin("https://example.co")],
    ),
    (
        "HTTP://Example.com/App/*",
        &[Referer("http://example.com/App/x")],
        // Paths are case-sensitive, hosts are not.
        &[
            Referer("http://example.com/app/x"),
            Referer("https://example.com/App/x"),
        ],
    ),
    (
        "[::1]:8080",
        &[
            Origin("http://[::1]:8080"),
            Origin("http://[0:0:0:0:0:0:0:1]:8080"),
        ],
        &[
            Origin("http://[::2]:8080"),
            Origin("http://[::1]"),
            Origin("http://localhost:8080"),
        ],
    ),
    (
        "127.0.0.1:8080",
        &[Origin("http://127.0.0.1:8080")],
        &[Origin("http://127.0.0.2:8080"), Origin("http://127.0.0.1")],
    ),
    (
        "*.example.co.uk",
        &[Origin("https://shop.example.co.uk")],
        &[
            Origin("https://example.co.uk"),
            Origin("https://other.co.uk"),
        ],
    ),
    (
        "https://*.example.com:8443/api/*",
        &[
            Referer("https://a.example.com:8443/api/v1"),
            Both(
                "https://a.example.com:8443",
                "https://a.example.com:8443/api/",
            ),
        ],
        &[
            Referer("https://a.example.com/api/v1"),
            Referer("http://a.example.com:8443/api/v1"),
            Referer("https://example.com:8443/api/v1"),
            Referer("https://a.example.com:8443/apiv1"),
            Both(
                "https://a.example.com:8443",
                "https://b.example.com:8443/api/",
            ),
        ],
    ),
];

#[test]
fn contract_table() {
    for (pat, yes, no) in TABLE {
        let p = pattern(pat);
        for req in *yes {
            let (o, r) = req.headers();
            assert!(p.matches(o, r), "{pat:?} should match {req:?}");
        }
        for req in *no {
            let (o, r) = req.headers();
            assert!(!p.matches(o, r), "{pat:?} should not match {req:?}");
        }
    }
}

#[test]
fn no_origin_and_no_referer_fails_every_pattern() {
    for (pat, _, _) in TABLE {
        let p = pattern(pat);
        assert!(!p.matches(None, None), "{pat:?}");
        // Empty header values count as absent.
        assert!(!p.matches(Some(""), Some("")), "{pat:?}");
    }
    assert!(!any_matches(&[pattern("example.com")], None, None));
    // An empty Origin falls back to the Referer.
    assert!(pattern("example.com").matches(Some(""), Some("https://example.com/x")));
}

#[test]
fn any_of_several_patterns() {
    let list = [
        pattern("https://shop.example.com/*"),
        pattern("*.example.org"),
    ];
    assert!(any_matches(&list, Some("https://shop.example.com"), None));
    assert!(any_matches(&list, Some("http://a.example.org"), None));
    assert!(!any_matches(&list, Some("http://shop.example.com"), None));
    assert!(!any_matches(&list, Some("https://example.org"), None));
    assert!(!any_matches(&[], Some("https://shop.example.com"), None));
}

#[test]
fn origin_takes_precedence_over_referer() {
    let p = pattern("example.com");
    assert!(p.matches(Some("https://example.com"), Some("https://evil.com/")));
    assert!(!p.matches(Some("https://evil.com"), Some("https://example.com/")));
    // A malformed Origin is not replaced by a good Referer.
    assert!(!p.matches(Some("null"), Some("https://example.com/")));
}

#[test]
fn canonical_text() {
    for (input, canonical) in [
        ("example.com", "example.com"),
        ("EXAMPLE.COM", "example.com"),
        ("HTTPS://Example.com", "https://example.com"),
        (
            "Http://A.Example.com:08080/App/*",
            "http://a.example.com:8080/App/*",
        ),
        ("*.Example.com", "*.example.com"),
        ("localhost:*", "localhost:*"),
        ("example.com/*", "example.com"),
        ("example.com/", "example.com/"),
        ("[0:0::1]:80", "[::1]:80"),
    ] {
        let p = pattern(input);
        assert_eq!(p.as_str(), canonical, "{input:?}");
        assert_eq!(p.to_string(), canonical, "{input:?}");
        assert_eq!(pattern(canonical), p, "{input:?}");
        let json = serde_json::to_string(&p).expect("json");
        assert_eq!(json, format!("{canonical:?}"));
        let back: ReferrerPattern = serde_json::from_str(&json).expect("json back");
        assert_eq!(back, p);
    }
    // Deserialising applies the same rules as parsing.
    assert!(serde_json::from_str::<ReferrerPattern>("\"*.com\"").is_err());
    assert!(serde_json::from_str::<ReferrerPattern>("\"*\"").is_err());
}

#[test]
fn pattern_paths_are_percent_encoded_like_browsers_send_them() {
    let p = pattern("example.com/café/*");
    assert_eq!(p.as_str(), "example.com/caf%C3%A9/*");
    assert!(p.matches(None, Some("https://example.com/caf%C3%A9/menu")));
    assert!(!p.matches(None, Some("https://example.com/cafe/menu")));
    assert_eq!(pattern("example.com/caf%C3%A9/*"), p);
    let q = pattern("example.com/a{b}\"<x>`");
    assert_eq!(q.as_str(), "example.com/a%7Bb%7D%22%3Cx%3E%60");
    assert!(q.matches(None, Some("https://example.com/a%7Bb%7D%22%3Cx%3E%60")));
    // Existing escapes are kept as written.
    assert_eq!(pattern("example.com/a%2fb").as_str(), "example.com/a%2fb");
}

#[test]
fn rejected_patterns() {
    use PatternError as E;
    let cases: &[(&str, E)] = &[
        ("", E::Empty),
        (" ", E::Empty),
        ("example.com ", E::Empty),
        ("exa mple.com", E::Empty),
        ("*", E::BareWildcard),
        // `*` anywhere but the whole left-most label or the last path segment.
        ("*example.com", E::MisplacedWildcard),
        ("ex*ample.com", E::MisplacedWildcard),
        ("example*.com", E::MisplacedWildcard),
        ("a.*.example.com", E::MisplacedWildcard),
        ("example.*", E::MisplacedWildcard),
        ("example.com.*", E::MisplacedWildcard),
        ("**.example.com", E::MisplacedWildcard),
        ("*.*.example.com", E::MisplacedWildcard),
        ("https://*example.com", E::MisplacedWildcard),
        ("example.com/*/page", E::MisplacedWildcard),
        ("example.com/app*", E::MisplacedWildcard),
        ("example.com/app/*/*", E::MisplacedWildcard),
        ("example.com/a*b/", E::MisplacedWildcard),
        ("example.com/**", E::MisplacedWildcard),
        // Userinfo, query, fragment.
        ("user@example.com", E::Userinfo),
        ("https://user:pass@example.com", E::Userinfo),
        ("https://example.com@evil.com", E::Userinfo),
        ("example.com?x=1", E::Query),
        ("example.com/app?x=1", E::Query),
        ("example.com#top", E::Fragment),
        ("example.com/app/#top", E::Fragment),
        // Schemes.
        ("ftp://example.com", E::Scheme),
        ("ws://example.com", E::Scheme),
        ("javascript://example.com", E::Scheme),
        ("*://example.com", E::Scheme),
        ("://example.com", E::Scheme),
        // Ports.
        ("example.com:", E::Port),
        ("example.com:0", E::Port),
        ("example.com:65536", E::Port),
        ("example.com:99999", E::Port),
        ("example.com:443443", E::Port),
        ("example.com:http", E::Port),
        ("example.com:8*", E::Port),
        ("example.com:+80", E::Port),
        ("example.com:-1", E::Port),
        ("[::1]:x", E::Port),
        // Hosts.
        ("https://", E::Host),
        ("https:///app", E::Host),
        ("/app/*", E::Host),
        ("example..com", E::Host),
        ("example.com.", E::Host),
        (".example.com", E::Host),
        ("-example.com", E::Host),
        ("example-.com", E::Host),
        ("exa$mple.com", E::Host),
        ("a:b:80", E::Host),
        ("[::1", E::Host),
        ("[not-v6]", E::Host),
        ("*.", E::Host),
    ];
    for (input, expected) in cases {
        assert_eq!(
            ReferrerPattern::parse(input).as_ref(),
            Err(expected),
            "{input:?}"
        );
    }
    // Refused, whichever rule catches them first.
    for input in [
        "*.[::1]",
        "*",
        "*.*",
        "*:*",
        "*/*",
        "https://*",
        "http://*/*",
    ] {
        assert!(ReferrerPattern::parse(input).is_err(), "{input:?}");
    }
}

#[test]
fn wildcards_over_public_suffixes_are_refused() {
    for base in ["com", "org", "uk", "co.uk", "github.io", "com.au"] {
        let input = format!("*.{base}");
        if cfg!(feature = "validation") || !base.contains('.') {
            assert_eq!(
                ReferrerPattern::parse(&input),
                Err(PatternError::PublicSuffixWildcard(base.to_owned())),
                "{input:?}"
            );
            assert!(ReferrerPattern::parse(&format!("https://*.{base}/*")).is_err());
        }
    }
    // One label more is a registrable domain, and fine.
    for ok in [
        "*.example.com",
        "*.example.co.uk",
        "*.me.github.io",
        "*.localhost",
    ] {
        assert!(ReferrerPattern::parse(ok).is_ok(), "{ok:?}");
    }
}

#[cfg(feature = "validation")]
#[test]
fn idn_patterns_compare_in_punycode() {
    let p = pattern("bücher.example");
    assert_eq!(p.as_str(), "xn--bcher-kva.example");
    assert!(p.matches(Some("https://xn--bcher-kva.example"), None));
    assert!(p.matches(None, Some("https://XN--BCHER-KVA.example/x")));
    assert!(!p.matches(Some("https://bucher.example"), None));
    // The punycode form of the pattern is the same pattern.
    assert_eq!(pattern("xn--bcher-kva.example"), p);
    assert_eq!(pattern("BÜCHER.example"), p);

    let sub = pattern("https://*.bücher.example/*");
    assert_eq!(sub.as_str(), "https://*.xn--bcher-kva.example");
    assert!(sub.matches(Some("https://shop.xn--bcher-kva.example"), None));
    assert!(!sub.matches(Some("https://xn--bcher-kva.example"), None));

    let jp = pattern("例え.テスト");
    assert!(jp.as_str().is_ascii());
    assert!(jp.matches(Some(&format!("https://{}", jp.as_str())), None));
}

#[cfg(not(feature = "validation"))]
#[test]
fn without_validation_idn_patterns_are_refused() {
    assert_eq!(
        ReferrerPattern::parse("bücher.example"),
        Err(PatternError::Host)
    );
    // The punycode form still works.
    assert!(pattern("xn--bcher-kva.example").matches(Some("https://xn--bcher-kva.example"), None));
}
