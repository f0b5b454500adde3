//! The Worker's configuration, read once per isolate from its vars and secrets.

use keygate_shared::origin::OriginSigner;
use keygate_shared::{EnvironmentRule, HostEnvironments, TrustedKeys};

/// How long a snapshot the control plane has not confirmed keeps deciding when
/// `SNAPSHOT_MAX_STALENESS_SECONDS` is unset: during that long a key revoked while the edge
/// cannot reach the control plane still works; after it, the edge answers 503.
pub const DEFAULT_MAX_STALENESS_SECONDS: f64 = 600.0;

/// Parsed configuration.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Base URL of the control plane (`CONTROL_PLANE_URL`).
    pub control_plane_url: String,
    /// Base URL of the origin (`ORIGIN_URL`).
    pub origin_url: String,
    /// How often an isolate asks for a newer snapshot (`SNAPSHOT_REFRESH_SECONDS`, default 2).
    pub refresh_ms: i64,
    /// Optional bound on how long ago the snapshot was last confirmed by the control plane
    /// (`SNAPSHOT_MAX_STALENESS_SECONDS`); past it the edge fails closed even inside the
    /// snapshot's own validity. Unset: [`DEFAULT_MAX_STALENESS_SECONDS`]; 0: only the validity
    /// window applies.
    pub max_staleness_ms: Option<i64>,
    /// Hostnames limited to one environment (`HOST_ENVIRONMENTS`, JSON object); once any is
    /// listed, other hosts are refused.
    pub host_environments: HostEnvironments,
    /// How often usage counts are posted (`USAGE_FLUSH_SECONDS`, default 10).
    pub usage_flush_ms: i64,
    /// Token with the `edge` role (`EDGE_TOKEN`).
    pub edge_token: String,
    /// Trusted snapshot signing keys (`SNAPSHOT_PUBLIC_KEYS`).
    pub trusted_keys: TrustedKeys,
    /// Secret shared with the origin for `Keygate-Signature` (`ORIGIN_HMAC_SECRET`).
    pub origin_signer: OriginSigner,
}

/// A configuration problem, named by its variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}: {problem}")]
pub struct ConfigError {
    /// The variable.
    pub name: &'static str,
    /// What is wrong.
    pub problem: String,
}

fn err(name: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        name,
        problem: problem.into(),
    }
}

impl EdgeConfig {
    /// Reads the configuration through `get`, which returns a var's or secret's value.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let required = |name: &'static str| {
            get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| err(name, "is not set"))
        };
        let seconds = |name: &'static str, default: f64| -> Result<i64, ConfigError> {
            match get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
            {
                None => Ok((default * 1000.0) as i64),
                Some(v) => v
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .map(|s| (s * 1000.0) as i64)
                    .ok_or_else(|| err(name, format!("{v:?} is not a number of seconds"))),
            }
        };
        let control_plane_url = required("CONTROL_PLANE_URL")?
            .trim_end_matches('/')
            .to_owned();
        let origin_url = required("ORIGIN_URL")?.trim_end_matches('/').to_owned();
        for (name, url) in [
            ("CONTROL_PLANE_URL", &control_plane_url),
            ("ORIGIN_URL", &origin_url),
        ] {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(err(name, "must be an http(s) URL"));
            }
        }
        // Snapshots and the edge token travel on this link: whoever could read or answer it in
        // plain text could replay an older snapshot or answer 304 forever.
        if !control_plane_url.starts_with("https://") && !is_loopback_url(&control_plane_url) {
            return Err(err(
                "CONTROL_PLANE_URL",
                "must be https (plain http only to a loopback address, for local runs)",
            ));
        }
        let host_environments =
            HostEnvironments::from_json(&get("HOST_ENVIRONMENTS").unwrap_or_default())
                .map_err(|e| err("HOST_ENVIRONMENTS", e))?;
        let sign_v1 = match get("ORIGIN_SIGNATURE_V1").as_deref().map(str::trim) {
            None | Some("" | "false" | "0") => false,
            Some("true" | "1") => true,
            Some(v) => {
                return Err(err(
                    "ORIGIN_SIGNATURE_V1",
                    format!("{v:?} is not true or false"),
                ))
            }
        };
        let trusted_keys = TrustedKeys::from_base64url_list(&required("SNAPSHOT_PUBLIC_KEYS")?)
            .map_err(|e| err("SNAPSHOT_PUBLIC_KEYS", e.to_string()))?;
        if trusted_keys.is_empty() {
            return Err(err("SNAPSHOT_PUBLIC_KEYS", "lists no key"));
        }
        let max_staleness_ms = Some(seconds(
            "SNAPSHOT_MAX_STALENESS_SECONDS",
            DEFAULT_MAX_STALENESS_SECONDS,
        )?)
        .filter(|&s| s > 0);
        Ok(EdgeConfig {
            control_plane_url,
            origin_url,
            refresh_ms: seconds("SNAPSHOT_REFRESH_SECONDS", 2.0)?.max(100),
            max_staleness_ms,
            host_environments,
            usage_flush_ms: seconds("USAGE_FLUSH_SECONDS", 10.0)?,
            edge_token: required("EDGE_TOKEN")?,
            trusted_keys,
            origin_signer: OriginSigner::new(required("ORIGIN_HMAC_SECRET")?.as_bytes())
                .with_v1(sign_v1),
        })
    }

    /// Which environments a request to `host` may use.
    pub fn environment_for_host(&self, host: Option<&str>) -> EnvironmentRule {
        self.host_environments.rule_for(host)
    }
}

/// Whether a URL's host is a loopback address (`127.0.0.0/8`, `[::1]`, `localhost`).
fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return false;
    }
    let host = if authority.starts_with('[') {
        authority
            .split(']')
            .next()
            .map(|h| &h[1..])
            .unwrap_or_default()
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate_shared::Environment;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    const PK: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

    #[test]
    fn parses_and_reports_missing() {
        let base = [
            ("CONTROL_PLANE_URL", "http://127.0.0.1:8080/"),
            ("ORIGIN_URL", "http://127.0.0.1:8788"),
            ("EDGE_TOKEN", "tok"),
            ("SNAPSHOT_PUBLIC_KEYS", PK),
            ("ORIGIN_HMAC_SECRET", "s"),
            (
                "HOST_ENVIRONMENTS",
                r#"{"API.example.com":"live","sandbox.example.com":"test"}"#,
            ),
            ("SNAPSHOT_REFRESH_SECONDS", "0.5"),
        ];
        let cfg = EdgeConfig::from_lookup(lookup(&base)).expect("config");
        assert_eq!(cfg.control_plane_url, "http://127.0.0.1:8080");
        assert_eq!(cfg.refresh_ms, 500);
        assert_eq!(
            cfg.environment_for_host(Some("api.example.com:443")),
            EnvironmentRule::Only(Environment::Live)
        );
        assert_eq!(
            cfg.environment_for_host(Some("sandbox.example.com")),
            EnvironmentRule::Only(Environment::Test)
        );
        assert_eq!(
            cfg.environment_for_host(Some("keygate-edge.acme.workers.dev")),
            EnvironmentRule::Unmapped
        );
        assert_eq!(cfg.max_staleness_ms, Some(600_000));

        let missing: Vec<_> = base
            .iter()
            .copied()
            .filter(|(k, _)| *k != "EDGE_TOKEN")
            .collect();
        assert_eq!(
            EdgeConfig::from_lookup(lookup(&missing))
                .expect_err("missing")
                .name,
            "EDGE_TOKEN"
        );
        let mut bad = base.to_vec();
        bad.push(("SNAPSHOT_REFRESH_SECONDS", "soon"));
        bad.remove(6);
        assert_eq!(
            EdgeConfig::from_lookup(lookup(&bad)).expect_err("bad").name,
            "SNAPSHOT_REFRESH_SECONDS"
        );
    }

    #[test]
    fn the_control_plane_is_reached_over_https_except_on_loopback() {
        let with = |url: &str| {
            let mut pairs = vec![
                ("ORIGIN_URL", "https://origin.example.com"),
                ("EDGE_TOKEN", "tok"),
                ("SNAPSHOT_PUBLIC_KEYS", PK),
                ("ORIGIN_HMAC_SECRET", "s"),
            ];
            pairs.push(("CONTROL_PLANE_URL", url));
            EdgeConfig::from_lookup(lookup(&pairs)).map(|_| ())
        };
        for ok in [
            "https://keygate.example.com",
            "http://127.0.0.1:8080",
            "http://127.9.0.1",
            "http://[::1]:8080/",
            "http://localhost:8080",
        ] {
            assert_eq!(with(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://keygate.example.com",
            "http://10.0.0.1:8080",
            "http://127.0.0.1.evil.example",
            "http://localhost@evil.example",
        ] {
            assert_eq!(with(bad).expect_err(bad).name, "CONTROL_PLANE_URL", "{bad}");
        }
    }
}
