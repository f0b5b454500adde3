//! Referrer patterns and request headers: parsing and matching never panic, the canonical form
//! of an accepted pattern is a fixed point, and matching one pattern agrees with `any_matches`.
//!
//! Input: `pattern \n origin \n referer` (missing parts are absent headers).
#![no_main]

use keygate_shared::referrer::any_matches;
use keygate_shared::ReferrerPattern;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\n');
    let pattern = parts.next().unwrap_or("");
    let origin = parts.next();
    let referer = parts.next();

    if let Ok(p) = ReferrerPattern::parse(pattern) {
        assert!(p.as_str().is_ascii());
        let again = ReferrerPattern::parse(p.as_str()).expect("the canonical form parses");
        assert_eq!(again, p);
        assert_eq!(again.as_str(), p.as_str());
        let one = p.matches(origin, referer);
        assert_eq!(one, any_matches(std::slice::from_ref(&p), origin, referer));
        assert_eq!(one, again.matches(origin, referer));
        assert!(!p.matches(None, None));
        // A URL with userinfo never matches.
        if let Some(o) = origin {
            if o.trim_ascii().split_once("://").is_some_and(|(_, r)| {
                r.split(['/', '?', '#']).next().is_some_and(|a| a.contains('@'))
            }) {
                assert!(!p.matches(Some(o), None));
            }
        }
    }

    // Whatever the headers, fixed patterns neither panic nor disagree with `any_matches`.
    let fixed = [
        ReferrerPattern::parse("*.example.com/app/*").expect("pattern"),
        ReferrerPattern::parse("https://example.com").expect("pattern"),
        ReferrerPattern::parse("localhost:*").expect("pattern"),
    ];
    let each = fixed.iter().any(|p| p.matches(origin, referer));
    assert_eq!(each, any_matches(&fixed, origin, referer));
    let _ = any_matches(&fixed, Some(pattern), origin);
});
