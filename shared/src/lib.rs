//! Keygate's shared core: the key format, the policy model and its matchers, the one
//! evaluation function, the signed snapshot format and the edge-to-origin signature.
//!
//! It has no server or runtime dependency and builds for `wasm32-unknown-unknown`. Domain
//! functions take the current time as a parameter (Unix milliseconds unless named otherwise):
//! on wasm32 the system clock is not available, and tests need to move time.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cidr;
pub mod eval;
pub mod host;
pub mod key;
pub mod limits;
pub mod origin;
pub mod path;
pub mod policy;
pub mod problem;
pub mod record;
pub mod referrer;
pub mod scan;
pub mod shard_store;
pub mod snapshot;
#[cfg(feature = "sql")]
pub mod sql;
pub mod webhook;

pub use cidr::IpNet;
pub use eval::{evaluate, Code, Evaluation, Lookup, Pending, RequestFacts, SnapshotView, Verdict};
pub use host::{EnvironmentRule, HostEnvironments};
pub use key::{Environment, KeyHash, KeyPrefix, Kind, PlaintextKey};
pub use limits::{admit, LimitDecision, LimitInfo, LimitState, Limits};
pub use policy::{
    DefaultRoutePolicy, KeyRecord, KeyStatus, Methods, ProjectPolicy, Quota, QuotaPeriod,
    RateLimit, Restrictions, Route, RouteMatching, RoutePath, Scope,
};
pub use referrer::{PatternError, ReferrerPattern};
pub use snapshot::{
    MemoryView, SignedSnapshot, SnapshotError, SnapshotIndex, SnapshotSigner, TrustedKeys,
    VerifiedManifest,
};
