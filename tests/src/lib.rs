//! End-to-end test support.

pub mod http;
pub mod workerd;
