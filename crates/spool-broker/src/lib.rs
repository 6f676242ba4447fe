//! The broker: topics and their partitions on this node, produce, fetch and offsets.
//!
//! Partitions are written by one writer thread per data directory ([`writer`]), which
//! appends whatever produce requests have arrived, fsyncs each touched partition once, and
//! then answers them all: group commit. Reads go straight to the logs from any task. No
//! wire types here: the gRPC services translate at their edge.

mod broker;
mod error;
mod fetch;
mod partition;
mod store;
mod topic_config;
mod writer;

pub use broker::{
    AppendOutcome, Broker, BrokerOptions, NodeInfo, PartitionInfo, PartitionStats,
    ProducePartition, TopicInfo,
};
pub use error::BrokerError;
pub use fetch::{FetchChunk, FetchPartitionData, FetchPosition, FetchSpec};
pub use partition::Acks;
pub use topic_config::{TopicConfig, TopicConfigDefaults};

/// Offset semantics for [`Broker::list_offset`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetQuery {
    Earliest,
    Latest,
    /// The first record at or after this timestamp (ms).
    Timestamp(i64),
}
