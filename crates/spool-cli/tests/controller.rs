//! The controller with three `spool serve` processes: kill -9 of the controller leader
//! gives a new one with the metadata intact; the killed node comes back and leadership
//! returns to preferred leaders; a broker drained under load loses no acknowledged
//! record; a deleted topic's name is reusable; a second node claiming a live node's id is
//! refused and exits.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use spool_client::{Acks, Client, NewTopic};
use spool_testkit::load::{Load, check_acknowledged};
use spool_testkit::{ClusterOptions, TestCluster, wait_for};

const SPOOL: &str = env!("CARGO_BIN_EXE_spool");

/// Leaders per node of a topic, when every partition has one.
async fn leaders(client: &Client, topic: &str) -> Option<BTreeMap<u64, usize>> {
    let described = client.describe_topic(topic).await.ok()?;
    let mut counts = BTreeMap::new();
    for p in &described.partitions {
        if p.leader == 0 {
            return None;
        }
        *counts.entry(p.leader).or_insert(0) += 1;
    }
    Some(counts)
}

fn balanced(counts: &BTreeMap<u64, usize>, nodes: usize) -> bool {
    counts.len() == nodes
        && counts.values().max().copied().unwrap_or(0) - counts.values().min().copied().unwrap_or(0)
            <= 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_fails_over_and_leadership_returns_after_a_restart() {
    let mut cluster = TestCluster::start(ClusterOptions::processes(3, SPOOL))
        .await
        .expect("cluster");
    let client = cluster.client().await.expect("client");
    client
        .create_topic(NewTopic {
            name: "orders".into(),
            partitions: 12,
            replication_factor: 3,
            ..NewTopic::default()
        })
        .await
        .expect("create");
    wait_for(Duration::from_secs(30), "leaders balanced", || async {
        leaders(&client, "orders")
            .await
            .filter(|c| balanced(c, 3))
            .map(drop)
    })
    .await
    .expect("balanced leaders");

    let controller = client
        .describe_cluster()
        .await
        .expect("describe")
        .controller_leader
        .expect("a controller leader");
    cluster.kill(controller).await.expect("kill -9");
    let killed = Instant::now();
    let survivors = cluster.client().await.expect("client");
    wait_for(Duration::from_secs(10), "a new controller", || async {
        survivors
            .create_topic(NewTopic {
                name: "after-failover".into(),
                partitions: 1,
                replication_factor: 2,
                ..NewTopic::default()
            })
            .await
            .ok()
    })
    .await
    .expect("a new controller takes commands");
    let failover = killed.elapsed();
    eprintln!("controller failover: {failover:?}");
    assert!(
        failover < Duration::from_secs(3),
        "controller failover took {failover:?}"
    );
    let cluster_now = survivors.describe_cluster().await.expect("describe");
    assert_ne!(cluster_now.controller_leader, Some(controller));
    let orders = survivors.describe_topic("orders").await.expect("orders");
    assert_eq!(orders.partitions.len(), 12, "metadata intact");

    cluster.restart(controller).await.expect("restart");
    let client = cluster.client().await.expect("client");
    wait_for(
        Duration::from_secs(60),
        "leadership back on every node",
        || async {
            let counts = leaders(&client, "orders").await?;
            balanced(&counts, 3).then_some(())
        },
    )
    .await
    .expect("leadership rebalanced after the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_topic_name_can_be_reused_and_a_duplicate_id_is_refused() {
    let cluster = TestCluster::start(ClusterOptions::processes(3, SPOOL))
        .await
        .expect("cluster");
    let client = cluster.client().await.expect("client");
    let topic = NewTopic {
        name: "reused".into(),
        partitions: 2,
        replication_factor: 3,
        ..NewTopic::default()
    };
    client.create_topic(topic.clone()).await.expect("create");
    let first = client.describe_topic("reused").await.expect("describe");
    client.delete_topic("reused").await.expect("delete");
    client.create_topic(topic).await.expect("create again");
    let second = client.describe_topic("reused").await.expect("describe");
    assert_ne!(
        first.topic_id, second.topic_id,
        "a new topic, not the old one"
    );
    wait_for(
        Duration::from_secs(20),
        "leaders of the new topic",
        || async { leaders(&client, "reused").await.map(drop) },
    )
    .await
    .expect("leaders");

    // Node 2, a controller voter, is live; another process claims its id with a data
    // directory and an address of its own. (A broker-only id claimed twice is refused at
    // registration: spool-controller's tests.)
    let spec = cluster.spec(2).expect("spec").clone();
    let dir = tempfile::tempdir().expect("tempdir");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(SPOOL)
            .args(["serve", "--node-id", "2", "--listen", "127.0.0.1:0"])
            .args([
                "--http-listen",
                "127.0.0.1:0",
                "--cluster-listen",
                "127.0.0.1:0",
            ])
            .arg("--controller-voters")
            .arg(&spec.controller_voters)
            .arg("--data-dir")
            .arg(dir.path())
            .output()
    })
    .await
    .expect("join")
    .expect("run spool serve");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("another node may hold this id"), "{stderr}");
    assert_eq!(
        stderr.matches("another node may hold this id").count(),
        1,
        "said once: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_a_broker_under_load_loses_no_acknowledged_record() {
    let cluster = TestCluster::start(ClusterOptions::processes(3, SPOOL))
        .await
        .expect("cluster");
    let client = cluster.client().await.expect("client");
    // Two replicas each on three brokers: node 3's replicas have somewhere to go.
    client
        .create_topic(NewTopic {
            name: "drained".into(),
            partitions: 3,
            replication_factor: 2,
            ..NewTopic::default()
        })
        .await
        .expect("create");
    wait_for(Duration::from_secs(20), "leaders", || async {
        leaders(&client, "drained").await.map(drop)
    })
    .await
    .expect("leaders");
    let load = Load::start(
        cluster.client().await.expect("client"),
        "drained",
        3,
        Acks::All,
        2,
        64,
    );
    wait_for(Duration::from_secs(30), "some load", || async {
        (load.acked_count() > 500).then_some(())
    })
    .await
    .expect("load");

    client.drain_broker(3, true).await.expect("drain");
    wait_for(Duration::from_secs(60), "node 3 emptied", || async {
        let status = client.describe_cluster().await.ok()?;
        let node = status.brokers.iter().find(|b| b.id == 3)?;
        (node.draining && node.replicas == 0 && status.moving_partitions == 0).then_some(())
    })
    .await
    .expect("the drain completes");
    let before = load.acked_count();
    wait_for(Duration::from_secs(30), "load after the drain", || async {
        (load.acked_count() > before + 300).then_some(())
    })
    .await
    .expect("load goes on");
    let report = load.finish().await;

    let described = client.describe_topic("drained").await.expect("describe");
    let replicas: Vec<Vec<u64>> = described
        .partitions
        .iter()
        .map(|p| p.replicas.clone())
        .collect();
    assert!(
        replicas.iter().all(|r| r.len() == 2 && !r.contains(&3)),
        "{replicas:?}"
    );
    check_acknowledged(
        &cluster,
        "drained",
        &replicas,
        &report,
        Duration::from_secs(60),
    )
    .await
    .expect("every acknowledged record on every remaining replica");
    let leftover = cluster.data_dir(3).expect("dir");
    wait_for(
        Duration::from_secs(10),
        "node 3's partition data deleted",
        || async {
            let any = std::fs::read_dir(&leftover)
                .ok()?
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("drained-"));
            (!any).then_some(())
        },
    )
    .await
    .expect("drained replicas' data deleted");
}
