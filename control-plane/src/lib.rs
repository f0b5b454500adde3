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
pub mod db;
pub mod delivery;
pub mod domain;
pub mod error;
pub mod extract;
pub mod files;
pub mod ids;
pub mod jobs;
pub mod keyring;
pub mod metrics;
pub mod routes;
pub mod scan;
pub mod schemas;
pub mod snapshot;
pub mod ssrf;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod throttle;
pub mod timefmt;
pub mod verify;

pub use clock::Clock;

/// What `Debug` prints in place of a plaintext key, token, password or webhook secret.
pub const REDACTED: &str = "<redacted>";
pub use config::Config;
pub use startup::Application;
