//! What the client's calls take and return.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;

use crate::error::ApiError;
pub use spool_types::IsolationLevel;

/// When a produce call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acks {
    /// Once committed and durable (Kafka acks=all).
    #[default]
    All,
    /// Once the leader has appended (acks=1).
    Leader,
    /// Without waiting (acks=0).
    None,
}

/// What a produce call answered: one result per partition, in request order, and the
/// node's metadata epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceOutcome {
    pub partitions: Vec<Result<Produced, crate::ApiError>>,
    pub metadata_epoch: u64,
}

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewTopic {
    pub name: String,
    /// 0 for the broker's default.
    pub partitions: u32,
    /// 0 for the broker's default.
    pub replication_factor: u32,
    pub configs: BTreeMap<String, String>,
    /// Optional: each partition's replicas (broker ids), the preferred leader first.
    pub assignments: Vec<Vec<u64>>,
}

/// The cluster as `describe_cluster` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDescription {
    pub cluster_id: String,
    /// `None` when no controller leader is known.
    pub controller_leader: Option<u64>,
    pub controller_voters: Vec<u64>,
    pub brokers: Vec<ClusterBroker>,
    pub metadata_epoch: u64,
    pub under_replicated_partitions: u32,
    pub moving_partitions: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterBroker {
    pub id: u64,
    pub address: String,
    pub rack: Option<String>,
    pub fenced: bool,
    pub draining: bool,
    /// Replicas placed on it.
    pub replicas: u32,
    /// Partitions it leads.
    pub leaders: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSummary {
    pub name: String,
    pub partitions: u32,
    pub replication_factor: u32,
    pub internal: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    pub name: String,
    pub topic_id: String,
    pub replication_factor: u32,
    pub partitions: Vec<PartitionDescription>,
    pub configs: Vec<ConfigEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionDescription {
    pub partition: u32,
    pub leader: u64,
    pub replicas: Vec<u64>,
    pub in_sync_replicas: Vec<u64>,
    pub log_start_offset: i64,
    pub high_watermark: i64,
    pub size_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    pub value: String,
    pub is_default: bool,
}

/// The cluster as a metadata call describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMetadata {
    pub cluster_id: String,
    pub epoch: u64,
    pub brokers: Vec<MetadataBroker>,
    pub topics: Vec<TopicMetadata>,
}

/// A broker as metadata lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataBroker {
    pub node_id: u64,
    /// host:port of its client listener.
    pub address: String,
    pub rack: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    pub name: String,
    pub error: Option<ApiError>,
    pub partitions: Vec<PartitionLeader>,
}

/// A partition's leader as metadata reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionLeader {
    pub partition: u32,
    /// The leader's node id; 0 when none is known.
    pub leader: u64,
    /// The leader's epoch (Raft term); requests may carry it to be fenced when stale.
    pub leader_epoch: u64,
}

/// Batches for one partition of a produce call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionBatches {
    pub topic: String,
    pub partition: u32,
    /// Kafka RecordBatch v2, as `spool_log::batch::BatchBuilder` builds them.
    pub batches: Vec<Bytes>,
    /// The leader epoch the caller's metadata gives; the leader refuses the batches if
    /// its own differs (`FENCED_LEADER_EPOCH`, `UNKNOWN_LEADER_EPOCH`).
    pub leader_epoch: Option<u64>,
}

/// Where a partition's produced batches landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Produced {
    /// Offset of the first record; -1 with acks=none.
    pub base_offset: i64,
    /// Each batch's first offset, in request order (empty with acks=none, or from a
    /// broker that does not say).
    pub batch_base_offsets: Vec<i64>,
    pub log_append_time_ms: i64,
}

/// Where to start reading a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPosition {
    pub topic: String,
    pub partition: u32,
    pub offset: i64,
    /// As `PartitionBatches::leader_epoch`.
    pub leader_epoch: Option<u64>,
}

/// A fetch stream's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOptions {
    pub positions: Vec<FetchPosition>,
    /// Most bytes per response (0: the broker's default of 1 MiB).
    pub max_bytes: u32,
    pub min_bytes: u32,
    pub max_wait: Duration,
    /// Keep streaming; otherwise the stream ends when every partition is caught up.
    pub follow: bool,
    /// read_committed stops at each partition's last stable offset and lists the
    /// aborted transactions to skip.
    pub isolation: IsolationLevel,
}

/// One partition's part of a fetch response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedPartition {
    pub topic: String,
    pub partition: u32,
    /// Set when the partition cannot be read on; the stream carries no more of it.
    pub error: Option<ApiError>,
    pub high_watermark: i64,
    /// Stored Kafka RecordBatch v2; the first may start before the requested offset.
    pub batches: Vec<Bytes>,
    pub next_offset: i64,
    /// The first offset of the oldest open transaction, or the high watermark.
    pub last_stable_offset: i64,
    /// read_committed: (producer id, first offset) of the aborted transactions reaching
    /// into `batches` (see `AbortedTransactions`).
    pub aborted: Vec<(i64, i64)>,
}

/// Which offset a list-offsets call asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    Earliest,
    Latest,
    /// The last stable offset: the end as a read_committed reader sees it.
    LastStable,
    Timestamp(i64),
}
