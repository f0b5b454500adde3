//! Which key environment a request's host serves: `HOST_ENVIRONMENTS` at the edge and
//! `KEYGATE_HOST_ENVIRONMENTS` for `/v1/verify`, read by this one type so that both give the
//! same answer for the same `Host`.
//!
//! With no mapping every host accepts both environments. Once any host is mapped, a host that
//! is not is refused (`environment_not_allowed`): a forgotten or unexpected hostname (a
//! `*.workers.dev` address, a new custom domain) must not let `test` keys reach a `live` origin.

use std::collections::HashMap;

use crate::key::Environment;

/// What a host allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EnvironmentRule {
    /// No mapping is configured: both environments.
    #[default]
    Any,
    /// The host serves this environment only.
    Only(Environment),
    /// A mapping is configured and this host is not in it: no key.
    Unmapped,
}

impl EnvironmentRule {
    /// Whether a key of `env` may be used.
    pub fn allows(self, env: Environment) -> bool {
        match self {
            EnvironmentRule::Any => true,
            EnvironmentRule::Only(e) => e == env,
            EnvironmentRule::Unmapped => false,
        }
    }
}

/// Hostname to environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostEnvironments {
    map: HashMap<String, Environment>,
}

impl HostEnvironments {
    /// Parses the JSON object form: `{"api.example.com": "live", "sandbox.example.com": "test"}`.
    /// Names are compared case-insensitively and without a trailing dot; a name with a port is
    /// refused, since ports are ignored.
    pub fn from_json(json: &str) -> Result<Self, String> {
        if json.trim().is_empty() {
            return Ok(Self::default());
        }
        let raw: HashMap<String, Environment> = serde_json::from_str(json).map_err(|e| {
            format!("must be a JSON object of host name to \"live\" or \"test\": {e}")
        })?;
        Self::from_pairs(raw)
    }

    /// From host names and environments.
    pub fn from_pairs(
        pairs: impl IntoIterator<Item = (String, Environment)>,
    ) -> Result<Self, String> {
        let mut map = HashMap::new();
        for (name, env) in pairs {
            let trimmed = name.trim();
            let has_port = if trimmed.starts_with('[') {
                !trimmed.ends_with(']')
            } else {
                trimmed.contains(':')
            };
            if has_port {
                return Err(format!(
                    "{name:?} has a port; ports are ignored, list the host name alone"
                ));
            }
            let host = host_name(trimmed)
                .filter(|h| !h.is_empty() && !h.contains(char::is_whitespace))
                .ok_or_else(|| format!("{name:?} is not a host name"))?;
            if map.insert(host, env).is_some_and(|old| old != env) {
                return Err(format!(
                    "{name:?} is listed twice with different environments"
                ));
            }
        }
        Ok(HostEnvironments { map })
    }

    /// Whether no host is mapped.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The rule for a request sent to `host` (a `Host` header value: a name or an IP literal,
    /// with an optional port). A missing host is unmapped.
    pub fn rule_for(&self, host: Option<&str>) -> EnvironmentRule {
        if self.map.is_empty() {
            return EnvironmentRule::Any;
        }
        match host.and_then(host_name).and_then(|h| self.map.get(&h)) {
            Some(&env) => EnvironmentRule::Only(env),
            None => EnvironmentRule::Unmapped,
        }
    }
}

/// A `Host` value reduced to its name: trimmed, ASCII-lowercased, without a port and without
/// one trailing dot (`API.Example.com.:443` → `api.example.com`). IPv6 literals keep their
/// brackets. `None` when a port is not a number.
fn host_name(value: &str) -> Option<String> {
    let v = value.trim();
    let name = if v.starts_with('[') {
        let end = v.find(']')?;
        // After the `]`: nothing, or `:` and a port. `strip_prefix` rather than slicing: the
        // byte after `]` may start a multi-byte character.
        let rest = &v[end + 1..];
        let port_ok = rest
            .strip_prefix(':')
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()));
        if !(rest.is_empty() || port_ok) {
            return None;
        }
        &v[..=end]
    } else {
        match v.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
            Some(_) => return None,
            None => v,
        }
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    Some(name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping() -> HostEnvironments {
        HostEnvironments::from_json(
            r#"{"API.example.com":"live","sandbox.example.com.":"test","[::1]":"test"}"#,
        )
        .expect("mapping")
    }

    #[test]
    fn hosts_map_ignoring_case_port_and_trailing_dot() {
        let m = mapping();
        for (host, rule) in [
            ("api.example.com", EnvironmentRule::Only(Environment::Live)),
            (
                "API.EXAMPLE.COM:443",
                EnvironmentRule::Only(Environment::Live),
            ),
            ("api.example.com.", EnvironmentRule::Only(Environment::Live)),
            (
                " api.example.com ",
                EnvironmentRule::Only(Environment::Live),
            ),
            (
                "sandbox.example.com:8787",
                EnvironmentRule::Only(Environment::Test),
            ),
            ("[::1]:8787", EnvironmentRule::Only(Environment::Test)),
            ("keygate-edge.acme.workers.dev", EnvironmentRule::Unmapped),
            ("api.example.com:x", EnvironmentRule::Unmapped),
            ("api.example.com.evil", EnvironmentRule::Unmapped),
        ] {
            assert_eq!(m.rule_for(Some(host)), rule, "{host}");
        }
        assert_eq!(m.rule_for(None), EnvironmentRule::Unmapped);
        let none = HostEnvironments::default();
        assert_eq!(none.rule_for(Some("anything")), EnvironmentRule::Any);
        assert_eq!(none.rule_for(None), EnvironmentRule::Any);
        assert!(!EnvironmentRule::Unmapped.allows(Environment::Live));
        assert!(EnvironmentRule::Any.allows(Environment::Test));
    }

    #[test]
    fn text_after_an_ipv6_literal_is_not_a_port() {
        // Found by the `host_environments` fuzz target: a multi-byte character right after `]`
        // was sliced into and panicked.
        let m = mapping();
        for host in [
            "[::1]\u{386}",
            "[::1]\u{e9}:80",
            "[::1]x",
            "[::1]:8a",
            "[::1]\u{386}:1",
        ] {
            assert_eq!(m.rule_for(Some(host)), EnvironmentRule::Unmapped, "{host}");
        }
        assert_eq!(
            m.rule_for(Some("[::1]:")),
            EnvironmentRule::Only(Environment::Test)
        );
        assert!(
            HostEnvironments::from_pairs([("[::1]\u{386}".to_owned(), Environment::Live)]).is_err()
        );
    }

    #[test]
    fn bad_mappings_are_refused() {
        for bad in [
            r#"{"api.example.com:443":"live"}"#,
            r#"{"":"live"}"#,
            r#"{"api.example.com":"prod"}"#,
            r#"["api.example.com"]"#,
            r#"{"a.example":"live","A.example":"test"}"#,
        ] {
            assert!(HostEnvironments::from_json(bad).is_err(), "{bad}");
        }
        assert!(HostEnvironments::from_json("  ").expect("empty").is_empty());
    }
}
