//! Login throttling: failed logins are counted per account (the email as typed, normalised,
//! whether or not it exists) and per client address (an IPv4 address, or the /64 of an IPv6
//! one). Past a number of free failures each further failure blocks that account or address
//! for an exponentially growing time (1 s, 2 s, 4 s, ... capped at 15 minutes); while either is
//! blocked a login is answered `429 login_throttled` with `Retry-After`, before any password
//! hashing. A successful login clears its account's count (not its address's: one known
//! password must not buy more guesses at other accounts). Counts are forgotten after an hour
//! without failures.
//!
//! State is in memory, per process: replicas each throttle on their own. Time comes from
//! [`crate::Clock`], so tests move time rather than sleep.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Failures per account before the first block.
pub const ACCOUNT_FREE_FAILURES: u32 = 5;
/// Failures per client address before the first block: higher, since several people may share
/// an address (an office, a NAT).
pub const ADDRESS_FREE_FAILURES: u32 = 20;
/// The first block.
pub const BASE_BLOCK_MS: i64 = 1_000;
/// The longest block.
pub const MAX_BLOCK_MS: i64 = 15 * 60 * 1_000;
/// A count is forgotten this long after its last failure.
pub const FORGET_AFTER_MS: i64 = 60 * 60 * 1_000;
/// Entries kept before expired ones are swept (and, beyond twice this, the oldest dropped).
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    failures: u32,
    blocked_until_ms: i64,
    last_failure_ms: i64,
}

/// What is throttled.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Subject {
    Account(String),
    Address(String),
}

/// Failed-login counters of one process.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    entries: Mutex<HashMap<Subject, Entry>>,
}

/// The throttling key of a client address: IPv6 by its /64 (one host usually holds a whole
/// /64), IPv4-mapped IPv6 as IPv4.
pub fn address_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// The client's address: the connection's peer, or, when the peer is one of the
/// `trusted` proxies, the right-most `X-Forwarded-For` entry that is not a trusted proxy
/// (entries left of it could be written by the client).
pub fn client_address(
    req: &actix_web::HttpRequest,
    trusted: &[keygate_shared::IpNet],
) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    let forwarded: Vec<IpAddr> = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    Some(
        forwarded
            .iter()
            .rev()
            .copied()
            .find(|ip| !is_trusted(*ip))
            .or_else(|| forwarded.first().copied())
            .unwrap_or(peer),
    )
}

impl LoginThrottle {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Subject, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn subjects(email: &str, address: Option<IpAddr>) -> Vec<Subject> {
        let mut s = vec![Subject::Account(email.trim().to_lowercase())];
        if let Some(ip) = address {
            s.push(Subject::Address(address_key(ip)));
        }
        s
    }

    /// Starts a login attempt for `email` from `address`: `Err(ms)` when either is blocked for
    /// `ms` more milliseconds (nothing is counted then). Otherwise the attempt is counted as a
    /// failure at once, so that a burst of concurrent attempts cannot all pass before the first
    /// one is judged; [`LoginThrottle::succeeded`] takes it back.
    pub fn begin(&self, email: &str, address: Option<IpAddr>, now_ms: i64) -> Result<(), i64> {
        let subjects = Self::subjects(email, address);
        let mut entries = self.lock();
        let wait = subjects
            .iter()
            .filter_map(|s| entries.get(s))
            .map(|e| e.blocked_until_ms - now_ms)
            .filter(|wait| *wait > 0)
            .max();
        if let Some(wait) = wait {
            return Err(wait);
        }
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, e| {
                e.blocked_until_ms > now_ms || now_ms - e.last_failure_ms < FORGET_AFTER_MS
            });
            if entries.len() >= 2 * MAX_ENTRIES {
                // Flooded with distinct subjects: start over rather than grow without bound.
                entries.clear();
            }
        }
        for subject in subjects {
            let free = match subject {
                Subject::Account(_) => ACCOUNT_FREE_FAILURES,
                Subject::Address(_) => ADDRESS_FREE_FAILURES,
            };
            let e = entries.entry(subject).or_default();
            if now_ms - e.last_failure_ms >= FORGET_AFTER_MS {
                *e = Entry::default();
            }
            e.failures = e.failures.saturating_add(1);
            e.last_failure_ms = now_ms;
            if e.failures >= free {
                let doublings = (e.failures - free).min(30);
                let block = BASE_BLOCK_MS
                    .saturating_mul(1_i64 << doublings)
                    .min(MAX_BLOCK_MS);
                e.blocked_until_ms = now_ms + block;
            }
        }
        Ok(())
    }

    /// The attempt begun for `email` from `address` had the right password: the account's
    /// count starts over, and the address's loses this attempt (but keeps earlier failures: one
    /// known password must not buy more guesses at other accounts).
    pub fn succeeded(&self, email: &str, address: Option<IpAddr>) {
        let mut entries = self.lock();
        entries.remove(&Subject::Account(email.trim().to_lowercase()));
        if let Some(ip) = address {
            if let Some(e) = entries.get_mut(&Subject::Address(address_key(ip))) {
                e.failures = e.failures.saturating_sub(1);
                if e.failures < ADDRESS_FREE_FAILURES {
                    e.blocked_until_ms = 0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_grow_exponentially_and_lift() {
        let t = LoginThrottle::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let now = 1_000_000;
        for _ in 0..ACCOUNT_FREE_FAILURES {
            assert_eq!(t.begin("A@x.io", Some(ip), now), Ok(()));
        }
        assert_eq!(t.begin("a@x.io", Some(ip), now), Err(BASE_BLOCK_MS));
        assert_eq!(t.begin("a@x.io", None, now + 400), Err(BASE_BLOCK_MS - 400));
        // Another account from another address is not affected.
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(t.begin("b@x.io", Some(other), now), Ok(()));
        // Once the block has passed, one more failure doubles it.
        assert_eq!(t.begin("a@x.io", Some(ip), now + BASE_BLOCK_MS), Ok(()));
        assert_eq!(
            t.begin("a@x.io", Some(ip), now + BASE_BLOCK_MS),
            Err(2 * BASE_BLOCK_MS)
        );
        t.succeeded("a@x.io", Some(ip));
        assert_eq!(t.begin("a@x.io", Some(ip), now + BASE_BLOCK_MS), Ok(()));
    }

    #[test]
    fn addresses_are_throttled_across_accounts() {
        let t = LoginThrottle::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for i in 0..ADDRESS_FREE_FAILURES {
            assert_eq!(t.begin(&format!("u{i}@x.io"), Some(ip), 0), Ok(()));
        }
        assert_eq!(t.begin("new@x.io", Some(ip), 0), Err(BASE_BLOCK_MS));
        assert_eq!(t.begin("new@x.io", None, 0), Ok(()));
    }

    #[test]
    fn blocks_are_capped_and_forgotten() {
        let t = LoginThrottle::default();
        let (mut now, mut counted) = (0, 0);
        while counted < 25 {
            match t.begin("a@x.io", None, now) {
                Ok(()) => counted += 1,
                Err(wait) => {
                    assert!(wait <= MAX_BLOCK_MS);
                    now += wait;
                }
            }
        }
        assert_eq!(t.begin("a@x.io", None, now), Err(MAX_BLOCK_MS));
        now += MAX_BLOCK_MS + FORGET_AFTER_MS;
        for _ in 0..ACCOUNT_FREE_FAILURES {
            assert_eq!(t.begin("a@x.io", None, now), Ok(()));
        }
    }

    #[test]
    fn ipv6_is_throttled_per_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(address_key(mapped), "192.0.2.7");
    }
}
