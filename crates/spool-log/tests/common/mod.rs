#![allow(clippy::unwrap_used)]
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use spool_log::batch::{BatchBuilder, BatchOptions};
use spool_log::{Clock, Entry, EntryPayload, FlushPolicy, LogConfig, RecordBatch};

/// A batch of `records` records whose values are `value_len` bytes, tagged with `tag` so
/// every batch differs, all stamped `timestamp`.
pub fn batch(tag: u64, records: usize, value_len: usize, timestamp: i64) -> Bytes {
    let mut builder = BatchBuilder::new(BatchOptions::default());
    let mut value = vec![(tag % 251) as u8; value_len];
    for i in 0..records {
        let key = format!("key-{tag}-{i}");
        if let Some(first) = value.first_mut() {
            *first = i as u8;
        }
        builder.append(timestamp, Some(key.as_bytes()), Some(&value), &[]);
    }
    builder.finish()
}

pub fn data(term: u64, index: u64, bytes: &[u8]) -> Entry<'_> {
    Entry {
        term,
        index,
        payload: EntryPayload::Data(RecordBatch::new(bytes).expect("test batches are valid")),
    }
}

pub fn blank(term: u64, index: u64) -> Entry<'static> {
    Entry {
        term,
        index,
        payload: EntryPayload::Blank,
    }
}

pub fn membership(term: u64, index: u64, bytes: &[u8]) -> Entry<'_> {
    Entry {
        term,
        index,
        payload: EntryPayload::Membership(bytes),
    }
}

/// Small segments and a dense index, so tests cross every boundary quickly.
pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 16 * 1024,
        segment_age: Duration::from_secs(3600),
        index_interval_bytes: 512,
        flush: FlushPolicy::Always,
        ..LogConfig::default()
    }
}

/// A clock tests move by hand.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn at(ms: i64) -> Arc<Self> {
        Arc::new(Self(AtomicI64::new(ms)))
    }

    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The (offset, key, value) of every record in `batches`.
pub fn records_of(batches: &[Bytes]) -> Vec<(i64, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for bytes in batches {
        let batch = RecordBatch::new(bytes).expect("stored batches are valid");
        for record in batch.records().expect("uncompressed") {
            let record = record.expect("valid record");
            out.push((
                record.offset(),
                record.key().unwrap_or_default().to_vec(),
                record.value().unwrap_or_default().to_vec(),
            ));
        }
    }
    out
}

/// Copies every file of `from` into a fresh temporary directory.
pub fn copy_dir(from: &std::path::Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().expect("temp dir");
    for entry in std::fs::read_dir(from).expect("list") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.path().join(entry.file_name())).expect("copy");
    }
    to
}

/// The newest segment file in `dir`.
pub fn last_segment(dir: &std::path::Path) -> std::path::PathBuf {
    let mut segments: Vec<_> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    segments.pop().expect("a segment")
}

/// Flips one bit of the file at `position`.
pub fn flip_bit(path: &std::path::Path, position: u64, bit: u8) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open");
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, position).expect("read");
    byte[0] ^= 1 << bit;
    file.write_all_at(&byte, position).expect("write");
}
