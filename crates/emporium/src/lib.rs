//! The `emporium` binary's library: the shop as the binary starts it, and the operator
//! commands that are more than a call, so that tests use exactly what `emporium` runs.
#![forbid(unsafe_code)]

pub mod bench_shop;
pub mod cluster;
pub mod seed;

pub use shop::{Service, Settings, Shop};
