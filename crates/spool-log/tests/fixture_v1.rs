//! The v1 on-disk format, frozen: a log directory written by the first format version is
//! committed under tests/fixtures/v1, and every later version must open it and read the
//! same records. Regenerate only for a deliberate format change, and then as a new
//! fixture beside this one: `SPOOL_REGENERATE_FIXTURES=1 cargo test -p spool-log --test
//! fixture_v1`.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use spool_log::{FrameKind, Log, LogConfig};

const START_MS: i64 = 1_700_000_000_000;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        segment_age: Duration::from_secs(3600),
        index_interval_bytes: 256,
        ..small_config()
    }
}

/// The recipe: a membership entry and a blank in term 1, 30 batches, a new leader's blank
/// in term 2, 10 more batches. Dropped without close, as after a crash, so the active
/// segment has no index file.
fn write_recipe(dir: &Path) {
    let clock = ManualClock::at(START_MS);
    let mut log = Log::open_with_clock(dir, config(), clock).unwrap();
    log.append([membership(1, 0, b"voters=1"), blank(1, 1)])
        .unwrap();
    for i in 0..40u64 {
        if i == 30 {
            log.append([blank(2, log.next_index())]).unwrap();
        }
        let term = if i < 30 { 1 } else { 2 };
        let b = batch(i, 3, 50, START_MS + i as i64);
        let index = log.next_index();
        log.append([data(term, index, &b)]).unwrap();
    }
    log.flush().unwrap();
}

fn regenerate_if_asked() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("SPOOL_REGENERATE_FIXTURES").is_none() {
            return;
        }
        let dir = fixture_dir();
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        write_recipe(&dir);
    });
}

#[test]
fn the_v1_fixture_opens_and_reads_back_every_record() {
    regenerate_if_asked();
    assert!(
        spool_log::verify::verify_dir(&fixture_dir())
            .unwrap()
            .is_clean()
    );
    let copy = copy_dir(&fixture_dir());
    let log = Log::open(copy.path(), config()).unwrap();
    assert!(
        log.reader().segment_count() >= 3,
        "the fixture spans several segments"
    );
    assert_eq!(log.next_index(), 43);
    assert_eq!(log.next_offset(), 120);
    assert_eq!(log.end().last_term, 2);
    let entries = log.reader().read_entries(0, 43, usize::MAX).unwrap();
    assert_eq!(entries[0].header.kind, FrameKind::Membership);
    assert_eq!(&entries[0].payload[..], b"voters=1");
    assert_eq!(entries[32].header.kind, FrameKind::Blank);
    assert_eq!(entries[32].header.term, 2);
    let all = log.reader().read(0, i64::MAX, usize::MAX).unwrap();
    let records = records_of(&all.batches);
    assert_eq!(records.len(), 120);
    for (n, (offset, key, _)) in records.iter().enumerate() {
        assert_eq!(*offset, n as i64);
        assert_eq!(key, format!("key-{}-{}", n / 3, n % 3).as_bytes());
    }
    assert_eq!(
        log.reader()
            .offset_for_timestamp(START_MS + 35, i64::MAX)
            .unwrap(),
        Some(105)
    );
}

#[test]
fn this_version_still_writes_the_v1_format_byte_for_byte() {
    regenerate_if_asked();
    let fresh = tempfile::tempdir().unwrap();
    write_recipe(fresh.path());
    let names = |dir: &Path| {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(fresh.path()), names(&fixture_dir()));
    for name in names(&fixture_dir()) {
        let a = std::fs::read(fresh.path().join(&name)).unwrap();
        let b = std::fs::read(fixture_dir().join(&name)).unwrap();
        assert!(a == b, "{name:?} differs from the v1 fixture");
    }
}
