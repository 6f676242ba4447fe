use spool_types::ErrorCode;

/// Why a group operation was refused. A refused operation writes no record and changes
/// nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("invalid group id: {0}")]
    InvalidGroupId(&'static str),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("group {0:?} does not exist")]
    GroupIdNotFound(String),
    #[error("member {member:?} is not in group {group:?}")]
    UnknownMemberId { group: String, member: String },
    #[error("member epoch {given} is fenced: the group has the member at epoch {current}")]
    FencedMemberEpoch { given: i32, current: i32 },
    #[error("member epoch {given} is stale: the member is at epoch {current}")]
    StaleMemberEpoch { given: i32, current: i32 },
    #[error("member {member:?} does not hold {topic}/{partition}: only its holder commits it")]
    NotAssigned {
        member: String,
        topic: String,
        partition: u32,
    },
    #[error("instance id {instance:?} is held by live member {holder:?}")]
    UnreleasedInstanceId { instance: String, holder: String },
    #[error("group {group:?} has {members} members; the operation needs it empty")]
    NonEmptyGroup { group: String, members: usize },
    #[error("unknown server assignor {0:?}")]
    UnsupportedAssignor(String),
    #[error("group {group:?} has reached its {max} members")]
    GroupFull { group: String, max: usize },
    #[error("{topic}/{partition} does not exist")]
    UnknownTopicOrPartition { topic: String, partition: u32 },
    #[error("offset metadata is {len} bytes; at most {max}")]
    OffsetMetadataTooLarge { len: usize, max: usize },
}

impl GroupError {
    pub fn code(&self) -> ErrorCode {
        match self {
            GroupError::InvalidGroupId(_) => ErrorCode::InvalidGroupId,
            GroupError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            GroupError::GroupFull { .. } => ErrorCode::ResourceExhausted,
            GroupError::UnknownTopicOrPartition { .. } => ErrorCode::UnknownTopicOrPartition,
            GroupError::OffsetMetadataTooLarge { .. } => ErrorCode::OffsetMetadataTooLarge,
            GroupError::GroupIdNotFound(_) => ErrorCode::GroupIdNotFound,
            GroupError::UnknownMemberId { .. } => ErrorCode::UnknownMemberId,
            GroupError::FencedMemberEpoch { .. } => ErrorCode::FencedMemberEpoch,
            GroupError::StaleMemberEpoch { .. } => ErrorCode::StaleMemberEpoch,
            // Its claim on the partition is fenced: it was handed over.
            GroupError::NotAssigned { .. } => ErrorCode::FencedMemberEpoch,
            GroupError::UnreleasedInstanceId { .. } => ErrorCode::UnreleasedInstanceId,
            GroupError::NonEmptyGroup { .. } => ErrorCode::NonEmptyGroup,
            GroupError::UnsupportedAssignor(_) => ErrorCode::UnsupportedAssignor,
        }
    }
}

/// Why a stored group record could not be read. The coordinator stops loading on one: a
/// record this version cannot read must not be skipped (groups would silently diverge).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record key or value ends early")]
    Truncated,
    #[error("unknown record type {0}")]
    UnknownType(u8),
    #[error("unknown {what} version {version}")]
    UnknownVersion { what: &'static str, version: u8 },
    #[error("a {0} record must have a value")]
    MissingValue(&'static str),
    #[error("a string in a record is not UTF-8")]
    NotUtf8,
    #[error("bad field: {0}")]
    BadField(&'static str),
}
