//! The one place that reads the system clock. Everything else takes `now` as a parameter, so
//! tests can move time (a rotation's grace period, an expiry) without sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// The process clock: the system clock, or a manual one that tests set.
#[derive(Debug, Clone)]
pub struct Clock(Arc<Source>);

#[derive(Debug)]
enum Source {
    System,
    Manual(AtomicI64),
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Clock(Arc::new(Source::System))
    }

    /// A clock that stays at `now_ms` until it is set or advanced.
    pub fn manual(now_ms: i64) -> Self {
        Clock(Arc::new(Source::Manual(AtomicI64::new(now_ms))))
    }

    /// A manual clock starting at the current system time.
    pub fn manual_from_system() -> Self {
        Clock::manual(Clock::system().now_ms())
    }

    /// Now, in Unix milliseconds.
    #[allow(clippy::disallowed_methods)]
    pub fn now_ms(&self) -> i64 {
        match &*self.0 {
            Source::System => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            Source::Manual(t) => t.load(Ordering::SeqCst),
        }
    }

    /// Sets a manual clock; no effect on the system clock.
    pub fn set_ms(&self, now_ms: i64) {
        if let Source::Manual(t) = &*self.0 {
            t.store(now_ms, Ordering::SeqCst);
        }
    }

    /// Advances a manual clock by `ms`; no effect on the system clock.
    pub fn advance_ms(&self, ms: i64) {
        if let Source::Manual(t) = &*self.0 {
            t.fetch_add(ms, Ordering::SeqCst);
        }
    }
}
