//! The webhook SSRF guard: a webhook URL is resolved, and every address it resolves to must be
//! a public one. Loopback, private (RFC 1918), link-local (cloud metadata at 169.254.169.254
//! among them), carrier-grade NAT (100.64.0.0/10), IPv6 unique local (fc00::/7) and link-local
//! (fe80::/10), unspecified, multicast and reserved addresses are refused, and so are IPv6 forms
//! that embed such an IPv4 address (`::ffff:10.0.0.1`, `::10.0.0.1`, `64:ff9b::10.0.0.1`).
//!
//! The check runs when an endpoint is created or its URL changed, and again before every send:
//! DNS may answer differently later, so the sender connects only to the addresses it has just
//! checked (never resolving twice), and follows no redirects. An operator whose receivers are on
//! a private network sets `KEYGATE_WEBHOOK_ALLOW_PRIVATE=true`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs as _};
use std::sync::Arc;

/// Resolves a host name and port to socket addresses (blocking; run off the event loop).
pub type Resolver = Arc<dyn Fn(&str, u16) -> std::io::Result<Vec<SocketAddr>> + Send + Sync>;

/// The system's resolver (`getaddrinfo`).
pub fn system_resolver() -> Resolver {
    Arc::new(|host, port| Ok((host, port).to_socket_addrs()?.collect()))
}

/// Why a webhook target is refused or could not be checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// The host is, or resolves to, an address webhooks may not reach.
    #[error("{host} {verb} {ip}, {why}; webhooks may only reach public addresses (an operator can allow private ones with KEYGATE_WEBHOOK_ALLOW_PRIVATE=true)", verb = if host == &ip.to_string() { "is" } else { "resolves to" })]
    Forbidden {
        /// The URL's host.
        host: String,
        /// The refused address.
        ip: IpAddr,
        /// What kind of address it is.
        why: &'static str,
    },
    /// The host name does not resolve (now).
    #[error("cannot resolve {host}: {error}")]
    Unresolvable {
        /// The URL's host.
        host: String,
        /// The resolver's answer.
        error: String,
    },
    /// The URL has no host or port.
    #[error("{0}")]
    BadUrl(String),
}

/// What kind of non-public address `ip` is, or `None` for a public one.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => non_public_v6(v6),
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if a == 0 {
        Some("an unspecified address")
    } else if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_private() {
        Some("a private address")
    } else if ip.is_link_local() {
        Some("a link-local address (cloud metadata services live there)")
    } else if a == 100 && (64..128).contains(&b) {
        Some("a carrier-grade NAT address")
    } else if ip.is_multicast() || ip.is_broadcast() || a >= 240 {
        Some("a multicast or reserved address")
    } else {
        None
    }
}

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("an unspecified address");
    }
    if ip.is_loopback() {
        return Some("a loopback address");
    }
    // IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d) and NAT64 (64:ff9b::a.b.c.d)
    // forms reach the embedded IPv4 address.
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0) {
        return non_public_v4(embedded(s[6], s[7]));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return non_public_v4(embedded(s[6], s[7]));
    }
    match s[0] {
        x if x & 0xfe00 == 0xfc00 => Some("a unique local address"),
        x if x & 0xffc0 == 0xfe80 => Some("a link-local address"),
        x if x & 0xffc0 == 0xfec0 => Some("a site-local address"),
        x if x & 0xff00 == 0xff00 => Some("a multicast address"),
        _ => None,
    }
}

/// Resolves `url`'s host (with `resolver` unless it is an address already) and checks every
/// address; returns them, for the caller to connect to exactly those. With `allow_private`
/// nothing is refused.
pub async fn resolve_target(
    url: &url::Url,
    allow_private: bool,
    resolver: &Resolver,
) -> Result<Vec<SocketAddr>, TargetError> {
    let port = url
        .port_or_known_default()
        .ok_or_else(|| TargetError::BadUrl("the URL has no port".to_owned()))?;
    let (host, addrs) = match url.host() {
        Some(url::Host::Ipv4(ip)) => (ip.to_string(), vec![SocketAddr::new(ip.into(), port)]),
        Some(url::Host::Ipv6(ip)) => (ip.to_string(), vec![SocketAddr::new(ip.into(), port)]),
        Some(url::Host::Domain(d)) => {
            let host = d.to_owned();
            let resolver = resolver.clone();
            let name = host.clone();
            let resolved = actix_web::rt::task::spawn_blocking(move || resolver(&name, port))
                .await
                .map_err(|e| TargetError::Unresolvable {
                    host: host.clone(),
                    error: e.to_string(),
                })?
                .map_err(|e| TargetError::Unresolvable {
                    host: host.clone(),
                    error: e.to_string(),
                })?;
            if resolved.is_empty() {
                return Err(TargetError::Unresolvable {
                    host,
                    error: "no addresses".to_owned(),
                });
            }
            (host, resolved)
        }
        None => return Err(TargetError::BadUrl("the URL has no host".to_owned())),
    };
    if !allow_private {
        // Every address must be public: a name that resolves to one public and one private
        // address is refused, whichever the connection would have used.
        for a in &addrs {
            if let Some(why) = non_public(a.ip()) {
                return Err(TargetError::Forbidden {
                    host,
                    ip: a.ip(),
                    why,
                });
            }
        }
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_addresses() {
        for bad in [
            "127.0.0.1",
            "127.8.9.10",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.254",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::10.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ] {
            let ip: IpAddr = bad.parse().unwrap();
            assert!(non_public(ip).is_some(), "{bad} passed");
        }
        for good in [
            "93.184.215.14",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            let ip: IpAddr = good.parse().unwrap();
            assert_eq!(non_public(ip), None, "{good} refused");
        }
    }

    #[actix_web::test]
    async fn resolves_then_checks_every_address() {
        let resolver: Resolver = Arc::new(|host, port| match host {
            "mixed.example" => Ok(vec![
                SocketAddr::new("93.184.215.14".parse().unwrap(), port),
                SocketAddr::new("10.0.0.7".parse().unwrap(), port),
            ]),
            "public.example" => Ok(vec![SocketAddr::new(
                "93.184.215.14".parse().unwrap(),
                port,
            )]),
            _ => Err(std::io::Error::other("no such host")),
        });
        let url = |s: &str| url::Url::parse(s).unwrap();
        let ok = resolve_target(&url("https://public.example/x"), false, &resolver)
            .await
            .unwrap();
        assert_eq!(ok, vec!["93.184.215.14:443".parse().unwrap()]);
        let err = resolve_target(&url("http://mixed.example/"), false, &resolver)
            .await
            .unwrap_err();
        assert!(matches!(err, TargetError::Forbidden { .. }), "{err}");
        assert!(err
            .to_string()
            .contains("resolves to 10.0.0.7, a private address"));
        let err = resolve_target(&url("http://[::ffff:7f00:1]:8080/"), false, &resolver)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("loopback"), "{err}");
        // The URL parser's numeric forms are addresses too.
        let err = resolve_target(&url("http://0x7f.1/"), false, &resolver)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("is 127.0.0.1"), "{err}");
        assert!(
            resolve_target(&url("http://mixed.example/"), true, &resolver)
                .await
                .is_ok()
        );
        assert!(matches!(
            resolve_target(&url("http://nowhere.example/"), false, &resolver).await,
            Err(TargetError::Unresolvable { .. })
        ));
    }
}
