//! Keygate shared crate.
