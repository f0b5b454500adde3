//! The referrer patterns the control plane accepts, generated over its input space (schemes,
//! single-label and dotted hosts, IDNs, IPv4 and IPv6 literals, ports, wildcards, paths), in the
//! canonical form a snapshot carries: `testdata/patterns.txt`. The Worker's build of this crate
//! must decode every one of them (`worker_build.rs`, run natively and on wasm32), so a decoder
//! stricter than the creation parser fails a test instead of the edge.
//!
//! `KEYGATE_REGENERATE_GOLDEN=1 cargo test -p keygate-shared --test pattern_corpus` rewrites
//! the file after a deliberate change.
#![cfg(feature = "validation")]

use std::collections::BTreeSet;
use std::path::Path;

use keygate_shared::ReferrerPattern;

fn inputs() -> Vec<String> {
    let schemes = ["", "http://", "https://", "HTTPS://"];
    let hosts = [
        "example.com",
        "Shop.Example.COM",
        "*.example.com",
        "*.co.uk",
        "*.example.co.uk",
        "*.com",
        "*.test",
        "*.corp",
        "*.localhost",
        "*.a.b.c.d.example",
        "test",
        "intranet",
        "app.internal",
        "localhost",
        "a",
        "x-y.example",
        "under_score.example",
        "bücher.example",
        "*.bücher.example",
        "例え.テスト",
        "xn--bcher-kva.example",
        "*.xn--bcher-kva.example",
        "127.0.0.1",
        "10.0.0.1",
        "[::1]",
        "[2001:DB8:0:0::1]",
        "*.[::1]",
        "*.*.example.com",
        "ex*ample.com",
        "example..com",
        "-bad.example",
    ];
    let ports = ["", ":80", ":443", ":3000", ":*", ":65535", ":0", ":x"];
    let paths = [
        "",
        "/",
        "/*",
        "/app/*",
        "/app/page",
        "/café/*",
        "/a b",
        "/a/*/b",
        "/%7Euser/*",
        "/\"q\"",
    ];
    let mut out = Vec::new();
    for s in schemes {
        for h in hosts {
            for p in ports {
                for path in paths {
                    out.push(format!("{s}{h}{p}{path}"));
                }
            }
        }
    }
    out
}

fn corpus() -> String {
    let accepted: BTreeSet<String> = inputs()
        .iter()
        .filter_map(|i| ReferrerPattern::parse(i).ok())
        .map(|p| p.as_str().to_owned())
        .collect();
    let mut text = String::new();
    for p in accepted {
        text.push_str(&p);
        text.push('\n');
    }
    text
}

#[test]
fn the_stored_corpus_is_what_the_creation_parser_accepts() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/patterns.txt");
    let built = corpus();
    if std::env::var_os("KEYGATE_REGENERATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(&path, &built).expect("write patterns.txt");
    }
    let stored = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        stored, built,
        "testdata/patterns.txt is stale: KEYGATE_REGENERATE_GOLDEN=1 cargo test -p keygate-shared --test pattern_corpus"
    );
    // It covers the forms the edge once refused.
    for needed in [
        "*.test",
        "intranet",
        "app.internal",
        "*.corp",
        "[::1]",
        "xn--bcher-kva.example",
    ] {
        assert!(built.lines().any(|l| l == needed), "{needed}");
    }
    assert!(built.lines().count() > 500, "{}", built.lines().count());
}

#[test]
fn every_accepted_pattern_decodes_to_itself() {
    for input in inputs() {
        let Ok(p) = ReferrerPattern::parse(&input) else {
            continue;
        };
        let back = ReferrerPattern::decode(p.as_str());
        assert_eq!(back.as_ref(), Ok(&p), "{input:?} → {:?}", p.as_str());
    }
}
