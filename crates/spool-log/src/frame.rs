//! Frames: every Raft entry is one frame in a segment file.
//!
//! ```text
//! offset size  field             (little-endian)
//!      0    4  magic             "SPFR"
//!      4    1  format version    1
//!      5    1  kind              1 data, 2 blank, 3 membership
//!      6    2  reserved          0
//!      8    8  raft term         u64
//!     16    8  raft index        u64
//!     24    8  kafka base offset i64   (non-data frames: the next offset to assign)
//!     32    4  offset count      u32   (offsets the entry takes; 0 for non-data frames)
//!     36    4  payload length    u32
//!     40    4  frame crc         CRC-32C of bytes 0..40, then of the payload's
//!                                unprotected prefix (see below)
//!     44    -  payload
//! ```
//!
//! A data payload is a RecordBatch v2 whose own CRC covers bytes 21.. of the batch; the
//! frame CRC covers the batch's first 21 bytes (base offset, length, leader epoch, magic,
//! batch CRC). Together they cover every byte once, so appending costs no second checksum
//! pass over the data. Blank and membership payloads are covered whole by the frame CRC.

use crate::batch::{ATTRIBUTES, RecordBatch};
use crate::error::Corruption;

pub const FRAME_MAGIC: [u8; 4] = *b"SPFR";
pub const FRAME_HEADER_LEN: usize = 44;
/// The frame format this version writes; the only one it reads.
pub const FRAME_FORMAT_V1: u8 = 1;
/// Upper bound for one payload; anything larger in a header is corruption.
pub const MAX_FRAME_PAYLOAD: u32 = 256 * 1024 * 1024;
/// Bytes of a data payload that the batch CRC leaves out.
pub(crate) const DATA_PREFIX_LEN: usize = ATTRIBUTES;

/// What a frame's payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// A Kafka record batch; takes Kafka offsets.
    Data,
    /// An empty entry a new Raft leader appends; takes a Raft index, no offsets.
    Blank,
    /// A Raft membership configuration, opaque to the log; takes no offsets.
    Membership,
}

impl FrameKind {
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            FrameKind::Data => 1,
            FrameKind::Blank => 2,
            FrameKind::Membership => 3,
        }
    }

    pub(crate) fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(FrameKind::Data),
            2 => Some(FrameKind::Blank),
            3 => Some(FrameKind::Membership),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FrameKind::Data => "data",
            FrameKind::Blank => "blank",
            FrameKind::Membership => "membership",
        }
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub kind: FrameKind,
    pub term: u64,
    pub index: u64,
    pub base_offset: i64,
    pub offset_count: u32,
    pub payload_len: u32,
}

impl FrameHeader {
    /// Bytes the whole frame takes on disk.
    pub fn frame_len(&self) -> u64 {
        FRAME_HEADER_LEN as u64 + u64::from(self.payload_len)
    }

    /// The offset after this frame's last offset.
    pub fn next_offset(&self) -> i64 {
        self.base_offset + i64::from(self.offset_count)
    }

    /// Writes the header; `payload_prefix` must be the payload bytes the frame CRC covers.
    pub(crate) fn encode(&self, payload_prefix: &[u8], out: &mut [u8; FRAME_HEADER_LEN]) {
        out[0..4].copy_from_slice(&FRAME_MAGIC);
        out[4] = FRAME_FORMAT_V1;
        out[5] = self.kind.to_byte();
        out[6..8].copy_from_slice(&[0, 0]);
        out[8..16].copy_from_slice(&self.term.to_le_bytes());
        out[16..24].copy_from_slice(&self.index.to_le_bytes());
        out[24..32].copy_from_slice(&self.base_offset.to_le_bytes());
        out[32..36].copy_from_slice(&self.offset_count.to_le_bytes());
        out[36..40].copy_from_slice(&self.payload_len.to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&out[..40]), payload_prefix);
        out[40..44].copy_from_slice(&crc.to_le_bytes());
    }

    /// Decodes a header's fields without checking its CRC (that needs the payload).
    pub(crate) fn decode(bytes: &[u8; FRAME_HEADER_LEN]) -> Result<(Self, u32), Corruption> {
        if bytes[0..4] != FRAME_MAGIC {
            return Err(Corruption::BadFrameMagic);
        }
        if bytes[4] != FRAME_FORMAT_V1 {
            return Err(Corruption::UnsupportedFrameVersion { found: bytes[4] });
        }
        let kind = FrameKind::from_byte(bytes[5])
            .ok_or(Corruption::UnknownFrameKind { found: bytes[5] })?;
        let header = FrameHeader {
            kind,
            term: le_u64(bytes, 8),
            index: le_u64(bytes, 16),
            base_offset: le_u64(bytes, 24) as i64,
            offset_count: le_u32(bytes, 32),
            payload_len: le_u32(bytes, 36),
        };
        if header.payload_len > MAX_FRAME_PAYLOAD {
            return Err(Corruption::FrameTooLarge {
                len: header.payload_len,
            });
        }
        if kind == FrameKind::Blank && header.payload_len != 0 {
            return Err(Corruption::InconsistentFrame {
                reason: "a blank frame carries a payload",
            });
        }
        if kind != FrameKind::Data && header.offset_count != 0 {
            return Err(Corruption::InconsistentFrame {
                reason: "a non-data frame takes offsets",
            });
        }
        Ok((header, le_u32(bytes, 40)))
    }

    /// How many payload bytes the frame CRC covers.
    pub(crate) fn covered_prefix_len(kind: FrameKind, payload_len: usize) -> usize {
        match kind {
            FrameKind::Data => DATA_PREFIX_LEN.min(payload_len),
            FrameKind::Blank | FrameKind::Membership => payload_len,
        }
    }

    /// Checks the frame CRC, given the payload bytes it covers.
    pub(crate) fn verify_header_crc(
        &self,
        header_bytes: &[u8; FRAME_HEADER_LEN],
        stored_crc: u32,
        covered_prefix: &[u8],
    ) -> Result<(), Corruption> {
        let computed = crc32c::crc32c_append(crc32c::crc32c(&header_bytes[..40]), covered_prefix);
        if computed != stored_crc {
            return Err(Corruption::FrameCrcMismatch {
                stored: stored_crc,
                computed,
            });
        }
        Ok(())
    }

    /// Checks a whole frame: header CRC, and for data frames the batch (framing, CRC) and
    /// its agreement with the header.
    pub(crate) fn verify(
        &self,
        header_bytes: &[u8; FRAME_HEADER_LEN],
        stored_crc: u32,
        payload: &[u8],
    ) -> Result<(), Corruption> {
        let prefix = &payload[..Self::covered_prefix_len(self.kind, payload.len())];
        self.verify_header_crc(header_bytes, stored_crc, prefix)?;
        match self.kind {
            FrameKind::Data => {
                let batch = RecordBatch::new(payload).map_err(Corruption::Batch)?;
                if batch.base_offset() != self.base_offset
                    || batch.offset_count() != self.offset_count
                    || self.offset_count == 0
                {
                    return Err(Corruption::InconsistentFrame {
                        reason: "the batch's offsets disagree with its frame header",
                    });
                }
                Ok(())
            }
            FrameKind::Blank if !payload.is_empty() => Err(Corruption::InconsistentFrame {
                reason: "a blank frame carries a payload",
            }),
            FrameKind::Blank | FrameKind::Membership => Ok(()),
        }
    }
}

pub(crate) fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(raw)
}

pub(crate) fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
