//! Builds RecordBatch v2 bytes, as a producer sends them: base offset 0, leader epoch -1.

use bytes::{BufMut, Bytes, BytesMut};

use super::varint::{varint_len, varlong_len, write_varint, write_varlong};
use super::{
    ATTRIBUTES, BATCH_HEADER_LEN, BATCH_LENGTH, CRC, Compression, Header, LOG_OVERHEAD, MAGIC_V2,
    TimestampType,
};

/// Batch-wide settings. The defaults describe a plain, non-idempotent producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOptions {
    pub timestamp_type: TimestampType,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub transactional: bool,
    /// A control batch (a transaction marker), which only brokers write.
    pub control: bool,
}

impl Default for BatchOptions {
    fn default() -> Self {
        Self {
            timestamp_type: TimestampType::CreateTime,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            transactional: false,
            control: false,
        }
    }
}

/// Accumulates records into one uncompressed batch. Appending writes straight into the
/// batch's buffer: no allocation per record once the buffer has room.
#[derive(Debug)]
pub struct BatchBuilder {
    buf: BytesMut,
    options: BatchOptions,
    base_timestamp: i64,
    max_timestamp: i64,
    count: i32,
}

impl BatchBuilder {
    pub fn new(options: BatchOptions) -> Self {
        Self::with_capacity(16 * 1024, options)
    }

    /// A builder whose buffer starts with room for `capacity` bytes of batch.
    pub fn with_capacity(capacity: usize, options: BatchOptions) -> Self {
        let mut buf = BytesMut::with_capacity(capacity.max(BATCH_HEADER_LEN));
        buf.put_bytes(0, BATCH_HEADER_LEN);
        Self {
            buf,
            options,
            base_timestamp: 0,
            max_timestamp: -1,
            count: 0,
        }
    }

    /// The bytes a record with these fields adds to a batch, for size-based batching.
    pub fn record_size(
        &self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header<'_>],
    ) -> usize {
        let timestamp_delta = if self.count == 0 {
            0
        } else {
            timestamp.wrapping_sub(self.base_timestamp)
        };
        let body = record_body_len(timestamp_delta, self.count, key, value, headers);
        varint_len(len_i32(body)) + body
    }

    /// Appends one record; its offset delta is the number of records before it.
    pub fn append(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header<'_>],
    ) {
        if self.count == 0 {
            self.base_timestamp = timestamp;
        }
        self.max_timestamp = self.max_timestamp.max(timestamp);
        let timestamp_delta = timestamp.wrapping_sub(self.base_timestamp);
        let body = record_body_len(timestamp_delta, self.count, key, value, headers);
        let buf = &mut self.buf;
        write_varint(buf, len_i32(body));
        buf.put_u8(0);
        write_varlong(buf, timestamp_delta);
        write_varint(buf, self.count);
        put_nullable(buf, key);
        put_nullable(buf, value);
        write_varint(buf, len_i32(headers.len()));
        for header in headers {
            put_nullable(buf, Some(header.key));
            put_nullable(buf, header.value);
        }
        self.count += 1;
    }

    pub fn record_count(&self) -> i32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes the finished batch will take.
    pub fn size(&self) -> usize {
        self.buf.len()
    }

    /// The records written so far, uncompressed: what a codec compresses.
    pub fn records(&self) -> &[u8] {
        &self.buf[BATCH_HEADER_LEN..]
    }

    /// Finishes the batch with `compressed` (this builder's records, compressed with
    /// `codec`) as its records section. The header keeps the record count and offsets.
    pub fn finish_compressed(mut self, codec: Compression, compressed: &[u8]) -> Bytes {
        self.buf.truncate(BATCH_HEADER_LEN);
        self.buf.extend_from_slice(compressed);
        self.finish_as(codec)
    }

    /// Names the producer and the sequence of the first record, for a batch whose
    /// producer is known only once it is shipped (an idempotent producer numbers batches
    /// in the order it first sends them).
    pub fn set_producer(&mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) {
        self.options.producer_id = producer_id;
        self.options.producer_epoch = producer_epoch;
        self.options.base_sequence = base_sequence;
    }

    /// Marks the batch as part of its producer's transaction (or not).
    pub fn set_transactional(&mut self, transactional: bool) {
        self.options.transactional = transactional;
    }

    /// Writes the header and CRC and returns the batch.
    pub fn finish(self) -> Bytes {
        self.finish_as(Compression::None)
    }

    fn finish_as(mut self, codec: Compression) -> Bytes {
        let mut attributes = codec.attribute_bits();
        if self.options.timestamp_type == TimestampType::LogAppendTime {
            attributes |= 0x08;
        }
        if self.options.transactional {
            attributes |= 0x10;
        }
        if self.options.control {
            attributes |= 0x20;
        }
        let total = self.buf.len();
        let mut header = &mut self.buf[..BATCH_HEADER_LEN];
        header.put_i64(0); // baseOffset: assigned by the leader
        header.put_i32(len_i32(total - LOG_OVERHEAD));
        header.put_i32(-1); // partitionLeaderEpoch: assigned by the leader
        header.put_i8(MAGIC_V2);
        header.put_u32(0); // crc, below
        header.put_i16(attributes);
        header.put_i32((self.count - 1).max(0));
        header.put_i64(self.base_timestamp);
        header.put_i64(self.max_timestamp);
        header.put_i64(self.options.producer_id);
        header.put_i16(self.options.producer_epoch);
        header.put_i32(self.options.base_sequence);
        header.put_i32(self.count);
        let crc = crc32c::crc32c(&self.buf[ATTRIBUTES..]);
        self.buf[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
        debug_assert_eq!(BATCH_LENGTH, 8);
        self.buf.freeze()
    }
}

fn record_body_len(
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[Header<'_>],
) -> usize {
    1 + varlong_len(timestamp_delta)
        + varint_len(offset_delta)
        + nullable_len(key)
        + nullable_len(value)
        + varint_len(len_i32(headers.len()))
        + headers
            .iter()
            .map(|h| nullable_len(Some(h.key)) + nullable_len(h.value))
            .sum::<usize>()
}

fn nullable_len(bytes: Option<&[u8]>) -> usize {
    match bytes {
        None => varint_len(-1),
        Some(b) => varint_len(len_i32(b.len())) + b.len(),
    }
}

fn put_nullable(buf: &mut BytesMut, bytes: Option<&[u8]>) {
    match bytes {
        None => write_varint(buf, -1),
        Some(b) => {
            write_varint(buf, len_i32(b.len()));
            buf.put_slice(b);
        }
    }
}

/// Lengths inside a batch are i32 on the wire; a batch is far below 2 GiB.
fn len_i32(len: usize) -> i32 {
    i32::try_from(len).unwrap_or(i32::MAX)
}
