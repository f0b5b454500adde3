//! IP networks (`203.0.113.0/24`, `2001:db8::/32`, or a bare address) and membership.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use core::str::FromStr;

use serde::{Deserialize, Serialize};

/// An IPv4 or IPv6 network in canonical form (host bits cleared).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

/// Why a CIDR was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CidrError {
    /// The address part does not parse.
    #[error("invalid IP address in {0:?}")]
    Address(String),
    /// The prefix length is not a number in range.
    #[error("invalid prefix length in {0:?}")]
    PrefixLength(String),
    /// Host bits are set below the prefix (`10.0.0.1/8`): almost always a typo.
    #[error("{0:?} has host bits set; did you mean {1}?")]
    HostBits(String, String),
}

impl IpNet {
    /// Parses `addr` or `addr/len`.
    pub fn parse(s: &str) -> Result<Self, CidrError> {
        let (addr_s, len_s) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr = IpAddr::from_str(addr_s.trim()).map_err(|_| CidrError::Address(s.to_owned()))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match len_s {
            None => max,
            Some(l) => {
                // Digits only: `u8::from_str` would accept a leading `+`.
                if l.is_empty() || l.len() > 3 || !l.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(CidrError::PrefixLength(s.to_owned()));
                }
                let n: u8 = l
                    .parse()
                    .map_err(|_| CidrError::PrefixLength(s.to_owned()))?;
                if n > max {
                    return Err(CidrError::PrefixLength(s.to_owned()));
                }
                n
            }
        };
        let net = IpNet {
            addr: mask(addr, prefix),
            prefix,
        };
        if net.addr != addr {
            return Err(CidrError::HostBits(s.to_owned(), net.to_string()));
        }
        Ok(net)
    }

    /// Whether `ip` lies in this network. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`)
    /// are compared as IPv4, since proxies report either form.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) if self.addr.is_ipv4() => IpAddr::V4(v4),
                _ => IpAddr::V6(v6),
            },
            v4 => v4,
        };
        if ip.is_ipv4() != self.addr.is_ipv4() {
            return false;
        }
        mask(ip, self.prefix) == self.addr
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }
    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix
    }
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix))
            };
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix))
            };
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

impl IpNet {
    /// From the binary form a snapshot carries: 4 or 16 address bytes and a prefix length, with
    /// no host bits set.
    pub fn from_parts(bytes: &[u8], prefix: u8) -> Option<IpNet> {
        let addr = match bytes.len() {
            4 => {
                let mut o = [0u8; 4];
                o.copy_from_slice(bytes);
                IpAddr::V4(Ipv4Addr::from(o))
            }
            16 => {
                let mut o = [0u8; 16];
                o.copy_from_slice(bytes);
                IpAddr::V6(Ipv6Addr::from(o))
            }
            _ => return None,
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max && mask(addr, prefix) == addr).then_some(IpNet { addr, prefix })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for IpNet {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IpNet::parse(s)
    }
}

impl Serialize for IpNet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            let bytes: Vec<u8> = match self.addr {
                IpAddr::V4(a) => a.octets().to_vec(),
                IpAddr::V6(a) => a.octets().to_vec(),
            };
            (bytes, self.prefix).serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            IpNet::parse(&s).map_err(D::Error::custom)
        } else {
            let (bytes, prefix) = <(Vec<u8>, u8)>::deserialize(d)?;
            IpNet::from_parts(&bytes, prefix).ok_or_else(|| D::Error::custom("invalid network"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn v4_and_v6() {
        let n = IpNet::parse("203.0.113.0/24").expect("net");
        assert!(n.contains(ip("203.0.113.7")));
        assert!(!n.contains(ip("203.0.114.7")));
        assert!(n.contains(ip("::ffff:203.0.113.9")));
        let n6 = IpNet::parse("2001:db8::/32").expect("net");
        assert!(n6.contains(ip("2001:db8:1::5")));
        assert!(!n6.contains(ip("2001:db9::1")));
        assert!(!n6.contains(ip("203.0.113.7")));
        let single = IpNet::parse("198.51.100.4").expect("net");
        assert_eq!(single.prefix_len(), 32);
        assert!(single.contains(ip("198.51.100.4")));
        assert!(!single.contains(ip("198.51.100.5")));
        assert!(IpNet::parse("0.0.0.0/0")
            .expect("all")
            .contains(ip("8.8.8.8")));
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            "1.2.3",
            "1.2.3.4/33",
            "::/129",
            "1.2.3.0/",
            "1.2.3.0/+8",
            "10.0.0.1/8",
            "a.b.c.d/8",
            "1.2.3.4/24/1",
        ] {
            assert!(IpNet::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn binary_round_trip() {
        for s in ["10.0.0.0/8", "2001:db8::/32", "::1/128"] {
            let n = IpNet::parse(s).expect("net");
            let bytes = postcard::to_allocvec(&n).expect("encode");
            let back: IpNet = postcard::from_bytes(&bytes).expect("decode");
            assert_eq!(n, back);
            let json = serde_json::to_string(&n).expect("json");
            assert_eq!(json, format!("\"{s}\""));
        }
    }
}
