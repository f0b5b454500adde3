//! `key::parse` on arbitrary text: it never panics, and whatever it accepts is a key that the
//! generator would produce from the same parts.
#![no_main]

use keygate_shared::key::{self, CHECKSUM_LEN, SECRET_LEN};
use keygate_shared::{KeyHash, KeyPrefix, PlaintextKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(parsed) = key::parse(text) else {
        return;
    };
    // Accepted keys are ASCII, of the exact shape, and rebuild to themselves.
    assert!(text.is_ascii());
    let prefix = KeyPrefix::parse(parsed.prefix()).expect("the prefix of a parsed key is valid");
    let secret = &text[text.len() - CHECKSUM_LEN - SECRET_LEN..text.len() - CHECKSUM_LEN];
    let rebuilt = PlaintextKey::from_parts(&prefix, parsed.kind(), parsed.environment(), secret)
        .expect("the secret of a parsed key is valid");
    assert_eq!(rebuilt.expose(), text);
    assert_eq!(parsed.hash(), KeyHash::of(text));
    assert!(text.starts_with(&parsed.start()));
    assert_eq!(
        parsed.start().len(),
        parsed.prefix().len() + 1 + 2 + 1 + 4 + 1 + 4
    );
});
