//! Hot paths allocate at most once per batch and never per record: counted with a global
//! allocator that tallies allocations per thread.
#![allow(clippy::unwrap_used)]
#![allow(unsafe_code)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::*;
use spool_log::{Log, LogConfig};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: defers to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn append_and_read_allocate_at_most_once_per_batch_and_never_per_record() {
    const BATCHES: u64 = 2_000;
    const RECORDS: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 1024 * 1024 * 1024,
        ..small_config()
    };
    let mut log = Log::open(dir.path(), config).unwrap();
    let batches: Vec<_> = (0..BATCHES).map(|i| batch(i, RECORDS, 20, 1)).collect();

    let before = allocations();
    for (i, bytes) in batches.iter().enumerate() {
        log.append([data(1, i as u64, bytes)]).unwrap();
    }
    log.flush().unwrap();
    let append_allocs = allocations() - before;
    assert!(
        append_allocs <= BATCHES,
        "{append_allocs} allocations for {BATCHES} appends"
    );

    let reader = log.reader();
    let before = allocations();
    let mut next = 0;
    let mut read = 0;
    while next < log.next_offset() {
        let fetched = reader.read(next, i64::MAX, 64 * 1024).unwrap();
        read += fetched.batches.len() as u64;
        next = fetched.next_offset;
    }
    let read_allocs = allocations() - before;
    assert_eq!(read, BATCHES);
    assert!(
        read_allocs <= BATCHES,
        "{read_allocs} allocations to read {BATCHES} batches"
    );
    eprintln!(
        "append: {append_allocs} allocations, read: {read_allocs} allocations for {BATCHES} batches of {RECORDS} records"
    );
}
