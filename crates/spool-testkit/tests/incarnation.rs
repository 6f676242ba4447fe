//! A broker whose data directory is wiped comes back as a new incarnation: the controller
//! removes its old replicas from their groups and places new, empty ones on it, which
//! catch up from the others. Nothing acknowledged is lost and the rebuilt replicas hold
//! what the others hold.

use std::collections::BTreeMap;
use std::time::Duration;

use spool_client::Acks;
use spool_testkit::load::{Load, check_acknowledged};
use spool_testkit::{ClusterOptions, TestCluster, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_broker_is_rebuilt_as_a_new_incarnation() {
    // Node 4 is a broker only (the first three are the controller's voters).
    let mut cluster = TestCluster::start(ClusterOptions::in_process(4))
        .await
        .expect("cluster");
    let replicas = cluster
        .create_topic_on("rebuilt", 2, 3, BTreeMap::new(), &[4, 2, 3])
        .await
        .expect("topic");
    for p in 0..2 {
        cluster
            .leader("rebuilt", p, Duration::from_secs(15))
            .await
            .expect("leader");
    }
    let load = Load::start(
        cluster.client().await.expect("client"),
        "rebuilt",
        2,
        Acks::All,
        1,
        64,
    );
    wait_for(Duration::from_secs(20), "some load", || async {
        (load.acked_count() > 300).then_some(())
    })
    .await
    .expect("load");

    cluster.kill(4).await.expect("kill");
    std::fs::remove_dir_all(cluster.data_dir(4).expect("dir")).expect("wipe");
    cluster.restart(4).await.expect("restart empty");

    let client = cluster.client().await.expect("client");
    wait_for(
        Duration::from_secs(60),
        "node 4's replicas rebuilt",
        || async {
            let described = client.describe_topic("rebuilt").await.ok()?;
            let cluster_now = client.describe_cluster().await.ok()?;
            let rebuilt = described.partitions.iter().all(|p| {
                p.replicas.contains(&4) && p.replicas.len() == 3 && p.in_sync_replicas.len() == 3
            });
            (rebuilt && cluster_now.moving_partitions == 0).then_some(())
        },
    )
    .await
    .expect("rebuilt");
    let before = load.acked_count();
    wait_for(
        Duration::from_secs(20),
        "load after the rebuild",
        || async { (load.acked_count() > before + 200).then_some(()) },
    )
    .await
    .expect("load goes on");
    let report = load.finish().await;
    check_acknowledged(
        &cluster,
        "rebuilt",
        &replicas,
        &report,
        Duration::from_secs(60),
    )
    .await
    .expect("every acknowledged record on every replica, the rebuilt ones included");
}
