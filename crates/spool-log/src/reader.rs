//! Readers: any number, on any thread, never blocking the writer for longer than an index
//! lookup. They see only what the writer has published, and verify every frame they
//! return, so damaged bytes are reported, never served.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;

use crate::batch::{Compression, RecordBatch};
use crate::error::{Corruption, LogError, Result};
use crate::frame::{FRAME_HEADER_LEN, FrameHeader, FrameKind};
use crate::segment::{FrameCursor, Segment};
use crate::segment_header::SEGMENT_HEADER_LEN;

/// Reads larger than this are done in several chunks.
const MAX_CHUNK: usize = 16 * 1024 * 1024;

/// State shared by the writer and its readers.
#[derive(Debug)]
pub(crate) struct Shared {
    pub dir: PathBuf,
    /// Ordered by base offset and by base index; never empty.
    pub segments: RwLock<Vec<Arc<Segment>>>,
    pub index_interval_bytes: u64,
    /// Held across every fsync of this log's files: two fsyncs of one file must not run
    /// at once, because the kernel reports a writeback error to only one of them and the
    /// other would pass for a success.
    pub sync_gate: parking_lot::Mutex<()>,
    /// Set by the first failed fsync; every later one fails too (the page cache can no
    /// longer be trusted to hold what was written).
    pub sync_failed: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// fsyncs the data of `segments`, one fsync of this log at a time.
    pub fn sync_segments<'a>(
        &self,
        segments: impl IntoIterator<Item = &'a Arc<Segment>>,
    ) -> crate::error::Result<()> {
        use std::sync::atomic::Ordering;
        let _gate = self.sync_gate.lock();
        if self.sync_failed.load(Ordering::Acquire) {
            return Err(crate::error::LogError::Failed);
        }
        for segment in segments {
            if let Err(source) = segment.file.sync_data() {
                self.sync_failed.store(true, Ordering::Release);
                return Err(crate::error::LogError::Io {
                    op: "sync",
                    path: segment.path.clone(),
                    source,
                });
            }
        }
        Ok(())
    }

    pub fn sync_has_failed(&self) -> bool {
        self.sync_failed.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl Shared {
    fn segment_for_offset(&self, offset: i64) -> Arc<Segment> {
        let segments = self.segments.read();
        let n = segments.partition_point(|s| s.header.base_offset <= offset);
        Arc::clone(&segments[n.saturating_sub(1)])
    }

    fn segment_for_index(&self, index: u64) -> Arc<Segment> {
        let segments = self.segments.read();
        let n = segments.partition_point(|s| s.header.base_index <= index);
        Arc::clone(&segments[n.saturating_sub(1)])
    }

    fn segment_after(&self, segment: &Segment) -> Option<Arc<Segment>> {
        let segments = self.segments.read();
        let n = segments.partition_point(|s| s.header.base_index <= segment.header.base_index);
        segments.get(n).map(Arc::clone)
    }

    fn first(&self) -> Arc<Segment> {
        Arc::clone(&self.segments.read()[0])
    }

    fn last(&self) -> Arc<Segment> {
        let segments = self.segments.read();
        Arc::clone(&segments[segments.len() - 1])
    }
}

/// Whole stored batches, each a slice of a read buffer shared with its neighbours.
#[derive(Debug, Clone, Default)]
pub struct FetchedBatches {
    pub batches: Vec<Bytes>,
    /// The offset after the last batch returned (the requested offset if none was).
    pub next_offset: i64,
}

impl FetchedBatches {
    pub fn total_bytes(&self) -> usize {
        self.batches.iter().map(Bytes::len).sum()
    }
}

/// One stored Raft entry: its frame header and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    pub header: FrameHeader,
    pub payload: Bytes,
}

/// Where a log starts and ends, in Raft indexes and terms, read at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBounds {
    /// The first index still stored.
    pub first_index: u64,
    /// The term of the entry just before `first_index` (0 if there was none).
    pub prev_term: u64,
    /// The index the next entry will take.
    pub next_index: u64,
    /// The term of the last entry (`prev_term` when the log is empty).
    pub last_term: u64,
    pub start_offset: i64,
    pub next_offset: i64,
}

/// A cheap, cloneable read handle on a log.
#[derive(Debug, Clone)]
pub struct LogReader {
    pub(crate) shared: Arc<Shared>,
}

impl LogReader {
    /// The first Kafka offset still in the log.
    pub fn start_offset(&self) -> i64 {
        self.shared.first().header.base_offset
    }

    /// The offset the next appended record will take (the log end offset).
    pub fn next_offset(&self) -> i64 {
        self.shared.last().state.read().next_offset
    }

    /// The first Raft index still in the log.
    pub fn first_index(&self) -> u64 {
        self.shared.first().header.base_index
    }

    /// The Raft index the next appended entry will take.
    pub fn next_index(&self) -> u64 {
        self.shared.last().state.read().next_index
    }

    /// Both ends of the log, consistent with each other.
    pub fn bounds(&self) -> LogBounds {
        let segments = self.shared.segments.read();
        let first = &segments[0];
        let state = segments[segments.len() - 1].state.read();
        LogBounds {
            first_index: first.header.base_index,
            prev_term: first.header.prev_term,
            next_index: state.next_index,
            last_term: state.last_term,
            start_offset: first.header.base_offset,
            next_offset: state.next_offset,
        }
    }

    /// Bytes on disk, headers included.
    pub fn size_bytes(&self) -> u64 {
        self.shared.segments.read().iter().map(|s| s.size()).sum()
    }

    /// The base offset of the segment that holds `offset` (the first segment's for an
    /// offset below the log start, the last one's for one past the end).
    pub fn segment_base(&self, offset: i64) -> i64 {
        self.shared.segment_for_offset(offset).header.base_offset
    }

    pub fn segment_count(&self) -> usize {
        self.shared.segments.read().len()
    }

    /// Reads whole batches from the one holding `from` on, stopping before any batch that
    /// starts at or after `upper` (the high watermark) and once `max_bytes` would be
    /// exceeded. The first batch is returned even if it alone exceeds `max_bytes`, so a
    /// reader always makes progress.
    pub fn read(&self, from: i64, upper: i64, max_bytes: usize) -> Result<FetchedBatches> {
        let (start, end) = (self.start_offset(), self.next_offset());
        if from < start || from > end {
            return Err(LogError::OffsetOutOfRange {
                requested: from,
                start,
                end,
            });
        }
        let upper = upper.min(end);
        let mut fetched = FetchedBatches {
            batches: Vec::new(),
            next_offset: from,
        };
        if from >= upper {
            return Ok(fetched);
        }
        let mut bytes = 0usize;
        let hint = max_bytes
            .saturating_add(self.shared.index_interval_bytes as usize + FRAME_HEADER_LEN)
            .min(MAX_CHUNK);
        let mut segment = self.shared.segment_for_offset(from);
        loop {
            let (pos, seg_end) = {
                let state = segment.state.read();
                let pos = state.index.position_for_offset(from);
                (pos.unwrap_or(SEGMENT_HEADER_LEN as u64), state.end)
            };
            let mut cursor = FrameCursor::new(&segment, pos, seg_end, hint);
            while let Some(frame) = cursor.next_frame()? {
                let header = frame.header;
                if header.kind != FrameKind::Data || header.next_offset() <= from {
                    continue;
                }
                if header.base_offset >= upper
                    || (!fetched.batches.is_empty() && bytes + frame.payload.len() > max_bytes)
                {
                    return Ok(fetched);
                }
                bytes += frame.payload.len();
                fetched.next_offset = header.next_offset();
                fetched.batches.push(frame.payload);
            }
            match self.shared.segment_after(&segment) {
                Some(next) => segment = next,
                None => return Ok(fetched),
            }
        }
    }

    /// Reads the entries with Raft indexes in `[from, to)`, stopping early once `max_bytes`
    /// of payload would be exceeded (at least one entry is returned).
    pub fn read_entries(&self, from: u64, to: u64, max_bytes: usize) -> Result<Vec<StoredEntry>> {
        let (first, next) = (self.first_index(), self.next_index());
        if from < first || to > next || from > to {
            return Err(LogError::IndexOutOfRange {
                requested: if from < first || from > to { from } else { to },
                first,
                next,
            });
        }
        let mut entries = Vec::with_capacity((to - from).min(1024) as usize);
        if from == to {
            return Ok(entries);
        }
        let mut bytes = 0usize;
        let hint = max_bytes
            .saturating_add(self.shared.index_interval_bytes as usize + FRAME_HEADER_LEN)
            .min(MAX_CHUNK);
        let mut segment = self.shared.segment_for_index(from);
        loop {
            let (pos, seg_end) = {
                let state = segment.state.read();
                let pos = state.index.position_for_index(from);
                (pos.unwrap_or(SEGMENT_HEADER_LEN as u64), state.end)
            };
            let mut cursor = FrameCursor::new(&segment, pos, seg_end, hint);
            while let Some(frame) = cursor.next_frame()? {
                if frame.header.index < from {
                    continue;
                }
                if frame.header.index >= to
                    || (!entries.is_empty() && bytes + frame.payload.len() > max_bytes)
                {
                    return Ok(entries);
                }
                bytes += frame.payload.len();
                entries.push(StoredEntry {
                    header: frame.header,
                    payload: frame.payload,
                });
            }
            match self.shared.segment_after(&segment) {
                Some(next) => segment = next,
                None => return Ok(entries),
            }
        }
    }

    /// The offset of the first record with a timestamp at or after `timestamp`, below
    /// `upper`; `None` if there is none. For a compressed batch, its base offset.
    pub fn offset_for_timestamp(&self, timestamp: i64, upper: i64) -> Result<Option<i64>> {
        let candidates: Vec<Arc<Segment>> = self
            .shared
            .segments
            .read()
            .iter()
            .filter(|s| s.state.read().max_timestamp >= timestamp)
            .cloned()
            .collect();
        for segment in candidates {
            let (pos, seg_end) = {
                let state = segment.state.read();
                let pos = state.index.position_for_timestamp(timestamp);
                (pos.unwrap_or(SEGMENT_HEADER_LEN as u64), state.end)
            };
            let mut cursor = FrameCursor::new(&segment, pos, seg_end, 1024 * 1024);
            while let Some(frame) = cursor.next_frame()? {
                if frame.header.kind != FrameKind::Data {
                    continue;
                }
                if frame.header.base_offset >= upper {
                    return Ok(None);
                }
                let batch = RecordBatch::new(&frame.payload)
                    .map_err(|e| segment.corrupt(frame.position, Corruption::Batch(e)))?;
                if batch.max_timestamp() < timestamp {
                    continue;
                }
                if batch.compression() != Some(Compression::None) {
                    return Ok(Some(batch.base_offset()));
                }
                let records = batch
                    .records()
                    .map_err(|e| segment.corrupt(frame.position, Corruption::Batch(e)))?;
                for record in records {
                    let record = record
                        .map_err(|e| segment.corrupt(frame.position, Corruption::Batch(e)))?;
                    if record.timestamp() >= timestamp {
                        return Ok(Some(record.offset()));
                    }
                }
            }
        }
        Ok(None)
    }
}
