//! Credentials as values live in the store ([`keygate_store::credentials`]: roles, tokens,
//! session keys); this module adds the request layer's cache of resolved tokens.

pub use keygate_store::credentials::*;

/// How long a resolved API token is trusted without a lookup. Deleting a token clears the cache
/// of the process that deleted it at once; other replicas notice within this time.
pub const TOKEN_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);
const TOKEN_CACHE_MAX: usize = 10_000;

/// Resolved API tokens by hash, for [`TOKEN_CACHE_TTL`]: saves a database round trip on the
/// hot paths (`/v1/verify`, snapshot polling). Uses the monotonic clock, not [`crate::Clock`]:
/// it bounds staleness in real time.
#[derive(Debug, Default)]
pub struct TokenCache {
    entries: std::sync::Mutex<std::collections::HashMap<String, (Principal, std::time::Instant)>>,
}

impl TokenCache {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, (Principal, std::time::Instant)>>
    {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn get(&self, hash: &str) -> Option<Principal> {
        let entries = self.lock();
        let (p, at) = entries.get(hash)?;
        (at.elapsed() < TOKEN_CACHE_TTL).then(|| p.clone())
    }

    pub(crate) fn put(&self, hash: String, p: Principal) {
        let mut entries = self.lock();
        if entries.len() >= TOKEN_CACHE_MAX {
            entries.clear();
        }
        entries.insert(hash, (p, std::time::Instant::now()));
    }

    /// Forgets every token (after a deletion).
    pub fn clear(&self) {
        self.lock().clear();
    }
}
