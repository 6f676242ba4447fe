//! Kafka RecordBatch v2, byte for byte.
//!
//! ```text
//! offset size  field                  covered by CRC
//!      0    8  baseOffset      i64    no   (set by the leader)
//!      8    4  batchLength     i32    no   (bytes after this field)
//!     12    4  partitionLeaderEpoch   no   (set by the leader: the Raft term)
//!     16    1  magic           i8     no   (always 2)
//!     17    4  crc             u32    -    (CRC-32C of bytes 21..end)
//!     21    2  attributes      i16    yes  (bits 0-2 codec, 3 timestamp type,
//!                                           4 transactional, 5 control)
//!     23    4  lastOffsetDelta i32    yes
//!     27    8  baseTimestamp   i64    yes
//!     35    8  maxTimestamp    i64    yes
//!     43    8  producerId      i64    yes
//!     51    2  producerEpoch   i16    yes
//!     53    4  baseSequence    i32    yes
//!     57    4  recordCount     i32    yes
//!     61    -  records (possibly compressed as one block)
//! ```
//! All integers are big-endian. Records are described in [`records`].

mod builder;
pub mod codec;
mod control;
mod records;
pub(crate) mod varint;

pub use builder::{BatchBuilder, BatchOptions};
pub use control::{ControlMarker, control_batch};
pub use records::{Header, HeaderIter, Record, RecordIter};

use std::fmt;

pub(crate) const BASE_OFFSET: usize = 0;
pub(crate) const BATCH_LENGTH: usize = 8;
pub(crate) const PARTITION_LEADER_EPOCH: usize = 12;
pub(crate) const MAGIC: usize = 16;
pub(crate) const CRC: usize = 17;
pub(crate) const ATTRIBUTES: usize = 21;
pub(crate) const LAST_OFFSET_DELTA: usize = 23;
pub(crate) const BASE_TIMESTAMP: usize = 27;
pub(crate) const MAX_TIMESTAMP: usize = 35;
pub(crate) const PRODUCER_ID: usize = 43;
pub(crate) const PRODUCER_EPOCH: usize = 51;
pub(crate) const BASE_SEQUENCE: usize = 53;
pub(crate) const RECORD_COUNT: usize = 57;
/// Size of the batch header; records start here.
pub const BATCH_HEADER_LEN: usize = 61;
/// Bytes before `batchLength` counts: baseOffset and batchLength itself.
pub(crate) const LOG_OVERHEAD: usize = 12;
/// The only batch format Spool stores.
pub const MAGIC_V2: i8 = 2;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;

/// How a batch's records are compressed (attributes bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    fn from_attributes(attributes: i16) -> Option<Self> {
        match attributes & COMPRESSION_MASK {
            0 => Some(Compression::None),
            1 => Some(Compression::Gzip),
            2 => Some(Compression::Snappy),
            3 => Some(Compression::Lz4),
            4 => Some(Compression::Zstd),
            _ => None,
        }
    }

    pub(crate) fn attribute_bits(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }
}

/// What a batch's timestamps mean (attributes bit 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// Why bytes are not a valid record batch. Every variant names what was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    #[error("a record batch needs at least {BATCH_HEADER_LEN} bytes, got {len}")]
    TooShort { len: usize },
    #[error("the batch length field says {declared} bytes follow it, but {actual} do")]
    LengthMismatch { declared: i64, actual: usize },
    #[error("unsupported record batch magic {found}: only v2 batches are accepted")]
    UnsupportedMagic { found: i8 },
    #[error("batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("unknown compression codec id {id}")]
    UnknownCompression { id: i16 },
    #[error("the batch says it holds {declared} records, but {found} were found")]
    RecordCountMismatch { declared: i32, found: i64 },
    #[error("a batch must hold at least one record")]
    Empty,
    #[error("last offset delta {last_offset_delta} disagrees with record count {record_count}")]
    OffsetDeltaMismatch {
        last_offset_delta: i32,
        record_count: i32,
    },
    #[error("record {record} is malformed: {reason}")]
    MalformedRecord { record: i64, reason: &'static str },
    #[error("the {codec:?} records section does not decompress: {reason}")]
    Decompress { codec: Compression, reason: String },
    #[error("the records of a compressed batch cannot be read without decompressing it")]
    Compressed { codec: Compression },
}

/// A validated view of one RecordBatch v2: its length, magic and CRC have been checked.
/// Borrowing, cheap to copy, and free of allocation.
#[derive(Clone, Copy)]
pub struct RecordBatch<'a> {
    bytes: &'a [u8],
}

impl fmt::Debug for RecordBatch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordBatch")
            .field("base_offset", &self.base_offset())
            .field("len", &self.bytes.len())
            .field("record_count", &self.record_count())
            .field("compression", &self.compression())
            .finish()
    }
}

impl<'a> RecordBatch<'a> {
    /// Checks that `bytes` hold exactly one v2 batch with a correct CRC.
    pub fn new(bytes: &'a [u8]) -> Result<Self, BatchError> {
        let batch = Self::new_without_crc(bytes)?;
        let stored = read_u32(bytes, CRC);
        let computed = crc32c::crc32c(&bytes[ATTRIBUTES..]);
        if stored != computed {
            return Err(BatchError::CrcMismatch { stored, computed });
        }
        Ok(batch)
    }

    /// As `new`, without the CRC pass: for bytes whose CRC this process checked already
    /// (a batch validated on the way in, handed on in memory).
    pub fn new_without_crc(bytes: &'a [u8]) -> Result<Self, BatchError> {
        let len = bytes.len();
        if len < BATCH_HEADER_LEN {
            return Err(BatchError::TooShort { len });
        }
        let declared = i64::from(read_i32(bytes, BATCH_LENGTH));
        if declared != (len - LOG_OVERHEAD) as i64 {
            return Err(BatchError::LengthMismatch {
                declared,
                actual: len - LOG_OVERHEAD,
            });
        }
        let magic = bytes[MAGIC] as i8;
        if magic != MAGIC_V2 {
            return Err(BatchError::UnsupportedMagic { found: magic });
        }
        Ok(Self { bytes })
    }

    /// Reads the total length of the batch that starts `bytes`, from its header alone
    /// (`None` if fewer than 12 bytes are given or the length is negative).
    pub fn peek_len(bytes: &[u8]) -> Option<usize> {
        if bytes.len() < LOG_OVERHEAD {
            return None;
        }
        usize::try_from(read_i32(bytes, BATCH_LENGTH))
            .ok()
            .map(|len| len + LOG_OVERHEAD)
    }

    /// The first offset and the offset after the last, read from the header alone
    /// (no CRC check: for batches already verified, such as those read from a log).
    pub fn peek_offsets(bytes: &[u8]) -> Option<(i64, i64)> {
        if bytes.len() < BATCH_HEADER_LEN {
            return None;
        }
        let base = i64::from_be_bytes(bytes[BASE_OFFSET..BASE_OFFSET + 8].try_into().ok()?);
        let delta = i64::from(read_i32(bytes, LAST_OFFSET_DELTA));
        Some((base, base + delta + 1))
    }

    /// Checks what a producer's batch must satisfy beyond its framing: a known codec, at
    /// least one record, a last offset delta that matches the record count, and records
    /// (decompressed first, for a compressed batch) that parse, number exactly
    /// `recordCount` and carry offset deltas 0, 1, 2, ...
    pub fn validate_records(&self) -> Result<(), BatchError> {
        let attributes = self.attributes();
        let codec =
            Compression::from_attributes(attributes).ok_or(BatchError::UnknownCompression {
                id: attributes & COMPRESSION_MASK,
            })?;
        let record_count = self.record_count();
        if record_count <= 0 {
            return Err(BatchError::Empty);
        }
        if i64::from(self.last_offset_delta()) != i64::from(record_count) - 1 {
            return Err(BatchError::OffsetDeltaMismatch {
                last_offset_delta: self.last_offset_delta(),
                record_count,
            });
        }
        if codec != Compression::None {
            // Decompressed and walked like any other: a compressed batch that does not
            // hold its records whole is refused as a plain one is (Kafka does the same),
            // instead of being stored for consumers to fail on.
            let records = codec::decompress(codec, self.records_section()).map_err(|e| {
                BatchError::Decompress {
                    codec,
                    reason: e.to_string(),
                }
            })?;
            return Self::check_records(self.records_from(&records), record_count);
        }
        Self::check_records(RecordIter::over(self, record_count)?, record_count)
    }

    /// Records that parse, number exactly `record_count`, use the whole section and carry
    /// offset deltas 0, 1, 2, ...
    fn check_records(mut records: RecordIter<'_>, record_count: i32) -> Result<(), BatchError> {
        let mut found = 0i64;
        for record in records.by_ref() {
            let record = record?;
            if i64::from(record.offset_delta()) != found {
                return Err(BatchError::MalformedRecord {
                    record: found,
                    reason: "offset deltas must count up from zero",
                });
            }
            found += 1;
        }
        if found != i64::from(record_count) || !records.is_exhausted() {
            return Err(BatchError::RecordCountMismatch {
                declared: record_count,
                found: found + i64::from(!records.is_exhausted()),
            });
        }
        Ok(())
    }

    /// The batch's bytes exactly as stored.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Never true: a valid batch has at least its header.
    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn base_offset(&self) -> i64 {
        read_i64(self.bytes, BASE_OFFSET)
    }

    /// Offset of the last record: base offset plus last offset delta.
    pub fn last_offset(&self) -> i64 {
        self.base_offset() + i64::from(self.last_offset_delta())
    }

    /// How many offsets the batch occupies (last offset delta + 1).
    pub fn offset_count(&self) -> u32 {
        u32::try_from(i64::from(self.last_offset_delta()) + 1).unwrap_or(0)
    }

    pub fn partition_leader_epoch(&self) -> i32 {
        read_i32(self.bytes, PARTITION_LEADER_EPOCH)
    }

    pub fn crc(&self) -> u32 {
        read_u32(self.bytes, CRC)
    }

    pub fn attributes(&self) -> i16 {
        read_i16(self.bytes, ATTRIBUTES)
    }

    /// The codec, or `None` for a codec id Kafka does not define.
    pub fn compression(&self) -> Option<Compression> {
        Compression::from_attributes(self.attributes())
    }

    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes() & TIMESTAMP_TYPE_BIT == 0 {
            TimestampType::CreateTime
        } else {
            TimestampType::LogAppendTime
        }
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes() & TRANSACTIONAL_BIT != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes() & CONTROL_BIT != 0
    }

    pub fn last_offset_delta(&self) -> i32 {
        read_i32(self.bytes, LAST_OFFSET_DELTA)
    }

    pub fn base_timestamp(&self) -> i64 {
        read_i64(self.bytes, BASE_TIMESTAMP)
    }

    pub fn max_timestamp(&self) -> i64 {
        read_i64(self.bytes, MAX_TIMESTAMP)
    }

    pub fn producer_id(&self) -> i64 {
        read_i64(self.bytes, PRODUCER_ID)
    }

    pub fn producer_epoch(&self) -> i16 {
        read_i16(self.bytes, PRODUCER_EPOCH)
    }

    pub fn base_sequence(&self) -> i32 {
        read_i32(self.bytes, BASE_SEQUENCE)
    }

    pub fn record_count(&self) -> i32 {
        read_i32(self.bytes, RECORD_COUNT)
    }

    /// Iterates the records lazily, without allocating. Compressed batches are refused:
    /// their records are one compressed block that the client SDK decodes.
    pub fn records(&self) -> Result<RecordIter<'a>, BatchError> {
        RecordIter::over(self, self.record_count())
    }

    /// The records section as stored: one compressed block for a compressed batch.
    pub fn records_section(&self) -> &'a [u8] {
        &self.bytes[BATCH_HEADER_LEN..]
    }

    /// Iterates records from `records`, this batch's records section after
    /// decompression, with offsets and timestamps taken from this batch's header.
    pub fn records_from<'r>(&self, records: &'r [u8]) -> RecordIter<'r> {
        RecordIter::from_section(records, self)
    }
}

/// An owned batch whose framing and CRC have been checked: it can cross threads and be
/// appended later without checking it again.
#[derive(Clone, PartialEq, Eq)]
pub struct ValidBatch {
    bytes: bytes::Bytes,
}

impl fmt::Debug for ValidBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.view().fmt(f)
    }
}

impl ValidBatch {
    /// Checks framing and CRC, as [`RecordBatch::new`] does.
    pub fn new(bytes: bytes::Bytes) -> Result<Self, BatchError> {
        RecordBatch::new(&bytes)?;
        Ok(Self { bytes })
    }

    /// A borrowed view, without checking again.
    pub fn view(&self) -> RecordBatch<'_> {
        RecordBatch { bytes: &self.bytes }
    }

    pub fn bytes(&self) -> &bytes::Bytes {
        &self.bytes
    }

    pub fn into_bytes(self) -> bytes::Bytes {
        self.bytes
    }
}

/// Sets the base offset of the batch at the start of `batch` (outside the CRC).
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[BASE_OFFSET..BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Sets the partition leader epoch of the batch at the start of `batch` (outside the CRC).
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[PARTITION_LEADER_EPOCH..PARTITION_LEADER_EPOCH + 4].copy_from_slice(&epoch.to_be_bytes());
}

/// Stamps a batch with the broker's time (Kafka's `LogAppendTime`): the timestamp type
/// bit set and the max timestamp, which readers then give every record, set to `now_ms`.
/// Both lie under the CRC, which is computed again: a pass over the batch, paid only by
/// topics that ask for this.
pub fn set_log_append_time(batch: &mut [u8], now_ms: i64) {
    let attributes = read_i16(batch, ATTRIBUTES) | TIMESTAMP_TYPE_BIT;
    batch[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c::crc32c(&batch[ATTRIBUTES..]);
    batch[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Gives a finished batch another producer identity and first sequence; the CRC is
/// computed again (a pass over the batch, for the rare batch numbered afresh).
pub fn set_producer(batch: &mut [u8], producer_id: i64, producer_epoch: i16, base_sequence: i32) {
    batch[PRODUCER_ID..PRODUCER_ID + 8].copy_from_slice(&producer_id.to_be_bytes());
    batch[PRODUCER_EPOCH..PRODUCER_EPOCH + 2].copy_from_slice(&producer_epoch.to_be_bytes());
    batch[BASE_SEQUENCE..BASE_SEQUENCE + 4].copy_from_slice(&base_sequence.to_be_bytes());
    let crc = crc32c::crc32c(&batch[ATTRIBUTES..]);
    batch[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// The max timestamp of a batch already verified elsewhere (at least a header long).
pub(crate) fn max_timestamp_unchecked(batch: &[u8]) -> i64 {
    read_i64(batch, MAX_TIMESTAMP)
}

fn read_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

fn read_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn read_i64(b: &[u8], at: usize) -> i64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(raw)
}

#[cfg(test)]
mod tests;
