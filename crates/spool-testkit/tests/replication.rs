//! Replication under failure, three replicas, nodes in process (each with its own
//! runtime; a kill drops every task of the node at once, as kill -9 would).

use std::time::Duration;

use bytes::Bytes;
use spool_client::{Acks, PartitionBatches};
use spool_testkit::load::{Load, check_acknowledged, records_of};
use spool_testkit::{ClusterOptions, TestCluster, wait_for};

const ELECTION: Duration = Duration::from_secs(15);

fn batch(values: &[&str]) -> Bytes {
    let mut builder =
        spool_log::batch::BatchBuilder::new(spool_log::batch::BatchOptions::default());
    for v in values {
        builder.append(1_700_000_000_000, None, Some(v.as_bytes()), &[]);
    }
    builder.finish()
}

async fn produce(
    cluster: &TestCluster,
    node: u64,
    topic: &str,
    values: &[&str],
    timeout: Duration,
) -> Result<i64, String> {
    let client = cluster.node_client(node).await.map_err(|e| e.to_string())?;
    let results = client
        .produce(
            Acks::All,
            timeout,
            vec![PartitionBatches {
                topic: topic.to_string(),
                partition: 0,
                batches: vec![batch(values)],
                leader_epoch: None,
            }],
        )
        .await
        .map_err(|e| e.to_string())?;
    match results.partitions.into_iter().next() {
        Some(Ok(produced)) => Ok(produced.base_offset),
        Some(Err(api)) => Err(api.to_string()),
        None => Err("no result".into()),
    }
}

/// Waits until the load has `n` more records acknowledged.
async fn more_acks(load: &Load, n: usize) {
    let before = load.acked_count();
    wait_for(
        Duration::from_secs(20),
        "acknowledgements to grow",
        || async { (load.acked_count() > before + n).then_some(()) },
    )
    .await
    .expect("load makes progress");
}

/// Stops the load, which must have had more than `at_least` records acknowledged, and
/// finds every one of them on every replica at its acknowledged offset.
async fn finish_and_check(
    cluster: &TestCluster,
    topic: &str,
    replicas: &[Vec<u64>],
    load: Load,
    at_least: usize,
) {
    let report = load.finish().await;
    assert!(
        report.acked.len() > at_least,
        "only {} acknowledged",
        report.acked.len()
    );
    let stored = check_acknowledged(cluster, topic, replicas, &report, Duration::from_secs(30))
        .await
        .expect("every acknowledged record is where it was acknowledged");
    assert!(stored >= report.acked.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_five_leader_kills_under_load() {
    let mut cluster = TestCluster::start(ClusterOptions::in_process(3))
        .await
        .expect("cluster");
    let replicas = cluster.create_topic("orders", 2, 3).await.expect("topic");
    for p in 0..2 {
        cluster.leader("orders", p, ELECTION).await.expect("leader");
    }
    let load = Load::start(
        cluster.client().await.expect("client"),
        "orders",
        2,
        Acks::All,
        2,
        64,
    );
    for round in 0..5 {
        more_acks(&load, 200).await;
        let leader = cluster
            .leader("orders", round % 2, ELECTION)
            .await
            .expect("leader");
        cluster.kill(leader).await.expect("kill");
        let new_leader = cluster
            .leader("orders", round % 2, ELECTION)
            .await
            .expect("a new leader");
        assert_ne!(new_leader, leader);
        cluster.restart(leader).await.expect("restart");
    }
    finish_and_check(&cluster, "orders", &replicas, load, 1000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_acknowledges_nothing_and_its_tail_is_truncated_on_return() {
    let cluster = TestCluster::start(ClusterOptions::in_process(3))
        .await
        .expect("cluster");
    let mut cluster = cluster;
    let replicas = cluster.create_topic("t", 1, 3).await.expect("topic");
    let old = cluster.leader("t", 0, ELECTION).await.expect("leader");
    produce(&cluster, old, "t", &["a", "b"], Duration::from_secs(5))
        .await
        .expect("first write");

    cluster.isolate(old).await.expect("isolate");
    // Cut off, the old leader appends but cannot commit: acks=all never comes.
    let refused = produce(
        &cluster,
        old,
        "t",
        &["lost-1", "lost-2"],
        Duration::from_millis(1500),
    )
    .await;
    assert!(
        refused.is_err(),
        "an isolated leader acknowledged {refused:?}"
    );

    // The majority elects a new leader and moves on.
    let new = wait_for(ELECTION, "a leader among the majority", || async {
        for node in cluster.running() {
            if node != old
                && let Ok(Some(leader)) = cluster.leader_seen_by(node, "t", 0).await
                && leader == node
            {
                return Some(node);
            }
        }
        None
    })
    .await
    .expect("new leader");
    let offset = produce(&cluster, new, "t", &["c"], Duration::from_secs(5))
        .await
        .expect("write on the new leader");
    assert_eq!(
        offset, 2,
        "the new leader continues after the committed records"
    );

    cluster.heal_all().await.expect("heal");
    let batches = cluster
        .replicas_agree(&replicas[0], "t", 0, Duration::from_secs(20))
        .await
        .expect("the old leader rejoins and agrees");
    let values: Vec<String> = records_of("t", 0, &batches)
        .into_iter()
        .map(|r| String::from_utf8_lossy(&r.value.expect("value")).into_owned())
        .collect();
    assert_eq!(
        values,
        ["a", "b", "c"],
        "the unacknowledged tail was truncated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_cannot_elect_a_leader() {
    let mut cluster = TestCluster::start(ClusterOptions::in_process(3))
        .await
        .expect("cluster");
    cluster.create_topic("t", 1, 3).await.expect("topic");
    let leader = cluster.leader("t", 0, ELECTION).await.expect("leader");
    produce(&cluster, leader, "t", &["x"], Duration::from_secs(5))
        .await
        .expect("write");
    let others: Vec<u64> = cluster
        .node_ids()
        .into_iter()
        .filter(|n| *n != leader)
        .collect();
    // Two of three gone: the survivor is a minority.
    for node in &others {
        cluster.kill(*node).await.expect("kill");
    }
    let survivor = leader;
    // It may still call itself leader until its lease runs out, but it cannot commit...
    let refused = produce(&cluster, survivor, "t", &["y"], Duration::from_secs(2)).await;
    assert!(refused.is_err(), "a minority acknowledged {refused:?}");
    // ...and after several election timeouts it still leads nobody.
    let watched = wait_for(Duration::from_secs(4), "a minority leader", || async {
        match cluster.leader_seen_by(survivor, "t", 0).await {
            Ok(Some(l)) if l == survivor => {
                // Leadership without a quorum must not let writes through.
                produce(&cluster, survivor, "t", &["z"], Duration::from_millis(500))
                    .await
                    .ok()
                    .map(|_| ())
            }
            _ => None,
        }
    })
    .await;
    assert!(watched.is_err(), "a minority accepted a write");
    // With one node back there is a majority again, and a leader of it takes writes (the
    // survivor may still name itself leader from before, until the election).
    cluster.restart(others[0]).await.expect("restart");
    let offset = wait_for(ELECTION, "a write with a majority", || async {
        let leader = cluster.leader("t", 0, ELECTION).await.ok()?;
        produce(&cluster, leader, "t", &["w"], Duration::from_secs(5))
            .await
            .ok()
    })
    .await
    .expect("write with a majority");
    // Writes refused while in the minority may still be committed now (they were never
    // acknowledged, so either way is right); the acknowledged one stays first.
    assert!(offset >= 1);
    let batches = cluster
        .committed_batches(leader, "t", 0)
        .await
        .expect("read back");
    let first = records_of("t", 0, &batches)
        .into_iter()
        .next()
        .and_then(|r| r.value);
    assert_eq!(first.as_deref(), Some(&b"x"[..]));
}

/// A graceful stop of a node of a three-node cluster, with replication streams from its
/// peers open, ends within the grace period: those streams end as the node begins to
/// stop instead of holding the server until the grace period cuts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_a_cluster_stops_within_its_grace_period() {
    let mut cluster = TestCluster::start(ClusterOptions::in_process(3))
        .await
        .expect("cluster");
    cluster.create_topic("stops", 1, 3).await.expect("topic");
    let leader = cluster.leader("stops", 0, ELECTION).await.expect("leader");
    produce(
        &cluster,
        leader,
        "stops",
        &["a", "b"],
        Duration::from_secs(10),
    )
    .await
    .expect("a replicated write");
    for node in [1, 2] {
        let report = cluster
            .stop_reporting(node)
            .await
            .expect("stop")
            .expect("a report");
        assert!(
            !report.outlived_grace,
            "node {node}: requests outlived the grace period"
        );
    }
}

/// A rolling restart under acks=all load: each node in turn stops cleanly and comes back.
/// A stopping node hands every partition it leads to a follower before it closes its
/// listeners (no group is left to an election after it is gone), and no acknowledged
/// record is lost or moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_hands_leadership_over_and_loses_nothing() {
    let mut cluster = TestCluster::start(ClusterOptions::in_process(3))
        .await
        .expect("cluster");
    let partitions = 4;
    let replicas = cluster
        .create_topic("rolling", partitions, 3)
        .await
        .expect("topic");
    for p in 0..partitions {
        cluster
            .leader("rolling", p, ELECTION)
            .await
            .expect("leader");
    }
    let load = Load::start(
        cluster.client().await.expect("client"),
        "rolling",
        partitions,
        Acks::All,
        2,
        64,
    );
    for node in cluster.node_ids() {
        more_acks(&load, 200).await;
        let report = cluster
            .stop_reporting(node)
            .await
            .expect("stop")
            .expect("a report");
        assert_eq!(
            report.kept_leadership, 0,
            "node {node} stopped still leading groups"
        );
        assert!(!report.outlived_grace, "node {node} outlived its grace");
        for p in 0..partitions {
            let leader = cluster
                .leader("rolling", p, ELECTION)
                .await
                .expect("leader");
            assert_ne!(leader, node);
        }
        cluster.restart(node).await.expect("restart");
    }
    finish_and_check(&cluster, "rolling", &replicas, load, 600).await;
}
