//! Storage engine benchmarks: append (1 KiB records in 16 KiB and 1 MiB batches, flush os
//! and always), read from the page cache, and recovery scans.
//!
//! `cargo bench -p spool-log --bench log`; set SPOOL_BENCH_DIR to put the logs on another
//! disk than the temporary directory's, and SPOOL_BENCH_COLD=1 (as root) to drop the page
//! cache before every recovery, so it reads from the disk.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use spool_log::batch::{BatchBuilder, BatchOptions};
use spool_log::{Entry, EntryPayload, FlushPolicy, Log, LogConfig, RecordBatch};

const RECORD: usize = 1024;
const GROUP_BYTES: usize = 1024 * 1024;
/// The log is reset (files deleted, untimed) past this, so the disk never fills.
const RESET_AT: u64 = 1024 * 1024 * 1024;

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("SPOOL_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(PathBuf::from(dir)).unwrap(),
        None => tempfile::tempdir().unwrap(),
    }
}

/// A batch of 1 KiB records (keys of 16 bytes, values filling the rest) of about `bytes`.
fn batch_of(bytes: usize) -> Bytes {
    let mut builder = BatchBuilder::with_capacity(bytes + 4096, BatchOptions::default());
    let value = vec![0x5au8; RECORD - 16 - 8];
    let mut n = 0u64;
    while builder.size() + RECORD <= bytes {
        let key = format!("{n:016}");
        builder.append(1_700_000_000_000, Some(key.as_bytes()), Some(&value), &[]);
        n += 1;
    }
    builder.finish()
}

/// An entry for a batch validated beforehand: the broker checks a batch's CRC once, when
/// it arrives, so the log's append is measured without that pass (see `validate`).
fn entry(index: u64, batch: RecordBatch<'_>) -> Entry<'_> {
    Entry {
        term: 1,
        index,
        payload: EntryPayload::Data(batch),
    }
}

fn config(flush: FlushPolicy) -> LogConfig {
    LogConfig {
        flush,
        ..LogConfig::default()
    }
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    group.measurement_time(Duration::from_secs(8));
    for (size_name, batch_bytes) in [("16KiB-batches", 16 * 1024), ("1MiB-batches", 1024 * 1024)] {
        let bytes = batch_of(batch_bytes);
        let batch = RecordBatch::new(&bytes).unwrap();
        let per_group = (GROUP_BYTES / batch.len()).max(1);
        group.throughput(Throughput::Bytes((batch.len() * per_group) as u64));
        for (flush_name, flush) in [("os", FlushPolicy::Os), ("always", FlushPolicy::Always)] {
            let id = BenchmarkId::new(size_name, format!("flush={flush_name}"));
            group.bench_function(id, |b| {
                let dir = bench_dir();
                let mut log = Log::open(dir.path(), config(flush)).unwrap();
                b.iter_custom(|iters| {
                    let mut busy = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        let first = log.next_index();
                        log.append((0..per_group as u64).map(|i| entry(first + i, batch)))
                            .unwrap();
                        log.flush().unwrap();
                        busy += start.elapsed();
                        if log.reader().size_bytes() > RESET_AT {
                            let end = log.end();
                            log.reset(end.next_index, end.next_offset, end.last_term)
                                .unwrap();
                        }
                    }
                    busy
                });
            });
        }
    }
    group.finish();
}

/// The disk's own figures under the same conditions as `append`: 1 MiB `write`s to a fresh
/// file, optionally each followed by `fdatasync`, the file deleted past 1 GiB.
fn baseline(c: &mut Criterion) {
    use std::io::Write;
    let mut group = c.benchmark_group("baseline");
    group.measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Bytes(GROUP_BYTES as u64));
    let chunk = vec![0x5au8; GROUP_BYTES];
    for (name, fdatasync) in [("write-1MiB", false), ("write-1MiB+fdatasync", true)] {
        group.bench_function(name, |b| {
            let dir = bench_dir();
            let path = dir.path().join("raw.dat");
            let mut file = std::fs::File::create(&path).unwrap();
            let mut written = 0u64;
            b.iter_custom(|iters| {
                let mut busy = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    file.write_all(&chunk).unwrap();
                    if fdatasync {
                        file.sync_data().unwrap();
                    }
                    busy += start.elapsed();
                    written += GROUP_BYTES as u64;
                    if written > RESET_AT {
                        std::fs::remove_file(&path).unwrap();
                        file = std::fs::File::create(&path).unwrap();
                        written = 0;
                    }
                }
                busy
            });
        });
    }
    group.finish();
}

/// What the broker does to every produced batch before it reaches the log: check framing
/// and CRC, then walk the records to check their count.
fn validate(c: &mut Criterion) {
    let mut group = c.benchmark_group("validate");
    for (name, size) in [("16KiB-batch", 16 * 1024), ("1MiB-batch", 1024 * 1024)] {
        let bytes = batch_of(size);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let batch = RecordBatch::new(&bytes).unwrap();
                batch.validate_records().unwrap();
                batch.record_count()
            });
        });
    }
    group.finish();
}

fn read(c: &mut Criterion) {
    let mut group = c.benchmark_group("read");
    let bytes = batch_of(16 * 1024);
    let batch = RecordBatch::new(&bytes).unwrap();
    let dir = bench_dir();
    let mut log = Log::open(dir.path(), config(FlushPolicy::Os)).unwrap();
    let total: u64 = 256 * 1024 * 1024;
    while log.reader().size_bytes() < total {
        let index = log.next_index();
        log.append([entry(index, batch)]).unwrap();
    }
    log.flush().unwrap();
    let reader = log.reader();
    let end = log.next_offset();
    group.throughput(Throughput::Bytes(reader.size_bytes()));
    group.bench_function("page-cache/1MiB-fetches", |b| {
        b.iter(|| {
            let mut next = 0;
            let mut bytes = 0;
            while next < end {
                let fetched = reader.read(next, i64::MAX, 1024 * 1024).unwrap();
                bytes += fetched.total_bytes();
                next = fetched.next_offset;
            }
            bytes
        });
    });
    group.finish();
}

fn recovery(c: &mut Criterion) {
    let mut group = c.benchmark_group("recovery");
    group.sample_size(10);
    let bytes = batch_of(16 * 1024);
    let batch = RecordBatch::new(&bytes).unwrap();
    let dir = bench_dir();
    let mut log = Log::open(dir.path(), config(FlushPolicy::Os)).unwrap();
    let total: u64 = 1024 * 1024 * 1024;
    while log.reader().size_bytes() < total {
        let first = log.next_index();
        log.append((0..64).map(|i| entry(first + i, batch)))
            .unwrap();
    }
    log.flush().unwrap();
    let size = log.reader().size_bytes();
    drop(log); // no close: the next open scans the tail
    group.throughput(Throughput::Bytes(size));
    group.bench_function("scan-1GiB-without-indexes", |b| {
        b.iter_custom(|iters| {
            let mut busy = Duration::ZERO;
            for _ in 0..iters {
                for entry in std::fs::read_dir(dir.path()).unwrap() {
                    let path = entry.unwrap().path();
                    if path.extension().is_some_and(|e| e == "index") {
                        std::fs::remove_file(path).unwrap();
                    }
                }
                if std::env::var_os("SPOOL_BENCH_COLD").is_some() {
                    drop_page_cache();
                }
                let start = Instant::now();
                let log = Log::open(dir.path(), config(FlushPolicy::Os)).unwrap();
                busy += start.elapsed();
                assert_eq!(
                    log.recovery_report().scanned_bytes + 64 * log.reader().segment_count() as u64,
                    size
                );
            }
            busy
        });
    });
    group.finish();
}

/// Writes dirty pages back and empties the page cache (needs root).
fn drop_page_cache() {
    let synced = std::process::Command::new("sync").status().unwrap();
    assert!(synced.success());
    std::fs::write("/proc/sys/vm/drop_caches", "3").expect("SPOOL_BENCH_COLD needs root");
}

criterion_group!(benches, baseline, append, validate, read, recovery);
criterion_main!(benches);
