//! The idempotent producer at the replication layer: a retried batch is answered with
//! the offset it was stored at and is not stored again, on the leader that took it, on a
//! leader elected after it, after every node restarts, and on a leader whose uncommitted
//! tail was cut and replaced.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use spool_log::batch::{BatchBuilder, BatchOptions};
use spool_raft::producers::SequenceError;
use spool_raft::{AckLevel, ReplicaError};

/// A batch of `n` records from producer `id` at `epoch`, starting at `sequence`.
fn idempotent(id: i64, epoch: i16, sequence: i32, n: usize) -> Bytes {
    let mut builder = BatchBuilder::new(BatchOptions {
        producer_id: id,
        producer_epoch: epoch,
        base_sequence: sequence,
        ..BatchOptions::default()
    });
    for i in 0..n {
        builder.append(
            1_700_000_000_000,
            None,
            Some(format!("p{id}-{}", sequence as usize + i).as_bytes()),
            &[],
        );
    }
    builder.finish()
}

fn sequence_error(result: Result<Vec<i64>, ReplicaError>) -> SequenceError {
    match result {
        Err(ReplicaError::Sequence(error)) => error,
        other => panic!("expected a sequence error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_answered_from_the_log_by_every_leader_and_after_a_restart() {
    let root = tempfile::tempdir().expect("tempdir");
    let (nodes, members) = start_nodes(root.path(), 3).await;
    let replicas = open_everywhere(&nodes, 21, &members).await;
    let leader = leader_of(&replicas).await;

    let first = leader
        .append(vec![idempotent(5, 0, 0, 10)], AckLevel::All)
        .await
        .expect("first batch");
    assert_eq!(first, [0]);
    // A plain producer's batch between, then the producer's next two in one request.
    assert_eq!(
        leader
            .append(vec![batch("plain", 3)], AckLevel::All)
            .await
            .expect("plain"),
        [10]
    );
    let next = leader
        .append(
            vec![idempotent(5, 0, 10, 4), idempotent(5, 0, 14, 2)],
            AckLevel::Leader,
        )
        .await
        .expect("next two");
    assert_eq!(next, [13, 17]);
    wait_high_watermark(&leader, 19, "the batches to commit").await;

    // Retries, alone or with a new batch after them, at either ack level.
    for acks in [AckLevel::All, AckLevel::Leader] {
        let again = leader
            .append(vec![idempotent(5, 0, 0, 10)], acks)
            .await
            .expect("retry");
        assert_eq!(again, [0]);
    }
    let mixed = leader
        .append(
            vec![idempotent(5, 0, 14, 2), idempotent(5, 0, 16, 1)],
            AckLevel::All,
        )
        .await
        .expect("a retry and a new batch");
    assert_eq!(mixed, [17, 19]);
    assert_eq!(
        leader.reader().next_offset(),
        20,
        "a retry was stored again"
    );

    // A gap, an unknown producer past sequence 0, and a fenced epoch are refused.
    let gap = sequence_error(
        leader
            .append(vec![idempotent(5, 0, 30, 1)], AckLevel::All)
            .await,
    );
    assert_eq!(
        gap,
        SequenceError::OutOfOrder {
            producer_id: 5,
            expected: 17,
            got: 30
        }
    );
    let unknown = sequence_error(
        leader
            .append(vec![idempotent(6, 0, 3, 1)], AckLevel::All)
            .await,
    );
    assert!(matches!(unknown, SequenceError::UnknownProducer { .. }));
    assert_eq!(
        leader
            .append(vec![idempotent(5, 1, 0, 1)], AckLevel::All)
            .await
            .expect("epoch 1"),
        [20]
    );
    let fenced = sequence_error(
        leader
            .append(vec![idempotent(5, 0, 17, 1)], AckLevel::All)
            .await,
    );
    assert!(matches!(fenced, SequenceError::Fenced { current: 1, .. }));
    assert_eq!(
        leader.reader().next_offset(),
        21,
        "a refused batch was stored"
    );

    // Another leader answers the same retry the same way.
    let old = leader.node_id();
    let next_leader = replicas
        .iter()
        .find(|r| r.node_id() != old)
        .expect("another");
    leader
        .transfer_leader(next_leader.node_id())
        .await
        .expect("transfer");
    let leader = wait_for(&replicas, Duration::from_secs(10), "another leader", || {
        replicas
            .iter()
            .find(|r| r.is_leader() && r.node_id() != old)
            .cloned()
    })
    .await;
    let retried = leader
        .append(vec![idempotent(5, 1, 0, 1)], AckLevel::All)
        .await
        .expect("retry on the new leader");
    assert_eq!(retried, [20]);
    drop(replicas);
    drop(leader);

    // Every node restarts: the tables come back from the logs.
    let restarted = restart_all(nodes).await;
    let replicas = open_everywhere(&restarted, 21, &members).await;
    let leader = leader_of(&replicas).await;
    let retried = leader
        .append(
            vec![idempotent(5, 1, 0, 1), idempotent(5, 1, 1, 2)],
            AckLevel::All,
        )
        .await
        .expect("retry after a restart");
    assert_eq!(retried, [20, 21]);
    for replica in &replicas {
        wait_high_watermark(replica, 23, "every replica to apply").await;
        assert_eq!(replica.reader().next_offset(), 23);
    }
    for node in restarted {
        node.stop().await;
    }
}

/// A leader cut off with an uncommitted batch of a producer; the others elect, the
/// producer's retry is stored there at another offset; the old leader returns, loses its
/// tail, and leads again. It must answer the retry with the offset that survived, not the
/// one its log no longer holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_tail_leaves_the_producer_table_with_it() {
    let root = tempfile::tempdir().expect("tempdir");
    let (nodes, members) = start_nodes(root.path(), 3).await;
    let replicas = open_everywhere(&nodes, 22, &members).await;
    let leader = leader_of(&replicas).await;
    assert_eq!(
        leader
            .append(vec![idempotent(9, 0, 0, 2)], AckLevel::All)
            .await
            .expect("committed"),
        [0]
    );
    for replica in &replicas {
        wait_high_watermark(replica, 2, "the first batch everywhere").await;
    }

    let cut = leader.node_id();
    isolate(&nodes, cut);
    // Taken by the cut-off leader's log only.
    let stranded = leader
        .append(vec![idempotent(9, 0, 2, 3)], AckLevel::Leader)
        .await
        .expect("appended on the cut-off leader");
    assert_eq!(stranded, [2]);

    let others: Vec<_> = replicas
        .iter()
        .filter(|r| r.node_id() != cut)
        .cloned()
        .collect();
    let new_leader = leader_of(&others).await;
    assert_eq!(
        new_leader
            .append(vec![batch("plain", 4)], AckLevel::All)
            .await
            .expect("a plain write first"),
        [2]
    );
    let survived = new_leader
        .append(vec![idempotent(9, 0, 2, 3)], AckLevel::All)
        .await
        .expect("the producer's retry");
    assert_eq!(survived, [6]);

    for node in &nodes {
        node.node.faults().heal_all();
    }
    let old = replicas
        .iter()
        .find(|r| r.node_id() == cut)
        .expect("the old leader");
    wait_high_watermark(old, 9, "the old leader to catch up").await;
    new_leader.transfer_leader(cut).await.expect("transfer");
    wait_for(
        &replicas,
        Duration::from_secs(10),
        "the old leader to lead again",
        || old.is_leader().then_some(()),
    )
    .await;
    let answered = old
        .append(vec![idempotent(9, 0, 2, 3)], AckLevel::All)
        .await
        .expect("the retry again");
    assert_eq!(answered, [6], "answered from a truncated entry");
    assert_eq!(
        old.append(vec![idempotent(9, 0, 5, 1)], AckLevel::All)
            .await
            .expect("the next batch"),
        [9]
    );
    for node in nodes {
        node.stop().await;
    }
}

/// A leader cut off with a long uncommitted batch of a producer; the others write a few
/// large records and cut their logs by retention past where the old leader's log ends.
/// The old leader returns, cannot be sent entries it lacks, installs a snapshot beyond its
/// log's end and starts its log afresh there. Its producer table must lose the stranded
/// batch too: leading again, it must not answer the producer's retry with offsets that
/// now hold other records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_past_the_log_end_leaves_no_stranded_batch_in_the_table() {
    let root = tempfile::tempdir().expect("tempdir");
    let (nodes, members) = start_nodes(root.path(), 3).await;
    let mut replicas = Vec::new();
    for node in &nodes {
        replicas.push(
            node.node
                .create_replica(spool_raft::ReplicaSpec {
                    group: 23,
                    dir: node.dir.join("g23"),
                    log_config: spool_log::LogConfig {
                        segment_bytes: 4096,
                        index_interval_bytes: 512,
                        flush: spool_log::FlushPolicy::Always,
                        ..spool_log::LogConfig::default()
                    },
                    initial_members: members.clone(),
                })
                .await
                .expect("create replica"),
        );
    }
    let leader = leader_of(&replicas).await;
    assert_eq!(
        leader
            .append(vec![idempotent(9, 0, 0, 2)], AckLevel::All)
            .await
            .expect("committed"),
        [0]
    );
    for replica in &replicas {
        wait_high_watermark(replica, 2, "the first batch everywhere").await;
    }
    let cut = leader.node_id();
    isolate(&nodes, cut);
    // 500 records only the cut-off leader holds, at offsets 2 to 501.
    let stranded = leader
        .append(vec![idempotent(9, 0, 2, 500)], AckLevel::Leader)
        .await
        .expect("appended on the cut-off leader");
    assert_eq!(stranded, [2]);

    let others: Vec<_> = replicas
        .iter()
        .filter(|r| r.node_id() != cut)
        .cloned()
        .collect();
    let new_leader = leader_of(&others).await;
    // Ten large records, a segment each, then retention keeps about the last one.
    let large = "x".repeat(3000);
    for i in 0..10 {
        new_leader
            .append(vec![batch(&format!("{i}{large}"), 1)], AckLevel::All)
            .await
            .expect("a large record");
    }
    let policy = spool_log::RetentionPolicy {
        max_age: None,
        max_bytes: Some(4096),
    };
    for replica in &others {
        wait_high_watermark(replica, 12, "the large records").await;
        replica
            .apply_retention(&policy, 0)
            .await
            .expect("retention");
    }
    wait_for(&others, Duration::from_secs(10), "the purges", || {
        others
            .iter()
            .all(|r| r.reader().start_offset() > 2)
            .then_some(())
    })
    .await;

    for node in &nodes {
        node.node.faults().heal_all();
    }
    let old = replicas
        .iter()
        .find(|r| r.node_id() == cut)
        .expect("the old leader");
    wait_high_watermark(old, 12, "the old leader to catch up").await;
    assert!(
        old.reader().start_offset() > 2,
        "the old leader caught up by entries, not by a snapshot"
    );
    new_leader.transfer_leader(cut).await.expect("transfer");
    wait_for(
        &replicas,
        Duration::from_secs(10),
        "the old leader to lead again",
        || old.is_leader().then_some(()),
    )
    .await;
    // Retention removed the producer's only committed batch: it is unknown here now, as
    // on the replicas that never saw the stranded batch.
    match old
        .append(vec![idempotent(9, 0, 2, 500)], AckLevel::All)
        .await
    {
        Err(ReplicaError::Sequence(SequenceError::UnknownProducer { .. })) => {}
        other => panic!("the retry of the stranded batch was answered {other:?}"),
    }
    for node in nodes {
        node.stop().await;
    }
}
