//! Three `spool serve` processes: the leaders of a replicated topic are killed with
//! SIGKILL, one after another, while a producer writes with acks=all; every acknowledged
//! record must then be read back at its acknowledged offset, from every replica alike.

use std::time::Duration;

use spool_client::Acks;
use spool_testkit::load::{Load, check_acknowledged};
use spool_testkit::{ClusterOptions, TestCluster, wait_for};

const SPOOL: &str = env!("CARGO_BIN_EXE_spool");
const ELECTION: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_leaders_under_load_loses_no_acknowledged_record() {
    let mut cluster = TestCluster::start(ClusterOptions::processes(3, SPOOL))
        .await
        .expect("cluster");
    let replicas = cluster.create_topic("events", 3, 3).await.expect("topic");
    for p in 0..3 {
        cluster.leader("events", p, ELECTION).await.expect("leader");
    }
    let load = Load::start(
        cluster.client().await.expect("client"),
        "events",
        3,
        Acks::All,
        2,
        128,
    );
    for round in 0..5u32 {
        let before = load.acked_count();
        wait_for(
            Duration::from_secs(30),
            "acknowledgements to grow",
            || async { (load.acked_count() > before + 500).then_some(()) },
        )
        .await
        .expect("load makes progress");
        let victim = cluster
            .leader("events", round % 3, ELECTION)
            .await
            .expect("leader");
        cluster.kill(victim).await.expect("kill -9");
        cluster
            .leader("events", round % 3, ELECTION)
            .await
            .expect("a new leader");
        cluster.restart(victim).await.expect("restart");
    }
    let report = load.finish().await;
    assert!(
        report.acked.len() > 2500,
        "only {} records acknowledged",
        report.acked.len()
    );
    let stored = check_acknowledged(
        &cluster,
        "events",
        &replicas,
        &report,
        Duration::from_secs(60),
    )
    .await
    .expect("no acknowledged record lost, replicas identical");
    assert!(stored >= report.acked.len());
}
