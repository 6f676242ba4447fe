//! The Raft transport between nodes (spool.v1 RaftTransport): one tonic service on the
//! node's gRPC port, every message tagged with its group; one cached channel per peer;
//! replication as a native gRPC stream; heartbeats coalesced per destination node; a
//! fault layer for tests.

mod client;
mod convert;
mod faults;
mod peers;
mod service;

pub use client::{GroupClient, GroupNetworkFactory};
pub use faults::{Faults, Verdict};
pub use peers::PeerPool;
pub use service::{GroupDirectory, RaftTransportService};
