//! The aborted transactions of a partition, kept beside its segments: a read_committed
//! reader is told which producers' records to skip in the range it reads.
//!
//! An entry is written when its abort marker is applied (so committed: it is never taken
//! back) to `{base:020}.txnindex` of the segment holding the marker, and goes with that
//! segment when retention deletes it. Each entry is 36 bytes: producer id, first offset,
//! marker offset, stable bound (i64 each) and a CRC-32C of those 32 bytes. A torn or
//! damaged entry ends its file's readable part; what a crash loses is written again when
//! the markers after the newest producer snapshot are replayed at start (the files are
//! synced before a snapshot is written).

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use spool_log::LogReader;

use super::AbortedTxn;

const ENTRY_LEN: usize = 36;
const SUFFIX: &str = ".txnindex";

/// The aborted transactions of one partition, by marker offset.
#[derive(Debug, Default)]
pub(crate) struct AbortedIndex {
    dir: PathBuf,
    entries: VecDeque<AbortedTxn>,
    /// The file entries are being appended to, and its segment's base offset.
    file: Option<(i64, File)>,
    /// Files written since they were last synced.
    unsynced: Vec<PathBuf>,
    /// A write failed, or a file was found damaged at load: the files may miss an entry,
    /// so no producer snapshot may be trusted or written (a replay of the whole retained
    /// log writes every entry again).
    pub damaged: bool,
}

impl AbortedIndex {
    /// Reads the index files of `dir`, dropping each one's unreadable tail.
    pub fn load(dir: &Path) -> std::io::Result<Self> {
        let mut files: Vec<(i64, PathBuf)> = match fs::read_dir(dir) {
            Ok(listing) => listing
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name();
                    let base = name.to_str()?.strip_suffix(SUFFIX)?.parse().ok()?;
                    Some((base, e.path()))
                })
                .collect(),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(error) => return Err(error),
        };
        files.sort_unstable();
        let mut entries: Vec<AbortedTxn> = Vec::new();
        let mut damaged = false;
        for (_, path) in &files {
            let bytes = fs::read(path)?;
            let mut good = 0;
            for chunk in bytes.chunks_exact(ENTRY_LEN) {
                match decode(chunk) {
                    Some(entry) => entries.push(entry),
                    None => break,
                }
                good += ENTRY_LEN;
            }
            if good < bytes.len() {
                damaged = true;
                tracing::warn!(path = %path.display(), kept = good / ENTRY_LEN, "aborted-transaction index ends in a damaged entry; cut there, and rebuilt from the log");
                OpenOptions::new()
                    .write(true)
                    .open(path)?
                    .set_len(good as u64)?;
            }
        }
        entries.sort_unstable_by_key(|e| e.last_offset);
        entries.dedup_by_key(|e| e.last_offset);
        Ok(Self {
            dir: dir.to_path_buf(),
            entries: entries.into(),
            file: None,
            unsynced: Vec::new(),
            damaged,
        })
    }

    /// An index that keeps its entries in memory only (for a replica without a
    /// directory of its own, in tests).
    #[cfg(test)]
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// Adds an aborted transaction whose marker `reader` holds. One the index has (a
    /// marker replayed at start) is skipped.
    pub fn push(&mut self, entry: AbortedTxn, reader: &LogReader) {
        match self
            .entries
            .binary_search_by_key(&entry.last_offset, |e| e.last_offset)
        {
            Ok(_) => return,
            Err(at) => self.entries.insert(at, entry),
        }
        if self.dir.as_os_str().is_empty() {
            return;
        }
        let base = reader.segment_base(entry.last_offset);
        if let Err(error) = self.write(base, &entry) {
            tracing::warn!(dir = %self.dir.display(), %error, "could not write the aborted-transaction index; it is rebuilt at the next start");
            self.damaged = true;
            self.file = None;
        }
    }

    fn write(&mut self, base: i64, entry: &AbortedTxn) -> std::io::Result<()> {
        if self.file.as_ref().is_none_or(|(at, _)| *at != base) {
            let path = self.dir.join(spool_log::txn_index_file_name(base));
            let file = OpenOptions::new().create(true).append(true).open(&path)?;
            self.file = Some((base, file));
        }
        let path = self.dir.join(spool_log::txn_index_file_name(base));
        if !self.unsynced.contains(&path) {
            self.unsynced.push(path);
        }
        if let Some((_, file)) = &mut self.file {
            file.write_all(&encode(entry))?;
        }
        Ok(())
    }

    /// The files written since the last call, to be synced before a producer snapshot
    /// that covers their entries is written.
    pub fn take_unsynced(&mut self) -> Vec<PathBuf> {
        std::mem::take(&mut self.unsynced)
    }

    /// Forgets the entries whose marker lies below `log_start` (retention deleted their
    /// segments and files).
    pub fn remove_below(&mut self, log_start: i64) {
        while self
            .entries
            .front()
            .is_some_and(|e| e.last_offset < log_start)
        {
            self.entries.pop_front();
        }
        if self
            .file
            .as_ref()
            .is_some_and(|(base, _)| *base < log_start)
        {
            self.file = None;
        }
    }

    /// The aborted transactions a reader of `[from, upper)` must know of: (producer id,
    /// first offset) of those whose records reach into that range, oldest first.
    pub fn overlapping(&self, from: i64, upper: i64) -> Vec<(i64, i64)> {
        let start = self.entries.partition_point(|e| e.last_offset < from);
        let mut found = Vec::new();
        for entry in self.entries.range(start..) {
            // No transaction aborted after this one began below its bound.
            if entry.stable_bound >= upper {
                break;
            }
            if entry.first_offset < upper {
                found.push((entry.producer_id, entry.first_offset));
            }
        }
        found.sort_unstable_by_key(|(_, first)| *first);
        found
    }
}

/// Syncs index files (off the apply path).
pub(crate) fn sync_files(paths: &[PathBuf]) -> std::io::Result<()> {
    for path in paths {
        match File::open(path) {
            Ok(file) => file.sync_data()?,
            // Deleted with its segment meanwhile: nothing left to keep.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

fn encode(entry: &AbortedTxn) -> [u8; ENTRY_LEN] {
    let mut out = [0u8; ENTRY_LEN];
    out[0..8].copy_from_slice(&entry.producer_id.to_be_bytes());
    out[8..16].copy_from_slice(&entry.first_offset.to_be_bytes());
    out[16..24].copy_from_slice(&entry.last_offset.to_be_bytes());
    out[24..32].copy_from_slice(&entry.stable_bound.to_be_bytes());
    let crc = crc32c::crc32c(&out[..32]);
    out[32..].copy_from_slice(&crc.to_be_bytes());
    out
}

fn decode(bytes: &[u8]) -> Option<AbortedTxn> {
    let (body, crc) = bytes.split_last_chunk::<4>()?;
    if crc32c::crc32c(body) != u32::from_be_bytes(*crc) {
        return None;
    }
    let field = |i: usize| -> Option<i64> {
        Some(i64::from_be_bytes(
            body.get(i * 8..i * 8 + 8)?.try_into().ok()?,
        ))
    };
    let entry = AbortedTxn {
        producer_id: field(0)?,
        first_offset: field(1)?,
        last_offset: field(2)?,
        stable_bound: field(3)?,
    };
    (entry.first_offset <= entry.last_offset).then_some(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(producer_id: i64, first: i64, last: i64, bound: i64) -> AbortedTxn {
        AbortedTxn {
            producer_id,
            first_offset: first,
            last_offset: last,
            stable_bound: bound,
        }
    }

    #[test]
    fn entries_round_trip_and_any_flipped_bit_is_caught() {
        let e = entry(7, 100, 250, 90);
        let bytes = encode(&e);
        assert_eq!(decode(&bytes), Some(e));
        for bit in 0..ENTRY_LEN * 8 {
            let mut damaged = bytes;
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(decode(&damaged), None, "bit {bit}");
        }
    }

    #[test]
    fn a_reader_learns_exactly_the_aborts_reaching_into_its_range() {
        let mut index = AbortedIndex::in_memory();
        index.entries.extend([
            entry(1, 10, 20, 10),
            entry(2, 15, 40, 15),
            entry(3, 50, 60, 45),
            entry(4, 45, 80, 45),
        ]);
        assert_eq!(index.overlapping(0, 10), Vec::<(i64, i64)>::new());
        assert_eq!(index.overlapping(0, 11), vec![(1, 10)]);
        assert_eq!(index.overlapping(21, 30), vec![(2, 15)]);
        assert_eq!(index.overlapping(41, 70), vec![(4, 45), (3, 50)]);
        assert_eq!(index.overlapping(81, 100), Vec::<(i64, i64)>::new());
        index.remove_below(41);
        assert_eq!(index.overlapping(0, 100), vec![(4, 45), (3, 50)]);
    }
}
