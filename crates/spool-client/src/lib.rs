//! The Rust client for Spool. [`Client`] connects to a cluster through a bootstrap list
//! and offers typed calls: topics, produce, fetch streams, offsets. Wire types stay
//! inside this crate.

mod client;
mod error;
mod partitioner;
mod types;

pub use client::Client;
pub use error::{ApiError, ClientError};
pub use partitioner::{murmur2, partition_for_key};
pub use types::*;
