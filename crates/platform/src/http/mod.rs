//! HTTP building blocks shared by every service: the error model, request extractors, the
//! request-id and trace-context middleware, and the router pieces every service mounts.

pub mod client;
pub mod context;
pub mod extract;
pub mod openapi;
pub mod problem;

pub use context::{RequestContext, TraceContext};

/// Bodies larger than this are refused with 413 unless a route says otherwise.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;
pub use extract::{ApiJson, ApiPath, ApiQuery, Fields, Input};
