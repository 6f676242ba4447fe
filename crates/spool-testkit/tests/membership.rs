//! Moving a replica under load through the controller: a fourth node joins the group as
//! a learner, catches up and becomes a voter; an old replica is removed and its data
//! deleted. Nothing acknowledged
//! is lost, and the new replica holds the same batches as the others.

use std::collections::BTreeMap;
use std::time::Duration;

use spool_client::Acks;
use spool_testkit::load::{Load, check_acknowledged};
use spool_testkit::{ClusterOptions, TestCluster, wait_for};

const ELECTION: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_moves_to_a_new_node_under_load() {
    let mut cluster = TestCluster::start(ClusterOptions::in_process(4))
        .await
        .expect("cluster");
    cluster
        .create_topic_on("moving", 1, 3, BTreeMap::new(), &[1, 2, 3])
        .await
        .expect("topic");
    let leader = cluster.leader("moving", 0, ELECTION).await.expect("leader");
    let load = Load::start(
        cluster.client().await.expect("client"),
        "moving",
        1,
        Acks::All,
        1,
        32,
    );
    wait_for(Duration::from_secs(20), "some load", || async {
        (load.acked_count() > 300).then_some(())
    })
    .await
    .expect("load");

    // The controller moves a follower's replica to node 4: node 4 joins as a learner,
    // catches up and becomes a voter; the old replica leaves and deletes its data.
    let leaving = [1, 2, 3]
        .into_iter()
        .find(|n| *n != leader)
        .expect("a follower to move away");
    let target: Vec<u64> = [1, 2, 3, 4].into_iter().filter(|n| *n != leaving).collect();
    cluster
        .reassign("moving", 0, &target, Duration::from_secs(30))
        .await
        .expect("the move completes");

    let before = load.acked_count();
    wait_for(Duration::from_secs(20), "load after the move", || async {
        (load.acked_count() > before + 300).then_some(())
    })
    .await
    .expect("load goes on");
    let report = load.finish().await;
    let replicas: Vec<u64> = [1, 2, 3, 4].into_iter().filter(|n| *n != leaving).collect();
    check_acknowledged(
        &cluster,
        "moving",
        &[replicas],
        &report,
        Duration::from_secs(30),
    )
    .await
    .expect("every acknowledged record on every current replica");
    let gone = cluster.data_dir(leaving).expect("dir").join("moving-0");
    wait_for(
        Duration::from_secs(10),
        "the old replica's data deleted",
        || async { (!gone.exists()).then_some(()) },
    )
    .await
    .expect("the removed replica's data is deleted");
}
