//! Keygate control plane: the HTTP API of docs/control-plane.md, snapshot publishing, and the
//! `keygate` CLI.
//!
//! Other crates use [`Config`] and [`Application`]:
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! // Listens on 127.0.0.1:0 (a free port) with SQLite in the data directory.
//! let mut config = keygate_control_plane::Config::new("/tmp/keygate-data");
//! config.bootstrap_token = Some("an-owner-token-of-at-least-32-characters".into());
//! let app = keygate_control_plane::Application::build(config).await?;
//! let base_url = format!("http://127.0.0.1:{}", app.port());
//! actix_web::rt::spawn(app.run_until_stopped());
//! # let _ = base_url;
//! # Ok(()) }
//! ```

pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod credentials;
pub mod delivery;
pub mod error;
pub mod extract;
pub mod files;
pub mod jobs;
pub mod keyring;
pub mod metrics;
pub mod routes;
pub mod scan;
pub mod snapshot;
pub mod ssrf;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod throttle;
pub mod verify;

pub use clock::Clock;

// The store (database, domain operations) is its own crate so that it cannot name the HTTP
// layer; these re-exports keep one path for it across the control plane.
pub use config::Config;
pub use keygate_store::{db, domain, ids, schemas, timefmt, with_backend, REDACTED};
pub use startup::Application;
