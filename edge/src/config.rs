//! The Worker's configuration, read once per isolate from its vars and secrets.

use std::collections::HashMap;

use keygate_shared::origin::OriginSigner;
use keygate_shared::{Environment, TrustedKeys};

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
    /// snapshot's own validity. Unset or 0: only the validity window applies.
    pub max_staleness_ms: Option<i64>,
    /// Hostnames limited to one environment (`HOST_ENVIRONMENTS`, JSON object).
    pub host_environments: HashMap<String, Environment>,
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
        let host_environments = match get("HOST_ENVIRONMENTS").filter(|v| !v.trim().is_empty()) {
            None => HashMap::new(),
            Some(json) => {
                let raw: HashMap<String, Environment> =
                    serde_json::from_str(&json).map_err(|e| {
                        err(
                            "HOST_ENVIRONMENTS",
                            format!("must be a JSON object of host to \"live\"|\"test\": {e}"),
                        )
                    })?;
                raw.into_iter()
                    .map(|(h, e)| (h.to_ascii_lowercase(), e))
                    .collect()
            }
        };
        let trusted_keys = TrustedKeys::from_base64url_list(&required("SNAPSHOT_PUBLIC_KEYS")?)
            .map_err(|e| err("SNAPSHOT_PUBLIC_KEYS", e.to_string()))?;
        if trusted_keys.is_empty() {
            return Err(err("SNAPSHOT_PUBLIC_KEYS", "lists no key"));
        }
        let max_staleness_ms =
            Some(seconds("SNAPSHOT_MAX_STALENESS_SECONDS", 0.0)?).filter(|&s| s > 0);
        Ok(EdgeConfig {
            control_plane_url,
            origin_url,
            refresh_ms: seconds("SNAPSHOT_REFRESH_SECONDS", 2.0)?.max(100),
            max_staleness_ms,
            host_environments,
            usage_flush_ms: seconds("USAGE_FLUSH_SECONDS", 10.0)?,
            edge_token: required("EDGE_TOKEN")?,
            trusted_keys,
            origin_signer: OriginSigner::new(required("ORIGIN_HMAC_SECRET")?.as_bytes()),
        })
    }

    /// The environment a host is limited to, if any. The port is ignored.
    pub fn environment_for_host(&self, host: &str) -> Option<Environment> {
        if self.host_environments.is_empty() {
            return None;
        }
        let name = host
            .rsplit_once(':')
            .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(h, _)| h);
        self.host_environments
            .get(&name.to_ascii_lowercase())
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            cfg.environment_for_host("api.example.com:443"),
            Some(Environment::Live)
        );
        assert_eq!(
            cfg.environment_for_host("sandbox.example.com"),
            Some(Environment::Test)
        );
        assert_eq!(cfg.environment_for_host("other.example.com"), None);
        assert_eq!(cfg.max_staleness_ms, None);

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
}
