//! The `emporium` binary's library: settings, starting services, and the operator commands, so
//! that tests and the load generator start the shop exactly as `emporium serve` does.
#![forbid(unsafe_code)]

pub mod bench;
pub mod scenarios;
pub mod seed;
pub mod settings;
pub mod shop;

pub use settings::Settings;
pub use shop::{Service, Shop};
