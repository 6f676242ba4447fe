//! Faults done to the containers of a three-node cluster while a producer writes with
//! acks=all: afterwards every acknowledged record must be on every replica at the offset
//! it was acknowledged with. The time from each fault to the first write acknowledged
//! again is printed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use spool_client::{Acks, Client, NewTopic, OffsetToCommit, PartitionSet};
use spool_system_tests::{ComposeCluster, docker_or_skip};
use spool_testkit::load::{Load, check_acknowledged};
use spool_testkit::{Replicas, wait_for};

const PARTITIONS: u32 = 3;
const WITHIN: Duration = Duration::from_secs(60);

async fn create_topic(client: &Client, name: &str) {
    client
        .create_topic(NewTopic {
            name: name.to_string(),
            partitions: PARTITIONS,
            replication_factor: 3,
            configs: BTreeMap::new(),
            assignments: Vec::new(),
        })
        .await
        .expect("topic");
}

/// Starts acks=all load on `topic` and waits for its first acknowledgements.
async fn load(client: &Client, topic: &str) -> Load {
    let load = Load::start(client.clone(), topic, PARTITIONS, Acks::All, 2, 8);
    wait_for(WITHIN, "the first acknowledgements", || async {
        (load.acked_count() >= 100).then_some(())
    })
    .await
    .expect("the load runs");
    load
}

/// Waits until `partition` gets an acknowledgement it did not have when called.
async fn next_ack(load: &Load, partition: u32) {
    let before = load.acked_on(partition);
    wait_for(WITHIN, "a write acknowledged again", || async {
        (load.acked_on(partition) > before).then_some(())
    })
    .await
    .expect("writes are acknowledged again");
}

/// Stops the load and checks every acknowledged record on every replica.
async fn check(cluster: &ComposeCluster, topic: &str, load: Load) -> usize {
    let report = load.finish().await;
    assert!(report.acked.len() >= 100, "too little was acknowledged");
    let replicas = vec![cluster.running(); PARTITIONS as usize];
    let stored = check_acknowledged(cluster, topic, &replicas, &report, WITHIN)
        .await
        .expect("every acknowledged record on every replica");
    assert!(stored >= report.acked.len());
    eprintln!(
        "{} records acknowledged, all found on every replica ({} stored, {} deliveries failed)",
        report.acked.len(),
        stored,
        report.failed
    );
    report.acked.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_partition_and_controller_leaders_loses_no_acknowledged_write() {
    let Some(docker) = docker_or_skip("killing_partition_and_controller_leaders").await else {
        return;
    };
    let cluster = ComposeCluster::up(&docker).await.expect("cluster");
    let client = cluster.client().await.expect("client");
    create_topic(&client, "kills").await;
    let load = load(&client, "kills").await;
    let mut windows = Vec::new();
    for round in 0..4u32 {
        let partition = round % PARTITIONS;
        // Three partition leaders, then the controller's.
        let victim = if round == 3 {
            cluster.controller_leader(WITHIN).await.expect("controller")
        } else {
            cluster
                .leader("kills", partition, WITHIN)
                .await
                .expect("leader")
        };
        let killed_at = Instant::now();
        cluster.kill(victim).await.expect("kill");
        next_ack(&load, partition).await;
        windows.push(killed_at.elapsed());
        cluster.start(victim).await.expect("start");
        cluster.wait_serving(WITHIN).await.expect("serving again");
    }
    eprintln!("docker kill of a leader -> next acks=all write acknowledged: {windows:?}");
    check(&cluster, "kills", load).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_down_and_up_keeps_topics_records_and_committed_offsets() {
    let Some(docker) = docker_or_skip("compose_down_and_up").await else {
        return;
    };
    let cluster = ComposeCluster::up(&docker).await.expect("cluster");
    let client = cluster.client().await.expect("client");
    create_topic(&client, "kept").await;
    let load = load(&client, "kept").await;
    let report = load.finish().await;
    // A group's progress, committed through its coordinator (reached at the address the
    // host listener gives for it).
    let (_, address) = client
        .find_coordinator("keepers")
        .await
        .expect("coordinator");
    let coordinator = Client::connect(&[address], Duration::from_secs(5))
        .await
        .expect("the coordinator's host address works");
    let offsets: Vec<OffsetToCommit> = (0..PARTITIONS)
        .map(|p| OffsetToCommit {
            topic: "kept".into(),
            partition: p,
            offset: 10 + i64::from(p),
            leader_epoch: -1,
            metadata: format!("p{p}"),
        })
        .collect();
    coordinator
        .commit_offsets("keepers", "", -1, offsets)
        .await
        .expect("commit");

    cluster.down_and_up().await.expect("down and up");

    let client = cluster.client().await.expect("client");
    let replicas = vec![cluster.running(); PARTITIONS as usize];
    check_acknowledged(&cluster, "kept", &replicas, &report, WITHIN)
        .await
        .expect("every acknowledged record on every replica");
    let committed = wait_for(WITHIN, "the group's offsets", || async {
        let (_, address) = client.find_coordinator("keepers").await.ok()?;
        let coordinator = Client::connect(&[address], Duration::from_secs(5))
            .await
            .ok()?;
        coordinator
            .fetch_committed("keepers", &PartitionSet::new())
            .await
            .ok()
    })
    .await
    .expect("committed offsets");
    let found: BTreeMap<u32, (i64, String)> = committed
        .into_iter()
        .map(|c| (c.partition, (c.offset, c.metadata)))
        .collect();
    let expected: BTreeMap<u32, (i64, String)> = (0..PARTITIONS)
        .map(|p| (p, (10 + i64::from(p), format!("p{p}"))))
        .collect();
    assert_eq!(found, expected);
    eprintln!(
        "{} acknowledged records and the group's offsets kept across compose down and up",
        report.acked.len()
    );
}
