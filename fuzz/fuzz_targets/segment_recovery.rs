//! A real log is written from the input (data, blank and membership entries of sizes the
//! input picks), then its last segment is cut and bits in it are flipped where the input
//! says. Reopening must either refuse with a typed corruption error, or recover a log
//! that is a prefix of what was written, reads back whole, and verifies clean. Recovery
//! may drop only damaged or torn frames: every frame of the last segment it drops has a
//! changed byte or runs past the new end. A log that was only cut must open.
#![no_main]

use std::os::unix::fs::FileExt;

use libfuzzer_sys::fuzz_target;
use spool_log::batch::{BatchBuilder, BatchOptions};
use spool_log::{Entry, EntryPayload, Log, LogConfig, LogError, RecordBatch};

fuzz_target!(|input: &[u8]| {
    let (plan, damage) = input.split_at(input.len() / 2);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 128,
        ..LogConfig::default()
    };
    let mut written = Vec::new();
    {
        let mut log = Log::open(dir.path(), config.clone()).expect("open a new log");
        for (i, &op) in plan.iter().enumerate().take(64) {
            let index = log.next_index();
            let payload: Vec<u8> = match op % 4 {
                0 | 1 => {
                    let mut builder = BatchBuilder::new(BatchOptions::default());
                    for r in 0..=(op / 4 % 8) {
                        builder.append(i as i64, Some(&[r]), Some(&vec![op; usize::from(op)]), &[]);
                    }
                    builder.finish().to_vec()
                }
                2 => Vec::new(),
                _ => vec![op; usize::from(op / 4)],
            };
            let entry = match op % 4 {
                0 | 1 => EntryPayload::Data(RecordBatch::new(&payload).expect("built batch")),
                2 => EntryPayload::Blank,
                _ => EntryPayload::Membership(&payload),
            };
            log.append([Entry { term: 1, index, payload: entry }]).expect("append");
            written.push(payload);
        }
        log.flush().expect("flush");
    }
    let mut segments = spool_log::verify::segment_files(dir.path()).expect("list");
    let last = segments.pop().expect("a segment");
    let original = std::fs::read(&last).expect("read the last segment");
    let spans = frame_spans(&original);
    let entries_before_last = written.len() - spans.len();
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&last).expect("open");
    let len = file.metadata().expect("stat").len();
    for pair in damage.chunks(3) {
        let at = u64::from(u16::from_le_bytes([pair[0], *pair.get(1).unwrap_or(&0)])) % len.max(1);
        match pair.get(2) {
            Some(&bit) if at >= 64 => {
                let mut byte = [0u8];
                file.read_exact_at(&mut byte, at).expect("read");
                file.write_all_at(&[byte[0] ^ (1 << (bit % 8))], at).expect("write");
            }
            Some(_) => {}
            None => file.set_len(at.max(64)).expect("cut"),
        }
    }
    drop(file);
    let damaged = std::fs::read(&last).expect("read the damaged segment");
    let intact = |&(start, end): &(usize, usize)| {
        end <= damaged.len() && damaged[start..end] == original[start..end]
    };
    let only_cut = damaged.len() <= original.len() && damaged[..] == original[..damaged.len()];
    let log = match Log::open(dir.path(), config) {
        Ok(log) => log,
        Err(LogError::Corrupt { .. }) if !only_cut => return,
        Err(other) => panic!("unexpected error: {other}"),
    };
    let kept_in_last = (log.next_index() as usize).saturating_sub(entries_before_last);
    for (i, span) in spans.iter().enumerate().skip(kept_in_last) {
        assert!(!intact(span), "recovery dropped frame {i} at {span:?}, which was intact");
    }
    let reader = log.reader();
    let entries = reader
        .read_entries(reader.first_index(), reader.next_index(), usize::MAX)
        .expect("recovered entries read back");
    assert!(entries.len() <= written.len());
    for (got, want) in entries.iter().zip(&written) {
        let skip = if got.payload.len() >= 61 && got.header.kind == spool_log::FrameKind::Data { 21 } else { 0 };
        assert_eq!(&got.payload[skip..], &want[skip..], "recovered a frame that was not written");
    }
    let fetched = reader
        .read(reader.start_offset(), i64::MAX, usize::MAX)
        .expect("recovered batches read back");
    assert_eq!(fetched.next_offset, reader.next_offset());
    drop(log);
    let report = spool_log::verify::verify_dir(dir.path()).expect("verify runs");
    assert!(report.is_clean(), "{:?}", report.problems);
});

/// `(start, end)` of each frame of a segment file, from the headers' payload lengths.
fn frame_spans(segment: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut at = 64;
    while at + 44 <= segment.len() {
        let len = u32::from_le_bytes(segment[at + 36..at + 40].try_into().expect("4 bytes"));
        let end = at + 44 + len as usize;
        spans.push((at, end));
        at = end;
    }
    spans
}
