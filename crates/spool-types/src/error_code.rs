use std::fmt;

/// The error codes Spool reports to clients. Numbers are stable: they travel on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(i32)]
pub enum ErrorCode {
    Unknown = 0,
    NotLeader = 1,
    UnknownTopicOrPartition = 2,
    OffsetOutOfRange = 3,
    RecordTooLarge = 4,
    CorruptBatch = 5,
    InvalidTopic = 6,
    TopicAlreadyExists = 7,
    InvalidRequest = 8,
    StorageError = 9,
    InvalidConfig = 10,
    InvalidPartitions = 11,
    InvalidReplicationFactor = 12,
    RequestTimedOut = 13,
    NotController = 14,
    BrokerIdInUse = 15,
    BrokerNotAvailable = 16,
    FencedLeaderEpoch = 17,
    UnknownLeaderEpoch = 18,
    InvalidTimestamp = 19,
    /// A limit of the node was reached (streams, partitions, bytes in flight).
    ResourceExhausted = 20,
    /// No coordinator for the group can answer now (its partition has no leader yet): retry.
    CoordinatorNotAvailable = 21,
    /// This node is not the group's coordinator: find the coordinator again.
    NotCoordinator = 22,
    /// The coordinator is still loading its groups from the log: retry shortly.
    CoordinatorLoadInProgress = 23,
    /// The group has no member with this id (it left or its session expired): rejoin with epoch 0.
    UnknownMemberId = 24,
    /// The member's epoch is not the group's view of it: the member must give up its partitions and rejoin.
    FencedMemberEpoch = 25,
    /// An offset commit carried an old member epoch: heartbeat, then commit again.
    StaleMemberEpoch = 26,
    /// The group id is empty or too long.
    InvalidGroupId = 27,
    /// No group has this id.
    GroupIdNotFound = 28,
    /// The group still has members: the operation needs an empty group.
    NonEmptyGroup = 29,
    /// Another live member holds this instance id.
    UnreleasedInstanceId = 30,
    /// Offset commit metadata is longer than the limit (4 KiB).
    OffsetMetadataTooLarge = 31,
    /// The named server assignor does not exist.
    UnsupportedAssignor = 32,
    /// An idempotent producer's batch does not follow the last one the partition holds.
    OutOfOrderSequence = 33,
    /// The producer's epoch is older than the partition's: a newer instance took over.
    InvalidProducerEpoch = 34,
    /// The partition holds no state for the producer and the batch does not start at 0.
    UnknownProducerId = 35,
    /// The transaction is not in a state that allows this (e.g. a commit after an abort began).
    InvalidTxnState = 36,
    /// The transactional id is unknown, or is held by another producer id: initialize again.
    InvalidProducerIdMapping = 37,
    /// The producer's previous transaction is still being completed: retry shortly.
    ConcurrentTransactions = 38,
    /// The transaction timeout is outside what the node allows.
    InvalidTransactionTimeout = 39,
    /// A newer instance of this transactional producer took over (or its transaction timed out): this one must stop.
    ProducerFenced = 40,
    /// A transaction that committed offsets of this group is decided but not yet marked
    /// at the group's coordinator: retry shortly.
    UnstableOffsetCommit = 41,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 42] = [
        ErrorCode::Unknown,
        ErrorCode::NotLeader,
        ErrorCode::UnknownTopicOrPartition,
        ErrorCode::OffsetOutOfRange,
        ErrorCode::RecordTooLarge,
        ErrorCode::CorruptBatch,
        ErrorCode::InvalidTopic,
        ErrorCode::TopicAlreadyExists,
        ErrorCode::InvalidRequest,
        ErrorCode::StorageError,
        ErrorCode::InvalidConfig,
        ErrorCode::InvalidPartitions,
        ErrorCode::InvalidReplicationFactor,
        ErrorCode::RequestTimedOut,
        ErrorCode::NotController,
        ErrorCode::BrokerIdInUse,
        ErrorCode::BrokerNotAvailable,
        ErrorCode::FencedLeaderEpoch,
        ErrorCode::UnknownLeaderEpoch,
        ErrorCode::InvalidTimestamp,
        ErrorCode::ResourceExhausted,
        ErrorCode::CoordinatorNotAvailable,
        ErrorCode::NotCoordinator,
        ErrorCode::CoordinatorLoadInProgress,
        ErrorCode::UnknownMemberId,
        ErrorCode::FencedMemberEpoch,
        ErrorCode::StaleMemberEpoch,
        ErrorCode::InvalidGroupId,
        ErrorCode::GroupIdNotFound,
        ErrorCode::NonEmptyGroup,
        ErrorCode::UnreleasedInstanceId,
        ErrorCode::OffsetMetadataTooLarge,
        ErrorCode::UnsupportedAssignor,
        ErrorCode::OutOfOrderSequence,
        ErrorCode::InvalidProducerEpoch,
        ErrorCode::UnknownProducerId,
        ErrorCode::InvalidTxnState,
        ErrorCode::InvalidProducerIdMapping,
        ErrorCode::ConcurrentTransactions,
        ErrorCode::InvalidTransactionTimeout,
        ErrorCode::ProducerFenced,
        ErrorCode::UnstableOffsetCommit,
    ];

    /// The wire number of this code.
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// The code with wire number `n`, or `Unknown` for numbers this version does not know.
    pub fn from_i32(n: i32) -> Self {
        Self::ALL
            .into_iter()
            .find(|code| code.as_i32() == n)
            .unwrap_or(ErrorCode::Unknown)
    }

    /// Whether a client may retry the same request (after refreshing metadata).
    pub fn is_retriable(self) -> bool {
        matches!(
            self,
            ErrorCode::NotLeader
                | ErrorCode::StorageError
                | ErrorCode::RequestTimedOut
                | ErrorCode::NotController
                | ErrorCode::FencedLeaderEpoch
                | ErrorCode::UnknownLeaderEpoch
                | ErrorCode::ResourceExhausted
                | ErrorCode::CoordinatorNotAvailable
                | ErrorCode::NotCoordinator
                | ErrorCode::CoordinatorLoadInProgress
                | ErrorCode::StaleMemberEpoch
                | ErrorCode::ConcurrentTransactions
                | ErrorCode::UnstableOffsetCommit
        )
    }

    /// The code's name as the protocol documents it.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::Unknown => "UNKNOWN",
            ErrorCode::NotLeader => "NOT_LEADER",
            ErrorCode::UnknownTopicOrPartition => "UNKNOWN_TOPIC_OR_PARTITION",
            ErrorCode::OffsetOutOfRange => "OFFSET_OUT_OF_RANGE",
            ErrorCode::RecordTooLarge => "RECORD_TOO_LARGE",
            ErrorCode::CorruptBatch => "CORRUPT_BATCH",
            ErrorCode::InvalidTopic => "INVALID_TOPIC",
            ErrorCode::TopicAlreadyExists => "TOPIC_ALREADY_EXISTS",
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::StorageError => "STORAGE_ERROR",
            ErrorCode::InvalidConfig => "INVALID_CONFIG",
            ErrorCode::InvalidPartitions => "INVALID_PARTITIONS",
            ErrorCode::InvalidReplicationFactor => "INVALID_REPLICATION_FACTOR",
            ErrorCode::RequestTimedOut => "REQUEST_TIMED_OUT",
            ErrorCode::NotController => "NOT_CONTROLLER",
            ErrorCode::BrokerIdInUse => "BROKER_ID_IN_USE",
            ErrorCode::BrokerNotAvailable => "BROKER_NOT_AVAILABLE",
            ErrorCode::FencedLeaderEpoch => "FENCED_LEADER_EPOCH",
            ErrorCode::UnknownLeaderEpoch => "UNKNOWN_LEADER_EPOCH",
            ErrorCode::InvalidTimestamp => "INVALID_TIMESTAMP",
            ErrorCode::ResourceExhausted => "RESOURCE_EXHAUSTED",
            ErrorCode::CoordinatorNotAvailable => "COORDINATOR_NOT_AVAILABLE",
            ErrorCode::NotCoordinator => "NOT_COORDINATOR",
            ErrorCode::CoordinatorLoadInProgress => "COORDINATOR_LOAD_IN_PROGRESS",
            ErrorCode::UnknownMemberId => "UNKNOWN_MEMBER_ID",
            ErrorCode::FencedMemberEpoch => "FENCED_MEMBER_EPOCH",
            ErrorCode::StaleMemberEpoch => "STALE_MEMBER_EPOCH",
            ErrorCode::InvalidGroupId => "INVALID_GROUP_ID",
            ErrorCode::GroupIdNotFound => "GROUP_ID_NOT_FOUND",
            ErrorCode::NonEmptyGroup => "NON_EMPTY_GROUP",
            ErrorCode::UnreleasedInstanceId => "UNRELEASED_INSTANCE_ID",
            ErrorCode::OffsetMetadataTooLarge => "OFFSET_METADATA_TOO_LARGE",
            ErrorCode::UnsupportedAssignor => "UNSUPPORTED_ASSIGNOR",
            ErrorCode::OutOfOrderSequence => "OUT_OF_ORDER_SEQUENCE",
            ErrorCode::InvalidProducerEpoch => "INVALID_PRODUCER_EPOCH",
            ErrorCode::UnknownProducerId => "UNKNOWN_PRODUCER_ID",
            ErrorCode::InvalidTxnState => "INVALID_TXN_STATE",
            ErrorCode::InvalidProducerIdMapping => "INVALID_PRODUCER_ID_MAPPING",
            ErrorCode::ConcurrentTransactions => "CONCURRENT_TRANSACTIONS",
            ErrorCode::InvalidTransactionTimeout => "INVALID_TRANSACTION_TIMEOUT",
            ErrorCode::ProducerFenced => "PRODUCER_FENCED",
            ErrorCode::UnstableOffsetCommit => "UNSTABLE_OFFSET_COMMIT",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_numbers_round_trip_and_unknown_numbers_map_to_unknown() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_i32(code.as_i32()), code);
        }
        assert_eq!(ErrorCode::from_i32(9999), ErrorCode::Unknown);
        assert_eq!(ErrorCode::NotLeader.to_string(), "NOT_LEADER");
    }
}
