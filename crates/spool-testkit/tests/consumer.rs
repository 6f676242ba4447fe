//! The consumer reads each partition from its leader, one session per node, and keeps
//! going when a leader dies: replication factor 1 on three nodes, so every node leads a
//! partition and the dead one's partition waits for it while the others flow.

use std::collections::BTreeMap;
use std::time::Duration;

use spool_client::{Acks, Consumer, ConsumerConfig, OffsetReset, PartitionBatches};
use spool_testkit::{ClusterOptions, TestCluster};

const ELECTION: Duration = Duration::from_secs(15);
const TOPIC: &str = "spread";

async fn produce(cluster: &TestCluster, partition: u32, leader: u64, tag: &str) {
    let mut builder =
        spool_log::batch::BatchBuilder::new(spool_log::batch::BatchOptions::default());
    for i in 0..5 {
        let value = format!("{tag}{i}");
        builder.append(1_700_000_000_000, None, Some(value.as_bytes()), &[]);
    }
    let client = cluster.node_client(leader).await.expect("client");
    let results = client
        .produce(
            Acks::All,
            Duration::from_secs(10),
            vec![PartitionBatches {
                topic: TOPIC.to_string(),
                partition,
                batches: vec![builder.finish()],
                leader_epoch: None,
            }],
        )
        .await
        .expect("produce");
    for result in results.partitions {
        result.expect("partition produced");
    }
}

/// Reads until `done` holds; any error or end of the consumer fails the test.
async fn read_until(
    consumer: &mut Consumer,
    seen: &mut BTreeMap<u32, Vec<String>>,
    what: &str,
    done: impl Fn(&BTreeMap<u32, Vec<String>>) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done(seen) {
        match tokio::time::timeout_at(deadline, consumer.next()).await {
            Ok(Some(Ok(record))) => seen
                .entry(record.partition)
                .or_default()
                .push(String::from_utf8(record.value.expect("value").to_vec()).expect("utf-8")),
            Ok(Some(Err(error))) => panic!("the consumer stopped ({what}): {error}"),
            Ok(None) => panic!("the consumer ended ({what})"),
            Err(_) => panic!("timed out waiting for {what}; seen {seen:?}"),
        }
    }
}

fn expected(tags: &[&str]) -> Vec<String> {
    tags.iter()
        .flat_map(|tag| (0..5).map(move |i| format!("{tag}{i}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_reads_every_partition_from_its_leader_and_survives_a_leader_kill() {
    let mut cluster = TestCluster::start(ClusterOptions::in_process(3))
        .await
        .expect("cluster");
    // Partition i on node i + 1 alone.
    let replicas = cluster.create_topic(TOPIC, 3, 1).await.expect("topic");
    for (p, nodes) in replicas.iter().enumerate() {
        let leader = cluster
            .leader(TOPIC, p as u32, ELECTION)
            .await
            .expect("leader");
        assert_eq!(vec![leader], *nodes);
        produce(&cluster, p as u32, leader, "a").await;
    }
    // The consumer's bootstrap node is node 1, which leads partition 0 only.
    let mut consumer = Consumer::new(
        cluster.node_client(1).await.expect("client"),
        ConsumerConfig {
            offset_reset: OffsetReset::Earliest,
            fetch_max_wait: Duration::from_millis(50),
            ..ConsumerConfig::default()
        },
    );
    consumer
        .assign(&[(TOPIC, 0), (TOPIC, 1), (TOPIC, 2)])
        .await
        .expect("assign");
    let mut seen = BTreeMap::new();
    read_until(&mut consumer, &mut seen, "every first record", |s| {
        (0..3).all(|p| s.get(&p).is_some_and(|v| v.len() == 5))
    })
    .await;

    // The bootstrap node, leader of partition 0, dies: the other two partitions go on.
    cluster.kill(1).await.expect("kill");
    produce(&cluster, 1, 2, "b").await;
    produce(&cluster, 2, 3, "b").await;
    read_until(&mut consumer, &mut seen, "records after the kill", |s| {
        [1, 2]
            .iter()
            .all(|p| s.get(p).is_some_and(|v| v.len() == 10))
    })
    .await;

    // It comes back; its partition flows again, from where it stopped.
    cluster.restart(1).await.expect("restart");
    cluster
        .leader(TOPIC, 0, ELECTION)
        .await
        .expect("leader back");
    produce(&cluster, 0, 1, "b").await;
    read_until(&mut consumer, &mut seen, "records after the restart", |s| {
        s.get(&0).is_some_and(|v| v.len() == 10)
    })
    .await;
    for p in 0..3 {
        assert_eq!(seen[&p], expected(&["a", "b"]), "partition {p}");
    }
}
