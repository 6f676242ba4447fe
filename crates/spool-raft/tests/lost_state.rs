//! A node whose Raft state file is lost after retention purged the start of its logs:
//! a group of one gets its start point and member back and goes on at the same offsets;
//! a replica of a larger group is rebuilt from its leader and votes again once caught up.

mod common;

use std::time::Duration;

use common::*;
use spool_log::{FlushPolicy, LogConfig, RetentionPolicy};
use spool_raft::{AckLevel, Members, ReplicaSpec};

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 512,
        flush: FlushPolicy::Always,
        ..LogConfig::default()
    }
}

async fn open(
    node: &TestNode,
    group: u64,
    members: &Members,
) -> std::sync::Arc<spool_raft::PartitionReplica> {
    node.node
        .create_replica(ReplicaSpec {
            group,
            dir: node.dir.join(format!("g{group}")),
            log_config: small_segments(),
            initial_members: members.clone(),
        })
        .await
        .expect("create replica")
}

/// Writes 40 batches of 5 records and purges all but the last segments.
async fn fill_and_purge(leader: &std::sync::Arc<spool_raft::PartitionReplica>) -> i64 {
    let mut end = 0;
    for i in 0..40 {
        end = leader
            .append(
                vec![batch(&format!("r{i}-{}", "x".repeat(60)), 5)],
                AckLevel::All,
            )
            .await
            .expect("append")[0]
            + 5;
    }
    let policy = RetentionPolicy {
        max_age: None,
        max_bytes: Some(4096),
    };
    assert!(
        leader.apply_retention(&policy, 0).await.expect("retention"),
        "retention cut nothing"
    );
    purged(leader).await;
    end
}

/// Waits until the replica's log no longer starts at offset 0.
async fn purged(replica: &std::sync::Arc<spool_raft::PartitionReplica>) {
    wait_for(
        std::slice::from_ref(replica),
        Duration::from_secs(10),
        "the purge",
        || (replica.reader().start_offset() > 0).then_some(()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_one_goes_on_after_its_state_file_is_lost() {
    let root = tempfile::tempdir().expect("tempdir");
    let (mut nodes, members) = start_nodes(root.path(), 1).await;
    let replica = open(&nodes[0], 3, &members).await;
    let end = fill_and_purge(&replica).await;
    let start = replica.reader().start_offset();
    drop(replica);
    let (id, dir, addr) = nodes.remove(0).stop().await;
    std::fs::remove_file(dir.join("raft.state")).expect("lose the state file");

    let node = restart(id, dir, &addr).await;
    let replica = open(&node, 3, &members).await;
    assert!(
        !replica.is_rebuilding(),
        "a group of one has no one to rebuild from"
    );
    assert_eq!(replica.reader().start_offset(), start);
    wait_high_watermark(&replica, end, "every record committed again").await;
    let next = replica
        .append(vec![batch("after", 1)], AckLevel::All)
        .await
        .expect("a write after the loss");
    assert_eq!(next, [end]);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_lost_its_state_file_is_rebuilt_from_its_leader() {
    let root = tempfile::tempdir().expect("tempdir");
    let (nodes, members) = start_nodes(root.path(), 3).await;
    let mut replicas = Vec::new();
    for node in &nodes {
        replicas.push(open(node, 4, &members).await);
    }
    let leader = leader_of(&replicas).await;
    let end = fill_and_purge(&leader).await;
    // Every replica purges on its own retention pass.
    let policy = RetentionPolicy {
        max_age: None,
        max_bytes: Some(4096),
    };
    for replica in &replicas {
        wait_high_watermark(replica, end, "replication").await;
        replica
            .apply_retention(&policy, 0)
            .await
            .expect("retention");
        purged(replica).await;
    }
    let follower_at = replicas
        .iter()
        .position(|r| !r.is_leader() && r.reader().start_offset() > 0)
        .expect("a purged follower");
    let mut nodes: Vec<_> = nodes.into_iter().map(Some).collect();
    replicas.remove(follower_at);
    let (id, dir, addr) = nodes[follower_at].take().expect("node").stop().await;
    std::fs::remove_file(dir.join("raft.state")).expect("lose the state file");

    let node = restart(id, dir.clone(), &addr).await;
    let rebuilt = open(&node, 4, &members).await;
    nodes[follower_at] = Some(node);
    assert!(rebuilt.is_rebuilding());
    let next = leader
        .append(vec![batch("after", 1)], AckLevel::All)
        .await
        .expect("a write while it rebuilds");
    assert_eq!(next, [end]);
    replicas.push(rebuilt.clone());
    wait_rebuilt(&replicas, &rebuilt).await;
    wait_high_watermark(
        &rebuilt,
        end + 1,
        "the rebuilt replica to have every record",
    )
    .await;
    // The purged log was kept aside for the operator.
    let kept = std::fs::read_dir(&dir)
        .expect("list")
        .filter(|e| {
            e.as_ref().is_ok_and(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("~lost-group-4-")
            })
        })
        .count();
    assert_eq!(kept, 1);
    for node in nodes.into_iter().flatten() {
        node.stop().await;
    }
}
