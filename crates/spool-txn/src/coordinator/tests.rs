use super::*;

const NOW: i64 = 1_700_000_000_000;

fn ready(outcome: Result<Outcome<InitAnswer>, TxnError>) -> (i64, i16) {
    match outcome.expect("init").value {
        InitAnswer::Ready { producer_id, epoch } => (producer_id, epoch),
        InitAnswer::AbortingPrevious => panic!("expected a producer id"),
    }
}

fn parts(list: &[(&str, u32)]) -> Vec<(String, u32)> {
    list.iter().map(|(t, p)| (t.to_string(), *p)).collect()
}

/// Replays every record written into a fresh coordinator: it must hold the same state.
fn replayed(records: &[TxnRecord]) -> TxnCoordinator {
    let mut fresh = TxnCoordinator::default();
    for record in records {
        fresh.apply(record);
    }
    fresh
}

#[test]
fn a_transaction_runs_from_init_to_complete_and_replays_alike() {
    let mut c = TxnCoordinator::default();
    let mut log = Vec::new();
    let init = c
        .init_producer_id("t", 60_000, NOW, Some(500))
        .expect("init");
    log.extend(init.records.clone());
    assert_eq!(
        init.value,
        InitAnswer::Ready {
            producer_id: 500,
            epoch: 0
        }
    );
    let added = c
        .add_partitions("t", 500, 0, &parts(&[("a", 0), ("b", 1)]), NOW + 1)
        .expect("add");
    log.extend(added.records);
    // Adding what the transaction has writes nothing.
    assert!(
        c.add_partitions("t", 500, 0, &parts(&[("a", 0)]), NOW + 2)
            .expect("again")
            .records
            .is_empty()
    );
    let ended = c
        .end("t", 500, 0, true, NOW + 3, Some(None))
        .expect("commit");
    // The producer goes on at the next epoch; the markers carry it.
    assert_eq!(
        ended.value,
        Ended {
            outcome: EndOutcome::Prepared,
            producer_id: 500,
            epoch: 1
        }
    );
    log.extend(ended.records);
    let t = c.get("t").expect("known");
    assert_eq!(t.state, TxnState::PrepareCommit);
    assert_eq!(t.partitions.len(), 2);
    assert_eq!(c.preparing().count(), 1);
    assert_eq!(t.marker_producer(), (500, 1));
    // A retried commit is answered with where the producer goes on; an abort under the
    // ended epoch is refused as such, and anything else under it as fenced; adding waits.
    assert_eq!(
        c.end("t", 500, 0, true, NOW + 4, Some(None))
            .expect("retry")
            .value,
        Ended {
            outcome: EndOutcome::AlreadyDone,
            producer_id: 500,
            epoch: 1
        }
    );
    assert!(matches!(
        c.end("t", 500, 0, false, NOW + 4, Some(None)),
        Err(TxnError::InvalidState { .. })
    ));
    assert!(matches!(
        c.add_partitions("t", 500, 0, &parts(&[("c", 0)]), NOW + 4),
        Err(TxnError::Fenced { .. })
    ));
    assert!(matches!(
        c.add_partitions("t", 500, 1, &parts(&[("c", 0)]), NOW + 4),
        Err(TxnError::Concurrent(_))
    ));
    assert!(c.complete("t", 500, 0, NOW + 5).records.is_empty());
    let completed = c.complete("t", 500, 1, NOW + 5);
    log.extend(completed.records);
    let t = c.get("t").expect("known");
    assert_eq!(t.state, TxnState::CompleteCommit);
    assert!(t.partitions.is_empty());
    // The next transaction starts afresh, at the new epoch; the last end, asked again
    // now, is refused.
    log.extend(
        c.add_partitions("t", 500, 1, &parts(&[("c", 0)]), NOW + 6)
            .expect("next")
            .records,
    );
    let t = c.get("t").expect("known");
    assert_eq!(
        (t.state, t.started_ms, t.partitions.len()),
        (TxnState::Ongoing, NOW + 6, 1)
    );
    assert!(matches!(
        c.end("t", 500, 0, true, NOW + 7, Some(None)),
        Err(TxnError::Fenced { .. })
    ));
    assert_eq!(replayed(&log).snapshot_records(), c.snapshot_records());
}

#[test]
fn an_end_at_the_last_epoch_moves_the_producer_to_a_new_id() {
    let mut c = TxnCoordinator::default();
    ready(c.init_producer_id("t", 60_000, NOW, Some(1)));
    let mut t = c.get("t").expect("known").clone();
    t.producer_epoch = LAST_PRODUCER_EPOCH;
    c.apply(&TxnRecord {
        transactional_id: "t".into(),
        value: Some(t),
    });
    c.add_partitions("t", 1, LAST_PRODUCER_EPOCH, &parts(&[("a", 0)]), NOW)
        .expect("add");
    let before = c.snapshot_records();
    assert!(matches!(
        c.end("t", 1, LAST_PRODUCER_EPOCH, true, NOW + 1, Some(None)),
        Err(TxnError::NoProducerId(_))
    ));
    assert_eq!(c.snapshot_records(), before, "a refusal changes nothing");
    let ended = c
        .end("t", 1, LAST_PRODUCER_EPOCH, true, NOW + 1, Some(Some(2)))
        .expect("commit");
    assert_eq!(
        ended.value,
        Ended {
            outcome: EndOutcome::Prepared,
            producer_id: 2,
            epoch: 0
        }
    );
    // The markers fence the old id past its last epoch.
    let t = c.get("t").expect("known");
    assert_eq!(t.marker_producer(), (1, i16::MAX));
    assert_eq!(
        c.end("t", 1, LAST_PRODUCER_EPOCH, true, NOW + 2, Some(None))
            .expect("retry")
            .value
            .producer_id,
        2
    );
    c.complete("t", 1, i16::MAX, NOW + 3);
    assert_eq!(c.get("t").expect("known").state, TxnState::CompleteCommit);
    c.add_partitions("t", 2, 0, &parts(&[("a", 0)]), NOW + 4)
        .expect("the new id opens the next transaction");
}

#[test]
fn a_new_instance_fences_the_old_one_and_aborts_its_open_transaction() {
    let mut c = TxnCoordinator::default();
    let (id, epoch) = ready(c.init_producer_id("t", 60_000, NOW, Some(9)));
    c.add_partitions("t", id, epoch, &parts(&[("a", 0)]), NOW)
        .expect("add");
    // The new instance finds a transaction open: it is aborted under epoch 1.
    let init = c
        .init_producer_id("t", 60_000, NOW + 1, None)
        .expect("init");
    assert_eq!(init.value, InitAnswer::AbortingPrevious);
    assert_eq!(init.records.len(), 1);
    let t = c.get("t").expect("known").clone();
    assert_eq!((t.state, t.producer_epoch), (TxnState::PrepareAbort, 1));
    // The old instance is fenced everywhere at the coordinator.
    assert!(matches!(
        c.end("t", id, 0, true, NOW + 2, Some(None)),
        Err(TxnError::Fenced { current: 1, .. })
    ));
    assert!(matches!(
        c.add_partitions("t", id, 0, &parts(&[("b", 0)]), NOW + 2),
        Err(TxnError::Fenced { .. })
    ));
    // Until the abort completes, the new instance waits.
    assert!(matches!(
        c.init_producer_id("t", 60_000, NOW + 2, None),
        Err(TxnError::Concurrent(_))
    ));
    c.complete("t", id, 1, NOW + 3);
    assert_eq!(
        ready(c.init_producer_id("t", 60_000, NOW + 4, None)),
        (id, 2)
    );
    // A producer id the transactional id does not hold is refused.
    assert!(matches!(
        c.add_partitions("t", id + 1, 2, &parts(&[("a", 0)]), NOW + 5),
        Err(TxnError::UnknownMapping(_))
    ));
}

#[test]
fn a_new_id_needs_a_fresh_producer_id_and_a_refusal_changes_nothing() {
    let mut c = TxnCoordinator::default();
    assert!(matches!(
        c.init_producer_id("t", 60_000, NOW, None),
        Err(TxnError::NoProducerId(_))
    ));
    assert!(c.get("t").is_none());
    assert!(matches!(
        c.init_producer_id("t", 0, NOW, Some(1)),
        Err(TxnError::InvalidTimeout { .. })
    ));
    assert!(matches!(
        c.init_producer_id("", 1000, NOW, Some(1)),
        Err(TxnError::InvalidId(_))
    ));
    assert!(c.get("t").is_none());
    // Epochs exhausted: the id moves to a new producer id at epoch 0.
    ready(c.init_producer_id("t", 60_000, NOW, Some(1)));
    let mut t = c.get("t").expect("known").clone();
    t.producer_epoch = i16::MAX - 1;
    c.apply(&TxnRecord {
        transactional_id: "t".into(),
        value: Some(t),
    });
    assert!(matches!(
        c.init_producer_id("t", 60_000, NOW, None),
        Err(TxnError::NoProducerId(_))
    ));
    assert_eq!(ready(c.init_producer_id("t", 60_000, NOW, Some(2))), (2, 0));
}

#[test]
fn transactions_past_their_timeout_are_aborted_and_idle_ids_expire() {
    let mut c = TxnCoordinator::new(TxnConfig {
        max_timeout_ms: 60_000,
        id_expiration_ms: 1_000_000,
    });
    let (a, _) = ready(c.init_producer_id("a", 10_000, NOW, Some(1)));
    let (b, _) = ready(c.init_producer_id("b", 50_000, NOW, Some(2)));
    c.add_partitions("a", a, 0, &parts(&[("x", 0)]), NOW)
        .expect("a");
    c.add_partitions("b", b, 0, &parts(&[("x", 1)]), NOW)
        .expect("b");
    assert!(c.abort_timed_out(NOW + 10_000).value.is_empty());
    let aborted = c.abort_timed_out(NOW + 10_001);
    assert_eq!(aborted.value, ["a"]);
    let t = c.get("a").expect("a");
    assert_eq!((t.state, t.producer_epoch), (TxnState::PrepareAbort, 1));
    // The timed-out producer is fenced: it cannot commit what was aborted.
    assert!(matches!(
        c.end("a", a, 0, true, NOW + 10_002, Some(None)),
        Err(TxnError::Fenced { .. })
    ));
    c.complete("a", a, 1, NOW + 10_003);
    // Nothing open and idle long enough: "a" goes; "b" is open and stays.
    let expired = c.expire_ids(NOW + 10_003 + 1_000_001);
    assert_eq!(expired.value, ["a"]);
    assert_eq!(expired.records[0].value, None);
    assert!(c.get("a").is_none() && c.get("b").is_some());
    // An operator abort of an open transaction, and of one that is not open.
    assert!(c.abort("b", NOW + 1).value);
    assert!(!c.abort("b", NOW + 2).value);
}

#[test]
fn a_producer_that_does_not_ask_for_new_epochs_keeps_its_own() {
    let mut c = TxnCoordinator::default();
    let (id, epoch) = ready(c.init_producer_id("t", 60_000, NOW, Some(7)));
    c.add_partitions("t", id, epoch, &parts(&[("a", 0)]), NOW)
        .expect("add");
    let ended = c.end("t", id, epoch, true, NOW + 1, None).expect("commit");
    assert_eq!(
        ended.value,
        Ended {
            outcome: EndOutcome::Prepared,
            producer_id: id,
            epoch
        }
    );
    // Its markers carry its own epoch; asked again, the end is answered alike.
    assert_eq!(c.get("t").expect("known").marker_producer(), (id, epoch));
    assert_eq!(
        c.end("t", id, epoch, true, NOW + 2, None)
            .expect("again")
            .value
            .outcome,
        EndOutcome::AlreadyDone
    );
    c.complete("t", id, epoch, NOW + 3);
    c.add_partitions("t", id, epoch, &parts(&[("a", 0)]), NOW + 4)
        .expect("the next transaction, at the same epoch");
}
