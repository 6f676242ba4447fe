//! Transactions at the replication layer: transactional batches hold every replica's last
//! stable offset until their producer's marker, abort markers are indexed alike on every
//! replica, stale markers are fenced, and all of it comes back after every node restarts,
//! with the index files damaged or not.

mod common;

use bytes::Bytes;
use common::*;
use spool_log::batch::{BatchBuilder, BatchOptions, ControlMarker, control_batch};
use spool_raft::producers::SequenceError;
use spool_raft::{AckLevel, PartitionReplica, ReplicaError};

/// A transactional batch of `n` records from producer `id` at `epoch`.
fn transactional(id: i64, epoch: i16, sequence: i32, n: usize) -> Bytes {
    let mut builder = BatchBuilder::new(BatchOptions {
        producer_id: id,
        producer_epoch: epoch,
        base_sequence: sequence,
        transactional: true,
        ..BatchOptions::default()
    });
    for i in 0..n {
        builder.append(
            1_700_000_000_000,
            None,
            Some(format!("t{id}-{i}").as_bytes()),
            &[],
        );
    }
    builder.finish()
}

fn marker(id: i64, epoch: i16, commit: bool) -> Bytes {
    let marker = ControlMarker {
        commit,
        coordinator_epoch: 0,
    };
    control_batch(id, epoch, marker, 1_700_000_000_000)
}

async fn write(leader: &PartitionReplica, batch: Bytes) -> i64 {
    let offsets = leader
        .append(vec![batch], AckLevel::All)
        .await
        .expect("append");
    offsets[0]
}

/// Waits until every replica has applied up to `hw`, then checks they agree on the
/// stable offset and the aborted transactions.
async fn agree(
    replicas: &[std::sync::Arc<PartitionReplica>],
    hw: i64,
    stable: i64,
    aborted: &[(i64, i64)],
) {
    for replica in replicas {
        wait_high_watermark(replica, hw, "every replica to apply").await;
        assert_eq!(*replica.high_watermark().borrow(), hw);
        assert_eq!(
            *replica.last_stable().borrow(),
            stable,
            "node {}",
            replica.node_id()
        );
        assert_eq!(replica.aborted_transactions(0, hw), aborted);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markers_end_transactions_alike_everywhere_and_after_every_restart() {
    let root = tempfile::tempdir().expect("tempdir");
    let (nodes, members) = start_nodes(root.path(), 3).await;
    let replicas = open_everywhere(&nodes, 31, &members).await;
    let leader = leader_of(&replicas).await;

    assert_eq!(write(&leader, batch("plain", 3)).await, 0);
    let a = write(&leader, transactional(7, 0, 0, 4)).await;
    let b = write(&leader, transactional(8, 0, 0, 2)).await;
    assert_eq!((a, b), (3, 7));
    write(&leader, transactional(7, 0, 4, 1)).await;
    agree(&replicas, 10, a, &[]).await;

    // Producer 7 aborts: the stable offset moves to producer 8's open transaction.
    let abort_at = write(&leader, marker(7, 0, false)).await;
    agree(&replicas, 11, b, &[(7, a)]).await;
    // Producer 8 commits: nothing is open.
    write(&leader, marker(8, 0, true)).await;
    agree(&replicas, 12, 12, &[(7, a)]).await;
    assert_eq!(leader.aborted_transactions(abort_at + 1, 12), []);
    assert_eq!(leader.aborted_transactions(a, a + 1), [(7, a)]);

    // Producer 7 started again (epoch 1): its coordinator fences epoch 0 with a marker,
    // after which neither epoch 0's records nor its markers are taken.
    let c = write(&leader, transactional(7, 0, 5, 2)).await;
    agree(&replicas, 14, c, &[(7, a)]).await;
    write(&leader, marker(7, 1, false)).await;
    agree(&replicas, 15, 15, &[(7, a), (7, c)]).await;
    for stale in [transactional(7, 0, 7, 1), marker(7, 0, true)] {
        match leader.append(vec![stale], AckLevel::All).await {
            Err(ReplicaError::Sequence(SequenceError::Fenced { current: 1, .. })) => {}
            other => panic!("a stale epoch was not fenced: {other:?}"),
        }
    }
    // A transaction left open across the restart.
    let open = write(&leader, transactional(9, 0, 0, 3)).await;
    agree(&replicas, 18, open, &[(7, a), (7, c)]).await;
    assert_eq!(leader.open_transactions(), [(open, 9, 0)]);
    drop(replicas);
    drop(leader);

    let restarted = restart_all(nodes).await;
    let replicas = open_everywhere(&restarted, 31, &members).await;
    let leader = leader_of(&replicas).await;
    agree(&replicas, 18, open, &[(7, a), (7, c)]).await;
    write(&leader, marker(9, 0, false)).await;
    agree(&replicas, 19, 19, &[(7, a), (7, c), (9, open)]).await;
    // Enough entries after the markers that the next start writes a producer snapshot
    // past them: the index files alone then hold these aborts.
    for _ in 0..100 {
        let batches = (0..100).map(|_| batch("filler", 1)).collect();
        leader.append(batches, AckLevel::All).await.expect("filler");
    }
    let hw = 19 + 10_000;
    agree(&replicas, hw, hw, &[(7, a), (7, c), (9, open)]).await;
    drop(replicas);
    drop(leader);
    let snapshotted = restart_all(restarted).await;
    let replicas = open_everywhere(&snapshotted, 31, &members).await;
    agree(&replicas, hw, hw, &[(7, a), (7, c), (9, open)]).await;
    drop(replicas);
    let snapshots = walk(root.path())
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "producers"))
        .count();
    assert!(snapshots >= 3, "found {snapshots} producer snapshots");

    // Damage every index file: each node rebuilds the index from its log.
    let mut damaged = 0;
    for entry in walk(root.path()) {
        if entry.extension().is_some_and(|e| e == "txnindex") {
            let mut bytes = std::fs::read(&entry).expect("read index");
            let last = bytes.len() - 1;
            bytes[last] ^= 0x10;
            std::fs::write(&entry, bytes).expect("damage index");
            damaged += 1;
        }
    }
    assert!(damaged >= 3, "found {damaged} index files");
    let again = restart_all(snapshotted).await;
    let replicas = open_everywhere(&again, 31, &members).await;
    agree(&replicas, hw, hw, &[(7, a), (7, c), (9, open)]).await;
    drop(replicas);
    for node in again {
        node.stop().await;
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("list").flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}
