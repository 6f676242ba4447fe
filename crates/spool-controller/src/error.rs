//! Errors of the controller, each with the wire code clients see.

use spool_types::ErrorCode;

use crate::state::BrokerId;

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// This node does not lead the controller; `leader` is the one it knows of.
    #[error("this node is not the controller leader{}", hint(.leader, .address))]
    NotController {
        leader: Option<BrokerId>,
        address: Option<String>,
    },
    #[error("replication factor {requested} is not possible with {brokers} live broker(s)")]
    InvalidReplicationFactor { requested: u32, brokers: u32 },
    #[error("no live broker can take the replica")]
    NoBrokers,
    #[error("unknown topic {topic}")]
    UnknownTopic { topic: String },
    #[error("topic {topic} has no partition {partition}")]
    UnknownPartition { topic: String, partition: u32 },
    #[error("topic {topic} already exists")]
    TopicExists { topic: String },
    #[error("invalid topic name: {reason}")]
    InvalidTopic { reason: String },
    #[error("{requested} partitions: {reason}")]
    InvalidPartitions { requested: u32, reason: String },
    #[error("invalid config: {reason}")]
    InvalidConfig { reason: String },
    #[error("{reason}")]
    InvalidRequest { reason: String },
    #[error("broker {id} is already registered from {address} and its lease is live")]
    BrokerIdInUse { id: BrokerId, address: String },
    #[error("broker {id} is unknown, fenced or draining")]
    BrokerNotAvailable { id: BrokerId },
    #[error("could not encode a metadata record: {reason}")]
    Encode { reason: String },
    #[error("this node stopped applying metadata: {reason}")]
    Halted { reason: String },
    #[error("corrupt metadata record: {reason}")]
    CorruptRecord { reason: String },
    #[error("controller storage: {reason}")]
    Storage { reason: String },
    #[error("timed out waiting for {what}")]
    TimedOut { what: &'static str },
    #[error("the controller is shutting down")]
    ShuttingDown,
    #[error("could not reach the controller at {address}: {reason}")]
    Unreachable { address: String, reason: String },
    /// An error another node answered with, passed on.
    #[error("{message}")]
    Remote { code: ErrorCode, message: String },
    #[error(transparent)]
    Replica(#[from] spool_raft::ReplicaError),
}

fn hint(leader: &Option<BrokerId>, address: &Option<String>) -> String {
    match (leader, address) {
        (Some(id), Some(addr)) => format!("; node {id} at {addr} is"),
        (Some(id), None) => format!("; node {id} is"),
        _ => "; no leader is known yet".to_string(),
    }
}

impl ControllerError {
    pub fn code(&self) -> ErrorCode {
        match self {
            // Another node can decide: the caller retries there.
            Self::NotController { .. } | Self::Halted { .. } => ErrorCode::NotController,
            Self::InvalidReplicationFactor { .. } | Self::NoBrokers => {
                ErrorCode::InvalidReplicationFactor
            }
            Self::UnknownTopic { .. } | Self::UnknownPartition { .. } => {
                ErrorCode::UnknownTopicOrPartition
            }
            Self::TopicExists { .. } => ErrorCode::TopicAlreadyExists,
            Self::InvalidTopic { .. } => ErrorCode::InvalidTopic,
            Self::InvalidPartitions { .. } => ErrorCode::InvalidPartitions,
            Self::InvalidConfig { .. } => ErrorCode::InvalidConfig,
            Self::InvalidRequest { .. } | Self::Encode { .. } => ErrorCode::InvalidRequest,
            Self::BrokerIdInUse { .. } => ErrorCode::BrokerIdInUse,
            Self::BrokerNotAvailable { .. } => ErrorCode::BrokerNotAvailable,
            Self::TimedOut { .. } => ErrorCode::RequestTimedOut,
            Self::Remote { code, .. } => *code,
            Self::Replica(spool_raft::ReplicaError::NotLeader { .. }) => ErrorCode::NotController,
            Self::CorruptRecord { .. }
            | Self::Storage { .. }
            | Self::ShuttingDown
            | Self::Unreachable { .. }
            | Self::Replica(_) => ErrorCode::StorageError,
        }
    }

    /// Worth trying again, here or at another node.
    pub fn is_retriable(&self) -> bool {
        self.code().is_retriable()
    }
}
