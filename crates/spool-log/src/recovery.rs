//! Opening a log directory: every segment header and index is checked, sealed segments
//! whose index is missing or stale are rescanned, and the tail of the last segment is
//! scanned frame by frame. A torn tail is cut off and reported; damage followed by valid
//! frames is refused, never skipped.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{LogConfig, RecoveryMode};
use crate::error::{Corruption, LogError, Result};
use crate::frame::FrameKind;
use crate::index::SparseIndex;
use crate::scan::{Expect, ScanOutcome, ScannedFrame, scan_frames, valid_frame_after};
use crate::segment::{Segment, SegmentState, remove_if_exists, sync_dir, write_index_file};
use crate::segment_header::{FileRole, SEGMENT_HEADER_LEN, SegmentHeader, parse_file_name};

/// What opening a log found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// True if the directory held no log and a new one was started.
    pub created: bool,
    pub segments: usize,
    /// Segment bytes read and checked while opening.
    pub scanned_bytes: u64,
    /// The torn or damaged tail that was cut off, if any.
    pub truncated_tail: Option<TailTruncation>,
    /// Segments whose index was missing or stale and was rebuilt.
    pub rebuilt_indexes: Vec<PathBuf>,
    /// Leftover temporary or orphaned files that were removed.
    pub removed_files: Vec<PathBuf>,
}

/// A tail cut off the last segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailTruncation {
    pub segment: PathBuf,
    /// Where the kept frames end and the cut began.
    pub position: u64,
    pub dropped_bytes: u64,
    pub reason: Corruption,
}

/// The files of a log directory, by base offset.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    pub segments: BTreeMap<i64, PathBuf>,
    pub indexes: BTreeMap<i64, PathBuf>,
    pub txn_indexes: BTreeMap<i64, PathBuf>,
    pub temporary: Vec<PathBuf>,
}

pub(crate) fn list_dir(dir: &Path) -> Result<Listing> {
    let mut listing = Listing::default();
    for entry in fs::read_dir(dir).map_err(LogError::io("list", dir))? {
        let entry = entry.map_err(LogError::io("list", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        match parse_file_name(name) {
            Some((base, FileRole::Segment)) => {
                listing.segments.insert(base, entry.path());
            }
            Some((base, FileRole::Index)) => {
                listing.indexes.insert(base, entry.path());
            }
            Some((base, FileRole::TxnIndex)) => {
                listing.txn_indexes.insert(base, entry.path());
            }
            None if name.ends_with(".tmp") => listing.temporary.push(entry.path()),
            None => {}
        }
    }
    Ok(listing)
}

pub(crate) fn recover(
    dir: &Path,
    config: &LogConfig,
    now_ms: i64,
) -> Result<(Vec<Arc<Segment>>, RecoveryReport)> {
    crate::segment::create_dir_durably(dir)?;
    let listing = list_dir(dir)?;
    let mut report = RecoveryReport::default();
    for path in listing.temporary.iter().chain(
        listing
            .indexes
            .iter()
            .chain(&listing.txn_indexes)
            .filter(|(base, _)| !listing.segments.contains_key(base))
            .map(|(_, path)| path),
    ) {
        remove_if_exists(path)?;
        report.removed_files.push(path.clone());
    }
    if listing.segments.is_empty() {
        // A new log. Its directory may be left from a start that crashed before making it
        // durable: its entry in the parent is synced again before anything is written.
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            crate::segment::sync_dir(parent)?;
        }
        let header = SegmentHeader {
            base_offset: 0,
            base_index: 0,
            prev_term: 0,
            created_ms: now_ms,
        };
        report.created = true;
        report.segments = 1;
        return Ok((vec![Arc::new(Segment::create(dir, header)?)], report));
    }
    let count = listing.segments.len();
    let mut segments = Vec::with_capacity(count);
    let mut expect: Option<Expect> = None;
    for (i, (&base, path)) in listing.segments.iter().enumerate() {
        let (file, len, header) = Segment::open_file(path)?;
        let corrupt = |position, kind| LogError::Corrupt {
            segment: path.clone(),
            position,
            kind,
        };
        let header = header.map_err(|kind| corrupt(0, kind))?;
        if header.base_offset != base {
            return Err(corrupt(
                0,
                Corruption::BadSegmentHeader {
                    reason: "the base offset disagrees with the file name",
                },
            ));
        }
        if let Some(expect) = expect {
            check_continuity(&header, &expect).map_err(|kind| corrupt(0, kind))?;
        }
        let opened = OpenedSegment {
            dir,
            path,
            file: &file,
            len,
            header,
            config,
        };
        let state = if i + 1 < count {
            opened.recover_sealed(&mut report)?
        } else {
            opened.recover_last(&mut report)?
        };
        expect = Some(Expect {
            next_index: state.next_index,
            next_offset: state.next_offset,
            last_term: state.last_term,
        });
        segments.push(Arc::new(Segment::from_parts(
            dir,
            path.clone(),
            file,
            header,
            state,
        )));
    }
    report.segments = segments.len();
    Ok((segments, report))
}

pub(crate) fn check_continuity(header: &SegmentHeader, expect: &Expect) -> Result<(), Corruption> {
    if header.base_index != expect.next_index {
        return Err(Corruption::IndexGap {
            expected: expect.next_index,
            found: header.base_index,
        });
    }
    if header.base_offset != expect.next_offset {
        return Err(Corruption::OffsetGap {
            expected: expect.next_offset,
            found: header.base_offset,
        });
    }
    if header.prev_term != expect.last_term {
        return Err(Corruption::TermRegression {
            previous: expect.last_term,
            found: header.prev_term,
        });
    }
    Ok(())
}

struct OpenedSegment<'a> {
    dir: &'a Path,
    path: &'a PathBuf,
    file: &'a File,
    len: u64,
    header: SegmentHeader,
    config: &'a LogConfig,
}

impl OpenedSegment<'_> {
    fn corrupt(&self, position: u64, kind: Corruption) -> LogError {
        LogError::Corrupt {
            segment: self.path.clone(),
            position,
            kind,
        }
    }

    fn index_path(&self) -> PathBuf {
        self.dir.join(crate::segment_header::index_file_name(
            self.header.base_offset,
        ))
    }

    /// The index file's contents and checkpoint, if it exists and checks out.
    fn load_index(&self) -> Option<SegmentState> {
        let bytes = fs::read(self.index_path()).ok()?;
        let (index, checkpoint) =
            SparseIndex::decode(&bytes, self.header.base_index, self.header.base_offset).ok()?;
        (checkpoint.covered_len >= SEGMENT_HEADER_LEN as u64).then_some(SegmentState {
            end: checkpoint.covered_len,
            next_index: checkpoint.next_index,
            next_offset: checkpoint.next_offset,
            last_term: checkpoint.last_term,
            max_timestamp: checkpoint.max_timestamp,
            index,
        })
    }

    /// A sealed segment is trusted when its index covers it exactly; otherwise it is
    /// scanned in full, and any damage in it is an error: it is not a tail.
    fn recover_sealed(&self, report: &mut RecoveryReport) -> Result<SegmentState> {
        if let Some(state) = self.load_index().filter(|s| s.end == self.len) {
            return Ok(state);
        }
        let (state, outcome) = self.scan(SegmentState::empty(&self.header))?;
        report.scanned_bytes += outcome.valid_end - SEGMENT_HEADER_LEN as u64;
        if let Some(stop) = outcome.stop {
            return Err(self.corrupt(stop.position, stop.kind));
        }
        write_index_file(&self.index_path(), &state)?;
        report.rebuilt_indexes.push(self.path.clone());
        Ok(state)
    }

    /// The last segment: resume from its index checkpoint if one is valid, scan the rest,
    /// and cut off a torn tail.
    fn recover_last(&self, report: &mut RecoveryReport) -> Result<SegmentState> {
        let start = match self.load_index().filter(|s| s.end <= self.len) {
            Some(state) => state,
            None => {
                if self.index_path().exists() {
                    report.rebuilt_indexes.push(self.path.clone());
                }
                remove_if_exists(&self.index_path())?;
                SegmentState::empty(&self.header)
            }
        };
        let scan_from = start.end;
        let (state, outcome) = self.scan(start)?;
        report.scanned_bytes += outcome.valid_end - scan_from;
        let Some(stop) = outcome.stop else {
            return Ok(state);
        };
        // Whatever else stopped the scan, valid frames after it mean the log was written
        // past it and fsynced: damage, never a torn write, and cutting would lose them. (A
        // frame whose header CRC cannot be checked, a non-data frame running past the
        // end, is only trusted as torn this way.)
        // A torn frame whose header checked out runs to the end of the file: its payload
        // is the producer's bytes, and looking for frames in it could only mistake them.
        let last_good = outcome.expect.next_index.saturating_sub(1);
        let followed = if stop.authentic_torn {
            None
        } else {
            valid_frame_after(self.file, self.path, stop.position, self.len, last_good)?
        };
        if let Some(valid) = followed {
            tracing::error!(segment = %self.path.display(), position = stop.position, valid_frame_at = valid, "damaged frame followed by valid frames");
            return Err(self.corrupt(stop.position, stop.kind));
        }
        let torn = matches!(stop.kind, Corruption::Truncated { .. });
        if !torn && self.config.recovery == RecoveryMode::Strict {
            return Err(self.corrupt(stop.position, stop.kind));
        }
        self.file
            .set_len(outcome.valid_end)
            .map_err(LogError::io("truncate", self.path))?;
        self.file
            .sync_all()
            .map_err(LogError::io("sync", self.path))?;
        sync_dir(self.dir)?;
        tracing::warn!(segment = %self.path.display(), position = stop.position, reason = %stop.kind, "cut a torn tail off the log");
        report.truncated_tail = Some(TailTruncation {
            segment: self.path.clone(),
            position: stop.position,
            dropped_bytes: self.len - outcome.valid_end,
            reason: stop.kind,
        });
        Ok(state)
    }

    /// Scans from `state.end` to the end of the file, extending `state` as the writer would.
    fn scan(&self, mut state: SegmentState) -> Result<(SegmentState, ScanOutcome)> {
        let expect = Expect {
            next_index: state.next_index,
            next_offset: state.next_offset,
            last_term: state.last_term,
        };
        let interval = self.config.index_interval_bytes;
        let outcome = scan_frames(self.file, self.path, state.end, self.len, expect, |frame| {
            extend_state(&mut state, frame, interval);
        })?;
        Ok((state, outcome))
    }
}

/// Applies one scanned frame to a segment's state exactly as the writer's publish does,
/// so a rebuilt index equals the one written live.
pub(crate) fn extend_state(state: &mut SegmentState, frame: &ScannedFrame<'_>, interval: u64) {
    let header = &frame.header;
    let last_indexed = state
        .index
        .last_position()
        .unwrap_or(SEGMENT_HEADER_LEN as u64);
    if frame.position - last_indexed >= interval {
        state.index.push(
            header.index,
            header.base_offset,
            frame.position,
            state.max_timestamp,
        );
    }
    if header.kind == FrameKind::Data {
        state.max_timestamp = state
            .max_timestamp
            .max(crate::batch::max_timestamp_unchecked(frame.payload));
    }
    state.end = frame.position + header.frame_len();
    state.next_index = header.index + 1;
    state.next_offset = header.next_offset();
    state.last_term = header.term;
}
