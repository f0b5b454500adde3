//! End-to-end test support.

pub mod cache;
pub mod example_app;
pub mod fixtures;
pub mod http;
pub mod origin;
pub mod seed;
pub mod stack;
pub mod workerd;
