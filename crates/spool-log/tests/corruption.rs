//! Damage in the middle of a log is found by CRC and reported with the segment and byte
//! position: never skipped, never served.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs::OpenOptions;

use common::*;
use spool_log::verify::verify_dir;
use spool_log::{Log, LogConfig, LogError, RecoveryMode};

fn written_log(dir: &std::path::Path) {
    let mut log = Log::open(dir, small_config()).unwrap();
    for i in 0..120u64 {
        let b = batch(i, 3, 80, 1_000 + i as i64);
        log.append([data(1, i, &b)]).unwrap();
    }
    log.close().unwrap();
}

fn segments(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    spool_log::verify::segment_files(dir).unwrap()
}

#[test]
fn every_flipped_byte_of_a_stored_frame_is_caught_on_read() {
    let dir = tempfile::tempdir().unwrap();
    written_log(dir.path());
    let log = Log::open(dir.path(), small_config()).unwrap();
    let reader = log.reader();
    let entry = &reader.read_entries(10, 11, usize::MAX).unwrap()[0];
    let offset = entry.header.base_offset;
    // Find the frame's position: the segment holding it, scanning frame lengths.
    let segment = segments(dir.path())[0].clone();
    let mut position = 64u64;
    for e in reader.read_entries(0, 10, usize::MAX).unwrap() {
        position += e.header.frame_len();
    }
    let frame_len = entry.header.frame_len();
    for at in position..position + frame_len {
        flip_bit(&segment, at, (at % 8) as u8);
        match reader.read(offset, i64::MAX, 1) {
            Err(LogError::Corrupt {
                segment: s,
                position: p,
                ..
            }) => {
                assert_eq!(s, segment);
                assert_eq!(p, position, "damage at byte {at}");
            }
            other => panic!("damage at byte {at} was not caught: {other:?}"),
        }
        flip_bit(&segment, at, (at % 8) as u8);
    }
    assert_eq!(reader.read(offset, i64::MAX, 1).unwrap().batches.len(), 1);
}

#[test]
fn a_flipped_bit_in_a_sealed_segment_is_reported_by_verify_and_reads() {
    let dir = tempfile::tempdir().unwrap();
    written_log(dir.path());
    let first = segments(dir.path())[0].clone();
    flip_bit(&first, 3000, 2);
    let report = verify_dir(dir.path()).unwrap();
    assert!(!report.is_clean());
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert_eq!(report.problems[0].file, first);
    let position = report.problems[0].position.unwrap();
    assert!(position <= 3000 && 3000 - position < 1024);

    // Opening trusts the sealed segment's index; reading the damaged frame fails.
    let log = Log::open(dir.path(), small_config()).unwrap();
    let err = log.reader().read(0, i64::MAX, usize::MAX).unwrap_err();
    assert!(matches!(err, LogError::Corrupt { position: p, .. } if p == position));
    // Data beyond the damaged segment is still served.
    let later = log.reader().read(300, i64::MAX, usize::MAX).unwrap();
    assert!(!later.batches.is_empty());
}

#[test]
fn a_sealed_segment_that_must_be_rescanned_refuses_to_open_when_damaged() {
    let dir = tempfile::tempdir().unwrap();
    written_log(dir.path());
    let first = segments(dir.path())[0].clone();
    std::fs::remove_file(first.with_extension("index")).unwrap();
    flip_bit(&first, 3000, 5);
    for mode in [RecoveryMode::TolerateTailCorruption, RecoveryMode::Strict] {
        let config = LogConfig {
            recovery: mode,
            ..small_config()
        };
        let err = Log::open(dir.path(), config).unwrap_err();
        assert!(
            matches!(&err, LogError::Corrupt { segment, .. } if *segment == first),
            "{err}"
        );
    }
}

#[test]
fn damage_followed_by_valid_frames_in_the_active_segment_is_not_mistaken_for_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    for i in 0..10u64 {
        let b = batch(i, 3, 80, 1_000);
        log.append([data(1, i, &b)]).unwrap();
    }
    log.flush().unwrap();
    drop(log);
    let active = last_segment(dir.path());
    assert_eq!(segments(dir.path()).len(), 1);
    flip_bit(&active, 700, 0);
    let err = Log::open(dir.path(), small_config()).unwrap_err();
    assert!(matches!(err, LogError::Corrupt { .. }), "{err}");
    let report = verify_dir(dir.path()).unwrap();
    assert_eq!(report.problems.len(), 1);
    // Nothing was cut: the file is as it was.
    let len = std::fs::metadata(&active).unwrap().len();
    flip_bit(&active, 700, 0);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.next_index(), 10);
    assert_eq!(std::fs::metadata(&active).unwrap().len(), len);
}

#[test]
fn damage_in_the_last_frame_is_cut_when_tolerated_and_refused_when_strict() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    for i in 0..5u64 {
        let b = batch(i, 3, 80, 1_000);
        log.append([data(1, i, &b)]).unwrap();
    }
    log.flush().unwrap();
    drop(log);
    let active = last_segment(dir.path());
    let len = std::fs::metadata(&active).unwrap().len();
    flip_bit(&active, len - 5, 3);
    let strict = LogConfig {
        recovery: RecoveryMode::Strict,
        ..small_config()
    };
    assert!(matches!(
        Log::open(dir.path(), strict),
        Err(LogError::Corrupt { .. })
    ));
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.next_index(), 4);
    let cut = log.recovery_report().truncated_tail.clone().unwrap();
    assert_eq!(cut.segment, active);
    assert!(matches!(cut.reason, spool_log::Corruption::Batch(_)));
}

#[test]
fn a_stale_index_file_is_detected_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    written_log(dir.path());
    let first = segments(dir.path())[0].clone();
    let index = first.with_extension("index");
    flip_bit(&index, 70, 1);
    let report = verify_dir(dir.path()).unwrap();
    assert_eq!(report.problems.len(), 1);
    assert_eq!(report.problems[0].file, index);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.recovery_report().rebuilt_indexes, vec![first]);
    assert_eq!(
        log.reader()
            .read(0, i64::MAX, usize::MAX)
            .unwrap()
            .batches
            .len(),
        120
    );
    drop(log);
    assert!(verify_dir(dir.path()).unwrap().is_clean());
    let _ = OpenOptions::new();
}

/// Every single-bit flip in every field of the active segment's last three frames
/// (membership, blank, data), in both recovery modes. Damage in a frame that valid frames
/// follow is refused; damage in the last frame is cut only when tolerated, and then only
/// that frame; `Strict` refuses it. A damaged length is never taken for a torn write.
#[test]
fn single_bit_damage_in_the_last_frames_of_the_active_segment_never_cuts_valid_frames() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    for i in 0..4u64 {
        let b = batch(i, 3, 40, 1_000);
        log.append([data(1, i, &b)]).unwrap();
    }
    log.append([membership(1, 4, &[9u8; 30])]).unwrap();
    log.append([blank(2, 5)]).unwrap();
    let b = batch(6, 2, 40, 1_000);
    log.append([data(2, 6, &b)]).unwrap();
    log.flush().unwrap();
    drop(log);
    assert_eq!(segments(dir.path()).len(), 1);
    let active = last_segment(dir.path());
    let original = std::fs::read(&active).unwrap();
    // Frame spans, from the headers' payload lengths.
    let mut spans = Vec::new();
    let mut at = 64usize;
    while at < original.len() {
        let payload = u32::from_le_bytes(original[at + 36..at + 40].try_into().unwrap());
        let end = at + 44 + payload as usize;
        spans.push((at, end));
        at = end;
    }
    assert_eq!(spans.len(), 7);
    let strict = LogConfig {
        recovery: RecoveryMode::Strict,
        ..small_config()
    };
    for (frame, &(start, end)) in spans.iter().enumerate().skip(4) {
        let last = frame == spans.len() - 1;
        for byte in start..end {
            // Every bit of the header's fields, one bit of each payload byte.
            let bits: Vec<u8> = if byte - start < 44 {
                (0..8).collect()
            } else {
                vec![(byte % 8) as u8]
            };
            for bit in bits {
                let restore = || {
                    std::fs::write(&active, &original).unwrap();
                    let _ = std::fs::remove_file(active.with_extension("index"));
                };
                restore();
                flip_bit(&active, byte as u64, bit);
                let what = format!("frame {frame}, byte {} bit {bit}", byte - start);
                match Log::open(dir.path(), strict.clone()) {
                    Err(LogError::Corrupt { .. }) => {}
                    Ok(log) => panic!("{what}: strict recovery opened at {}", log.next_index()),
                    Err(other) => panic!("{what}: {other}"),
                }
                assert_eq!(
                    std::fs::metadata(&active).unwrap().len(),
                    original.len() as u64
                );
                match Log::open(dir.path(), small_config()) {
                    Err(LogError::Corrupt { .. }) => {}
                    Ok(log) => {
                        assert!(last, "{what}: damage before valid frames was cut as a tail");
                        assert_eq!(
                            log.next_index(),
                            6,
                            "{what}: cut more than the damaged frame"
                        );
                    }
                    Err(other) => panic!("{what}: {other}"),
                }
            }
        }
    }
}

/// A crash tears the last frame, whose records happen to hold the bytes of a valid frame
/// with a later index (a producer may send anything): the torn frame's header checks out,
/// so it is cut as torn; its payload is not searched for frames.
#[test]
fn a_torn_frame_is_cut_even_when_its_payload_holds_a_frame() {
    // A valid blank frame of index 100, as bytes.
    let source = tempfile::tempdir().unwrap();
    let mut other = Log::open(source.path(), LogConfig::default()).unwrap();
    for i in 0..=100u64 {
        other.append([blank(1, i)]).unwrap();
    }
    other.flush().unwrap();
    drop(other);
    let bytes = std::fs::read(last_segment(source.path())).unwrap();
    let embedded = bytes[bytes.len() - 44..].to_vec();

    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    for i in 0..3u64 {
        let b = batch(i, 2, 40, 1_000);
        log.append([data(1, i, &b)]).unwrap();
    }
    let mut builder =
        spool_log::batch::BatchBuilder::new(spool_log::batch::BatchOptions::default());
    builder.append(1_000, None, Some(&embedded), &[]);
    builder.append(1_000, None, Some(&[7u8; 200]), &[]);
    let b = builder.finish();
    log.append([data(1, 3, &b)]).unwrap();
    log.flush().unwrap();
    drop(log);
    let active = last_segment(dir.path());
    assert_eq!(segments(dir.path()).len(), 1);
    // Cut inside the last frame, after the embedded frame's bytes.
    let len = std::fs::metadata(&active).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&active)
        .unwrap()
        .set_len(len - 100)
        .unwrap();
    for mode in [RecoveryMode::TolerateTailCorruption, RecoveryMode::Strict] {
        let log = Log::open(
            dir.path(),
            LogConfig {
                recovery: mode,
                ..small_config()
            },
        )
        .unwrap_or_else(|e| panic!("{mode:?}: a torn write refused: {e}"));
        assert_eq!(log.next_index(), 3);
    }
}
