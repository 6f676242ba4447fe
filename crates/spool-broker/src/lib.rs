//! The broker: topics and their partitions on this node, produce, fetch and offsets.
//!
//! Every partition is a Raft group (spool-raft) whose log is the partition log; a single
//! node runs groups of one. Appends of all partitions share one flusher per node (group
//! commit). Reads go straight to the logs from any task, bounded by the high watermark.
//! No wire types here: the gRPC services translate at their edge.

mod broker;
mod cluster;
mod coordinator;
mod error;
mod fetch;
mod groups;
mod identity;
mod partition;
mod producer_ids;
mod reconcile;
mod replicas;
mod topic_config;
mod topics;
mod transactions;

pub use broker::{
    AppendOutcome, Broker, BrokerOptions, NodeAddress, NodeInfo, PartitionInfo, PartitionStats,
    ProducePartition, TopicInfo,
};
pub use cluster::{BrokerSummary, ClusterSummary};
pub use error::BrokerError;
pub use fetch::{FETCH_MEMORY_BYTES, FetchChunk, FetchPartitionData, FetchPosition, FetchSpec};
pub use groups::{
    GroupDescription, GroupListing, GroupOptions, GroupStats, MemberDescription, OFFSETS_TOPIC,
    OffsetEntry, REBALANCE_BUCKETS, RebalanceSnapshot,
};
pub use partition::Acks;
pub use producer_ids::ProducerIdentity;
pub use spool_controller::{
    AgentStatus, ClusterState, Controller, ControllerService, DEFAULT_CHECKPOINT_BYTES, TxnMarkers,
};
pub use spool_raft::{DEFAULT_PRODUCER_EXPIRY, RaftNode, RaftTiming};
pub use spool_txn::TxnConfig;
pub use topic_config::{TopicConfig, TopicConfigDefaults};
pub use transactions::{
    OpenTransaction, TRANSACTIONS_TOPIC, TransactionDescription, TransactionListing,
    TransactionOptions,
};

/// Offset semantics for [`Broker::list_offset`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetQuery {
    Earliest,
    Latest,
    /// The last stable offset: where a read_committed reader's end is.
    LastStable,
    /// The first record at or after this timestamp (ms).
    Timestamp(i64),
}
