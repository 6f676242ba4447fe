//! Records inside an uncompressed batch, read lazily and without allocation.
//!
//! ```text
//! length          varint   bytes after this field
//! attributes      i8       unused, 0
//! timestampDelta  varlong  from the batch's baseTimestamp
//! offsetDelta     varint   from the batch's baseOffset
//! keyLength       varint   -1 for a null key
//! key             bytes
//! valueLength     varint   -1 for a null value
//! value           bytes
//! headerCount     varint
//!   keyLength     varint   header keys are UTF-8 strings, never null
//!   key           bytes
//!   valueLength   varint   -1 for a null value
//!   value         bytes
//! ```

use super::varint::{read_varint, read_varlong};
use super::{BATCH_HEADER_LEN, BatchError, Compression, RecordBatch, TimestampType};

/// One record of a batch, borrowing from the batch's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    offset: i64,
    offset_delta: i32,
    timestamp: i64,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    header_count: i32,
    headers: &'a [u8],
}

impl<'a> Record<'a> {
    /// The record's absolute offset (batch base offset + offset delta).
    pub fn offset(&self) -> i64 {
        self.offset
    }

    pub fn offset_delta(&self) -> i32 {
        self.offset_delta
    }

    /// The record's timestamp in ms. For log-append-time batches, the batch's max timestamp.
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }

    pub fn key(&self) -> Option<&'a [u8]> {
        self.key
    }

    pub fn value(&self) -> Option<&'a [u8]> {
        self.value
    }

    pub fn header_count(&self) -> usize {
        usize::try_from(self.header_count).unwrap_or(0)
    }

    pub fn headers(&self) -> HeaderIter<'a> {
        HeaderIter {
            rest: self.headers,
            remaining: self.header_count(),
        }
    }
}

/// One record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    pub key: &'a [u8],
    pub value: Option<&'a [u8]>,
}

/// Iterates a record's headers. The record was checked when it was read, so this never
/// meets malformed bytes.
#[derive(Debug, Clone)]
pub struct HeaderIter<'a> {
    rest: &'a [u8],
    remaining: usize,
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = Header<'a>;

    fn next(&mut self) -> Option<Header<'a>> {
        if self.remaining == 0 {
            return None;
        }
        let mut cursor = Cursor::new(self.rest);
        let key = cursor.bytes().ok()??;
        let value = cursor.bytes().ok()?;
        self.rest = cursor.rest;
        self.remaining -= 1;
        Some(Header { key, value })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

/// Iterates the records of an uncompressed batch. Yields an error, then stops, at the first
/// malformed record.
#[derive(Debug, Clone)]
pub struct RecordIter<'a> {
    rest: &'a [u8],
    base_offset: i64,
    base_timestamp: i64,
    log_append_time: Option<i64>,
    declared: i32,
    read: i64,
    failed: bool,
}

impl<'a> RecordIter<'a> {
    pub(crate) fn over(batch: &RecordBatch<'a>, declared: i32) -> Result<Self, BatchError> {
        match batch.compression() {
            Some(Compression::None) => {}
            Some(codec) => return Err(BatchError::Compressed { codec }),
            None => {
                return Err(BatchError::UnknownCompression {
                    id: batch.attributes() & 0x07,
                });
            }
        }
        Ok(Self {
            rest: &batch.as_bytes()[BATCH_HEADER_LEN..],
            base_offset: batch.base_offset(),
            base_timestamp: batch.base_timestamp(),
            log_append_time: (batch.timestamp_type() == TimestampType::LogAppendTime)
                .then(|| batch.max_timestamp()),
            declared,
            read: 0,
            failed: false,
        })
    }

    pub(crate) fn from_section(rest: &'a [u8], batch: &RecordBatch<'_>) -> Self {
        Self {
            rest,
            base_offset: batch.base_offset(),
            base_timestamp: batch.base_timestamp(),
            log_append_time: (batch.timestamp_type() == TimestampType::LogAppendTime)
                .then(|| batch.max_timestamp()),
            declared: batch.record_count(),
            read: 0,
            failed: false,
        }
    }

    /// True once every byte of the records section has been consumed.
    pub fn is_exhausted(&self) -> bool {
        self.rest.is_empty()
    }

    fn malformed(&mut self, reason: &'static str) -> Option<Result<Record<'a>, BatchError>> {
        self.failed = true;
        Some(Err(BatchError::MalformedRecord {
            record: self.read,
            reason,
        }))
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<Record<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.read >= i64::from(self.declared) {
            return None;
        }
        if self.rest.is_empty() {
            self.failed = true;
            return Some(Err(BatchError::RecordCountMismatch {
                declared: self.declared,
                found: self.read,
            }));
        }
        let Ok((length, used)) = read_varint(self.rest) else {
            return self.malformed("bad length varint");
        };
        let Ok(length) = usize::try_from(length) else {
            return self.malformed("negative length");
        };
        let Some(body) = self.rest.get(used..used + length) else {
            return self.malformed("length runs past the end of the batch");
        };
        let record = match parse_body(body) {
            Ok(parts) => parts,
            Err(reason) => return self.malformed(reason),
        };
        self.rest = &self.rest[used + length..];
        self.read += 1;
        let timestamp = self
            .log_append_time
            .unwrap_or(self.base_timestamp.wrapping_add(record.timestamp_delta));
        Some(Ok(Record {
            offset: self
                .base_offset
                .wrapping_add(i64::from(record.offset_delta)),
            offset_delta: record.offset_delta,
            timestamp,
            key: record.key,
            value: record.value,
            header_count: record.header_count,
            headers: record.headers,
        }))
    }
}

struct Body<'a> {
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    header_count: i32,
    headers: &'a [u8],
}

fn parse_body(body: &[u8]) -> Result<Body<'_>, &'static str> {
    let mut cursor = Cursor::new(body);
    cursor.skip(1).ok_or("missing attributes")?;
    let timestamp_delta = cursor.varlong().ok_or("bad timestamp delta")?;
    let offset_delta = cursor.varint().ok_or("bad offset delta")?;
    let key = cursor.bytes().map_err(|_| "bad key")?;
    let value = cursor.bytes().map_err(|_| "bad value")?;
    let header_count = cursor.varint().ok_or("bad header count")?;
    if header_count < 0 {
        return Err("negative header count");
    }
    let headers = cursor.rest;
    for _ in 0..header_count {
        match cursor.bytes() {
            Ok(Some(_)) => {}
            _ => return Err("bad header key"),
        }
        cursor.bytes().map_err(|_| "bad header value")?;
    }
    if !cursor.rest.is_empty() {
        return Err("bytes left over after the headers");
    }
    Ok(Body {
        timestamp_delta,
        offset_delta,
        key,
        value,
        header_count,
        headers,
    })
}

struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn new(rest: &'a [u8]) -> Self {
        Self { rest }
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.rest = self.rest.get(n..)?;
        Some(())
    }

    fn varint(&mut self) -> Option<i32> {
        let (v, used) = read_varint(self.rest).ok()?;
        self.rest = &self.rest[used..];
        Some(v)
    }

    fn varlong(&mut self) -> Option<i64> {
        let (v, used) = read_varlong(self.rest).ok()?;
        self.rest = &self.rest[used..];
        Some(v)
    }

    /// A length-prefixed byte string; length -1 is null.
    fn bytes(&mut self) -> Result<Option<&'a [u8]>, ()> {
        let len = self.varint().ok_or(())?;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| ())?;
        let value = self.rest.get(..len).ok_or(())?;
        self.rest = &self.rest[len..];
        Ok(Some(value))
    }
}
