//! The shared runtime every Emporium service stands on.
//!
//! Services differ in their domains, not in how they start, log, measure, fail, authenticate
//! callers or reach their databases; all of that lives here so that each service crate holds
//! only what is its own.
#![forbid(unsafe_code)]

pub mod auth;
pub mod config;
pub mod db;
pub mod grpc;
pub mod health;
pub mod http;
pub mod metrics;
pub mod money;
pub mod pagination;
pub mod secrets;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod telemetry;
pub mod time;
pub mod tls;

pub use http::problem::{ErrorCode, FieldError, Problem};
