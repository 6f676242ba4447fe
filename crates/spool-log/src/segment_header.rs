//! The header that opens every segment file, and segment file names.
//!
//! ```text
//! offset size  field          (little-endian)
//!      0    8  magic          "SPOOLSEG"
//!      8    2  format version 1
//!     10    2  reserved       0
//!     12    4  header length  64
//!     16    8  base offset    i64  Kafka offset of the first data in the segment
//!     24    8  base index     u64  Raft index of the first frame in the segment
//!     32    8  prev term      u64  Raft term of the entry at base index - 1 (0 if none)
//!     40    8  created at     i64  ms since the Unix epoch, for rolling by age
//!     48   12  reserved       0
//!     60    4  header crc     CRC-32C of bytes 0..60
//! ```
//! Frames follow from byte 64. The file is named `{base offset:020}.log`.

use crate::error::Corruption;
use crate::frame::{le_u16, le_u32, le_u64};

pub const SEGMENT_MAGIC: [u8; 8] = *b"SPOOLSEG";
pub const SEGMENT_FORMAT_V1: u16 = 1;
pub const SEGMENT_HEADER_LEN: usize = 64;

/// Where a segment starts, in Raft and Kafka terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub base_offset: i64,
    pub base_index: u64,
    pub prev_term: u64,
    pub created_ms: i64,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut out = [0u8; SEGMENT_HEADER_LEN];
        out[0..8].copy_from_slice(&SEGMENT_MAGIC);
        out[8..10].copy_from_slice(&SEGMENT_FORMAT_V1.to_le_bytes());
        out[12..16].copy_from_slice(&(SEGMENT_HEADER_LEN as u32).to_le_bytes());
        out[16..24].copy_from_slice(&self.base_offset.to_le_bytes());
        out[24..32].copy_from_slice(&self.base_index.to_le_bytes());
        out[32..40].copy_from_slice(&self.prev_term.to_le_bytes());
        out[40..48].copy_from_slice(&self.created_ms.to_le_bytes());
        let crc = crc32c::crc32c(&out[..60]);
        out[60..64].copy_from_slice(&crc.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, Corruption> {
        let bad = |reason| Corruption::BadSegmentHeader { reason };
        if bytes.len() < SEGMENT_HEADER_LEN {
            return Err(bad("the file is shorter than a segment header"));
        }
        if bytes[0..8] != SEGMENT_MAGIC {
            return Err(bad("no segment magic"));
        }
        if le_u32(bytes, 60) != crc32c::crc32c(&bytes[..60]) {
            return Err(bad("header CRC mismatch"));
        }
        if le_u16(bytes, 8) != SEGMENT_FORMAT_V1 {
            return Err(bad("unsupported segment format version"));
        }
        if le_u32(bytes, 12) as usize != SEGMENT_HEADER_LEN {
            return Err(bad("unexpected header length"));
        }
        Ok(Self {
            base_offset: le_u64(bytes, 16) as i64,
            base_index: le_u64(bytes, 24),
            prev_term: le_u64(bytes, 32),
            created_ms: le_u64(bytes, 40) as i64,
        })
    }
}

/// `{base_offset:020}.log`
pub fn segment_file_name(base_offset: i64) -> String {
    format!("{base_offset:020}.log")
}

/// `{base_offset:020}.index`
pub fn index_file_name(base_offset: i64) -> String {
    format!("{base_offset:020}.index")
}

/// `{base_offset:020}.txnindex`: the aborted transactions whose markers the segment holds.
pub fn txn_index_file_name(base_offset: i64) -> String {
    format!("{base_offset:020}.txnindex")
}

/// The base offset in a segment or index file name, and which kind it is.
pub(crate) fn parse_file_name(name: &str) -> Option<(i64, FileRole)> {
    let (stem, role) = if let Some(stem) = name.strip_suffix(".log") {
        (stem, FileRole::Segment)
    } else if let Some(stem) = name.strip_suffix(".index") {
        (stem, FileRole::Index)
    } else if let Some(stem) = name.strip_suffix(".txnindex") {
        (stem, FileRole::TxnIndex)
    } else {
        return None;
    };
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok().map(|base| (base, role))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileRole {
    Segment,
    Index,
    TxnIndex,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_detects_damage() {
        let header = SegmentHeader {
            base_offset: 1234,
            base_index: 77,
            prev_term: 3,
            created_ms: 1_700_000_000_000,
        };
        let mut bytes = header.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(header));
        bytes[20] ^= 1;
        assert!(SegmentHeader::decode(&bytes).is_err());
        assert!(SegmentHeader::decode(&bytes[..10]).is_err());
    }

    #[test]
    fn file_names_are_zero_padded_and_parse_back() {
        assert_eq!(segment_file_name(42), "00000000000000000042.log");
        assert_eq!(
            parse_file_name("00000000000000000042.index"),
            Some((42, FileRole::Index))
        );
        assert_eq!(parse_file_name("42.log"), None);
        assert_eq!(parse_file_name("0000000000000000004x.log"), None);
        assert_eq!(parse_file_name("00000000000000000042.log.tmp"), None);
    }
}
