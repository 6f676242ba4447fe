//! A Spool node: configuration in, listeners and services up, a clean shutdown out.

mod config;
mod error;
mod http;
mod metrics;
mod node;
mod services;

pub use config::{FlushSetting, ServerConfig};
pub use error::ServerError;
pub use node::{Node, NodeHandle, ShutdownReport};
