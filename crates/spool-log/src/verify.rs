//! Offline, read-only checks of a log directory: every segment header, every frame's CRC
//! and continuity, and every index entry against the frames it points to. Nothing is
//! changed on disk, so it is safe to run on a copy of a damaged log or beside a stopped
//! node.

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use crate::error::{Corruption, Result};
use crate::frame::FrameKind;
use crate::index::SparseIndex;
use crate::recovery::{check_continuity, list_dir};
use crate::scan::{Expect, scan_frames};
use crate::segment::{HeaderRead, read_header};
use crate::segment_header::{SEGMENT_HEADER_LEN, SegmentHeader};

/// One thing wrong in a log directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// Byte position in the file, where one applies.
    pub position: Option<u64>,
    pub kind: Corruption,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.position {
            Some(p) => write!(f, "{} at byte {p}: {}", self.file.display(), self.kind),
            None => write!(f, "{}: {}", self.file.display(), self.kind),
        }
    }
}

/// What one segment holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSummary {
    pub path: PathBuf,
    pub header: Option<SegmentHeader>,
    pub bytes: u64,
    pub frames: u64,
    pub data_frames: u64,
    /// Index and offset after the last valid frame.
    pub next_index: u64,
    pub next_offset: i64,
    pub index_file: IndexFileStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexFileStatus {
    /// Present and consistent with the segment.
    Valid,
    /// Absent: it is rebuilt on open (normal for the active segment after a crash).
    Missing,
    /// Present but inconsistent (reported as a problem; rebuilt on open).
    Invalid,
    /// Not checked, because the segment itself is damaged.
    Unchecked,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub segments: Vec<SegmentSummary>,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The segment files of a log directory, oldest first.
pub fn segment_files(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(list_dir(dir)?.segments.into_values().collect())
}

/// Opens a segment file read-only and decodes its header.
pub fn open_segment(path: &Path) -> Result<(File, u64, HeaderRead)> {
    let file = File::open(path).map_err(crate::LogError::io("open", path))?;
    let (len, header) = read_header(&file, path)?;
    Ok((file, len, header))
}

/// Checks every byte of the log in `dir` without changing it.
pub fn verify_dir(dir: &Path) -> Result<VerifyReport> {
    let listing = list_dir(dir)?;
    let mut report = VerifyReport::default();
    let mut expect: Option<Expect> = None;
    for (&base, path) in &listing.segments {
        let (file, len, header) = open_segment(path)?;
        let problem = |position, kind| Problem {
            file: path.clone(),
            position,
            kind,
        };
        let mut summary = SegmentSummary {
            path: path.clone(),
            header: header.as_ref().ok().copied(),
            bytes: len,
            frames: 0,
            data_frames: 0,
            next_index: 0,
            next_offset: 0,
            index_file: IndexFileStatus::Missing,
        };
        let header = match header {
            Ok(h) if h.base_offset == base => h,
            Ok(_) => {
                report.problems.push(problem(
                    Some(0),
                    Corruption::BadSegmentHeader {
                        reason: "the base offset disagrees with the file name",
                    },
                ));
                report.segments.push(summary);
                expect = None;
                continue;
            }
            Err(kind) => {
                report.problems.push(problem(Some(0), kind));
                report.segments.push(summary);
                expect = None;
                continue;
            }
        };
        let start = Expect {
            next_index: header.base_index,
            next_offset: header.base_offset,
            last_term: header.prev_term,
        };
        if let Some(previous) = expect
            && let Err(kind) = check_continuity(&header, &previous)
        {
            report.problems.push(problem(Some(0), kind));
        }
        let index = listing.indexes.get(&base).map(|p| (p, fs::read(p)));
        let decoded = index.as_ref().map(|(_, bytes)| match bytes {
            Ok(bytes) => SparseIndex::decode(bytes, header.base_index, header.base_offset),
            Err(_) => Err(Corruption::BadIndex {
                reason: "unreadable",
            }),
        });
        // Every index entry must land on a frame with its index, offset and timestamp.
        let mut wanted: HashMap<u64, (u64, i64, i64)> = HashMap::new();
        if let Some(Ok((index, _))) = &decoded {
            for e in index.entries() {
                let key = u64::from(e.position);
                let value = (
                    header.base_index + u64::from(e.rel_index),
                    header.base_offset + i64::from(e.rel_offset),
                    e.max_ts_before,
                );
                wanted.insert(key, value);
            }
        }
        let mut checkpoint_seen = None;
        let checkpoint_at = decoded
            .as_ref()
            .and_then(|d| d.as_ref().ok())
            .map(|(_, c)| c.covered_len);
        let mut max_ts = -1i64;
        let mut matched = 0usize;
        let outcome = scan_frames(
            &file,
            path,
            SEGMENT_HEADER_LEN as u64,
            len,
            start,
            |frame| {
                if let Some(&(index, offset, max_before)) = wanted.get(&frame.position)
                    && index == frame.header.index
                    && offset == frame.header.base_offset
                    && max_before == max_ts
                {
                    matched += 1;
                }
                if checkpoint_at == Some(frame.position) {
                    checkpoint_seen = Some((frame.header.index, frame.header.base_offset));
                }
                summary.frames += 1;
                if frame.header.kind == FrameKind::Data {
                    summary.data_frames += 1;
                    max_ts = max_ts.max(crate::batch::max_timestamp_unchecked(frame.payload));
                }
            },
        )?;
        summary.next_index = outcome.expect.next_index;
        summary.next_offset = outcome.expect.next_offset;
        if let Some(stop) = &outcome.stop {
            // Past damage neither the index nor the next segment's start can be judged.
            report
                .problems
                .push(problem(Some(stop.position), stop.kind.clone()));
            summary.index_file = IndexFileStatus::Unchecked;
            report.segments.push(summary);
            expect = None;
            continue;
        }
        if let Some(((index_path, _), decoded)) = index.as_ref().zip(decoded) {
            let index_problem = match decoded {
                Err(kind) => Some(kind),
                Ok((_, checkpoint)) => {
                    let frames_agree = matched == wanted.len();
                    let checkpoint_agrees = if checkpoint.covered_len == outcome.valid_end {
                        checkpoint.next_index == outcome.expect.next_index
                            && checkpoint.next_offset == outcome.expect.next_offset
                    } else {
                        checkpoint.covered_len < outcome.valid_end
                            && checkpoint_seen
                                == Some((checkpoint.next_index, checkpoint.next_offset))
                    };
                    (!frames_agree || !checkpoint_agrees).then_some(Corruption::BadIndex {
                        reason: "entries or checkpoint disagree with the segment's frames",
                    })
                }
            };
            summary.index_file = match index_problem {
                None => IndexFileStatus::Valid,
                Some(kind) => {
                    report.problems.push(Problem {
                        file: (*index_path).clone(),
                        position: None,
                        kind,
                    });
                    IndexFileStatus::Invalid
                }
            };
        }
        expect = Some(outcome.expect);
        report.segments.push(summary);
    }
    Ok(report)
}
