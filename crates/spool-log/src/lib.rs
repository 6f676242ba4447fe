//! Spool's storage engine.
//!
//! A partition is a directory of segments. Each segment file holds frames, one per Raft
//! entry; a data frame's payload is a Kafka RecordBatch v2 stored byte for byte, so the
//! partition log and the Raft log are one and the same. The engine is synchronous (no
//! async runtime, no network): one [`Log`] writes, any number of [`LogReader`]s read.
//!
//! Byte layouts are drawn beside their codecs ([`batch`], [`frame`], segment header,
//! index) and collected in docs/on-disk-format.md.

pub mod batch;
mod config;
mod error;
pub mod frame;
mod index;
mod log;
mod reader;
mod recovery;
pub mod scan;
mod segment;
mod segment_header;
mod sync;
pub mod verify;

pub use batch::{RecordBatch, ValidBatch};
pub use config::{
    Clock, FlushPolicy, LogConfig, MAX_SEGMENT_BYTES, RecoveryMode, RetentionPolicy, SystemClock,
};
pub use error::{Corruption, LogError, Result};
pub use frame::{FrameHeader, FrameKind};
pub use log::{Appended, Entry, EntryPayload, Log, LogEnd, Purged};
pub use reader::{FetchedBatches, LogBounds, LogReader, StoredEntry};
pub use recovery::{RecoveryReport, TailTruncation};
pub use segment::{create_dir_durably, sync_filesystem};
pub use segment_header::{SegmentHeader, index_file_name, segment_file_name, txn_index_file_name};
pub use sync::SyncJob;
