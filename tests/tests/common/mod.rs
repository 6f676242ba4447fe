//! What the system tests share: a cluster under acks=all load, and the checks after it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use spool_client::{Acks, Client, NewTopic};
use spool_system_tests::{ComposeCluster, docker_or_skip};
use spool_testkit::load::{Load, check_exactly_once};
use spool_testkit::{Replicas, wait_for};

pub const PARTITIONS: u32 = 3;
pub const WITHIN: Duration = Duration::from_secs(60);
/// What `docker stop` gives a node before it kills it.
pub const STOP_GRACE: Duration = Duration::from_secs(30);

pub async fn create_topic(client: &Client, name: &str) {
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
pub async fn load(client: &Client, topic: &str) -> Load {
    let load = Load::start(client.clone(), topic, PARTITIONS, Acks::All, 2, 8);
    let started = wait_for(WITHIN, "the first acknowledgements", || async {
        (load.acked_count() >= 100).then_some(())
    })
    .await;
    if let Err(timeout) = started {
        panic!(
            "the load runs: {timeout:?}; {} acknowledged; failures: {:?}",
            load.acked_count(),
            load.failures_so_far()
        );
    }
    load
}

/// A cluster with `topic` under acks=all load, or `None` when `test` is skipped.
pub async fn loaded(test: &str, topic: &str) -> Option<(ComposeCluster, Client, Load)> {
    loaded_with(test, topic, &[]).await
}

/// As `loaded`, on a cluster with compose files of `tests/compose/` laid over the deploy
/// file.
pub async fn loaded_with(
    test: &str,
    topic: &str,
    overrides: &[&str],
) -> Option<(ComposeCluster, Client, Load)> {
    // RUST_LOG=spool_client=debug shows what the client does through a fault.
    if let Ok(filter) = std::env::var("RUST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
    let docker = docker_or_skip(test).await?;
    let cluster = ComposeCluster::up_with(&docker, overrides)
        .await
        .expect("cluster");
    let client = cluster.client().await.expect("client");
    create_topic(&client, topic).await;
    let load = load(&client, topic).await;
    Some((cluster, client, load))
}

/// Waits until each of `partitions` gets an acknowledgement it did not have when called.
pub async fn next_acks(load: &Load, partitions: &[u32]) {
    let before: Vec<usize> = partitions.iter().map(|p| load.acked_on(*p)).collect();
    wait_for(WITHIN, "writes acknowledged again", || async {
        partitions
            .iter()
            .zip(&before)
            .all(|(p, n)| load.acked_on(*p) > *n)
            .then_some(())
    })
    .await
    .expect("writes are acknowledged again");
}

/// Stops the load and checks every acknowledged record on every replica, exactly once (the
/// load's producer is idempotent).
pub async fn check(cluster: &ComposeCluster, topic: &str, load: Load) -> usize {
    let report = load.finish().await;
    assert!(report.acked.len() >= 100, "too little was acknowledged");
    // Every replica is read: a node left down would go unchecked.
    assert_eq!(cluster.running().len(), 3, "a node is down at the check");
    let replicas = vec![cluster.running(); PARTITIONS as usize];
    let stored = check_exactly_once(cluster, topic, &replicas, &report, WITHIN)
        .await
        .expect("every acknowledged record on every replica, exactly once");
    assert!(stored >= report.acked.len());
    eprintln!(
        "{} records acknowledged, each found once on every replica ({} stored, {} deliveries failed: {:?})",
        report.acked.len(),
        stored,
        report.failed,
        report.failures
    );
    report.acked.len()
}
