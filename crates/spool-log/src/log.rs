//! The writer side of a partition log. One `Log` per directory; `&mut self` makes it the
//! single writer, and `reader()` hands out read handles for other threads.

use std::fs::File;
use std::io::{self, IoSlice, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::batch::RecordBatch;
use crate::config::{Clock, FlushPolicy, LogConfig, RetentionPolicy, SystemClock};
use crate::error::{LogError, Result};
use crate::frame::{DATA_PREFIX_LEN, FRAME_HEADER_LEN, FrameHeader, FrameKind, MAX_FRAME_PAYLOAD};
use crate::reader::{LogReader, Shared};
use crate::recovery::{self, RecoveryReport};
use crate::segment::{FrameCursor, Segment, sync_dir};
use crate::segment_header::{SEGMENT_HEADER_LEN, SegmentHeader};

/// Entries written by one vectored write at most.
const GROUP: usize = 32;

/// What an entry carries.
#[derive(Debug, Clone, Copy)]
pub enum EntryPayload<'a> {
    /// A validated record batch. Its base offset and leader epoch are set on the way to
    /// disk (to the next offset and the entry's term); the caller's bytes are not touched.
    Data(RecordBatch<'a>),
    /// A new leader's empty entry.
    Blank,
    /// A Raft membership configuration, opaque here.
    Membership(&'a [u8]),
}

/// One entry to append: the Raft term and index it was created with, and its payload.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub term: u64,
    pub index: u64,
    pub payload: EntryPayload<'a>,
}

/// The end of the log: what the next entry will take, and the last entry's term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogEnd {
    pub next_index: u64,
    pub next_offset: i64,
    pub last_term: u64,
}

/// What one `append` call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Raft index of the first entry appended.
    pub first_index: u64,
    /// Kafka offset given to the first record appended (if any data was).
    pub first_offset: i64,
    pub end: LogEnd,
}

/// What a purge removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Purged {
    pub segments: usize,
    pub bytes: u64,
    /// The first offset still in the log.
    pub start_offset: i64,
}

#[derive(Clone, Copy)]
struct Pending<'a> {
    header: FrameHeader,
    /// Bytes of `header_buf` this entry's header (and patched prefix) take.
    head_len: usize,
    tail: &'a [u8],
    max_timestamp: i64,
}

const NO_PENDING: Pending<'static> = Pending {
    header: FrameHeader {
        kind: FrameKind::Blank,
        term: 0,
        index: 0,
        base_offset: 0,
        offset_count: 0,
        payload_len: 0,
    },
    head_len: 0,
    tail: &[],
    max_timestamp: -1,
};

/// A partition log: segments of frames on disk, appended by this one writer.
#[derive(Debug)]
pub struct Log {
    pub(crate) shared: Arc<Shared>,
    config: LogConfig,
    clock: Arc<dyn Clock>,
    active: Arc<Segment>,
    end: LogEnd,
    write_pos: u64,
    pub(crate) durable: LogEnd,
    pub(crate) unsynced: Vec<Arc<Segment>>,
    pub(crate) last_sync: Instant,
    header_buf: Vec<u8>,
    pub(crate) failed: bool,
    recovery: RecoveryReport,
}

impl Log {
    /// Opens the log in `dir`, creating it if needed and recovering from a crash.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Self> {
        Self::open_with_clock(dir, config, Arc::new(SystemClock))
    }

    pub fn open_with_clock(
        dir: impl AsRef<Path>,
        config: LogConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        config.validate()?;
        let dir = dir.as_ref();
        let (segments, report) = recovery::recover(dir, &config, clock.now_ms())?;
        let active = Arc::clone(segments.last().ok_or(LogError::InvalidConfig {
            reason: "recovery produced no segment",
        })?);
        let (end, write_pos) = {
            let state = active.state.read();
            let end = LogEnd {
                next_index: state.next_index,
                next_offset: state.next_offset,
                last_term: state.last_term,
            };
            (end, state.end)
        };
        (&active.file)
            .seek(SeekFrom::Start(write_pos))
            .map_err(LogError::io("seek", &active.path))?;
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            segments: parking_lot::RwLock::new(segments),
            index_interval_bytes: config.index_interval_bytes,
            sync_gate: parking_lot::Mutex::new(()),
            sync_failed: std::sync::atomic::AtomicBool::new(false),
        });
        Ok(Self {
            shared,
            config,
            clock,
            active,
            end,
            write_pos,
            durable: end,
            unsynced: Vec::new(),
            last_sync: Instant::now(),
            header_buf: Vec::with_capacity(GROUP * (FRAME_HEADER_LEN + DATA_PREFIX_LEN)),
            failed: false,
            recovery: report,
        })
    }

    /// A read handle; cheap to clone and safe to use from other threads.
    pub fn reader(&self) -> LogReader {
        LogReader {
            shared: Arc::clone(&self.shared),
        }
    }

    /// What opening the log found and repaired.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    pub(crate) fn active_segment(&self) -> Arc<Segment> {
        Arc::clone(&self.active)
    }

    pub fn end(&self) -> LogEnd {
        self.end
    }

    /// The end of what is durable under the flush policy.
    pub fn durable(&self) -> LogEnd {
        self.durable
    }

    pub fn next_offset(&self) -> i64 {
        self.end.next_offset
    }

    pub fn next_index(&self) -> u64 {
        self.end.next_index
    }

    pub fn start_offset(&self) -> i64 {
        self.reader().start_offset()
    }

    pub fn first_index(&self) -> u64 {
        self.reader().first_index()
    }

    /// Appends entries in order. Indexes must continue the log and terms must not go
    /// back; a data entry takes as many offsets as its batch spans. Entries are readable
    /// when this returns and durable after the next `flush()`. On any error nothing of
    /// this call remains in the log.
    pub fn append<'a>(&mut self, entries: impl IntoIterator<Item = Entry<'a>>) -> Result<Appended> {
        if self.failed {
            return Err(LogError::Failed);
        }
        let start = self.end;
        match self.append_inner(entries) {
            Ok(()) => Ok(Appended {
                first_index: start.next_index,
                first_offset: start.next_offset,
                end: self.end,
            }),
            Err(error) => {
                self.header_buf.clear();
                if self.end.next_index > start.next_index {
                    self.truncate_from(start.next_index)?;
                }
                Err(error)
            }
        }
    }

    fn append_inner<'a>(&mut self, entries: impl IntoIterator<Item = Entry<'a>>) -> Result<()> {
        let now = self.clock.now_ms();
        let mut group = [NO_PENDING; GROUP];
        let mut count = 0usize;
        let mut group_bytes = 0u64;
        let mut next = self.end;
        for entry in entries {
            if entry.index != next.next_index {
                return Err(LogError::NonContiguousIndex {
                    expected: next.next_index,
                    found: entry.index,
                });
            }
            if entry.term < next.last_term {
                return Err(LogError::TermRegression {
                    last: next.last_term,
                    found: entry.term,
                });
            }
            let (kind, payload, offset_count, max_timestamp) = match entry.payload {
                EntryPayload::Data(batch) => (
                    FrameKind::Data,
                    batch.as_bytes(),
                    batch.offset_count(),
                    batch.max_timestamp(),
                ),
                EntryPayload::Blank => (FrameKind::Blank, &[][..], 0, -1),
                EntryPayload::Membership(bytes) => (FrameKind::Membership, bytes, 0, -1),
            };
            let payload_len = u32::try_from(payload.len())
                .ok()
                .filter(|len| *len <= MAX_FRAME_PAYLOAD)
                .ok_or(LogError::PayloadTooLarge {
                    len: payload.len(),
                    max: MAX_FRAME_PAYLOAD,
                })?;
            let frame_len = FRAME_HEADER_LEN as u64 + u64::from(payload_len);
            let holds_data = next.next_offset > self.active.header.base_offset;
            let full = self.write_pos + group_bytes + frame_len > self.config.segment_bytes;
            let old =
                now - self.active.header.created_ms >= self.config.segment_age.as_millis() as i64;
            if holds_data && (full || old) {
                self.write_group(&group[..count])?;
                (count, group_bytes) = (0, 0);
                self.roll(now)?;
            }
            let header = FrameHeader {
                kind,
                term: entry.term,
                index: entry.index,
                base_offset: next.next_offset,
                offset_count,
                payload_len,
            };
            let head_start = self.header_buf.len();
            let tail = self.encode_head(&header, payload);
            group[count] = Pending {
                header,
                head_len: self.header_buf.len() - head_start,
                tail,
                max_timestamp,
            };
            count += 1;
            group_bytes += frame_len;
            next = LogEnd {
                next_index: header.index + 1,
                next_offset: header.next_offset(),
                last_term: header.term,
            };
            if count == GROUP {
                self.write_group(&group[..count])?;
                (count, group_bytes) = (0, 0);
            }
        }
        self.write_group(&group[..count])
    }

    /// Encodes a frame header (and for data, the patched batch prefix) into `header_buf`;
    /// returns the payload bytes that follow it unchanged.
    fn encode_head<'a>(&mut self, header: &FrameHeader, payload: &'a [u8]) -> &'a [u8] {
        let mut head = [0u8; FRAME_HEADER_LEN];
        if header.kind == FrameKind::Data {
            let mut prefix = [0u8; DATA_PREFIX_LEN];
            prefix.copy_from_slice(&payload[..DATA_PREFIX_LEN]);
            crate::batch::set_base_offset(&mut prefix, header.base_offset);
            let epoch = i32::try_from(header.term).unwrap_or(i32::MAX);
            crate::batch::set_partition_leader_epoch(&mut prefix, epoch);
            header.encode(&prefix, &mut head);
            self.header_buf.extend_from_slice(&head);
            self.header_buf.extend_from_slice(&prefix);
            &payload[DATA_PREFIX_LEN..]
        } else {
            header.encode(payload, &mut head);
            self.header_buf.extend_from_slice(&head);
            payload
        }
    }

    /// Writes a group of encoded entries with one vectored write, then publishes them.
    fn write_group(&mut self, group: &[Pending<'_>]) -> Result<()> {
        if group.is_empty() {
            return Ok(());
        }
        let mut slices = [IoSlice::new(&[]); 2 * GROUP];
        let mut n = 0;
        let mut at = 0;
        for pending in group {
            slices[n] = IoSlice::new(&self.header_buf[at..at + pending.head_len]);
            at += pending.head_len;
            n += 1;
            if !pending.tail.is_empty() {
                slices[n] = IoSlice::new(pending.tail);
                n += 1;
            }
        }
        if let Err(source) = write_all_vectored(&self.active.file, &mut slices[..n]) {
            self.header_buf.clear();
            self.undo_partial_write();
            return Err(LogError::Io {
                op: "write",
                path: self.active.path.clone(),
                source,
            });
        }
        self.header_buf.clear();
        self.publish(group);
        if !self
            .unsynced
            .last()
            .is_some_and(|s| Arc::ptr_eq(s, &self.active))
        {
            self.unsynced.push(Arc::clone(&self.active));
        }
        Ok(())
    }

    /// Cuts a partly written group off the file; if even that fails, stop taking writes.
    fn undo_partial_write(&mut self) {
        let undone = self.active.file.set_len(self.write_pos).and_then(|()| {
            (&self.active.file)
                .seek(SeekFrom::Start(self.write_pos))
                .map(drop)
        });
        if undone.is_err() {
            self.failed = true;
        }
    }

    /// Makes written entries visible to readers and extends the sparse index.
    fn publish(&mut self, group: &[Pending<'_>]) {
        let interval = self.config.index_interval_bytes;
        let mut state = self.active.state.write();
        let mut pos = self.write_pos;
        for pending in group {
            let header = &pending.header;
            let last_indexed = state
                .index
                .last_position()
                .unwrap_or(SEGMENT_HEADER_LEN as u64);
            if pos - last_indexed >= interval {
                let max_before = state.max_timestamp;
                state
                    .index
                    .push(header.index, header.base_offset, pos, max_before);
            }
            pos += header.frame_len();
            state.max_timestamp = state.max_timestamp.max(pending.max_timestamp);
            state.next_index = header.index + 1;
            state.next_offset = header.next_offset();
            state.last_term = header.term;
        }
        state.end = pos;
        drop(state);
        self.write_pos = pos;
        if let Some(last) = group.last() {
            self.end = LogEnd {
                next_index: last.header.index + 1,
                next_offset: last.header.next_offset(),
                last_term: last.header.term,
            };
        }
    }

    /// Seals the active segment (synced, index written) and starts a new one.
    fn roll(&mut self, now_ms: i64) -> Result<()> {
        if let Err(error) = self.shared.sync_segments([&self.active]) {
            self.failed = true;
            return Err(error);
        }
        self.unsynced.retain(|s| !Arc::ptr_eq(s, &self.active));
        self.active.write_index_file()?;
        if self.config.page_cache_window.is_some() {
            // Sealed and synced: its pages need not stay (the window is of the new tail).
            self.active.release_cache(self.write_pos);
        }
        let header = SegmentHeader {
            base_offset: self.end.next_offset,
            base_index: self.end.next_index,
            prev_term: self.end.last_term,
            created_ms: now_ms,
        };
        let segment = Arc::new(Segment::create(&self.shared.dir, header)?);
        self.shared.segments.write().push(Arc::clone(&segment));
        self.active = segment;
        self.write_pos = SEGMENT_HEADER_LEN as u64;
        tracing::debug!(base_offset = header.base_offset, "rolled to a new segment");
        Ok(())
    }

    /// Makes what was appended durable under the flush policy and returns the end that is
    /// now durable. Call it once after a group of appends: they share one fsync.
    pub fn flush(&mut self) -> Result<LogEnd> {
        match self.config.flush {
            FlushPolicy::Always => self.sync(),
            FlushPolicy::Interval(every) if self.last_sync.elapsed() >= every => self.sync(),
            FlushPolicy::Interval(_) | FlushPolicy::Os => {
                self.durable = self.end;
                Ok(self.durable)
            }
        }
    }

    /// Under `Interval`, fsyncs if data is waiting and the interval has passed: a timer
    /// calls this so that idle logs are synced too. Does nothing under other policies.
    /// Whether appending `bytes` more (frames included) may roll the active segment, which
    /// seals and fsyncs it: work a caller on an async runtime should keep off its workers.
    pub fn may_roll(&self, bytes: u64) -> bool {
        let now = self.clock.now_ms();
        self.write_pos + bytes > self.config.segment_bytes
            || now - self.active.header.created_ms >= self.config.segment_age.as_millis() as i64
    }

    /// Whether an interval flush is due: unsynced data and the interval passed. The fsync
    /// itself can then run outside the log's lock (`begin_sync`).
    pub fn sync_due(&self) -> bool {
        matches!(self.config.flush, FlushPolicy::Interval(every)
            if !self.unsynced.is_empty() && self.last_sync.elapsed() >= every)
    }

    pub fn sync_if_due(&mut self) -> Result<()> {
        if let FlushPolicy::Interval(every) = self.config.flush
            && !self.unsynced.is_empty()
            && self.last_sync.elapsed() >= every
        {
            self.sync()?;
        }
        Ok(())
    }

    /// Changes the settings that apply to future appends (rolling, flushing). The index
    /// interval of existing segments is unaffected.
    pub fn set_config(&mut self, config: LogConfig) -> Result<()> {
        config.validate()?;
        self.config = config;
        Ok(())
    }

    /// fsyncs every segment with unsynced data, whatever the policy.
    pub fn sync(&mut self) -> Result<LogEnd> {
        if self.failed {
            return Err(LogError::Failed);
        }
        if let Err(error) = self.shared.sync_segments(&self.unsynced) {
            // After a failed fsync the page cache can no longer be trusted.
            self.failed = true;
            return Err(error);
        }
        self.unsynced.clear();
        self.last_sync = Instant::now();
        self.durable = self.end;
        if let Some((segment, upto)) = self.cache_release_point() {
            segment.release_cache(upto);
        }
        Ok(self.durable)
    }

    /// Removes every entry after Raft index `last_kept`.
    pub fn truncate_after(&mut self, last_kept: u64) -> Result<()> {
        self.truncate_from(last_kept.saturating_add(1))
    }

    /// Removes every entry with a Raft index of `first_removed` or more (all of them if it
    /// is the first index). Offsets given to removed data are given out again.
    pub fn truncate_from(&mut self, first_removed: u64) -> Result<()> {
        let first = self.first_index();
        if first_removed < first {
            return Err(LogError::IndexOutOfRange {
                requested: first_removed,
                first,
                next: self.end.next_index,
            });
        }
        if first_removed >= self.end.next_index {
            return Ok(());
        }
        let segments = self.shared.segments.read().clone();
        let keep_upto = segments.partition_point(|s| s.header.base_index <= first_removed);
        let cut_segment = &segments[keep_upto - 1];
        let drop_whole = cut_segment.header.base_index == first_removed && keep_upto > 1;
        let keep = if drop_whole { keep_upto - 1 } else { keep_upto };
        // Newest first, so a crash part-way leaves a log that is still contiguous.
        for segment in segments[keep..].iter().rev() {
            self.shared.segments.write().pop();
            segment.delete_files()?;
            self.unsynced.retain(|s| !Arc::ptr_eq(s, segment));
        }
        let active = Arc::clone(&segments[keep - 1]);
        if !drop_whole {
            self.cut_segment_at(&active, first_removed)?;
        }
        sync_dir(&self.shared.dir)?;
        let state = active.state.read();
        self.end = LogEnd {
            next_index: state.next_index,
            next_offset: state.next_offset,
            last_term: state.last_term,
        };
        self.write_pos = state.end;
        drop(state);
        (&active.file)
            .seek(SeekFrom::Start(self.write_pos))
            .map_err(LogError::io("seek", &active.path))?;
        self.active = active;
        if self.durable.next_index > self.end.next_index {
            self.durable = self.end;
        }
        Ok(())
    }

    /// Cuts `segment` just before the frame with index `first_removed`.
    fn cut_segment_at(&mut self, segment: &Segment, first_removed: u64) -> Result<()> {
        let (start, seg_end, max_before) = {
            let state = segment.state.read();
            // Start at or before the frame ahead of the cut: its term becomes the last term.
            let start = state
                .index
                .position_for_index(first_removed.saturating_sub(1));
            let max_before = state.index.max_ts_before_position(start);
            (
                start.unwrap_or(SEGMENT_HEADER_LEN as u64),
                state.end,
                max_before,
            )
        };
        let mut cursor = FrameCursor::new(segment, start, seg_end, 1024 * 1024);
        let mut last_term = segment.header.prev_term;
        let mut max_timestamp = max_before;
        let cut = loop {
            let position = cursor.position();
            let Some(frame) = cursor.next_frame()? else {
                return Err(LogError::IndexOutOfRange {
                    requested: first_removed,
                    first: segment.header.base_index,
                    next: self.end.next_index,
                });
            };
            if frame.header.index == first_removed {
                break (position, frame.header.base_offset);
            }
            last_term = frame.header.term;
            if frame.header.kind == FrameKind::Data {
                let batch = RecordBatch::new(&frame.payload)?;
                max_timestamp = max_timestamp.max(batch.max_timestamp());
            }
        };
        segment.remove_index_file()?;
        segment
            .file
            .set_len(cut.0)
            .map_err(LogError::io("truncate", &segment.path))?;
        if self.config.flush != FlushPolicy::Os {
            segment
                .file
                .sync_all()
                .map_err(LogError::io("sync", &segment.path))?;
        }
        let mut state = segment.state.write();
        state.index.truncate_at(cut.0);
        state.end = cut.0;
        state.next_index = first_removed;
        state.next_offset = cut.1;
        state.last_term = last_term;
        state.max_timestamp = max_timestamp;
        Ok(())
    }

    /// Deletes whole segments that hold only offsets below `offset`; the active segment is
    /// never deleted. The log then starts at the first remaining segment.
    pub fn purge_before(&mut self, offset: i64) -> Result<Purged> {
        let segments = self.shared.segments.read().clone();
        let count = segments
            .windows(2)
            .take_while(|w| w[1].header.base_offset <= offset)
            .count();
        self.purge_leading(count)
    }

    pub(crate) fn purge_leading(&mut self, count: usize) -> Result<Purged> {
        let removed: Vec<Arc<Segment>> = {
            let mut segments = self.shared.segments.write();
            segments.drain(..count).collect()
        };
        let mut bytes = 0;
        for segment in &removed {
            bytes += segment.size();
            segment.delete_files()?;
        }
        if !removed.is_empty() {
            sync_dir(&self.shared.dir)?;
        }
        Ok(Purged {
            segments: removed.len(),
            bytes,
            start_offset: self.start_offset(),
        })
    }

    /// The offset retention would purge before now, if any segment is due.
    pub fn retention_point(&self, policy: &RetentionPolicy, now_ms: i64) -> Option<i64> {
        let segments = self.shared.segments.read();
        let sealed = &segments[..segments.len() - 1];
        let mut due = 0;
        if let Some(age) = policy.max_age {
            let oldest_kept = now_ms - age.as_millis() as i64;
            due = sealed
                .iter()
                .take_while(|s| s.state.read().max_timestamp < oldest_kept)
                .count();
        }
        if let Some(max_bytes) = policy.max_bytes {
            let total: u64 = segments.iter().map(|s| s.size()).sum();
            let mut excess = total.saturating_sub(max_bytes);
            let by_size = sealed
                .iter()
                .take_while(|s| {
                    let size = s.size();
                    let fits = excess >= size;
                    if fits {
                        excess -= size;
                    }
                    fits
                })
                .count();
            due = due.max(by_size);
        }
        (due > 0).then(|| segments[due].header.base_offset)
    }

    /// Deletes the segments retention no longer keeps.
    pub fn apply_retention(&mut self, policy: &RetentionPolicy) -> Result<Purged> {
        match self.retention_point(policy, self.clock.now_ms()) {
            Some(offset) => self.purge_before(offset),
            None => Ok(Purged {
                start_offset: self.start_offset(),
                ..Purged::default()
            }),
        }
    }

    /// Drops every entry and starts the log afresh at the given position (a Raft
    /// follower installing a snapshot past its log does this).
    pub fn reset(&mut self, next_index: u64, next_offset: i64, last_term: u64) -> Result<()> {
        if self.failed {
            return Err(LogError::Failed);
        }
        let segments = self.shared.segments.read().clone();
        for segment in segments.iter().rev() {
            segment.delete_files()?;
        }
        let header = SegmentHeader {
            base_offset: next_offset,
            base_index: next_index,
            prev_term: last_term,
            created_ms: self.clock.now_ms(),
        };
        let segment = Arc::new(Segment::create(&self.shared.dir, header)?);
        *self.shared.segments.write() = vec![Arc::clone(&segment)];
        self.unsynced.clear();
        self.active = segment;
        self.write_pos = SEGMENT_HEADER_LEN as u64;
        self.end = LogEnd {
            next_index,
            next_offset,
            last_term,
        };
        self.durable = self.end;
        Ok(())
    }

    /// Syncs everything and writes the active segment's index, so the next open has no
    /// tail to scan.
    pub fn close(mut self) -> Result<()> {
        self.sync()?;
        self.active.write_index_file()
    }
}

fn write_all_vectored(mut file: &File, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !slices.is_empty() {
        match file.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => IoSlice::advance_slices(&mut slices, written),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
