//! Referrer patterns and request headers, in the control plane's build of `keygate-shared` and
//! in the Worker's:
//!
//! - parsing and matching never panic;
//! - the canonical form of an accepted pattern is a fixed point of `parse`, is ASCII, and
//!   `decode`s to the same pattern, in both builds;
//! - whatever text one build decodes, the other decodes to the same canonical form, or both
//!   refuse it;
//! - the pattern the control plane writes into a snapshot (postcard) is the one the Worker reads,
//!   and the one it reads back from its own JSON;
//! - both builds answer every `Origin`/`Referer` pair alike, and one pattern's `matches` agrees
//!   with `any_matches`;
//! - no headers, and a URL with userinfo, never match.
//!
//! Input: `pattern \n origin \n referer` (missing parts are absent headers).
#![no_main]

use keygate_shared::referrer::any_matches;
use keygate_shared::ReferrerPattern;
use libfuzzer_sys::fuzz_target;

/// `shared/src/referrer.rs` compiled without the `validation` feature, as the Worker builds it
/// (`edge/Cargo.toml` takes no default features). One binary cannot link the crate twice with
/// two feature sets, so the module is compiled here a second time; this crate has no
/// `validation` feature, so every `cfg(feature = "validation")` in it is off.
#[allow(dead_code, unused_imports, unexpected_cfgs)]
#[path = "../../shared/src/referrer.rs"]
mod worker;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\n');
    let pattern = parts.next().unwrap_or("");
    let origin = parts.next();
    let referer = parts.next();

    // Decoding is the same in both builds, for any text.
    let ours = ReferrerPattern::decode(pattern);
    let theirs = worker::ReferrerPattern::decode(pattern);
    assert_eq!(
        ours.as_ref().map(ReferrerPattern::as_str).ok(),
        theirs.as_ref().map(worker::ReferrerPattern::as_str).ok(),
        "{pattern:?}"
    );
    if let (Ok(ours), Ok(theirs)) = (&ours, &theirs) {
        assert_eq!(
            ours.matches(origin, referer),
            theirs.matches(origin, referer)
        );
        // A decoded pattern is already canonical.
        let again = ReferrerPattern::decode(ours.as_str()).expect("canonical decodes");
        assert_eq!(&again, ours);
    }

    if let Ok(p) = ReferrerPattern::parse(pattern) {
        assert!(p.as_str().is_ascii());
        let again = ReferrerPattern::parse(p.as_str()).expect("the canonical form parses");
        assert_eq!(again, p);
        assert_eq!(again.as_str(), p.as_str());
        // What the control plane writes into a snapshot is what the edge decodes.
        let decoded = ReferrerPattern::decode(p.as_str()).expect("the canonical form decodes");
        assert_eq!(decoded, p);
        let edge = worker::ReferrerPattern::decode(p.as_str())
            .expect("the Worker's build decodes the canonical form");
        assert_eq!(edge.as_str(), p.as_str());
        let bytes = postcard::to_allocvec(&p).expect("postcard");
        let shipped: worker::ReferrerPattern =
            postcard::from_bytes(&bytes).expect("the Worker reads the snapshot's pattern");
        assert_eq!(shipped.as_str(), p.as_str());
        // Stored and listed as JSON by the control plane, read back through `parse`.
        let json = serde_json::to_string(&p).expect("json");
        let stored: ReferrerPattern = serde_json::from_str(&json).expect("reads back");
        assert_eq!(stored, p);

        let one = p.matches(origin, referer);
        assert_eq!(one, any_matches(std::slice::from_ref(&p), origin, referer));
        assert_eq!(one, again.matches(origin, referer));
        assert_eq!(one, edge.matches(origin, referer), "{:?}", p.as_str());
        assert_eq!(
            one,
            worker::any_matches(std::slice::from_ref(&edge), origin, referer)
        );
        assert!(!p.matches(None, None));
        assert!(!edge.matches(None, None));
        // A URL with userinfo never matches.
        if let Some(o) = origin {
            if o.trim_ascii().split_once("://").is_some_and(|(_, r)| {
                r.split(['/', '?', '#'])
                    .next()
                    .is_some_and(|a| a.contains('@'))
            }) {
                assert!(!p.matches(Some(o), None));
            }
        }
    }

    // Whatever the headers, fixed patterns neither panic nor disagree with `any_matches`, nor
    // between builds.
    const FIXED: [&str; 4] = [
        "*.example.com/app/*",
        "https://example.com",
        "localhost:*",
        "http://[::1]:8080/x",
    ];
    let fixed = FIXED.map(|p| ReferrerPattern::parse(p).expect("pattern"));
    let edge = FIXED.map(|p| worker::ReferrerPattern::decode(p).expect("pattern"));
    let each = fixed.iter().any(|p| p.matches(origin, referer));
    assert_eq!(each, any_matches(&fixed, origin, referer));
    assert_eq!(each, worker::any_matches(&edge, origin, referer));
    assert_eq!(
        any_matches(&fixed, Some(pattern), origin),
        worker::any_matches(&edge, Some(pattern), origin)
    );
});
