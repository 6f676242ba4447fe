//! Errors of the replication layer.

use std::path::PathBuf;

use crate::types::{GroupId, NodeId};

/// Bytes that do not decode as the Raft metadata Spool writes.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CodecError {
    #[error("record ends early")]
    Truncated,
    #[error("unknown format version {found}")]
    Version { found: u8 },
    #[error("malformed record: {what}")]
    Malformed { what: &'static str },
    #[error("checksum mismatch")]
    Checksum,
}

/// Why a replica could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// This replica is not the group's leader; `leader` is the one it knows of, if any.
    #[error("not the leader of group {group}{}", leader_hint(.leader, .leader_address))]
    NotLeader {
        group: GroupId,
        leader: Option<NodeId>,
        leader_address: Option<String>,
    },
    #[error("group {group} is not hosted on this node")]
    UnknownGroup { group: GroupId },
    #[error("group {group} is already hosted on this node")]
    GroupExists { group: GroupId },
    #[error("the replica is shutting down")]
    ShuttingDown,
    #[error("replication failed: {0}")]
    Raft(String),
    #[error(transparent)]
    Storage(#[from] spool_log::LogError),
    #[error("node state file {}: {reason}", path.display())]
    StateFile { path: PathBuf, reason: String },
    /// An idempotent producer's batch out of sequence, or from a fenced epoch.
    #[error(transparent)]
    Sequence(#[from] crate::producers::SequenceError),
    #[error("invalid membership: {0}")]
    Membership(String),
    /// The node's data volume is under its free-space floor (`min_free_bytes`).
    #[error(
        "the node's data volume has {available} bytes free, under its floor of {floor} (min_free_bytes): writes are refused until space is freed (delete or shorten topics) or retention runs"
    )]
    DiskFull { available: u64, floor: u64 },
}

fn leader_hint(leader: &Option<NodeId>, address: &Option<String>) -> String {
    match (leader, address) {
        (Some(id), Some(addr)) => format!("; the leader is node {id} at {addr}"),
        (Some(id), None) => format!("; the leader is node {id}"),
        _ => "; no leader is known".to_string(),
    }
}

pub(crate) fn io_error(error: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(error.to_string())
}
