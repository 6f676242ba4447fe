//! Consumer groups as plain, synchronous state machines, independent of any wire protocol
//! and of how their records are stored.
//!
//! A coordinator owns the groups of one partition of `__consumer_offsets`. Every operation
//! (a member's heartbeat, leaving, an offset commit, a deletion) is checked, turned into
//! `GroupRecord`s and applied through the same `apply` that replays them after a failover,
//! so the state a new coordinator rebuilds is the state the old one answered from. The
//! caller persists the records before it answers.

pub mod assignment;
pub mod assignor;
mod coordinator;
pub mod error;
pub mod group;
mod heartbeat;
pub mod member;
mod offsets;
pub mod records;
mod retention;
pub mod topics;

pub use assignment::Assignment;
pub use assignor::{AssignorKind, MemberSpec};
pub use coordinator::{
    Coordinator, CoordinatorConfig, MAX_ID_BYTES, MAX_METADATA_BYTES, MAX_PATTERN_BYTES,
    MAX_SUBSCRIBED_BYTES, MAX_SUBSCRIBED_TOPICS, Outcome, check_group_id,
};
pub use error::{GroupError, RecordError};
pub use group::{ConsumerGroup, GroupState, LEAVE_EPOCH, Member, STATIC_LEFT_EPOCH};
pub use heartbeat::{HeartbeatRequest, HeartbeatResponse};
pub use member::{CurrentAssignment, MemberState};
pub use offsets::{NO_MEMBER_EPOCH, OffsetCommit};
pub use records::{GroupRecord, GroupSettings};
pub use retention::TopicIncarnations;
pub use topics::{TopicInfo, TopicsSnapshot};
