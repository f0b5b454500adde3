//! The site a request says it comes from (`Origin`, else `Referer`), as `/v1/verify`, the edge
//! and CORS read it: nothing panics, the control plane's and the Worker's builds read the same
//! site, the canonical origin is a fixed point, and a pattern written as that origin matches the
//! request (and the same pattern with another port does not).
//!
//! Input: `origin \n referer` (a missing part is an absent header).
#![no_main]

use keygate_shared::referrer::{any_matches, canonical_origin, write_request_origin};
use keygate_shared::ReferrerPattern;
use libfuzzer_sys::fuzz_target;

/// `shared/src/referrer.rs` as the Worker builds it (see `referrer_pattern.rs`).
#[allow(dead_code, unused_imports, unexpected_cfgs)]
#[path = "../../shared/src/referrer.rs"]
mod worker;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (origin, referer) = match text.split_once('\n') {
        Some((o, r)) => (Some(o).filter(|o| !o.is_empty()), Some(r)),
        None => (Some(text), None),
    };

    assert_eq!(canonical_origin(text), worker::canonical_origin(text));
    if let Some(c) = canonical_origin(text) {
        assert!(c.is_ascii());
        assert_eq!(canonical_origin(&c).as_deref(), Some(c.as_str()));
    }

    let mut site = String::from("left over");
    let found = write_request_origin(origin, referer, &mut site);
    let mut edge_site = String::from("stale");
    assert_eq!(
        found,
        worker::write_request_origin(origin, referer, &mut edge_site)
    );
    assert_eq!(site, edge_site);
    if !found {
        assert!(site.is_empty());
        // No site, no match: not even for a pattern allowing any port of a common host.
        let any = ReferrerPattern::decode("localhost:*").expect("pattern");
        assert!(!any_matches(&[any], origin, referer));
        return;
    }
    assert!(site.is_ascii());
    assert!(site.starts_with("http://") || site.starts_with("https://"));
    assert_eq!(canonical_origin(&site).as_deref(), Some(site.as_str()));
    assert_eq!(site, site.to_ascii_lowercase());
    // The site written as a pattern allows this request, as the allow-list in the console
    // would be filled from it; the same pattern with a path needs the `Referer` to have it.
    let pattern = ReferrerPattern::decode(&site).expect("a request origin is a pattern");
    assert_eq!(pattern.as_str(), site);
    assert!(pattern.matches(origin, referer), "{site:?}");
    assert!(any_matches(std::slice::from_ref(&pattern), origin, referer));
    // Another port of the same host does not match, unless the pattern allows every port.
    let other = ReferrerPattern::decode(&format!("{site}1")).ok();
    if let Some(other) = other {
        if other.as_str() != site {
            assert!(
                !other.matches(origin, referer),
                "{site:?} vs {}",
                other.as_str()
            );
        }
    }
});
