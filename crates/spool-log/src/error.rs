//! The storage engine's typed errors.

use std::io;
use std::path::PathBuf;

use crate::batch::BatchError;

/// What is wrong with bytes found on disk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Corruption {
    #[error("no frame magic where a frame should start")]
    BadFrameMagic,
    #[error("frame format version {found} is not supported")]
    UnsupportedFrameVersion { found: u8 },
    #[error("unknown frame kind {found}")]
    UnknownFrameKind { found: u8 },
    #[error("frame payload length {len} exceeds the largest allowed")]
    FrameTooLarge { len: u32 },
    #[error("frame CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    FrameCrcMismatch { stored: u32, computed: u32 },
    #[error("bad record batch: {0}")]
    Batch(#[source] BatchError),
    #[error("inconsistent frame: {reason}")]
    InconsistentFrame { reason: &'static str },
    #[error("the file ends inside a frame ({missing} bytes missing)")]
    Truncated { missing: u64 },
    #[error("expected Raft index {expected}, found {found}")]
    IndexGap { expected: u64, found: u64 },
    #[error("expected Kafka offset {expected}, found {found}")]
    OffsetGap { expected: i64, found: i64 },
    #[error("Raft term went back from {previous} to {found}")]
    TermRegression { previous: u64, found: u64 },
    #[error("bad segment header: {reason}")]
    BadSegmentHeader { reason: &'static str },
    #[error("bad index file: {reason}")]
    BadIndex { reason: &'static str },
}

/// Errors of the storage engine. Each names the file or position it concerns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    #[error("could not {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("corrupt data in segment {} at byte {position}: {kind}", segment.display())]
    Corrupt {
        segment: PathBuf,
        position: u64,
        kind: Corruption,
    },
    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] BatchError),
    #[error("the next Raft index is {expected}, but an entry with index {found} was appended")]
    NonContiguousIndex { expected: u64, found: u64 },
    #[error("an entry of term {found} was appended after one of term {last}")]
    TermRegression { last: u64, found: u64 },
    #[error(
        "offset {requested} is outside the log, which holds offsets {start} to {end} (exclusive)"
    )]
    OffsetOutOfRange {
        requested: i64,
        start: i64,
        end: i64,
    },
    #[error(
        "Raft index {requested} is outside the log, which holds indexes {first} to {next} (exclusive)"
    )]
    IndexOutOfRange {
        requested: u64,
        first: u64,
        next: u64,
    },
    #[error("a payload of {len} bytes exceeds the largest frame payload of {max} bytes")]
    PayloadTooLarge { len: usize, max: u32 },
    #[error("invalid log configuration: {reason}")]
    InvalidConfig { reason: &'static str },
    #[error("the log stopped accepting writes after an I/O error it could not undo; reopen it")]
    Failed,
}

impl LogError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| LogError::Io { op, path, source }
    }

    /// True if the error reports damaged bytes on disk.
    pub fn is_corruption(&self) -> bool {
        matches!(self, LogError::Corrupt { .. })
    }
}

pub type Result<T, E = LogError> = std::result::Result<T, E>;
