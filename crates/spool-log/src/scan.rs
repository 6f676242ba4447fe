//! Sequential, verifying scans over a segment file: used by recovery, index rebuilds,
//! `spool log verify` and `spool log dump`. Reads in large chunks into one reused buffer.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{Corruption, LogError, Result};
use crate::frame::{FRAME_HEADER_LEN, FRAME_MAGIC, FrameHeader};

const CHUNK: usize = 4 * 1024 * 1024;

/// One verified frame met by a scan.
#[derive(Debug)]
pub struct ScannedFrame<'a> {
    pub position: u64,
    pub header: FrameHeader,
    pub payload: &'a [u8],
}

/// What the scan expects next: continuity across frames is checked, not only CRCs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    pub next_index: u64,
    pub next_offset: i64,
    pub last_term: u64,
}

impl Expect {
    fn check(&self, header: &FrameHeader) -> Result<(), Corruption> {
        if header.index != self.next_index {
            return Err(Corruption::IndexGap {
                expected: self.next_index,
                found: header.index,
            });
        }
        if header.base_offset != self.next_offset {
            return Err(Corruption::OffsetGap {
                expected: self.next_offset,
                found: header.base_offset,
            });
        }
        if header.term < self.last_term {
            return Err(Corruption::TermRegression {
                previous: self.last_term,
                found: header.term,
            });
        }
        Ok(())
    }

    fn advance(&mut self, header: &FrameHeader) {
        self.next_index = header.index + 1;
        self.next_offset = header.next_offset();
        self.last_term = header.term;
    }
}

/// Where and why a scan stopped before the end of the range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanStop {
    pub position: u64,
    pub kind: Corruption,
    /// A frame cut short by the end whose header CRC checked out: a genuine torn write,
    /// after which nothing can follow.
    pub authentic_torn: bool,
}

/// The result of a scan: the end of the last valid frame, what was expected after it, and
/// the damage that stopped the scan, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanOutcome {
    pub valid_end: u64,
    pub expect: Expect,
    pub stop: Option<ScanStop>,
}

/// Scans frames in `[from, to)` of `file`, verifying each and its continuity with
/// `expect`, and hands each to `visit`. Stops at the first damaged or out-of-sequence
/// frame. Only I/O errors are returned as `Err`.
pub fn scan_frames(
    file: &File,
    path: &Path,
    from: u64,
    to: u64,
    mut expect: Expect,
    mut visit: impl FnMut(&ScannedFrame<'_>),
) -> Result<ScanOutcome> {
    let mut window = Window::new(to.saturating_sub(from));
    let mut pos = from;
    let stop = loop {
        if pos == to {
            break None;
        }
        if let Some(missing) = shortfall(FRAME_HEADER_LEN as u64, to - pos) {
            break Some(ScanStop {
                position: pos,
                kind: Corruption::Truncated { missing },
                authentic_torn: false,
            });
        }
        let at = window.ensure(file, path, pos, to, FRAME_HEADER_LEN)?;
        let mut header_bytes = [0u8; FRAME_HEADER_LEN];
        header_bytes.copy_from_slice(&window.buf[at..at + FRAME_HEADER_LEN]);
        let (header, stored_crc) = match FrameHeader::decode(&header_bytes) {
            Ok(decoded) => decoded,
            Err(kind) => {
                break Some(ScanStop {
                    position: pos,
                    kind,
                    authentic_torn: false,
                });
            }
        };
        let frame_len = header.frame_len();
        if let Some(missing) = shortfall(frame_len, to - pos) {
            // A frame that runs past the end is a torn write only if its header is
            // authentic: a flipped bit in the length field must not pass for one. The
            // header CRC covers the payload's first bytes too; check it when they are
            // here (always, for data frames).
            let covered = FrameHeader::covered_prefix_len(header.kind, header.payload_len as usize);
            let present = (to - pos).saturating_sub(FRAME_HEADER_LEN as u64);
            let (kind, authentic_torn) = if present >= covered as u64 {
                let at = window.ensure(file, path, pos, to, FRAME_HEADER_LEN + covered)?;
                let prefix = &window.buf[at + FRAME_HEADER_LEN..at + FRAME_HEADER_LEN + covered];
                match header.verify_header_crc(&header_bytes, stored_crc, prefix) {
                    Ok(()) => (Corruption::Truncated { missing }, true),
                    Err(damage) => (damage, false),
                }
            } else {
                (Corruption::Truncated { missing }, false)
            };
            break Some(ScanStop {
                position: pos,
                kind,
                authentic_torn,
            });
        }
        let at = window.ensure(file, path, pos, to, frame_len as usize)?;
        let payload = &window.buf[at + FRAME_HEADER_LEN..at + frame_len as usize];
        if let Err(kind) = header
            .verify(&header_bytes, stored_crc, payload)
            .and_then(|()| expect.check(&header))
        {
            break Some(ScanStop {
                position: pos,
                kind,
                authentic_torn: false,
            });
        }
        visit(&ScannedFrame {
            position: pos,
            header,
            payload,
        });
        expect.advance(&header);
        pos += frame_len;
    };
    Ok(ScanOutcome {
        valid_end: pos,
        expect,
        stop,
    })
}

/// How many bytes short `available` falls of `needed`, if it does.
fn shortfall(needed: u64, available: u64) -> Option<u64> {
    (needed > available).then(|| needed - available)
}

/// One reused read buffer holding `[start, start + filled)` of the file.
struct Window {
    buf: Vec<u8>,
    start: u64,
    filled: usize,
}

impl Window {
    fn new(span: u64) -> Self {
        Self {
            buf: vec![0u8; CHUNK.min(span as usize).max(FRAME_HEADER_LEN)],
            start: 0,
            filled: 0,
        }
    }

    /// Makes the window hold `need` bytes from file position `pos` (reading ahead a
    /// chunk when it must read); returns where they start in the buffer.
    fn ensure(
        &mut self,
        file: &File,
        path: &Path,
        pos: u64,
        to: u64,
        need: usize,
    ) -> Result<usize> {
        let held = pos >= self.start && pos + need as u64 <= self.start + self.filled as u64;
        if !held {
            if self.buf.len() < need {
                self.buf.resize(need.max(CHUNK), 0);
            }
            let want = (self.buf.len() as u64).min(to - pos) as usize;
            read_exact_at(file, path, &mut self.buf[..want], pos)?;
            self.start = pos;
            self.filled = want;
        }
        Ok((pos - self.start) as usize)
    }
}

/// `pread` until `buf` is full; a file shorter than expected is an I/O error.
pub(crate) fn read_exact_at(file: &File, path: &Path, buf: &mut [u8], pos: u64) -> Result<()> {
    file.read_exact_at(buf, pos)
        .map_err(LogError::io("read", path))
}

/// Whether any valid frame with an index above `after_index` starts after `from` in the
/// file: used to tell a flipped bit (valid frames follow) from a torn tail (nothing does).
pub fn valid_frame_after(
    file: &File,
    path: &Path,
    from: u64,
    to: u64,
    after_index: u64,
) -> Result<Option<u64>> {
    let mut window = vec![0u8; CHUNK];
    let mut start = from + 1;
    while start + FRAME_HEADER_LEN as u64 <= to {
        let len = (window.len() as u64).min(to - start) as usize;
        read_exact_at(file, path, &mut window[..len], start)?;
        for at in memfind(&window[..len], &FRAME_MAGIC) {
            let position = start + at as u64;
            if frame_is_valid_at(file, path, position, to, after_index)? {
                return Ok(Some(position));
            }
        }
        // Overlap by the magic's length so a magic split across windows is still found.
        start += (len - (FRAME_MAGIC.len() - 1)).max(1) as u64;
    }
    Ok(None)
}

fn frame_is_valid_at(
    file: &File,
    path: &Path,
    pos: u64,
    to: u64,
    after_index: u64,
) -> Result<bool> {
    if to - pos < FRAME_HEADER_LEN as u64 {
        return Ok(false);
    }
    let mut header_bytes = [0u8; FRAME_HEADER_LEN];
    read_exact_at(file, path, &mut header_bytes, pos)?;
    let Ok((header, crc)) = FrameHeader::decode(&header_bytes) else {
        return Ok(false);
    };
    if header.index <= after_index || header.frame_len() > to - pos {
        return Ok(false);
    }
    let mut payload = vec![0u8; header.payload_len as usize];
    read_exact_at(file, path, &mut payload, pos + FRAME_HEADER_LEN as u64)?;
    Ok(header.verify(&header_bytes, crc, &payload).is_ok())
}

fn memfind<'a>(haystack: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    haystack
        .windows(needle.len())
        .enumerate()
        .filter(move |(_, w)| *w == needle)
        .map(|(i, _)| i)
}
