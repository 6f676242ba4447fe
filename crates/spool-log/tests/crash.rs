//! A crash can stop a write at any byte. Whatever byte it stops at, opening keeps every
//! complete frame, drops the torn one, and the log works on as before.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs::OpenOptions;
use std::path::Path;

use common::*;
use spool_log::{Log, LogConfig, RecoveryMode};

/// Writes a log whose last segment ends with `tail` frames (a blank, a membership entry
/// and data) and returns the file lengths after each of those frames.
fn log_with_tail(dir: &Path, close_before_tail: bool) -> (Vec<u64>, u64) {
    let mut log = Log::open(dir, small_config()).unwrap();
    for i in 0..20u64 {
        let b = batch(i, 3, 80, 1_000 + i as i64);
        log.append([data(1, i, &b)]).unwrap();
    }
    log.flush().unwrap();
    if close_before_tail {
        log.close().unwrap();
        log = Log::open(dir, small_config()).unwrap();
    }
    let segment = last_segment(dir);
    let len = |p: &Path| std::fs::metadata(p).unwrap().len();
    let mut ends = vec![len(&segment)];
    let next = log.next_index();
    log.append([blank(2, next)]).unwrap();
    ends.push(len(&segment));
    log.append([membership(2, next + 1, b"voters=1,2,3;learners=4")])
        .unwrap();
    ends.push(len(&segment));
    for i in 0..2u64 {
        let b = batch(100 + i, 4, 120, 2_000);
        log.append([data(2, next + 2 + i, &b)]).unwrap();
        ends.push(len(&segment));
    }
    log.flush().unwrap();
    assert_eq!(segment, last_segment(dir), "the tail stays in one segment");
    (ends, next)
}

fn cut_at_every_byte(close_before_tail: bool, fill_zeros: bool) {
    let source = tempfile::tempdir().unwrap();
    let (ends, first_tail_index) = log_with_tail(source.path(), close_before_tail);
    let full_len = *ends.last().unwrap();
    let original = std::fs::read(last_segment(source.path())).unwrap();
    for cut in ends[0]..=full_len {
        let dir = copy_dir(source.path());
        let segment = last_segment(dir.path());
        let file = OpenOptions::new().write(true).open(&segment).unwrap();
        file.set_len(cut).unwrap();
        if fill_zeros {
            // Power loss can leave the file its full length with the unwritten blocks zero.
            file.set_len(full_len).unwrap();
        }
        drop(file);
        // A frame survives if its bytes survive: cut off, or zeroed where they were zero.
        let intact = |end: u64| {
            end <= cut
                || (fill_zeros && original[cut as usize..end as usize].iter().all(|&b| b == 0))
        };
        let complete = ends.iter().filter(|&&end| intact(end)).count() as u64 - 1;
        let log = Log::open(dir.path(), small_config())
            .unwrap_or_else(|e| panic!("open after a cut at byte {cut}: {e}"));
        assert_eq!(
            log.next_index(),
            first_tail_index + complete,
            "cut at {cut}"
        );
        let kept_end = ends[complete as usize];
        let torn = kept_end != if fill_zeros { full_len } else { cut };
        assert_eq!(
            log.recovery_report().truncated_tail.is_some(),
            torn,
            "cut at {cut}: {:?}",
            log.recovery_report()
        );
        let expected_offsets = 60 + 4 * complete.saturating_sub(2) as i64;
        assert_eq!(log.next_offset(), expected_offsets, "cut at {cut}");
        let all = log.reader().read(0, i64::MAX, usize::MAX).unwrap();
        assert_eq!(records_of(&all.batches).len() as i64, expected_offsets);

        // The recovered log takes new writes and reopens clean.
        let mut log = log;
        let b = batch(999, 1, 10, 3_000);
        let index = log.next_index();
        log.append([data(3, index, &b)]).unwrap();
        log.flush().unwrap();
        drop(log);
        let log = Log::open(dir.path(), small_config()).unwrap();
        assert!(log.recovery_report().truncated_tail.is_none());
        assert_eq!(log.next_offset(), expected_offsets + 1);
    }
}

#[test]
fn a_cut_at_any_byte_of_the_tail_keeps_every_complete_frame() {
    cut_at_every_byte(false, false);
}

#[test]
fn a_cut_after_an_index_checkpoint_resumes_from_the_checkpoint() {
    cut_at_every_byte(true, false);
}

#[test]
fn a_zero_filled_tail_after_power_loss_is_dropped() {
    cut_at_every_byte(false, true);
}

#[test]
fn strict_mode_still_drops_a_frame_cut_short_by_a_crash() {
    let source = tempfile::tempdir().unwrap();
    let (ends, first_tail_index) = log_with_tail(source.path(), false);
    let dir = copy_dir(source.path());
    let segment = last_segment(dir.path());
    let cut = ends[3] + 30;
    OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(cut)
        .unwrap();
    let strict = LogConfig {
        recovery: RecoveryMode::Strict,
        ..small_config()
    };
    let log = Log::open(dir.path(), strict).unwrap();
    assert_eq!(log.next_index(), first_tail_index + 3);
    let truncated = log.recovery_report().truncated_tail.clone().unwrap();
    assert_eq!(truncated.position, ends[3]);
    assert_eq!(truncated.dropped_bytes, 30);
}
