//! Domain types shared by every Spool crate: validated names, ids and the error codes that
//! travel to clients. Nothing here does I/O.

mod error_code;
mod ids;
mod isolation;
mod partitioner;
mod topic;

pub use error_code::ErrorCode;
pub use ids::{NodeId, PartitionId};
pub use isolation::IsolationLevel;
pub use partitioner::{murmur2, partition_for_key};
pub use topic::{InvalidTopicName, TopicName};
