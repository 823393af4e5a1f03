//! The shop as one process: the settings of every service (defaults → `--config FILE` →
//! `EMPORIUM_*`), and [`Shop`], which starts any set of the services side by side, each on its
//! own port and talking to the others over HTTP and gRPC exactly as separate deployments do.
//! The binary, the load generator and the end-to-end tests all start services through it.
#![forbid(unsafe_code)]

mod settings;
mod shop;

pub use settings::Settings;
pub use shop::{Service, Shop};
