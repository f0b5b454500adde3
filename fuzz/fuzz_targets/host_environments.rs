//! Host to environment mapping (`HOST_ENVIRONMENTS`, `KEYGATE_HOST_ENVIRONMENTS`) on arbitrary
//! configuration and `Host` values: nothing panics, a mapped name is found again however a
//! request spells it (case, port, trailing dot, surrounding spaces), a name that merely contains
//! it is not, and an unmapped host gets neither environment.
//!
//! Input: `name \n host` (the host value a request sends), and the first byte picks whether
//! the name is mapped alone or also read as a JSON mapping.
#![no_main]

use keygate_shared::{Environment, EnvironmentRule, HostEnvironments};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let (name, host) = text.split_once('\n').unwrap_or((text, text));

    if mode & 1 == 1 {
        // As a whole configuration value: parsing never panics, and any answer is consistent.
        if let Ok(map) = HostEnvironments::from_json(name) {
            let rule = map.rule_for(Some(host));
            if map.is_empty() {
                assert_eq!(rule, EnvironmentRule::Any);
            } else {
                assert_ne!(rule, EnvironmentRule::Any);
                assert_eq!(map.rule_for(None), EnvironmentRule::Unmapped);
            }
            assert_eq!(rule, map.rule_for(Some(&host.to_ascii_uppercase())));
        }
    }

    let env = if mode & 2 == 0 {
        Environment::Live
    } else {
        Environment::Test
    };
    let Ok(map) = HostEnvironments::from_pairs([(name.to_owned(), env)]) else {
        return;
    };
    assert!(!map.is_empty());
    let name = name.trim();
    let want = EnvironmentRule::Only(env);
    assert_eq!(map.rule_for(Some(name)), want, "{name:?}");
    assert_eq!(map.rule_for(Some(&name.to_ascii_uppercase())), want);
    assert_eq!(map.rule_for(Some(&format!("{name}:8443"))), want);
    assert_eq!(map.rule_for(Some(&format!(" {name}:443 "))), want);
    // One trailing dot is the same name (an IPv6 literal has none).
    if !name.ends_with('.') && !name.starts_with('[') {
        assert_eq!(map.rule_for(Some(&format!("{name}."))), want);
    }
    // A subdomain, or a longer name ending in it, is another host.
    let unmapped = EnvironmentRule::Unmapped;
    assert_eq!(map.rule_for(Some(&format!("evil.{name}"))), unmapped);
    assert_eq!(map.rule_for(Some(&format!("{name}.evil"))), unmapped);
    assert_eq!(map.rule_for(Some(&format!("{name}evil"))), unmapped);
    assert_eq!(map.rule_for(None), EnvironmentRule::Unmapped);
    // The request's host, whatever it is: never a panic, never `Any`, never the other
    // environment.
    let rule = map.rule_for(Some(host));
    assert!(
        rule == want || rule == EnvironmentRule::Unmapped,
        "{rule:?}"
    );
    assert_eq!(rule, map.rule_for(Some(&host.to_ascii_lowercase())));
});
