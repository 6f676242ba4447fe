//! Followers that were away: one that missed 100 MB catches up from the log; one that
//! fell behind the retention point installs the tiny snapshot and then the retained data.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use spool_client::{Acks, ErrorCode, OffsetSpec, PartitionBatches};
use spool_testkit::{ClusterOptions, TestCluster, wait_for};

const ELECTION: Duration = Duration::from_secs(15);

/// A batch of `records` records of `size` bytes each, tagged with `tag`.
fn batch(tag: usize, records: usize, size: usize) -> Bytes {
    let mut builder =
        spool_log::batch::BatchBuilder::new(spool_log::batch::BatchOptions::default());
    let mut value = vec![b'x'; size];
    for i in 0..records {
        let label = format!("{tag}-{i}-");
        value[..label.len()].copy_from_slice(label.as_bytes());
        builder.append(1_700_000_000_000, None, Some(&value), &[]);
    }
    builder.finish()
}

/// Writes `total` bytes in 1 MiB batches, acks=all, through the partition's leader.
async fn write(cluster: &TestCluster, topic: &str, total: usize) {
    let mut written = 0;
    let mut tag = 0;
    while written < total {
        let leader = cluster.leader(topic, 0, ELECTION).await.expect("leader");
        let client = cluster.node_client(leader).await.expect("client");
        let batches: Vec<Bytes> = (0..4).map(|k| batch(tag * 4 + k, 256, 1024)).collect();
        let size: usize = batches.iter().map(Bytes::len).sum();
        let result = client
            .produce(
                Acks::All,
                Duration::from_secs(10),
                vec![PartitionBatches {
                    topic: topic.to_string(),
                    partition: 0,
                    batches,
                    leader_epoch: None,
                }],
            )
            .await
            .expect("produce call");
        match result.partitions.into_iter().next().expect("a result") {
            Ok(_) => {}
            // The lead moved (preferred-leader balancing in a young cluster): written
            // again through the new leader.
            Err(error) if error.code == ErrorCode::NotLeader => continue,
            Err(error) => panic!("not acknowledged: {error:?}"),
        }
        written += size;
        tag += 1;
    }
}

async fn start_offset(cluster: &TestCluster, node: u64, topic: &str) -> i64 {
    let client = cluster.node_client(node).await.expect("client");
    client
        .list_offsets(vec![(topic.to_string(), 0, OffsetSpec::Earliest)])
        .await
        .expect("list offsets")
        .into_iter()
        .next()
        .expect("one answer")
        .expect("an offset")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_missed_100_mb_catches_up() {
    let mut cluster = TestCluster::start(ClusterOptions::in_process(3))
        .await
        .expect("cluster");
    let replicas = cluster.create_topic("big", 1, 3).await.expect("topic");
    let leader = cluster.leader("big", 0, ELECTION).await.expect("leader");
    let away = cluster
        .node_ids()
        .into_iter()
        .find(|n| *n != leader)
        .expect("a follower");
    cluster.kill(away).await.expect("kill");
    write(&cluster, "big", 100 * 1024 * 1024).await;
    cluster.restart(away).await.expect("restart");
    let batches = cluster
        .replicas_agree(&replicas[0], "big", 0, Duration::from_secs(120))
        .await
        .expect("the follower caught up");
    let bytes: usize = batches.iter().map(Bytes::len).sum();
    assert!(bytes >= 100 * 1024 * 1024, "only {bytes} bytes replicated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_the_retention_point_installs_the_snapshot() {
    let mut cluster = TestCluster::start(ClusterOptions::in_process(3))
        .await
        .expect("cluster");
    let configs: BTreeMap<String, String> = [
        ("segment.bytes".to_string(), (1024 * 1024).to_string()),
        ("retention.bytes".to_string(), (2 * 1024 * 1024).to_string()),
    ]
    .into();
    let replicas = cluster
        .create_topic_with("short", 1, 3, configs)
        .await
        .expect("topic");
    let leader = cluster.leader("short", 0, ELECTION).await.expect("leader");
    let away = cluster
        .node_ids()
        .into_iter()
        .find(|n| *n != leader)
        .expect("a follower");
    write(&cluster, "short", 256 * 1024).await;
    cluster.kill(away).await.expect("kill");
    write(&cluster, "short", 8 * 1024 * 1024).await;
    // Retention on the replicas that stayed cuts the log past what the follower holds.
    let leader = cluster.leader("short", 0, ELECTION).await.expect("leader");
    let cut = wait_for(
        Duration::from_secs(30),
        "retention to cut the log",
        || async {
            let start = start_offset(&cluster, leader, "short").await;
            (start > 1024).then_some(start)
        },
    )
    .await
    .expect("retention ran");
    cluster.restart(away).await.expect("restart");
    let batches = cluster
        .replicas_agree(&replicas[0], "short", 0, Duration::from_secs(60))
        .await
        .expect("the follower caught up");
    assert!(!batches.is_empty());
    let follower_start = start_offset(&cluster, away, "short").await;
    assert!(
        follower_start >= cut,
        "the follower starts at {follower_start}, before the leader's cut at {cut}: it did not install the snapshot"
    );
}
