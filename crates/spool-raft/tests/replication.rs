//! Three replicas of one group, in process: election, replicated appends with offsets
//! every replica agrees on, and the high watermark.

mod common;

use std::time::Duration;

use common::*;
use spool_raft::AckLevel;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_agree_on_every_offset() {
    let root = tempfile::tempdir().expect("tempdir");
    let (nodes, members) = start_nodes(root.path(), 3).await;
    let replicas = open_everywhere(&nodes, 7, &members).await;
    let leader = leader_of(&replicas).await;

    let mut expected = 0i64;
    for round in 0..20 {
        let acks = if round % 2 == 0 {
            AckLevel::All
        } else {
            AckLevel::Leader
        };
        let base = leader
            .append(vec![batch("a", 10), batch("b", 5)], acks)
            .await
            .expect("append");
        assert_eq!(base, [expected, expected + 10], "round {round}");
        expected += 15;
    }
    // Every replica applies everything, and stores the same batches at the same offsets.
    for replica in &replicas {
        let mut hw = replica.high_watermark();
        tokio::time::timeout(Duration::from_secs(10), hw.wait_for(|hw| *hw == expected))
            .await
            .expect("high watermark reached in time")
            .expect("watch open");
    }
    let reference = replicas[0]
        .reader()
        .read(0, expected, usize::MAX)
        .expect("read");
    assert_eq!(reference.next_offset, expected);
    for replica in &replicas[1..] {
        let other = replica
            .reader()
            .read(0, expected, usize::MAX)
            .expect("read");
        assert_eq!(other.batches, reference.batches);
    }
    // A follower refuses writes and names the leader.
    let follower = replicas
        .iter()
        .find(|r| !r.is_leader())
        .expect("a follower");
    match follower.append(vec![batch("x", 1)], AckLevel::All).await {
        Err(spool_raft::ReplicaError::NotLeader {
            leader,
            leader_address,
            ..
        }) => {
            assert_eq!(leader, Some(leader.expect("leader known")));
            assert_eq!(
                leader_address.as_deref(),
                members.get(&leader.expect("id")).map(String::as_str)
            );
        }
        other => panic!("expected NotLeader, got {other:?}"),
    }
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_groups_quiesce_wake_on_writes_and_fail_over_when_the_leader_node_dies() {
    let root = tempfile::tempdir().expect("tempdir");
    let (nodes, replicas, leader) = group_of_three(root.path(), 9).await;
    leader
        .append(vec![batch("a", 3)], AckLevel::All)
        .await
        .expect("append");
    wait_for(
        &replicas,
        Duration::from_secs(15),
        "every replica to quiesce",
        || replicas.iter().all(|r| r.is_quiet()).then_some(()),
    )
    .await;

    // A write wakes the leader, and its heartbeat wakes the followers.
    let base = leader
        .append(vec![batch("b", 2)], AckLevel::All)
        .await
        .expect("a write to a quiet group");
    assert_eq!(base, [3]);
    assert!(!leader.is_quiet());
    wait_for(
        &replicas,
        Duration::from_secs(15),
        "every replica to quiesce again",
        || replicas.iter().all(|r| r.is_quiet()).then_some(()),
    )
    .await;

    // The leader's node goes silent (every link to it cut): the followers' nodes notice
    // and elect.
    let dead = leader.node_id();
    isolate(&nodes, dead);
    let survivors: Vec<_> = replicas
        .iter()
        .filter(|r| r.node_id() != dead)
        .cloned()
        .collect();
    write_after_failover(&survivors, 5, nodes).await;
}

/// A leader its followers cannot reach, though it still reaches them (a stopping node
/// closes its listener first but heartbeats on through its own connections), must not put
/// its groups back to sleep: when it then dies for good, nothing else would wake them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_heard_only_one_way_cannot_quiesce_its_groups_and_its_death_is_noticed() {
    let root = tempfile::tempdir().expect("tempdir");
    let (nodes, replicas, leader) = group_of_three(root.path(), 9).await;
    leader
        .append(vec![batch("a", 3)], AckLevel::All)
        .await
        .expect("append");

    // Still awake from the write, the followers' nodes lose their way to the leader's
    // node; it still reaches them, and heartbeats.
    let dead = leader.node_id();
    for node in nodes.iter().filter(|n| n.id != dead) {
        node.node.faults().cut(dead);
    }
    let followers: Vec<_> = replicas
        .iter()
        .filter(|r| r.node_id() != dead)
        .cloned()
        .collect();
    // The leader, idle and heard by nobody, asks its followers to quiesce every second:
    // they must refuse for as long as they cannot reach it.
    let slept = tokio::time::timeout(
        Duration::from_secs(5),
        wait_for(
            &replicas,
            Duration::from_secs(60),
            "a follower to quiesce",
            || followers.iter().any(|r| r.is_quiet()).then_some(()),
        ),
    )
    .await;
    assert!(
        slept.is_err(),
        "a follower quiesced for a leader it cannot reach"
    );
    assert!(leader.is_leader(), "the leader heard one way still leads");

    // The leader's node now goes silent both ways: the followers elect, with no new
    // signal from liveness.
    let leader_node = nodes.iter().find(|n| n.id == dead).expect("leader node");
    for node in nodes.iter().filter(|n| n.id != dead) {
        leader_node.node.faults().cut(node.id);
    }
    write_after_failover(&followers, 3, nodes).await;
}

/// A follower whose volume is nearly full takes no entries (a write the disk refused would
/// stop its group for good): the leader commits with the other follower, and the full one,
/// still in its group, catches up once there is room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_out_of_room_takes_no_entries_and_catches_up_once_there_is_room() {
    let root = tempfile::tempdir().expect("tempdir");
    let (nodes, replicas, leader) = group_of_three(root.path(), 13).await;
    let mut followers = (0..3).filter(|i| replicas[*i].node_id() != leader.node_id());
    let (full, other) = (
        followers.next().expect("a follower"),
        followers.next().expect("another"),
    );
    let disk = nodes[full].node.disk();
    disk.set_floor(disk.available().expect("the volume answers") + (1 << 40));

    for i in 0..5 {
        leader
            .append(vec![batch(&format!("w{i}"), 10)], AckLevel::All)
            .await
            .expect("committed without the full follower");
    }
    let end = leader.progress().last_log_index;
    wait_for(
        &replicas,
        Duration::from_secs(10),
        "the other follower",
        || (replicas[other].progress().last_log_index == end).then_some(()),
    )
    .await;
    assert!(
        replicas[full].progress().last_log_index < end,
        "a follower out of room took entries"
    );

    disk.set_floor(0);
    wait_for(
        &replicas,
        Duration::from_secs(15),
        "the full follower to catch up",
        || (replicas[full].progress().last_log_index == end).then_some(()),
    )
    .await;
    assert!(leader.is_leader());
    for node in nodes {
        node.stop().await;
    }
}

/// Three nodes hosting `group`, once it has a leader.
async fn group_of_three(
    root: &std::path::Path,
    group: spool_raft::GroupId,
) -> (
    Vec<TestNode>,
    Vec<std::sync::Arc<spool_raft::PartitionReplica>>,
    std::sync::Arc<spool_raft::PartitionReplica>,
) {
    let (nodes, members) = start_nodes(root, 3).await;
    let replicas = open_everywhere(&nodes, group, &members).await;
    let leader = leader_of(&replicas).await;
    (nodes, replicas, leader)
}

/// Once one of `survivors` leads, it acknowledges a write at `base`; then every node stops.
async fn write_after_failover(
    survivors: &[std::sync::Arc<spool_raft::PartitionReplica>],
    base: i64,
    nodes: Vec<TestNode>,
) {
    let new_leader = leader_of(survivors).await;
    let written = new_leader
        .append(vec![batch("after", 1)], AckLevel::All)
        .await
        .expect("a write after failover");
    assert_eq!(written, [base]);
    for node in nodes {
        node.stop().await;
    }
}

/// A batch of `n` records of `size` bytes each.
fn big_batch(n: usize, size: usize) -> bytes::Bytes {
    use spool_log::batch::{BatchBuilder, BatchOptions};
    let value = vec![7u8; size];
    let mut builder = BatchBuilder::new(BatchOptions::default());
    for _ in 0..n {
        builder.append(1_700_000_000_000, None, Some(&value), &[]);
    }
    builder.finish()
}

/// acks=all answers for the whole request: once `append` returns, every batch it carried
/// is committed (under the high watermark), not just the first. Enough bytes that
/// replication ships them in several rounds, with one follower slowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_all_answers_once_every_batch_of_the_request_is_committed() {
    let root = tempfile::tempdir().expect("tempdir");
    let (nodes, _, leader) = group_of_three(root.path(), 11).await;
    let leader_node = nodes
        .iter()
        .find(|n| n.id == leader.node_id())
        .expect("leader node");
    for other in nodes.iter().filter(|n| n.id != leader.node_id()) {
        leader_node
            .node
            .faults()
            .delay(other.id, Duration::from_millis(5));
    }
    let mut end = 0i64;
    for round in 0..3 {
        // 40 batches of 512 KiB: 20 MiB, more than one replication read.
        let batches: Vec<_> = (0..40).map(|_| big_batch(8, 64 * 1024)).collect();
        let bases = leader.append(batches, AckLevel::All).await.expect("append");
        let expected: Vec<i64> = (0..40).map(|i| end + i * 8).collect();
        assert_eq!(bases, expected, "round {round}");
        end += 40 * 8;
        let hw = *leader.high_watermark().borrow();
        assert!(
            hw >= end,
            "round {round}: acks=all answered with the high watermark at {hw}, below the \
             request's end {end}"
        );
        // acks=leader: every batch is in the leader's log when it answers.
        let batches: Vec<_> = (0..40).map(|_| big_batch(8, 64 * 1024)).collect();
        let bases = leader
            .append(batches, AckLevel::Leader)
            .await
            .expect("append");
        let expected: Vec<i64> = (0..40).map(|i| end + i * 8).collect();
        assert_eq!(bases, expected, "round {round}");
        end += 40 * 8;
        let appended = leader.reader().next_offset();
        assert!(
            appended >= end,
            "round {round}: acks=leader answered with the log ending at {appended}, below \
             the request's end {end}"
        );
    }
    for node in nodes {
        node.stop().await;
    }
}
