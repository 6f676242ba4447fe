//! A nemesis run: while a producer writes with acks=all, faults are chosen at random
//! (seeded): a node isolated from the others, a link cut between two nodes, a node
//! killed and restarted, all healed. Afterwards every acknowledged record must be at its
//! acknowledged offset on every replica. `SPOOL_NEMESIS_SECS` and `SPOOL_NEMESIS_SEED`
//! lengthen or vary the run.

use std::time::Duration;

use spool_client::Acks;
use spool_testkit::load::{Load, check_acknowledged};
use spool_testkit::rng::{Rng, env_u64};
use spool_testkit::{ClusterOptions, TestCluster, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_partitions_and_crashes_lose_no_acknowledged_record() {
    let seconds = env_u64("SPOOL_NEMESIS_SECS", 15);
    let seed = env_u64("SPOOL_NEMESIS_SEED", 0x5eed_5b00);
    let mut rng = Rng::new(seed);
    let mut cluster = TestCluster::start(ClusterOptions::in_process(3))
        .await
        .expect("cluster");
    let replicas = cluster.create_topic("jepsen", 2, 3).await.expect("topic");
    for p in 0..2 {
        cluster
            .leader("jepsen", p, Duration::from_secs(15))
            .await
            .expect("leader");
    }
    let load = Load::start(
        cluster.client().await.expect("client"),
        "jepsen",
        2,
        Acks::All,
        2,
        32,
    );
    let nodes = cluster.node_ids();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let mut log = Vec::new();
    while tokio::time::Instant::now() < deadline {
        let node = nodes[rng.below(nodes.len() as u64) as usize];
        let other = nodes[(nodes.iter().position(|n| *n == node).unwrap_or(0)
            + 1
            + rng.below(nodes.len() as u64 - 1) as usize)
            % nodes.len()];
        match rng.below(4) {
            0 => {
                log.push(format!("isolate {node}"));
                cluster.isolate(node).await.expect("isolate");
            }
            1 => {
                log.push(format!("cut {node}-{other}"));
                cluster.cut(node, other).await.expect("cut");
            }
            2 if cluster.running().len() == nodes.len() => {
                log.push(format!("kill {node}"));
                cluster.kill(node).await.expect("kill");
            }
            _ => {
                log.push("heal".to_string());
                cluster.heal_all().await.expect("heal");
                for n in &nodes {
                    cluster.restart(*n).await.expect("restart");
                }
            }
        }
        // The fault lasts until some writes got through it, or 0.2 to 2 s if none can.
        let hold = Duration::from_millis(200 + rng.below(1800));
        let before = load.acked_count();
        let wanted = 50 + rng.below(500) as usize;
        let _ = wait_for(hold, "writes during the fault", || async {
            (load.acked_count() > before + wanted).then_some(())
        })
        .await;
    }
    cluster.heal_all().await.expect("heal");
    for n in &nodes {
        cluster.restart(*n).await.expect("restart");
    }
    // With every fault gone the load must make progress again before it stops.
    let before = load.acked_count();
    wait_for(
        Duration::from_secs(30),
        "progress after healing",
        || async { (load.acked_count() > before + 100).then_some(()) },
    )
    .await
    .unwrap_or_else(|e| panic!("seed {seed}: {e}; faults: {log:?}"));
    let report = load.finish().await;
    check_acknowledged(
        &cluster,
        "jepsen",
        &replicas,
        &report,
        Duration::from_secs(60),
    )
    .await
    .unwrap_or_else(|e| panic!("seed {seed}: {e}; faults: {log:?}"));
}
