//! Control plane API tests. Every test body runs against SQLite and, as an ignored variant that
//! `cargo xtask test` runs, against PostgreSQL at `KEYGATE_TEST_POSTGRES_URL` (see `helpers`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod helpers;

mod accounts;
mod alerts;
mod cli;
mod console;
mod faults;
mod fuzz_findings;
mod golden;
mod keys;
mod leaks;
mod login_flood;
mod projects;
mod publish;
mod redaction;
mod replicas;
mod roles;
mod scan;
mod snapshot;
mod system;
mod usage;
mod validation;
mod verify;
mod webhooks;
