//! The Rust client for Spool. [`Client`] connects to a cluster through a bootstrap list
//! and offers typed calls: topics, produce, fetch streams, offsets. Wire types stay
//! inside this crate.

mod client;
mod cluster;
mod compression;
mod consumer;
mod error;
mod groups;
mod producer;
mod transactions;
mod types;

pub use client::Client;
pub use compression::Compression;
pub use consumer::{
    AbortedTransactions, Consumer, ConsumerConfig, ConsumerError, ConsumerRecord, GroupConfig,
    GroupConsumer, GroupEvent, OffsetReset, SeekTo, decode_batch,
};
pub use error::{ApiError, ClientError};
pub use groups::{
    CommittedOffset, GroupDescription, GroupMemberInfo, GroupSummary, Heartbeat, HeartbeatAnswer,
    MemberState, OffsetToCommit, PartitionSet,
};
pub use producer::{
    DeliveryFuture, Producer, ProducerConfig, ProducerError, ProducerRecord, RecordMetadata,
    Transaction,
};
pub use spool_types::ErrorCode;
pub use spool_types::{murmur2, partition_for_key};
pub use transactions::{
    GroupMetadata, OpenTransaction, TransactionDescription, TransactionSummary,
};
pub use types::*;
