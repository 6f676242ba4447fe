//! Partition replication: one openraft group per partition, whose Raft log is the
//! partition's spool-log (one write per record, no second copy).
//!
//! - [`log_store`]: openraft's log storage on spool-log; Kafka offsets are given out as
//!   entries are appended and given back when they are truncated.
//! - [`state_machine`]: applied id, membership and next offset; tiny snapshots taken only
//!   where retention cuts the log.
//! - [`state_store`]: the node's durable vote/commit/snapshot records, one file.
//! - [`producers`]: the idempotent-producer table, derived from the log; snapshots of it
//!   beside the segments.
//! - [`flusher`]: group commit of fsyncs across every replica on a node.
//! - [`network`]: the RaftTransport gRPC service and client: one channel per peer,
//!   streamed replication, heartbeats batched per node, a fault layer for tests.
//! - `RaftNode` hosts a node's replicas and their lifecycle; `PartitionReplica` is the
//!   interface the broker writes through; idle groups stop their timers and nodes watch
//!   each other instead (`liveness`); a stopping node hands its groups over first
//!   (`handover`).

mod append;
mod codec;
mod disk;
mod error;
pub mod flusher;
mod handover;
mod liveness;
pub mod log_store;
pub mod network;
mod node;
pub mod producers;
mod rebuild;
mod replica;
mod state_file;
pub mod state_machine;
pub mod state_store;
mod storage;
mod types;

pub use codec::{decode_membership, encode_membership};
pub use disk::DiskSpace;
pub use error::{CodecError, ReplicaError};
pub use flusher::Flusher;
pub use handover::HandOver;
pub use node::{
    DEFAULT_PRODUCER_EXPIRY, RaftNode, RaftNodeOptions, RaftTiming, ReplicaSpec, sweep_deleted,
};
pub use rebuild::group_of_dir;
pub use replica::{AckLevel, LeaderHint, Members, PartitionReplica, RaftProgress, ReplicaChanges};
pub use storage::{GroupStorage, open_group_storage};
pub use types::{
    AppendNotice, Appended, Entry, GroupId, LogId, Membership, NodeId, PartitionRaft, ProduceBatch,
    Produced, Raft, SnapshotMeta, StoredMembership, Vote, log_id, term_of,
};
