//! The log API end to end: append, read by offset and by Raft index, timestamps, rolls,
//! truncation, purge, retention, reset and reopen.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use spool_log::{FrameKind, Log, LogConfig, LogError, RetentionPolicy};

fn fill(log: &mut Log, batches: u64, term: u64) -> Vec<bytes::Bytes> {
    let mut written = Vec::new();
    for i in 0..batches {
        let bytes = batch(i, 5, 100, 1_000 + i as i64);
        let index = log.next_index();
        log.append([data(term, index, &bytes)]).unwrap();
        written.push(bytes);
    }
    log.flush().unwrap();
    written
}

#[test]
fn appended_batches_read_back_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    assert!(log.recovery_report().created);
    let written = fill(&mut log, 200, 1);
    let reader = log.reader();
    assert!(reader.segment_count() > 5, "expected several segments");
    assert_eq!(reader.start_offset(), 0);
    assert_eq!(reader.next_offset(), 1000);

    let all = reader.read(0, i64::MAX, usize::MAX).unwrap();
    assert_eq!(all.batches.len(), 200);
    assert_eq!(all.next_offset, 1000);
    let expected = records_of(&written);
    let got = records_of(&all.batches);
    assert_eq!(got.len(), 1000);
    for (i, ((offset, key, value), (_, want_key, want_value))) in
        got.iter().zip(&expected).enumerate()
    {
        assert_eq!(*offset, i as i64);
        assert_eq!((key, value), (want_key, want_value));
    }
    // Every offset finds the batch that holds it, in whichever segment it lies.
    for offset in 0..1000 {
        let fetched = reader.read(offset, i64::MAX, 1).unwrap();
        assert_eq!(fetched.batches.len(), 1);
        let batch = spool_log::RecordBatch::new(&fetched.batches[0]).unwrap();
        assert!(batch.base_offset() <= offset && offset <= batch.last_offset());
        assert_eq!(batch.partition_leader_epoch(), 1);
    }
}

#[test]
fn reads_stop_at_the_upper_bound_and_the_byte_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    fill(&mut log, 50, 1);
    let reader = log.reader();
    let bounded = reader.read(0, 25, usize::MAX).unwrap();
    assert_eq!(bounded.next_offset, 25);
    assert_eq!(bounded.batches.len(), 5);
    let at_bound = reader.read(25, 25, usize::MAX).unwrap();
    assert!(at_bound.batches.is_empty());
    assert_eq!(at_bound.next_offset, 25);

    let one_size = bounded.batches[0].len();
    let budget = reader.read(0, i64::MAX, one_size * 3 + 10).unwrap();
    assert_eq!(budget.batches.len(), 3);
    // A budget smaller than one batch still returns that batch.
    assert_eq!(reader.read(7, i64::MAX, 1).unwrap().batches.len(), 1);
    assert_eq!(reader.read(250, i64::MAX, 1).unwrap().batches.len(), 0);
}

#[test]
fn offsets_outside_the_log_are_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    fill(&mut log, 3, 1);
    let reader = log.reader();
    assert!(matches!(
        reader.read(16, i64::MAX, 100),
        Err(LogError::OffsetOutOfRange {
            requested: 16,
            start: 0,
            end: 15
        })
    ));
    assert!(matches!(
        reader.read(-1, i64::MAX, 100),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert!(matches!(
        reader.read_entries(0, 9, 100),
        Err(LogError::IndexOutOfRange { .. })
    ));
}

#[test]
fn raft_entries_of_every_kind_read_back_and_only_data_takes_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    let b1 = batch(1, 3, 10, 5);
    let b2 = batch(2, 2, 10, 6);
    let appended = log
        .append([
            membership(1, 0, b"voters=1,2,3"),
            blank(1, 1),
            data(1, 2, &b1),
            blank(2, 3),
            data(2, 4, &b2),
        ])
        .unwrap();
    assert_eq!(appended.first_index, 0);
    assert_eq!(appended.first_offset, 0);
    assert_eq!(appended.end.next_index, 5);
    assert_eq!(appended.end.next_offset, 5);
    assert_eq!(appended.end.last_term, 2);

    let entries = log.reader().read_entries(0, 5, usize::MAX).unwrap();
    let kinds: Vec<FrameKind> = entries.iter().map(|e| e.header.kind).collect();
    use FrameKind::*;
    assert_eq!(kinds, vec![Membership, Blank, Data, Blank, Data]);
    assert_eq!(&entries[0].payload[..], b"voters=1,2,3");
    assert_eq!(entries[2].header.base_offset, 0);
    assert_eq!(entries[4].header.base_offset, 3);
    assert_eq!(entries[4].header.term, 2);
    let sub = log.reader().read_entries(3, 4, usize::MAX).unwrap();
    assert_eq!(sub.len(), 1);
    assert_eq!(sub[0].header.index, 3);

    let fetched = log.reader().read(0, i64::MAX, usize::MAX).unwrap();
    assert_eq!(
        fetched.batches.len(),
        2,
        "fetch skips blank and membership frames"
    );
}

#[test]
fn bad_appends_are_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    fill(&mut log, 2, 3);
    let before = log.end();
    let b = batch(9, 2, 10, 1);
    let gap = log.append([data(3, 2, &b), data(3, 4, &b)]);
    assert!(matches!(
        gap,
        Err(LogError::NonContiguousIndex {
            expected: 3,
            found: 4
        })
    ));
    assert_eq!(
        log.end(),
        before,
        "the valid first entry was rolled back too"
    );
    let regression = log.append([data(2, 2, &b)]);
    assert!(matches!(
        regression,
        Err(LogError::TermRegression { last: 3, found: 2 })
    ));
    assert_eq!(log.end(), before);
    assert_eq!(
        log.reader()
            .read(0, i64::MAX, usize::MAX)
            .unwrap()
            .batches
            .len(),
        2
    );
}

#[test]
fn timestamps_find_the_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    fill(&mut log, 100, 1); // batch i has timestamp 1000 + i, records 5i..5i+4
    let reader = log.reader();
    assert_eq!(reader.offset_for_timestamp(0, i64::MAX).unwrap(), Some(0));
    assert_eq!(
        reader.offset_for_timestamp(1_000, i64::MAX).unwrap(),
        Some(0)
    );
    assert_eq!(
        reader.offset_for_timestamp(1_042, i64::MAX).unwrap(),
        Some(210)
    );
    assert_eq!(
        reader.offset_for_timestamp(1_099, i64::MAX).unwrap(),
        Some(495)
    );
    assert_eq!(reader.offset_for_timestamp(1_100, i64::MAX).unwrap(), None);
    assert_eq!(reader.offset_for_timestamp(1_042, 200).unwrap(), None);
}

#[test]
fn truncation_removes_the_tail_and_gives_its_offsets_out_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    fill(&mut log, 120, 1);
    let segments_before = log.reader().segment_count();
    log.truncate_after(59).unwrap();
    assert_eq!(log.next_index(), 60);
    assert_eq!(log.next_offset(), 300);
    assert!(log.reader().segment_count() < segments_before);
    assert!(matches!(
        log.reader().read(300, i64::MAX, 10),
        Ok(f) if f.batches.is_empty()
    ));
    let replacement = batch(1000, 2, 10, 5_000);
    let appended = log.append([data(2, 60, &replacement)]).unwrap();
    assert_eq!(appended.first_offset, 300);
    log.flush().unwrap();
    drop(log);

    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.next_index(), 61);
    assert_eq!(log.next_offset(), 302);
    assert_eq!(log.end().last_term, 2);
    let tail = log.reader().read(299, i64::MAX, usize::MAX).unwrap();
    let records = records_of(&tail.batches);
    assert_eq!(records.last().map(|r| r.0), Some(301));
    assert_eq!(
        records.last().map(|r| r.1.clone()),
        Some(b"key-1000-1".to_vec())
    );
    // Timestamps of the truncated data are forgotten with it.
    assert_eq!(
        log.reader().offset_for_timestamp(1_070, i64::MAX).unwrap(),
        Some(300)
    );
}

#[test]
fn truncating_everything_leaves_an_empty_log_at_the_same_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    fill(&mut log, 40, 1);
    log.truncate_from(0).unwrap();
    assert_eq!(log.next_index(), 0);
    assert_eq!(log.next_offset(), 0);
    assert_eq!(log.reader().segment_count(), 1);
    fill(&mut log, 3, 2);
    assert_eq!(log.next_offset(), 15);
}

#[test]
fn purge_and_retention_delete_whole_sealed_segments_only() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(10_000);
    let mut log = Log::open_with_clock(dir.path(), small_config(), clock.clone()).unwrap();
    fill(&mut log, 200, 1);
    let segments = log.reader().segment_count();
    let purged = log.purge_before(1).unwrap();
    assert_eq!(purged.segments, 0, "offset 0 is still needed");
    let purged = log.purge_before(500).unwrap();
    assert!(purged.segments > 0);
    assert!(purged.start_offset <= 500 && purged.start_offset > 0);
    assert_eq!(log.start_offset(), purged.start_offset);
    assert!(matches!(
        log.reader().read(0, i64::MAX, 10),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(log.reader().segment_count(), segments - purged.segments);

    // Size: keep at most ~3 segments' worth.
    let by_size = RetentionPolicy {
        max_age: None,
        max_bytes: Some(3 * 16 * 1024),
    };
    log.apply_retention(&by_size).unwrap();
    assert!(log.reader().size_bytes() <= 4 * 16 * 1024);
    assert!(log.reader().segment_count() >= 3);

    // Age: batches carry timestamps 1000..1200; at 10_000 + 1h nothing sealed is young.
    clock.advance(Duration::from_secs(3600));
    let by_age = RetentionPolicy {
        max_age: Some(Duration::from_secs(60)),
        max_bytes: None,
    };
    log.apply_retention(&by_age).unwrap();
    assert_eq!(
        log.reader().segment_count(),
        1,
        "the active segment always stays"
    );
    let end = log.next_offset();
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.next_offset(), end);
    assert_eq!(log.start_offset(), log.reader().start_offset());
}

#[test]
fn segments_roll_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(1_000_000);
    let config = LogConfig {
        segment_bytes: 1024 * 1024,
        segment_age: Duration::from_secs(60),
        ..small_config()
    };
    let mut log = Log::open_with_clock(dir.path(), config, clock.clone()).unwrap();
    fill(&mut log, 2, 1);
    assert_eq!(log.reader().segment_count(), 1);
    clock.advance(Duration::from_secs(61));
    fill(&mut log, 1, 1);
    assert_eq!(log.reader().segment_count(), 2);
    fill(&mut log, 1, 1);
    assert_eq!(log.reader().segment_count(), 2, "the new segment is young");
}

#[test]
fn reset_starts_afresh_at_the_given_position() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    fill(&mut log, 30, 1);
    log.reset(1_000, 50_000, 7).unwrap();
    assert_eq!(log.first_index(), 1_000);
    assert_eq!(log.start_offset(), 50_000);
    let b = batch(1, 2, 10, 1);
    assert_eq!(
        log.append([data(7, 1_000, &b)]).unwrap().first_offset,
        50_000
    );
    log.flush().unwrap();
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!((log.first_index(), log.next_index()), (1_000, 1_001));
    assert_eq!((log.start_offset(), log.next_offset()), (50_000, 50_002));
}

#[test]
fn a_clean_close_leaves_nothing_to_scan_and_a_crash_rescans_only_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    fill(&mut log, 100, 1);
    log.close().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.recovery_report().scanned_bytes, 0);
    assert!(log.recovery_report().rebuilt_indexes.is_empty());
    let mut log = log;
    fill(&mut log, 3, 1);
    drop(log); // no close: as after kill -9
    let log = Log::open(dir.path(), small_config()).unwrap();
    let scanned = log.recovery_report().scanned_bytes;
    assert!(scanned > 0 && scanned < 4 * 1024, "scanned {scanned} bytes");
    assert_eq!(log.next_offset(), 515);
}

#[test]
fn flush_policies_report_what_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    let b = batch(1, 1, 10, 1);
    log.append([data(1, 0, &b)]).unwrap();
    assert_eq!(
        log.durable().next_index,
        0,
        "nothing is durable before a flush"
    );
    assert_eq!(log.flush().unwrap().next_index, 1);

    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        flush: spool_log::FlushPolicy::Interval(Duration::from_secs(3600)),
        ..small_config()
    };
    let mut log = Log::open(dir.path(), config).unwrap();
    log.append([data(1, 0, &b)]).unwrap();
    assert_eq!(
        log.flush().unwrap().next_index,
        1,
        "durable under the policy"
    );
    assert_eq!(log.sync().unwrap().next_index, 1);
}

#[test]
fn readers_on_other_threads_see_appends_as_they_land() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    let total = 2_000i64;
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let reader = log.reader();
            std::thread::spawn(move || {
                let deadline = std::time::Instant::now() + Duration::from_secs(30);
                let mut next = 0i64;
                let mut seen = 0usize;
                while next < total {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "reader stalled at {next}"
                    );
                    let fetched = reader.read(next, i64::MAX, 64 * 1024).unwrap();
                    for (offset, _, _) in records_of(&fetched.batches) {
                        if offset >= next {
                            assert_eq!(offset, next, "no gaps, no reordering");
                            next += 1;
                            seen += 1;
                        }
                    }
                    if fetched.batches.is_empty() {
                        std::thread::yield_now();
                    }
                }
                seen
            })
        })
        .collect();
    for i in 0..(total as u64 / 4) {
        let b = batch(i, 4, 50, 1);
        let index = log.next_index();
        log.append([data(1, index, &b)]).unwrap();
    }
    for reader in readers {
        assert_eq!(reader.join().unwrap(), total as usize);
    }
}

#[test]
fn a_sync_ahead_of_a_roll_leaves_the_flush_of_earlier_appends_its_own_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    let b = batch(1, 1, 10, 1);
    log.append([data(1, 0, &b)]).unwrap();
    // The appender syncs ahead of a roll while the flusher's job for the same appends
    // begins: the flusher must still sync the files itself, or it would answer for them
    // before the other fsync finished (or failed).
    let ahead = log.begin_sync_ahead().unwrap();
    let flush = log.begin_sync().unwrap();
    assert!(!ahead.is_empty());
    assert!(
        !flush.is_empty(),
        "the flusher's job must sync the files too"
    );
    let ran = flush.run();
    log.finish_sync(&flush, &ran).unwrap();
    let ran = ahead.run();
    log.finish_sync(&ahead, &ran).unwrap();
    assert_eq!(log.durable(), log.end());
}
