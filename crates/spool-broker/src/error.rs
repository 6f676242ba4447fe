use spool_log::LogError;
use spool_log::batch::BatchError;
use spool_raft::producers::SequenceError;
use spool_types::{ErrorCode, InvalidTopicName};

/// Why a broker operation failed. Each maps to one wire [`ErrorCode`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    #[error("topic {topic:?} does not exist")]
    UnknownTopic { topic: String },
    #[error("topic {topic:?} has no partition {partition}")]
    UnknownPartition { topic: String, partition: u32 },
    #[error("invalid topic name: {0}")]
    InvalidTopic(#[from] InvalidTopicName),
    #[error("topic {topic:?} already exists")]
    TopicExists { topic: String },
    #[error("invalid value for config {name}: {reason}")]
    InvalidConfig { name: String, reason: String },
    #[error("a topic needs between 1 and {max} partitions, not {requested}")]
    InvalidPartitions { requested: u32, max: u32 },
    #[error("replication factor {requested} is not possible with {brokers} broker(s)")]
    InvalidReplicationFactor { requested: u32, brokers: u32 },
    #[error("a batch of {size} bytes exceeds max.message.bytes ({max})")]
    RecordTooLarge { size: usize, max: usize },
    #[error("corrupt batch: {0}")]
    CorruptBatch(#[from] BatchError),
    #[error("offset {requested} is out of range: the partition holds offsets {start} to {end}")]
    OffsetOutOfRange {
        requested: i64,
        start: i64,
        end: i64,
    },
    #[error("storage error: {0}")]
    Storage(#[source] LogError),
    #[error("the request timed out after {ms} ms")]
    TimedOut { ms: u64 },
    #[error("invalid request: {reason}")]
    InvalidRequest { reason: String },
    #[error("this node does not lead the partition{}", match (.leader, .address) {
        (Some(id), Some(addr)) => format!("; node {id} at {addr} does"),
        (Some(id), None) => format!("; node {id} does"),
        _ => "; no leader is known yet".to_string(),
    })]
    NotLeader {
        leader: Option<u64>,
        address: Option<String>,
    },
    #[error("leader epoch {requested} is older than the partition's {current}: refresh metadata")]
    FencedLeaderEpoch { requested: u64, current: u64 },
    #[error("leader epoch {requested} is newer than this replica knows ({current})")]
    UnknownLeaderEpoch { requested: u64, current: u64 },
    #[error("{reason}")]
    InvalidTimestamp { reason: String },
    #[error("replication failed: {reason}")]
    Replication { reason: String },
    /// An idempotent producer's batch out of sequence or from a fenced epoch.
    #[error(transparent)]
    Sequence(#[from] spool_raft::producers::SequenceError),
    #[error("the broker is shutting down")]
    ShuttingDown,
    #[error(
        "this node's data volume has {available} bytes free, under its floor of {floor} (min_free_bytes): it refuses writes until space is freed (delete or shorten topics) or retention runs"
    )]
    DiskFull { available: u64, floor: u64 },
    #[error("data directory {dir} is in use by another Spool process")]
    DirectoryInUse { dir: String },
    /// A metadata change the controller refused or could not make; its code is kept.
    #[error(transparent)]
    Controller(#[from] spool_controller::ControllerError),
    /// A group operation the group's state machine refused; its code is kept.
    #[error(transparent)]
    Group(#[from] spool_group::GroupError),
    #[error(
        "group {group:?} has offsets of a transaction that is decided but not yet marked here: retry shortly"
    )]
    UnstableOffsets { group: String },
    /// A transaction operation the coordinator's state machine refused; its code is kept.
    #[error(transparent)]
    Txn(#[from] spool_txn::TxnError),
    /// `key` names what is coordinated, as in `group "g"` or `transactional id "t"`.
    #[error("this node is not the coordinator of {key}")]
    NotCoordinator { key: String },
    #[error("no coordinator is available for {key} yet: {reason}")]
    CoordinatorNotAvailable { key: String, reason: String },
    #[error("the coordinator of {key} is loading its state")]
    CoordinatorLoading { key: String },
    #[error("topic {topic:?} is internal: clients cannot {action} it")]
    InternalTopic { topic: String, action: &'static str },
    #[error("data directory {dir} belongs to node {found}, not node {expected}")]
    WrongNode {
        dir: String,
        found: u64,
        expected: u64,
    },
}

impl BrokerError {
    pub fn code(&self) -> ErrorCode {
        match self {
            BrokerError::UnknownTopic { .. } | BrokerError::UnknownPartition { .. } => {
                ErrorCode::UnknownTopicOrPartition
            }
            BrokerError::InvalidTopic(_) => ErrorCode::InvalidTopic,
            BrokerError::TopicExists { .. } => ErrorCode::TopicAlreadyExists,
            BrokerError::InvalidConfig { .. } => ErrorCode::InvalidConfig,
            BrokerError::InvalidPartitions { .. } => ErrorCode::InvalidPartitions,
            BrokerError::InvalidReplicationFactor { .. } => ErrorCode::InvalidReplicationFactor,
            BrokerError::RecordTooLarge { .. } => ErrorCode::RecordTooLarge,
            BrokerError::CorruptBatch(_) => ErrorCode::CorruptBatch,
            BrokerError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            BrokerError::NotLeader { .. } => ErrorCode::NotLeader,
            BrokerError::FencedLeaderEpoch { .. } => ErrorCode::FencedLeaderEpoch,
            BrokerError::UnknownLeaderEpoch { .. } => ErrorCode::UnknownLeaderEpoch,
            BrokerError::InvalidTimestamp { .. } => ErrorCode::InvalidTimestamp,
            BrokerError::Sequence(e) => match e {
                SequenceError::OutOfOrder { .. } => ErrorCode::OutOfOrderSequence,
                SequenceError::Fenced { .. } => ErrorCode::InvalidProducerEpoch,
                SequenceError::UnknownProducer { .. } => ErrorCode::UnknownProducerId,
                // A deposed transaction coordinator's marker: it coordinates no more.
                SequenceError::StaleCoordinator { .. } => ErrorCode::NotCoordinator,
            },
            BrokerError::Storage(_)
            | BrokerError::Replication { .. }
            | BrokerError::ShuttingDown
            | BrokerError::DiskFull { .. }
            | BrokerError::WrongNode { .. }
            | BrokerError::DirectoryInUse { .. } => ErrorCode::StorageError,
            BrokerError::TimedOut { .. } => ErrorCode::RequestTimedOut,
            BrokerError::InvalidRequest { .. } => ErrorCode::InvalidRequest,
            BrokerError::Controller(e) => e.code(),
            BrokerError::Group(e) => e.code(),
            BrokerError::Txn(e) => e.code(),
            BrokerError::UnstableOffsets { .. } => ErrorCode::UnstableOffsetCommit,
            BrokerError::NotCoordinator { .. } => ErrorCode::NotCoordinator,
            BrokerError::CoordinatorNotAvailable { .. } => ErrorCode::CoordinatorNotAvailable,
            BrokerError::CoordinatorLoading { .. } => ErrorCode::CoordinatorLoadInProgress,
            BrokerError::InternalTopic { .. } => ErrorCode::InvalidTopic,
        }
    }
}

impl From<LogError> for BrokerError {
    fn from(error: LogError) -> Self {
        match error {
            LogError::OffsetOutOfRange {
                requested,
                start,
                end,
            } => BrokerError::OffsetOutOfRange {
                requested,
                start,
                end,
            },
            LogError::InvalidBatch(batch) => BrokerError::CorruptBatch(batch),
            other => BrokerError::Storage(other),
        }
    }
}
