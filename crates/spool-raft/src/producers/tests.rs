use super::files::{decode_snapshot, encode_snapshot, load_snapshot, write_snapshot};
use super::*;

fn batch(producer_id: i64, epoch: i16, first: i32, records: i32) -> BatchIdentity {
    BatchIdentity {
        producer_id,
        epoch,
        first_sequence: first,
        last_sequence: add_sequence(first, records - 1),
        kind: BatchKind::Data {
            transactional: false,
        },
        seen_ms: 1_000,
    }
}

fn transactional(producer_id: i64, epoch: i16, first: i32, records: i32) -> BatchIdentity {
    BatchIdentity {
        kind: BatchKind::Data {
            transactional: true,
        },
        ..batch(producer_id, epoch, first, records)
    }
}

fn marker(producer_id: i64, epoch: i16, commit: bool) -> BatchIdentity {
    marker_from(producer_id, epoch, commit, 0)
}

fn marker_from(producer_id: i64, epoch: i16, commit: bool, coordinator: i32) -> BatchIdentity {
    BatchIdentity {
        producer_id,
        epoch,
        first_sequence: -1,
        last_sequence: -1,
        kind: BatchKind::Marker(ControlMarker {
            commit,
            coordinator_epoch: coordinator,
        }),
        seen_ms: 1_000,
    }
}

/// Records a batch the way a log does: at the next offsets.
fn store(table: &mut ProducerTable, next: &mut i64, b: &BatchIdentity) -> i64 {
    let count = i64::from(b.last_sequence - b.first_sequence) + 1;
    let base = *next;
    let _ = table.record(b, base, base + count - 1);
    *next += count;
    base
}

/// Records a marker at the next offset; returns the transaction it aborted.
fn end(table: &mut ProducerTable, next: &mut i64, m: &BatchIdentity) -> Option<AbortedTxn> {
    assert_eq!(table.check(m), Verdict::Append);
    let at = *next;
    *next += 1;
    table.record(m, at, at)
}

#[test]
fn open_transactions_hold_the_stable_offset_until_their_markers() {
    let mut table = ProducerTable::default();
    let mut next = 0;
    store(&mut table, &mut next, &batch(1, 0, 0, 5));
    assert_eq!(table.first_unstable(), None);
    let a = store(&mut table, &mut next, &transactional(2, 0, 0, 5));
    let b = store(&mut table, &mut next, &transactional(3, 0, 0, 5));
    store(&mut table, &mut next, &transactional(2, 0, 5, 5));
    assert_eq!(table.first_unstable(), Some(a));
    // Committing the older one moves the bound to the younger.
    assert_eq!(end(&mut table, &mut next, &marker(2, 0, true)), None);
    assert_eq!(table.first_unstable(), Some(b));
    // A new transaction of the first producer opens after.
    let c = store(&mut table, &mut next, &transactional(2, 0, 10, 5));
    let aborted = end(&mut table, &mut next, &marker(3, 0, false)).expect("an abort");
    assert_eq!(
        aborted,
        AbortedTxn {
            producer_id: 3,
            first_offset: b,
            last_offset: next - 1,
            stable_bound: b,
        }
    );
    assert_eq!(table.first_unstable(), Some(c));
    // A marker for a producer with nothing open ends nothing.
    assert_eq!(end(&mut table, &mut next, &marker(3, 0, false)), None);
    let aborted = end(&mut table, &mut next, &marker(2, 0, false)).expect("an abort");
    assert_eq!((aborted.first_offset, aborted.stable_bound), (c, c));
    assert_eq!(table.first_unstable(), None);
}

#[test]
fn a_marker_of_a_newer_epoch_fences_the_older_producer() {
    let mut table = ProducerTable::default();
    let mut next = 0;
    store(&mut table, &mut next, &transactional(5, 0, 0, 3));
    // The coordinator aborts the transaction of a producer started again, at epoch 1.
    assert!(end(&mut table, &mut next, &marker(5, 1, false)).is_some());
    assert!(matches!(
        table.check(&transactional(5, 0, 3, 1)),
        Verdict::Refused(SequenceError::Fenced { current: 1, .. })
    ));
    assert!(matches!(
        table.check(&marker(5, 0, true)),
        Verdict::Refused(SequenceError::Fenced { .. })
    ));
    // The new instance starts its sequences at 0.
    assert_eq!(table.check(&transactional(5, 1, 0, 1)), Verdict::Append);
    // A marker for a producer the partition never saw fences it all the same.
    assert!(end(&mut table, &mut next, &marker(9, 4, false)).is_none());
    assert!(matches!(
        table.check(&transactional(9, 3, 0, 1)),
        Verdict::Refused(SequenceError::Fenced { current: 4, .. })
    ));
}

#[test]
fn an_open_transaction_outlives_expiry_retention_and_the_cap_and_survives_a_snapshot() {
    let mut table = ProducerTable::default();
    let mut next = 0;
    let first = store(&mut table, &mut next, &transactional(1, 0, 0, 2));
    for id in 2..(PRODUCERS_KEPT as i64 + 5) {
        store(&mut table, &mut next, &batch(id, 0, 0, 1));
    }
    assert!(
        table.get(1).is_some(),
        "the cap evicted an open transaction"
    );
    table.remove_below(next);
    assert!(
        table.get(1).is_some(),
        "retention removed an open transaction"
    );
    assert_eq!(table.expire(i64::MAX, 1), 0);
    assert_eq!(table.first_unstable(), Some(first));
    let mut bytes = Vec::new();
    table.encode(&mut bytes);
    let decoded = ProducerTable::decode(&bytes).expect("decodes");
    assert_eq!(decoded, table);
    assert_eq!(decoded.first_unstable(), Some(first));
}

#[test]
fn a_new_producer_starts_at_sequence_zero() {
    let table = ProducerTable::default();
    assert_eq!(table.check(&batch(7, 0, 0, 10)), Verdict::Append);
    assert_eq!(
        table.check(&batch(7, 0, 5, 10)),
        Verdict::Refused(SequenceError::UnknownProducer {
            producer_id: 7,
            got: 5
        })
    );
}

#[test]
fn retries_of_the_last_five_batches_are_answered_with_their_offsets() {
    let mut table = ProducerTable::default();
    let mut next = 100;
    let mut bases = Vec::new();
    for i in 0..7 {
        let b = batch(7, 0, i * 10, 10);
        assert_eq!(table.check(&b), Verdict::Append);
        bases.push(store(&mut table, &mut next, &b));
        // Another producer's records in between move the offsets.
        next += 3;
    }
    for i in 2..7 {
        assert_eq!(
            table.check(&batch(7, 0, i * 10, 10)),
            Verdict::Duplicate {
                base_offset: bases[i as usize]
            }
        );
    }
    // Older than the five kept: neither a duplicate nor next in line.
    assert!(matches!(
        table.check(&batch(7, 0, 10, 10)),
        Verdict::Refused(SequenceError::OutOfOrder {
            expected: 70,
            got: 10,
            ..
        })
    ));
    assert_eq!(table.check(&batch(7, 0, 70, 1)), Verdict::Append);
}

#[test]
fn a_gap_is_refused_and_changes_nothing() {
    let mut table = ProducerTable::default();
    let mut next = 0;
    store(&mut table, &mut next, &batch(1, 0, 0, 5));
    let before = table.clone();
    assert_eq!(
        table.check(&batch(1, 0, 6, 5)),
        Verdict::Refused(SequenceError::OutOfOrder {
            producer_id: 1,
            expected: 5,
            got: 6
        })
    );
    // A batch overlapping a kept one without matching it is no duplicate either.
    assert!(matches!(
        table.check(&batch(1, 0, 2, 5)),
        Verdict::Refused(SequenceError::OutOfOrder { .. })
    ));
    assert_eq!(table, before);
}

#[test]
fn an_older_epoch_is_fenced_and_a_newer_one_starts_afresh() {
    let mut table = ProducerTable::default();
    let mut next = 0;
    store(&mut table, &mut next, &batch(1, 3, 0, 5));
    assert_eq!(
        table.check(&batch(1, 2, 5, 5)),
        Verdict::Refused(SequenceError::Fenced {
            producer_id: 1,
            epoch: 2,
            current: 3
        })
    );
    assert!(matches!(
        table.check(&batch(1, 4, 5, 5)),
        Verdict::Refused(SequenceError::OutOfOrder { expected: 0, .. })
    ));
    assert_eq!(table.check(&batch(1, 4, 0, 5)), Verdict::Append);
    store(&mut table, &mut next, &batch(1, 4, 0, 5));
    // The old epoch's batches are gone with it.
    assert!(matches!(
        table.check(&batch(1, 3, 0, 5)),
        Verdict::Refused(SequenceError::Fenced { .. })
    ));
    assert_eq!(table.get(1).map(|s| s.batches.len()), Some(1));
}

#[test]
fn sequences_wrap_after_the_largest() {
    let wrapped = batch(1, 0, i32::MAX - 1, 4);
    assert_eq!(wrapped.last_sequence, 1);
    let mut table = ProducerTable::default();
    let near_end = BatchIdentity {
        first_sequence: 5,
        last_sequence: i32::MAX,
        ..batch(1, 0, 5, 1)
    };
    let _ = table.record(&near_end, 0, 0);
    assert_eq!(table.check(&batch(1, 0, 0, 3)), Verdict::Append);
    assert!(matches!(
        table.check(&batch(1, 0, 1, 3)),
        Verdict::Refused(SequenceError::OutOfOrder { expected: 0, .. })
    ));
}

#[test]
fn retention_and_expiry_forget_producers() {
    let mut table = ProducerTable::default();
    let mut next = 0;
    store(&mut table, &mut next, &batch(1, 0, 0, 10)); // 0..=9
    store(&mut table, &mut next, &batch(2, 0, 0, 10)); // 10..=19
    store(&mut table, &mut next, &batch(1, 0, 10, 10)); // 20..=29
    table.remove_below(10);
    assert_eq!(table.get(1).map(|s| s.batches.len()), Some(1));
    assert!(table.get(2).is_some());
    table.remove_below(20);
    assert!(table.get(2).is_none());
    let mut old = batch(3, 0, 0, 1);
    old.seen_ms = 10;
    let _ = table.record(&old, 30, 30);
    assert_eq!(table.expire(1_000 + 500, 600), 1);
    assert!(table.get(3).is_none() && table.get(1).is_some());
}

#[test]
fn snapshots_round_trip_and_damage_is_refused() {
    let mut table = ProducerTable::default();
    let mut next = 0;
    for id in 0..20 {
        for s in 0..(id as i32 % 7 + 1) {
            store(&mut table, &mut next, &batch(id, (id % 3) as i16, s * 4, 4));
        }
    }
    let bytes = encode_snapshot(42, &table);
    assert_eq!(decode_snapshot(&bytes), Ok((42, table.clone())));
    for bit in (0..bytes.len() * 8).step_by(7) {
        let mut damaged = bytes.clone();
        damaged[bit / 8] ^= 1 << (bit % 8);
        assert!(decode_snapshot(&damaged).is_err(), "bit {bit}");
    }
    for len in 0..bytes.len() {
        assert!(decode_snapshot(&bytes[..len]).is_err(), "len {len}");
    }
}

#[test]
fn the_newest_readable_snapshot_at_or_before_a_point_is_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let mut table = ProducerTable::default();
    let mut next = 0;
    let mut tables = Vec::new();
    for at in [10u64, 20, 30] {
        store(&mut table, &mut next, &batch(at as i64, 0, 0, 1));
        write_snapshot(dir.path(), at, &encode_snapshot(at, &table)).unwrap();
        tables.push(table.clone());
    }
    assert_eq!(load_snapshot(dir.path(), 25), Some((20, tables[1].clone())));
    assert_eq!(load_snapshot(dir.path(), 30), Some((30, tables[2].clone())));
    assert_eq!(load_snapshot(dir.path(), 9), None);
    // A damaged newest one falls back to the one before.
    let newest = dir.path().join(format!("{:020}.producers", 30));
    let mut bytes = std::fs::read(&newest).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&newest, bytes).unwrap();
    assert_eq!(load_snapshot(dir.path(), 30), Some((20, tables[1].clone())));
    // Only the newest few stay.
    write_snapshot(dir.path(), 40, &encode_snapshot(40, &table)).unwrap();
    assert_eq!(load_snapshot(dir.path(), 10), None);
}

#[test]
fn beyond_the_cap_the_producer_longest_silent_in_the_log_goes() {
    let mut table = ProducerTable::default();
    let mut next = 0;
    for id in 0..PRODUCERS_KEPT as i64 {
        store(&mut table, &mut next, &batch(id, 0, 0, 1));
    }
    // Producer 0 writes again: producer 1 is now the longest silent.
    store(&mut table, &mut next, &batch(0, 0, 1, 1));
    store(&mut table, &mut next, &batch(999_993, 0, 0, 1));
    assert_eq!(table.len(), PRODUCERS_KEPT);
    assert!(table.get(1).is_none(), "the longest silent producer stayed");
    assert!(table.get(0).is_some() && table.get(999_993).is_some());
    assert_eq!(
        table.check(&batch(1, 0, 1, 1)),
        Verdict::Refused(SequenceError::UnknownProducer {
            producer_id: 1,
            got: 1
        })
    );
}

#[test]
fn a_deposed_coordinators_marker_cannot_end_a_later_transaction() {
    let mut table = ProducerTable::default();
    let mut next = 0;
    store(&mut table, &mut next, &transactional(4, 0, 0, 2));
    // The coordinator of term 7 commits the first transaction.
    assert!(end(&mut table, &mut next, &marker_from(4, 0, true, 7)).is_none());
    // The producer's next transaction, same epoch.
    let second = store(&mut table, &mut next, &transactional(4, 0, 2, 2));
    // A marker of the coordinator deposed before term 7, delivered late, is refused.
    assert_eq!(
        table.check(&marker_from(4, 0, false, 6)),
        Verdict::Refused(SequenceError::StaleCoordinator {
            producer_id: 4,
            got: 6,
            current: 7
        })
    );
    assert_eq!(table.first_unstable(), Some(second));
    // An operator's marker (no coordinator epoch) is taken, and leaves the epoch be.
    assert_eq!(table.check(&marker_from(4, 0, false, -1)), Verdict::Append);
    assert_eq!(table.check(&marker_from(4, 0, false, 7)), Verdict::Append);
}

#[test]
fn replicas_record_what_the_log_holds_even_of_an_older_epoch() {
    // A leader that had forgotten producer 3 stored its epoch-0 batch; a follower that
    // remembers epoch 1 must still record it, or the two disagree on what is open.
    let mut table = ProducerTable::default();
    let mut next = 0;
    store(&mut table, &mut next, &batch(3, 1, 0, 1));
    let first = store(&mut table, &mut next, &transactional(3, 0, 0, 1));
    assert_eq!(table.first_unstable(), Some(first));
}
