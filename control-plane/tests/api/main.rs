//! Control plane API tests. Every test body runs against SQLite and, when
//! `KEYGATE_TEST_POSTGRES_URL` is set, PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod helpers;

mod accounts;
mod alerts;
mod cli;
mod golden;
mod keys;
mod leaks;
mod projects;
mod redaction;
mod roles;
mod scan;
mod snapshot;
mod system;
mod usage;
mod validation;
mod verify;
mod webhooks;
