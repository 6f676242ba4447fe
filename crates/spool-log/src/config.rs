//! How a log rolls, indexes, flushes and recovers.

use std::time::Duration;

use crate::error::{LogError, Result};

/// When appended data counts as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// `flush()` fsyncs. Appends written before one `flush()` share its fsync (group commit).
    Always,
    /// `flush()` fsyncs at most once per interval; in between, written data counts as
    /// durable (it is in the page cache and, with replication, on other replicas).
    Interval(Duration),
    /// Never fsync on `flush()`; the operating system writes back when it likes. Segments
    /// are still fsynced when they are sealed.
    Os,
}

/// What `open` does with damage it finds in the tail of the last segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// Drop a torn or damaged tail of the last segment, if nothing valid follows it, and
    /// report what was dropped. Damage followed by valid frames is refused: that is a
    /// flipped bit, not a crash.
    #[default]
    TolerateTailCorruption,
    /// Drop only a frame cut short at the end of the file (what a crash leaves); refuse to
    /// open on any other damage.
    Strict,
}

/// Settings of one partition log. Defaults follow Kafka's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll to a new segment when the active one would grow past this (default 1 GiB).
    pub segment_bytes: u64,
    /// Roll to a new segment when the active one is older than this (default 7 days).
    pub segment_age: Duration,
    /// Bytes of frames between two sparse index entries (default 4 KiB).
    pub index_interval_bytes: u64,
    /// When appends become durable (default `Always`).
    pub flush: FlushPolicy,
    /// What opening does with a damaged tail (default `TolerateTailCorruption`).
    pub recovery: RecoveryMode,
    /// Once synced, file pages further than this behind the end of the log are dropped
    /// from the page cache (default 16 MiB; `None` leaves them to the kernel). Tailing
    /// readers stay within the window; new writes then reuse freed pages instead of
    /// growing the cache, which costs far less per byte than claiming new memory.
    pub page_cache_window: Option<u64>,
}

/// Index positions are u32; leave room for one largest frame past the limit.
pub const MAX_SEGMENT_BYTES: u64 = 2 * 1024 * 1024 * 1024 - 512 * 1024 * 1024;

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1024 * 1024 * 1024,
            segment_age: Duration::from_secs(7 * 24 * 3600),
            index_interval_bytes: 4096,
            flush: FlushPolicy::Always,
            recovery: RecoveryMode::TolerateTailCorruption,
            page_cache_window: Some(DEFAULT_PAGE_CACHE_WINDOW),
        }
    }
}

/// The default `page_cache_window`.
pub const DEFAULT_PAGE_CACHE_WINDOW: u64 = 16 * 1024 * 1024;

impl LogConfig {
    pub fn validate(&self) -> Result<()> {
        if self.segment_bytes < 1024 || self.segment_bytes > MAX_SEGMENT_BYTES {
            return Err(LogError::InvalidConfig {
                reason: "segment_bytes must lie between 1 KiB and 1.5 GiB",
            });
        }
        if self.index_interval_bytes == 0 {
            return Err(LogError::InvalidConfig {
                reason: "index_interval_bytes must be positive",
            });
        }
        Ok(())
    }
}

/// How long to keep data. Only whole, sealed segments are deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionPolicy {
    /// Delete segments whose newest batch is older than this (Kafka's retention.ms).
    pub max_age: Option<Duration>,
    /// Delete the oldest segments while the log stays at or above this size without them
    /// (Kafka's retention.bytes).
    pub max_bytes: Option<u64>,
}

/// A source of wall-clock time in ms since the Unix epoch; tests substitute their own.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}
