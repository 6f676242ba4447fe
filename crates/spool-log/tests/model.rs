//! Random sequences of append, truncate, purge, close and reopen, checked after every step
//! against a plain in-memory model of the log.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use proptest::prelude::*;
use spool_log::{FrameKind, Log, LogConfig, RecordBatch};

#[derive(Debug, Clone)]
enum Op {
    Data { records: usize, value_len: usize },
    Blank,
    Membership { len: usize },
    NewTerm,
    TruncateBack { entries: u64 },
    Purge { fraction: u8 },
    Flush,
    Reopen { close: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1usize..6, 0usize..400).prop_map(|(records, value_len)| Op::Data { records, value_len }),
        1 => Just(Op::Blank),
        1 => (0usize..100).prop_map(|len| Op::Membership { len }),
        1 => Just(Op::NewTerm),
        2 => (0u64..12).prop_map(|entries| Op::TruncateBack { entries }),
        1 => (0u8..=100).prop_map(|fraction| Op::Purge { fraction }),
        1 => Just(Op::Flush),
        1 => any::<bool>().prop_map(|close| Op::Reopen { close }),
    ]
}

#[derive(Debug, Clone)]
struct ModelEntry {
    term: u64,
    kind: FrameKind,
    base_offset: i64,
    offset_count: u32,
    payload: Bytes,
}

#[derive(Debug, Default)]
struct Model {
    first_index: u64,
    entries: Vec<ModelEntry>,
    term: u64,
}

impl Model {
    fn next_index(&self) -> u64 {
        self.first_index + self.entries.len() as u64
    }

    fn next_offset(&self, start: i64) -> i64 {
        self.entries
            .last()
            .map_or(start, |e| e.base_offset + i64::from(e.offset_count))
    }
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        index_interval_bytes: 128,
        ..small_config()
    }
}

fn check(log: &Log, model: &Model, start_offset: i64) -> Result<(), TestCaseError> {
    let reader = log.reader();
    prop_assert_eq!(reader.first_index(), model.first_index);
    prop_assert_eq!(reader.next_index(), model.next_index());
    prop_assert_eq!(reader.next_offset(), model.next_offset(start_offset));
    let stored = reader
        .read_entries(model.first_index, model.next_index(), usize::MAX)
        .unwrap();
    prop_assert_eq!(stored.len(), model.entries.len());
    for (got, want) in stored.iter().zip(&model.entries) {
        prop_assert_eq!(got.header.kind, want.kind);
        prop_assert_eq!(got.header.term, want.term);
        prop_assert_eq!(got.header.base_offset, want.base_offset);
        prop_assert_eq!(got.header.offset_count, want.offset_count);
        if want.kind == FrameKind::Data {
            // Identical but for the base offset and leader epoch set on the way in.
            prop_assert_eq!(&got.payload[21..], &want.payload[21..]);
            let batch = RecordBatch::new(&got.payload).unwrap();
            prop_assert_eq!(batch.base_offset(), want.base_offset);
            prop_assert_eq!(batch.partition_leader_epoch() as u64, want.term);
        } else {
            prop_assert_eq!(&got.payload, &want.payload);
        }
    }
    // Every offset in the log is found by a fetch, in the batch that holds it.
    let data: Vec<&ModelEntry> = model
        .entries
        .iter()
        .filter(|e| e.kind == FrameKind::Data)
        .collect();
    for entry in &data {
        for offset in [
            entry.base_offset,
            entry.base_offset + i64::from(entry.offset_count) - 1,
        ] {
            let fetched = reader.read(offset, i64::MAX, 1).unwrap();
            prop_assert_eq!(fetched.batches.len(), 1);
            prop_assert_eq!(&fetched.batches[0][21..], &entry.payload[21..]);
        }
    }
    let all = reader
        .read(reader.start_offset(), i64::MAX, usize::MAX)
        .unwrap();
    prop_assert_eq!(all.batches.len(), data.len());
    Ok(())
}

proptest! {
    // SPOOL_MODEL_CASES raises the count for a longer hunt.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("SPOOL_MODEL_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
    ))]

    #[test]
    fn the_log_behaves_like_its_model(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Some(Log::open(dir.path(), config()).unwrap());
        let mut model = Model { term: 1, ..Model::default() };
        let mut tag = 0u64;
        for op in ops {
            let l = log.as_mut().unwrap();
            let start = l.start_offset();
            match op {
                Op::Data { records, value_len } => {
                    tag += 1;
                    let bytes = batch(tag, records, value_len, tag as i64);
                    let base_offset = model.next_offset(start);
                    l.append([data(model.term, model.next_index(), &bytes)]).unwrap();
                    model.entries.push(ModelEntry {
                        term: model.term,
                        kind: FrameKind::Data,
                        base_offset,
                        offset_count: records as u32,
                        payload: bytes,
                    });
                }
                Op::Blank | Op::Membership { .. } => {
                    let (kind, payload) = match op {
                        Op::Blank => (FrameKind::Blank, Bytes::new()),
                        Op::Membership { len } => (FrameKind::Membership, Bytes::from(vec![7u8; len])),
                        _ => unreachable!(),
                    };
                    let entry = match kind {
                        FrameKind::Blank => blank(model.term, model.next_index()),
                        _ => membership(model.term, model.next_index(), &payload),
                    };
                    l.append([entry]).unwrap();
                    let base_offset = model.next_offset(start);
                    model.entries.push(ModelEntry { term: model.term, kind, base_offset, offset_count: 0, payload });
                }
                Op::NewTerm => model.term += 1,
                Op::TruncateBack { entries } => {
                    let keep = model.entries.len().saturating_sub(entries as usize);
                    l.truncate_from(model.first_index + keep as u64).unwrap();
                    model.entries.truncate(keep);
                }
                Op::Purge { fraction } => {
                    let end = model.next_offset(start);
                    let target = start + (end - start) * i64::from(fraction) / 100;
                    let purged = l.purge_before(target).unwrap();
                    prop_assert!(purged.start_offset <= target.max(start));
                    let first_index = l.first_index();
                    let dropped = (first_index - model.first_index) as usize;
                    prop_assert!(model.entries[..dropped].iter().all(|e| e.base_offset + i64::from(e.offset_count) <= purged.start_offset));
                    model.entries.drain(..dropped);
                    model.first_index = first_index;
                }
                Op::Flush => {
                    let durable = l.flush().unwrap();
                    prop_assert_eq!(durable.next_index, model.next_index());
                }
                Op::Reopen { close } => {
                    let l = log.take().unwrap();
                    if close { l.close().unwrap() } else { drop(l) }
                    let reopened = Log::open(dir.path(), config()).unwrap();
                    prop_assert!(reopened.recovery_report().truncated_tail.is_none());
                    log = Some(reopened);
                }
            }
            let l = log.as_ref().unwrap();
            check(l, &model, l.start_offset())?;
        }
        drop(log);
        let report = spool_log::verify::verify_dir(dir.path()).unwrap();
        prop_assert!(report.is_clean(), "{:?}", report.problems);
    }
}
