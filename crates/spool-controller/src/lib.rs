//! The metadata controller: a Raft group (group 0) whose log holds the cluster's
//! metadata as records, which every node applies to the same [`ClusterState`].
//!
//! - [`state`]: brokers, topics, placement and reported leaders, and `apply`.
//! - [`records`]: the records of the metadata log and their encoding.
//! - [`placement`]: where replicas go (pure functions).
//! - [`Controller`]: this node's replica of the group; on the leader, the commands that
//!   change metadata, broker leases and fencing, repairs, drains and leadership balance.
//! - [`ControllerService`]: the gRPC service commands are forwarded through.

mod api;
mod applier;
mod bootstrap;
mod commands;
mod controller;
mod error;
mod leader;
pub mod placement;
pub mod records;
mod remote;
mod service;
pub mod state;

pub use api::{AgentStatus, LeaderSource};
pub use commands::{Command, HeartbeatReply, NewTopic, Registration, random_id};
pub use controller::{
    ConfigValidator, Controller, ControllerOptions, DEFAULT_CHECKPOINT_BYTES, METADATA_GROUP,
    TopicDefaults,
};
pub use error::ControllerError;
pub use remote::{TxnMarkers, to_wire};
pub use service::ControllerService;
pub use state::{
    BrokerId, BrokerLoad, BrokerRecord, ClusterState, Incarnation, LeaderReport, PartitionRecord,
    ReplicaRef, TopicRecord,
};

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
