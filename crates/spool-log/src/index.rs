//! The sparse index of a segment: one entry every `index_interval_bytes`, mapping Raft
//! index, Kafka offset and the largest timestamp seen so far to a file position. All four
//! columns only grow, so one binary search answers a Raft read, a Kafka fetch or a
//! timestamp lookup.
//!
//! Index file (`{base_offset:020}.index`), written when a segment is sealed and on a clean
//! close, and rebuilt from the segment whenever it is missing or does not check out:
//!
//! ```text
//! offset size  field            (little-endian)
//!      0    8  magic            "SPOOLIDX"
//!      8    2  format version   1
//!     10    2  reserved         0
//!     12    4  entry count      u32
//!     16    8  covered length   u64  segment bytes the index describes
//!     24    8  next index       u64  Raft index after the last covered frame
//!     32    8  next offset      i64  Kafka offset after the last covered frame
//!     40    8  last term        u64  term of the last covered frame
//!     48    8  max timestamp    i64  largest batch timestamp covered (-1 if none)
//!     56    4  entries crc      CRC-32C of the entries
//!     60    4  header crc       CRC-32C of bytes 0..60
//!     64   20  entry * count:   relative index u32, relative offset u32,
//!                               position u32, max timestamp before i64
//! ```

use crate::error::Corruption;
use crate::frame::{le_u16, le_u32, le_u64};

pub const INDEX_MAGIC: [u8; 8] = *b"SPOOLIDX";
pub const INDEX_FORMAT_V1: u16 = 1;
const INDEX_HEADER_LEN: usize = 64;
const ENTRY_LEN: usize = 20;

/// One sparse index entry: the frame at `position` has Raft index `base_index +
/// rel_index` and Kafka base offset `base_offset + rel_offset`; every batch before it has
/// a timestamp of at most `max_ts_before`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub rel_index: u32,
    pub rel_offset: u32,
    pub position: u32,
    pub max_ts_before: i64,
}

/// Where a segment's frames end and what follows them, as of an index checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub covered_len: u64,
    pub next_index: u64,
    pub next_offset: i64,
    pub last_term: u64,
    pub max_timestamp: i64,
}

#[derive(Debug, Clone)]
pub(crate) struct SparseIndex {
    base_index: u64,
    base_offset: i64,
    entries: Vec<IndexEntry>,
}

impl SparseIndex {
    pub fn new(base_index: u64, base_offset: i64) -> Self {
        Self {
            base_index,
            base_offset,
            entries: Vec::new(),
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Adds an entry for the frame at `position`. Positions, indexes and offsets must not
    /// go backwards; the segment size limit keeps them within u32 of the base.
    pub fn push(&mut self, index: u64, offset: i64, position: u64, max_ts_before: i64) {
        let entry = IndexEntry {
            rel_index: (index - self.base_index) as u32,
            rel_offset: (offset - self.base_offset) as u32,
            position: position as u32,
            max_ts_before,
        };
        debug_assert!(
            self.entries
                .last()
                .is_none_or(|last| last.position < entry.position)
        );
        self.entries.push(entry);
    }

    /// The file position to scan from to find the frame with Raft index `index`.
    pub fn position_for_index(&self, index: u64) -> Option<u64> {
        let rel = index.checked_sub(self.base_index)?;
        let n = self
            .entries
            .partition_point(|e| u64::from(e.rel_index) <= rel);
        n.checked_sub(1)
            .map(|i| u64::from(self.entries[i].position))
    }

    /// The file position to scan from to find the batch holding Kafka offset `offset`.
    pub fn position_for_offset(&self, offset: i64) -> Option<u64> {
        let rel = offset.checked_sub(self.base_offset)?;
        let n = self
            .entries
            .partition_point(|e| i64::from(e.rel_offset) <= rel);
        n.checked_sub(1)
            .map(|i| u64::from(self.entries[i].position))
    }

    /// The file position to scan from to find the first batch with a timestamp of at
    /// least `timestamp`: every batch before it is older.
    pub fn position_for_timestamp(&self, timestamp: i64) -> Option<u64> {
        let n = self
            .entries
            .partition_point(|e| e.max_ts_before < timestamp);
        n.checked_sub(1)
            .map(|i| u64::from(self.entries[i].position))
    }

    pub(crate) fn entries(&self) -> &[IndexEntry] {
        &self.entries
    }

    /// Position of the last entry.
    pub fn last_position(&self) -> Option<u64> {
        self.entries.last().map(|e| u64::from(e.position))
    }

    /// The max-timestamp-before of the entry at `position`, or -1 for the segment start.
    pub fn max_ts_before_position(&self, position: Option<u64>) -> i64 {
        position
            .and_then(|p| {
                let n = self.entries.partition_point(|e| u64::from(e.position) < p);
                self.entries.get(n).filter(|e| u64::from(e.position) == p)
            })
            .map_or(-1, |e| e.max_ts_before)
    }

    /// Drops the entries at or after `position` (used when the segment is truncated).
    pub fn truncate_at(&mut self, position: u64) {
        let keep = self
            .entries
            .partition_point(|e| u64::from(e.position) < position);
        self.entries.truncate(keep);
    }

    pub fn encode(&self, checkpoint: &Checkpoint) -> Vec<u8> {
        let mut out = vec![0u8; INDEX_HEADER_LEN + self.entries.len() * ENTRY_LEN];
        for (i, e) in self.entries.iter().enumerate() {
            let at = INDEX_HEADER_LEN + i * ENTRY_LEN;
            out[at..at + 4].copy_from_slice(&e.rel_index.to_le_bytes());
            out[at + 4..at + 8].copy_from_slice(&e.rel_offset.to_le_bytes());
            out[at + 8..at + 12].copy_from_slice(&e.position.to_le_bytes());
            out[at + 12..at + 20].copy_from_slice(&e.max_ts_before.to_le_bytes());
        }
        let entries_crc = crc32c::crc32c(&out[INDEX_HEADER_LEN..]);
        out[0..8].copy_from_slice(&INDEX_MAGIC);
        out[8..10].copy_from_slice(&INDEX_FORMAT_V1.to_le_bytes());
        out[12..16].copy_from_slice(&(self.entries.len() as u32).to_le_bytes());
        out[16..24].copy_from_slice(&checkpoint.covered_len.to_le_bytes());
        out[24..32].copy_from_slice(&checkpoint.next_index.to_le_bytes());
        out[32..40].copy_from_slice(&checkpoint.next_offset.to_le_bytes());
        out[40..48].copy_from_slice(&checkpoint.last_term.to_le_bytes());
        out[48..56].copy_from_slice(&checkpoint.max_timestamp.to_le_bytes());
        out[56..60].copy_from_slice(&entries_crc.to_le_bytes());
        let header_crc = crc32c::crc32c(&out[..60]);
        out[60..64].copy_from_slice(&header_crc.to_le_bytes());
        out
    }

    /// Decodes an index file written for a segment with these bases.
    pub fn decode(
        bytes: &[u8],
        base_index: u64,
        base_offset: i64,
    ) -> Result<(Self, Checkpoint), Corruption> {
        let bad = |reason| Corruption::BadIndex { reason };
        if bytes.len() < INDEX_HEADER_LEN || bytes[0..8] != INDEX_MAGIC {
            return Err(bad("no index magic"));
        }
        if le_u32(bytes, 60) != crc32c::crc32c(&bytes[..60]) {
            return Err(bad("header CRC mismatch"));
        }
        if le_u16(bytes, 8) != INDEX_FORMAT_V1 {
            return Err(bad("unsupported index format version"));
        }
        let count = le_u32(bytes, 12) as usize;
        let body = &bytes[INDEX_HEADER_LEN..];
        if body.len() != count * ENTRY_LEN {
            return Err(bad("entry count disagrees with the file length"));
        }
        if le_u32(bytes, 56) != crc32c::crc32c(body) {
            return Err(bad("entries CRC mismatch"));
        }
        let checkpoint = Checkpoint {
            covered_len: le_u64(bytes, 16),
            next_index: le_u64(bytes, 24),
            next_offset: le_u64(bytes, 32) as i64,
            last_term: le_u64(bytes, 40),
            max_timestamp: le_u64(bytes, 48) as i64,
        };
        let entries: Vec<IndexEntry> = body
            .chunks_exact(ENTRY_LEN)
            .map(|c| IndexEntry {
                rel_index: le_u32(c, 0),
                rel_offset: le_u32(c, 4),
                position: le_u32(c, 8),
                max_ts_before: le_u64(c, 12) as i64,
            })
            .collect();
        let monotonic = entries.windows(2).all(|w| {
            w[0].position < w[1].position
                && w[0].rel_index < w[1].rel_index
                && w[0].rel_offset <= w[1].rel_offset
                && w[0].max_ts_before <= w[1].max_ts_before
        });
        let within = entries
            .last()
            .is_none_or(|e| u64::from(e.position) < checkpoint.covered_len);
        if !monotonic || !within || checkpoint.next_index < base_index {
            return Err(bad("entries are not monotonic or lie outside the segment"));
        }
        Ok((
            Self {
                base_index,
                base_offset,
                entries,
            },
            checkpoint,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SparseIndex {
        let mut index = SparseIndex::new(100, 1000);
        index.push(100, 1000, 64, -1);
        index.push(110, 1050, 4200, 5_000);
        index.push(111, 1050, 4300, 5_000); // a blank frame: same offset
        index.push(120, 1090, 8400, 7_000);
        index
    }

    #[test]
    fn lookups_find_the_last_entry_at_or_before_the_key() {
        let index = sample();
        assert_eq!(index.position_for_index(99), None);
        assert_eq!(index.position_for_index(100), Some(64));
        assert_eq!(index.position_for_index(115), Some(4300));
        assert_eq!(index.position_for_offset(1049), Some(64));
        assert_eq!(index.position_for_offset(1050), Some(4300));
        assert_eq!(index.position_for_offset(5000), Some(8400));
        assert_eq!(index.position_for_timestamp(0), Some(64));
        assert_eq!(index.position_for_timestamp(5_000), Some(64));
        assert_eq!(index.position_for_timestamp(5_001), Some(4300));
        assert_eq!(index.position_for_timestamp(9_000), Some(8400));
    }

    #[test]
    fn encoding_round_trips_and_any_flipped_bit_is_refused() {
        let index = sample();
        let checkpoint = Checkpoint {
            covered_len: 9000,
            next_index: 125,
            next_offset: 1100,
            last_term: 4,
            max_timestamp: 7_500,
        };
        let bytes = index.encode(&checkpoint);
        let (decoded, decoded_checkpoint) = SparseIndex::decode(&bytes, 100, 1000).unwrap();
        assert_eq!(decoded.entries, index.entries);
        assert_eq!(decoded_checkpoint, checkpoint);
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                SparseIndex::decode(&damaged, 100, 1000).is_err(),
                "bit {bit}"
            );
        }
    }

    #[test]
    fn truncation_drops_entries_at_and_after_the_position() {
        let mut index = sample();
        index.truncate_at(4300);
        assert_eq!(index.len(), 2);
        assert_eq!(index.position_for_offset(5000), Some(4200));
    }
}
