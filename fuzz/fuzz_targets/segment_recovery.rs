//! Arbitrary bytes after a valid segment header: opening the log either refuses with a
//! typed error or recovers a log whose every frame reads back and verifies clean.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spool_log::{Log, LogConfig, SegmentHeader, segment_file_name};

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temp dir");
    let header = SegmentHeader {
        base_offset: 0,
        base_index: 0,
        prev_term: 0,
        created_ms: 0,
    };
    let mut file = header.encode().to_vec();
    file.extend_from_slice(data);
    std::fs::write(dir.path().join(segment_file_name(0)), &file).expect("write segment");
    let Ok(log) = Log::open(dir.path(), LogConfig::default()) else {
        return;
    };
    let reader = log.reader();
    let entries = reader
        .read_entries(reader.first_index(), reader.next_index(), usize::MAX)
        .expect("recovered entries read back");
    assert_eq!(entries.len() as u64, reader.next_index() - reader.first_index());
    let fetched = reader
        .read(reader.start_offset(), i64::MAX, usize::MAX)
        .expect("recovered batches read back");
    assert_eq!(fetched.next_offset, reader.next_offset());
    drop(log);
    let report = spool_log::verify::verify_dir(dir.path()).expect("verify runs");
    assert!(report.is_clean(), "{:?}", report.problems);
});
