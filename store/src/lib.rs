//! Keygate's store: the database (both backends, schema, migrations) and the domain operations
//! on it. Each operation takes a connection and `now`, checks its input, and writes its change
//! with its audit entry in one transaction. Nothing here knows HTTP: errors are [`StoreError`],
//! which the control plane maps to its API errors in one place.

pub mod credentials;
pub mod db;
pub mod domain;
pub mod error;
pub mod ids;
#[cfg(feature = "openapi")]
pub mod schemas;
#[cfg(feature = "seed")]
pub mod seed;
pub mod timefmt;

pub use error::{ConflictCode, StoreError};

/// What `Debug` prints in place of a plaintext key, token, password or webhook secret.
pub const REDACTED: &str = "<redacted>";
