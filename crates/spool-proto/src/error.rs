//! Error codes on the wire: the `ErrorCode` enum, the `Error` message, and gRPC statuses
//! that carry an encoded `Error` in their details.

use prost::Message;
use spool_types::ErrorCode;
use tonic::{Code, Status};

use crate::v1;

impl From<ErrorCode> for v1::ErrorCode {
    fn from(code: ErrorCode) -> Self {
        match code {
            ErrorCode::NotLeader => v1::ErrorCode::NotLeader,
            ErrorCode::UnknownTopicOrPartition => v1::ErrorCode::UnknownTopicOrPartition,
            ErrorCode::OffsetOutOfRange => v1::ErrorCode::OffsetOutOfRange,
            ErrorCode::RecordTooLarge => v1::ErrorCode::RecordTooLarge,
            ErrorCode::CorruptBatch => v1::ErrorCode::CorruptBatch,
            ErrorCode::InvalidTopic => v1::ErrorCode::InvalidTopic,
            ErrorCode::TopicAlreadyExists => v1::ErrorCode::TopicAlreadyExists,
            ErrorCode::InvalidRequest => v1::ErrorCode::InvalidRequest,
            ErrorCode::StorageError => v1::ErrorCode::StorageError,
            ErrorCode::InvalidConfig => v1::ErrorCode::InvalidConfig,
            ErrorCode::InvalidPartitions => v1::ErrorCode::InvalidPartitions,
            ErrorCode::InvalidReplicationFactor => v1::ErrorCode::InvalidReplicationFactor,
            ErrorCode::RequestTimedOut => v1::ErrorCode::RequestTimedOut,
            ErrorCode::NotController => v1::ErrorCode::NotController,
            ErrorCode::BrokerIdInUse => v1::ErrorCode::BrokerIdInUse,
            ErrorCode::BrokerNotAvailable => v1::ErrorCode::BrokerNotAvailable,
            ErrorCode::FencedLeaderEpoch => v1::ErrorCode::FencedLeaderEpoch,
            ErrorCode::UnknownLeaderEpoch => v1::ErrorCode::UnknownLeaderEpoch,
            ErrorCode::InvalidTimestamp => v1::ErrorCode::InvalidTimestamp,
            ErrorCode::ResourceExhausted => v1::ErrorCode::ResourceExhausted,
            ErrorCode::CoordinatorNotAvailable => v1::ErrorCode::CoordinatorNotAvailable,
            ErrorCode::NotCoordinator => v1::ErrorCode::NotCoordinator,
            ErrorCode::CoordinatorLoadInProgress => v1::ErrorCode::CoordinatorLoadInProgress,
            ErrorCode::UnknownMemberId => v1::ErrorCode::UnknownMemberId,
            ErrorCode::FencedMemberEpoch => v1::ErrorCode::FencedMemberEpoch,
            ErrorCode::StaleMemberEpoch => v1::ErrorCode::StaleMemberEpoch,
            ErrorCode::InvalidGroupId => v1::ErrorCode::InvalidGroupId,
            ErrorCode::GroupIdNotFound => v1::ErrorCode::GroupIdNotFound,
            ErrorCode::NonEmptyGroup => v1::ErrorCode::NonEmptyGroup,
            ErrorCode::UnreleasedInstanceId => v1::ErrorCode::UnreleasedInstanceId,
            ErrorCode::OffsetMetadataTooLarge => v1::ErrorCode::OffsetMetadataTooLarge,
            ErrorCode::UnsupportedAssignor => v1::ErrorCode::UnsupportedAssignor,
            ErrorCode::OutOfOrderSequence => v1::ErrorCode::OutOfOrderSequence,
            ErrorCode::InvalidProducerEpoch => v1::ErrorCode::InvalidProducerEpoch,
            ErrorCode::UnknownProducerId => v1::ErrorCode::UnknownProducerId,
            ErrorCode::InvalidTxnState => v1::ErrorCode::InvalidTxnState,
            ErrorCode::InvalidProducerIdMapping => v1::ErrorCode::InvalidProducerIdMapping,
            ErrorCode::ConcurrentTransactions => v1::ErrorCode::ConcurrentTransactions,
            ErrorCode::InvalidTransactionTimeout => v1::ErrorCode::InvalidTransactionTimeout,
            ErrorCode::ProducerFenced => v1::ErrorCode::ProducerFenced,
            ErrorCode::UnstableOffsetCommit => v1::ErrorCode::UnstableOffsetCommit,
            _ => v1::ErrorCode::Unknown,
        }
    }
}

impl From<v1::ErrorCode> for ErrorCode {
    fn from(code: v1::ErrorCode) -> Self {
        ErrorCode::from_i32(code as i32)
    }
}

impl v1::Error {
    /// A wire error with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code: v1::ErrorCode::from(code) as i32,
            message: message.into(),
            leader: None,
        }
    }

    /// The domain code (unknown numbers map to `Unknown`).
    pub fn error_code(&self) -> ErrorCode {
        ErrorCode::from_i32(self.code)
    }
}

/// The gRPC status code that fits an error code.
fn grpc_code(code: ErrorCode) -> Code {
    match code {
        ErrorCode::NotLeader
        | ErrorCode::StorageError
        | ErrorCode::NotController
        | ErrorCode::CoordinatorNotAvailable
        | ErrorCode::NotCoordinator
        | ErrorCode::CoordinatorLoadInProgress => Code::Unavailable,
        ErrorCode::UnknownMemberId | ErrorCode::GroupIdNotFound => Code::NotFound,
        ErrorCode::FencedMemberEpoch
        | ErrorCode::StaleMemberEpoch
        | ErrorCode::NonEmptyGroup
        | ErrorCode::UnreleasedInstanceId
        | ErrorCode::OutOfOrderSequence
        | ErrorCode::InvalidProducerEpoch
        | ErrorCode::UnknownProducerId
        | ErrorCode::InvalidTxnState
        | ErrorCode::InvalidProducerIdMapping
        | ErrorCode::ProducerFenced => Code::FailedPrecondition,
        ErrorCode::ConcurrentTransactions | ErrorCode::UnstableOffsetCommit => Code::Unavailable,
        ErrorCode::InvalidTransactionTimeout => Code::InvalidArgument,
        ErrorCode::BrokerIdInUse => Code::AlreadyExists,
        ErrorCode::FencedLeaderEpoch | ErrorCode::UnknownLeaderEpoch => Code::FailedPrecondition,
        ErrorCode::ResourceExhausted => Code::ResourceExhausted,
        ErrorCode::BrokerNotAvailable => Code::FailedPrecondition,
        ErrorCode::UnknownTopicOrPartition => Code::NotFound,
        ErrorCode::OffsetOutOfRange => Code::OutOfRange,
        ErrorCode::TopicAlreadyExists => Code::AlreadyExists,
        ErrorCode::RequestTimedOut => Code::DeadlineExceeded,
        ErrorCode::RecordTooLarge
        | ErrorCode::CorruptBatch
        | ErrorCode::InvalidTopic
        | ErrorCode::InvalidRequest
        | ErrorCode::InvalidConfig
        | ErrorCode::InvalidPartitions
        | ErrorCode::InvalidReplicationFactor
        | ErrorCode::InvalidTimestamp
        | ErrorCode::InvalidGroupId
        | ErrorCode::OffsetMetadataTooLarge
        | ErrorCode::UnsupportedAssignor => Code::InvalidArgument,
        _ => Code::Internal,
    }
}

/// A status for a failed call, with the typed error encoded in its details.
pub fn error_to_status(error: v1::Error) -> Status {
    let code = grpc_code(error.error_code());
    let message = error.message.clone();
    Status::with_details(code, message, error.encode_to_vec().into())
}

/// The typed error a status carries, if any; otherwise one derived from its gRPC code.
pub fn status_error(status: &Status) -> v1::Error {
    if let Ok(error) = v1::Error::decode(status.details())
        && (error.code != 0 || !error.message.is_empty())
    {
        return error;
    }
    let code = match status.code() {
        Code::NotFound => ErrorCode::UnknownTopicOrPartition,
        Code::OutOfRange => ErrorCode::OffsetOutOfRange,
        Code::AlreadyExists => ErrorCode::TopicAlreadyExists,
        Code::DeadlineExceeded => ErrorCode::RequestTimedOut,
        Code::InvalidArgument => ErrorCode::InvalidRequest,
        _ => ErrorCode::Unknown,
    };
    v1::Error::new(code, status.message())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_survives_the_wire_and_a_status() {
        for code in ErrorCode::ALL {
            let wire = v1::ErrorCode::from(code);
            assert_eq!(ErrorCode::from(wire), code);
            let status = error_to_status(v1::Error::new(code, "it went wrong"));
            let back = status_error(&status);
            assert_eq!(back.error_code(), code);
            assert_eq!(back.message, "it went wrong");
        }
    }
}
