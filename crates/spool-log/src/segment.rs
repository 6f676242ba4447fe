//! One segment: a file of frames behind a segment header, its sparse index, and the
//! bounds the writer has published. Shared by the writer and every reader.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use parking_lot::RwLock;

use crate::error::{Corruption, LogError, Result};
use crate::frame::{FRAME_HEADER_LEN, FrameHeader};
use crate::index::{Checkpoint, SparseIndex};
use crate::segment_header::{
    SEGMENT_HEADER_LEN, SegmentHeader, index_file_name, segment_file_name,
};

/// What the writer has published about a segment. Readers never look past `end`.
#[derive(Debug, Clone)]
pub(crate) struct SegmentState {
    /// File position after the last complete frame.
    pub end: u64,
    pub next_index: u64,
    pub next_offset: i64,
    /// Term of the last frame (the header's prev term while the segment is empty).
    pub last_term: u64,
    /// Largest batch max-timestamp in the segment; -1 while it holds no data.
    pub max_timestamp: i64,
    pub index: SparseIndex,
}

impl SegmentState {
    pub fn empty(header: &SegmentHeader) -> Self {
        Self {
            end: SEGMENT_HEADER_LEN as u64,
            next_index: header.base_index,
            next_offset: header.base_offset,
            last_term: header.prev_term,
            max_timestamp: -1,
            index: SparseIndex::new(header.base_index, header.base_offset),
        }
    }

    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            covered_len: self.end,
            next_index: self.next_index,
            next_offset: self.next_offset,
            last_term: self.last_term,
            max_timestamp: self.max_timestamp,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Segment {
    pub path: PathBuf,
    pub index_path: PathBuf,
    pub file: File,
    pub header: SegmentHeader,
    pub state: RwLock<SegmentState>,
    /// File bytes below this are no longer kept in the page cache.
    pub cache_released_to: std::sync::atomic::AtomicU64,
}

impl Segment {
    /// Creates a segment file atomically: the header is written to a temporary file,
    /// synced, and renamed into place, so a segment file never exists without its header.
    pub fn create(dir: &Path, header: SegmentHeader) -> Result<Self> {
        let path = dir.join(segment_file_name(header.base_offset));
        let tmp = dir.join(format!("{}.tmp", segment_file_name(header.base_offset)));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(LogError::io("create", &tmp))?;
        file.write_all(&header.encode())
            .map_err(LogError::io("write", &tmp))?;
        file.sync_all().map_err(LogError::io("sync", &tmp))?;
        fs::rename(&tmp, &path).map_err(LogError::io("rename", &tmp))?;
        sync_dir(dir)?;
        Ok(Self::from_parts(
            dir,
            path,
            file,
            header,
            SegmentState::empty(&header),
        ))
    }

    /// Opens an existing segment file for reading and writing and reads its header; the
    /// state is filled by recovery.
    pub fn open_file(path: &Path) -> Result<(File, u64, HeaderRead)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(LogError::io("open", path))?;
        let (len, header) = read_header(&file, path)?;
        Ok((file, len, header))
    }

    pub fn from_parts(
        dir: &Path,
        path: PathBuf,
        file: File,
        header: SegmentHeader,
        state: SegmentState,
    ) -> Self {
        Self {
            index_path: dir.join(index_file_name(header.base_offset)),
            path,
            file,
            header,
            state: RwLock::new(state),
            cache_released_to: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Drops the synced file pages below `upto` from the page cache (a hint: errors are
    /// ignored, nothing is lost either way).
    pub fn release_cache(&self, upto: u64) {
        use std::sync::atomic::Ordering;
        const PAGE: u64 = 4096;
        let upto = upto / PAGE * PAGE;
        let from = self.cache_released_to.load(Ordering::Relaxed);
        if let Some(len) = std::num::NonZeroU64::new(upto.saturating_sub(from)) {
            let _ = rustix::fs::fadvise(&self.file, from, Some(len), rustix::fs::Advice::DontNeed);
            self.cache_released_to.store(upto, Ordering::Relaxed);
        }
    }

    pub fn corrupt(&self, position: u64, kind: Corruption) -> LogError {
        LogError::Corrupt {
            segment: self.path.clone(),
            position,
            kind,
        }
    }

    /// Reads `[pos, pos + len)` into one new buffer.
    pub fn read_chunk(&self, pos: u64, len: usize) -> Result<Bytes> {
        let mut buf = vec![0u8; len];
        self.file
            .read_exact_at(&mut buf, pos)
            .map_err(LogError::io("read", &self.path))?;
        Ok(Bytes::from(buf))
    }

    /// Writes the index file for the segment as it stands, atomically.
    pub fn write_index_file(&self) -> Result<()> {
        let state = self.state.read().clone();
        write_index_file(&self.index_path, &state)
    }

    /// Removes the index file, if any, before the segment changes under it.
    pub fn remove_index_file(&self) -> Result<()> {
        remove_if_exists(&self.index_path)
    }

    /// Deletes the segment's files. Readers holding the segment keep reading the open file.
    pub fn delete_files(&self) -> Result<()> {
        remove_if_exists(&self.path)?;
        remove_if_exists(&self.index_path)?;
        remove_if_exists(&self.path.with_extension("txnindex"))
    }

    pub fn size(&self) -> u64 {
        self.state.read().end
    }
}

/// Cursor over the frames of one segment from a start position up to a published end,
/// reading in chunks and verifying every frame it yields.
#[derive(Debug)]
pub(crate) struct FrameCursor<'s> {
    segment: &'s Segment,
    pos: u64,
    end: u64,
    chunk: Bytes,
    chunk_pos: u64,
    chunk_hint: usize,
}

/// A verified frame whose payload shares the chunk it was read into.
#[derive(Debug, Clone)]
pub(crate) struct CursorFrame {
    pub position: u64,
    pub header: FrameHeader,
    pub payload: Bytes,
}

impl<'s> FrameCursor<'s> {
    pub fn new(segment: &'s Segment, pos: u64, end: u64, chunk_hint: usize) -> Self {
        Self {
            segment,
            pos,
            end,
            chunk: Bytes::new(),
            chunk_pos: pos,
            chunk_hint: chunk_hint.max(FRAME_HEADER_LEN),
        }
    }

    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The next frame, or `None` at the published end.
    pub fn next_frame(&mut self) -> Result<Option<CursorFrame>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        if self.end - self.pos < FRAME_HEADER_LEN as u64 {
            let missing = FRAME_HEADER_LEN as u64 - (self.end - self.pos);
            return Err(self
                .segment
                .corrupt(self.pos, Corruption::Truncated { missing }));
        }
        self.ensure(FRAME_HEADER_LEN)?;
        let at = (self.pos - self.chunk_pos) as usize;
        let mut header_bytes = [0u8; FRAME_HEADER_LEN];
        header_bytes.copy_from_slice(&self.chunk[at..at + FRAME_HEADER_LEN]);
        let (header, crc) = FrameHeader::decode(&header_bytes)
            .map_err(|kind| self.segment.corrupt(self.pos, kind))?;
        let frame_len = header.frame_len();
        if frame_len > self.end - self.pos {
            let missing = frame_len - (self.end - self.pos);
            return Err(self
                .segment
                .corrupt(self.pos, Corruption::Truncated { missing }));
        }
        self.ensure(frame_len as usize)?;
        let at = (self.pos - self.chunk_pos) as usize;
        let payload = self
            .chunk
            .slice(at + FRAME_HEADER_LEN..at + frame_len as usize);
        header
            .verify(&header_bytes, crc, &payload)
            .map_err(|kind| self.segment.corrupt(self.pos, kind))?;
        let frame = CursorFrame {
            position: self.pos,
            header,
            payload,
        };
        self.pos += frame_len;
        Ok(Some(frame))
    }

    /// Makes the chunk hold `need` bytes from the current position.
    fn ensure(&mut self, need: usize) -> Result<()> {
        let have = (self.chunk_pos + self.chunk.len() as u64).saturating_sub(self.pos);
        if self.pos >= self.chunk_pos && have >= need as u64 {
            return Ok(());
        }
        let len = (self.chunk_hint.max(need) as u64).min(self.end - self.pos) as usize;
        self.chunk = self.segment.read_chunk(self.pos, len)?;
        self.chunk_pos = self.pos;
        Ok(())
    }
}

/// Writes an index file through a temporary file and a rename. It is not fsynced: an index
/// is a cache that recovery trusts only when its CRCs check out and it covers its segment
/// exactly (otherwise the segment is scanned), and it is written only after the frames it
/// describes are durable, so a crash can lose it but never make it lie.
pub(crate) fn write_index_file(path: &Path, state: &SegmentState) -> Result<()> {
    let bytes = state.index.encode(&state.checkpoint());
    let tmp = path.with_extension("index.tmp");
    let mut file = File::create(&tmp).map_err(LogError::io("create", &tmp))?;
    file.write_all(&bytes)
        .map_err(LogError::io("write", &tmp))?;
    fs::rename(&tmp, path).map_err(LogError::io("rename", &tmp))
}

/// A segment header as found: decoded, or what is wrong with it.
pub type HeaderRead = std::result::Result<SegmentHeader, Corruption>;

/// The file's length and its decoded header.
pub(crate) fn read_header(file: &File, path: &Path) -> Result<(u64, HeaderRead)> {
    let len = file.metadata().map_err(LogError::io("stat", path))?.len();
    if len < SEGMENT_HEADER_LEN as u64 {
        let short = Corruption::BadSegmentHeader {
            reason: "the file is shorter than a segment header",
        };
        return Ok((len, Err(short)));
    }
    let mut raw = [0u8; SEGMENT_HEADER_LEN];
    file.read_exact_at(&mut raw, 0)
        .map_err(LogError::io("read", path))?;
    Ok((len, SegmentHeader::decode(&raw)))
}

pub(crate) fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LogError::Io {
            op: "remove",
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// fsyncs a directory so that file creations, renames and deletions in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(LogError::io("sync directory", dir))
}

/// Flushes everything written to the filesystem holding `dir` (syncfs). A process that
/// crashed leaves its unsynced writes in the page cache, where recovery would read them as
/// if they were on disk; a node calls this before opening its logs so that what it finds
/// there, and then reports to its peers as durable, is.
pub fn sync_filesystem(dir: &Path) -> Result<()> {
    let handle = File::open(dir).map_err(LogError::io("open", dir))?;
    rustix::fs::syncfs(&handle).map_err(|errno| LogError::Io {
        op: "sync filesystem",
        path: dir.to_path_buf(),
        source: errno.into(),
    })
}

/// Creates `dir` and any missing parents, fsyncing the parent of each directory it creates
/// (and each new directory itself): a new directory's entry lives in its parent, and
/// without that fsync a crash can lose the directory with every fsynced file in it.
/// Returns the directories whose entries it made durable, outermost parent first.
pub fn create_dir_durably(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(path) = at {
        if path.as_os_str().is_empty() || path.exists() {
            break;
        }
        missing.push(path);
        at = path.parent();
    }
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    fs::create_dir_all(dir).map_err(LogError::io("create directory", dir))?;
    let mut synced = Vec::with_capacity(missing.len() + 1);
    // Outermost first: each parent, then finally the new leaf itself.
    for path in missing.iter().rev() {
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        sync_dir(parent)?;
        synced.push(parent.to_path_buf());
    }
    sync_dir(dir)?;
    synced.push(dir.to_path_buf());
    Ok(synced)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_directory_is_made_durable_in_every_parent_it_was_created_in() {
        let root = tempfile::tempdir().expect("tempdir");
        let leaf = root.path().join("a").join("b");
        let synced = create_dir_durably(&leaf).expect("create");
        assert!(leaf.is_dir());
        assert_eq!(
            synced,
            vec![
                root.path().to_path_buf(),
                root.path().join("a"),
                leaf.clone()
            ]
        );
        // An existing directory needs nothing.
        assert!(create_dir_durably(&leaf).expect("again").is_empty());
    }
}
