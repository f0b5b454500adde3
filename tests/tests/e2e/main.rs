//! End-to-end tests: one test binary, one module per area.
//!
//! The edge tests run the Worker that `cargo xtask build-edge` left in `edge/build/` in the real
//! runtime (`workerd`, installed by `npm ci`); `cargo xtask test` builds it first.

mod alerts;
mod browser;
mod differential;
mod edge_runtime;
mod gate;
mod pipeline;
mod replicas;
mod shard_cache;
mod shards;
mod snapshot_trust;
