//! fsync outside the writer's lock, and purging by Raft index.
//!
//! A replicated log is shared between the task that appends and a flusher that makes
//! appends durable for many logs at once. `begin_sync` takes the files that need an fsync
//! in a moment; the fsync itself (`SyncJob::run`) needs no access to the `Log`, so appends
//! go on while it runs; `finish_sync` records the outcome.

use std::sync::Arc;
use std::time::Instant;

use crate::error::{LogError, Result};
use crate::log::{Log, LogEnd, Purged};
use crate::reader::Shared;
use crate::segment::Segment;

/// Files to fsync and the end they make durable.
#[derive(Debug)]
pub struct SyncJob {
    shared: Arc<Shared>,
    segments: Vec<Arc<Segment>>,
    end: LogEnd,
    /// (segment, file position) below which synced pages may leave the page cache.
    release: Option<(Arc<Segment>, u64)>,
}

impl SyncJob {
    /// The end of the log this job makes durable.
    pub fn end(&self) -> LogEnd {
        self.end
    }

    /// Whether the job has no file to sync (everything appended was synced already).
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// fsyncs the files. Safe to run on any thread while the log takes appends; waits
    /// for any other fsync of the same log to finish first.
    pub fn run(&self) -> Result<()> {
        self.shared.sync_segments(&self.segments)?;
        if let Some((segment, upto)) = &self.release {
            segment.release_cache(*upto);
        }
        Ok(())
    }
}

impl Log {
    /// Takes what must be fsynced for everything appended so far to be durable.
    pub fn begin_sync(&mut self) -> Result<SyncJob> {
        if self.failed {
            return Err(LogError::Failed);
        }
        Ok(SyncJob {
            shared: Arc::clone(&self.shared),
            segments: std::mem::take(&mut self.unsynced),
            end: self.end(),
            release: self.cache_release_point(),
        })
    }

    /// Like `begin_sync`, but the files stay listed as unsynced, so that a concurrent
    /// `begin_sync` (the flusher's) still syncs them itself instead of answering for them
    /// before this job's fsync has finished. For a sync ahead of a segment roll.
    pub fn begin_sync_ahead(&self) -> Result<SyncJob> {
        if self.failed {
            return Err(LogError::Failed);
        }
        Ok(SyncJob {
            shared: Arc::clone(&self.shared),
            segments: self.unsynced.clone(),
            end: self.end(),
            release: None,
        })
    }

    /// Records how a `SyncJob` went. After a failed fsync the page cache can no longer be
    /// trusted, so the log stops taking writes.
    /// The result is an error if this job failed or any fsync of the log has: a job whose
    /// fsync raced a failing one cannot be trusted to have made its data durable.
    pub fn finish_sync(&mut self, job: &SyncJob, outcome: &Result<()>) -> Result<()> {
        if outcome.is_err() || self.shared.sync_has_failed() {
            self.failed = true;
            return Err(LogError::Failed);
        }
        self.last_sync = Instant::now();
        // A truncation while the job ran may have cut the log below the job's end.
        let end = self.end();
        let synced = if job.end.next_index <= end.next_index {
            job.end
        } else {
            end
        };
        if synced.next_index > self.durable.next_index {
            self.durable = synced;
        }
        Ok(())
    }

    /// Where the page-cache window of the active segment begins. Sealed segments release
    /// theirs when they are rolled.
    pub(crate) fn cache_release_point(&self) -> Option<(Arc<Segment>, u64)> {
        let window = self.config().page_cache_window?;
        let active = self.active_segment();
        let end = active.state.read().end;
        Some((active, end.saturating_sub(window)))
    }

    /// Deletes the whole segments whose entries all have a Raft index of `last` or less;
    /// the active segment is never deleted.
    pub fn purge_through_index(&mut self, last: u64) -> Result<Purged> {
        let segments = self.shared.segments.read().clone();
        let count = segments
            .windows(2)
            .take_while(|w| w[1].header.base_index <= last.saturating_add(1))
            .count();
        self.purge_leading(count)
    }

    /// Where the log can be cut keeping the record at `offset` and everything after it:
    /// the base offset and base Raft index of the segment holding that record, when older
    /// segments precede it.
    pub fn cut_keeping(&self, offset: i64) -> Option<(i64, u64)> {
        let segments = self.shared.segments.read();
        let n = segments.partition_point(|s| s.header.base_offset <= offset);
        let holding = segments.get(n.checked_sub(1)?)?;
        (holding.header.base_index > segments[0].header.base_index)
            .then_some((holding.header.base_offset, holding.header.base_index))
    }

    /// The Raft index of the segment that starts at Kafka offset `base_offset`, if one does.
    pub fn index_of_segment_at(&self, base_offset: i64) -> Option<u64> {
        self.shared
            .segments
            .read()
            .iter()
            .find(|s| s.header.base_offset == base_offset)
            .map(|s| s.header.base_index)
    }
}
