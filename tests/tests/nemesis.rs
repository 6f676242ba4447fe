//! Faults chosen at random under acks=all load, across containers: a node killed, stopped,
//! paused or cut off the network; the node chosen as a partition's leader, the
//! controller's leader, or any node. Each fault lasts until the two others have
//! acknowledged writes on every partition and then a random number more; it is undone and
//! the cluster must serve again before the next. Afterwards every acknowledged record must
//! be on every replica at its acknowledged offset.
//!
//! Each run prints its seed: `SPOOL_SYSTEM_SEED` replays a run, `SPOOL_SYSTEM_ROUNDS`
//! lengthens it.

mod common;

use std::time::Instant;

use common::*;
use spool_system_tests::ComposeCluster;
use spool_testkit::rng::{Rng, env_u64, seed_from_env};
use spool_testkit::{Replicas, wait_for};

const TOPIC: &str = "nemesis";

#[derive(Debug, Clone, Copy)]
enum Strike {
    Kill,
    Stop,
    Pause,
    Disconnect,
}

const STRIKES: [Strike; 4] = [
    Strike::Kill,
    Strike::Stop,
    Strike::Pause,
    Strike::Disconnect,
];

/// Whom a round strikes.
async fn choose_victim(cluster: &ComposeCluster, rng: &mut Rng) -> (u64, &'static str) {
    match rng.below(3) {
        0 => {
            let partition = rng.below(u64::from(PARTITIONS)) as u32;
            let leader = cluster.leader(TOPIC, partition, WITHIN).await;
            (leader.expect("a partition leader"), "partition leader")
        }
        1 => {
            let leader = cluster.controller_leader(WITHIN).await;
            (leader.expect("the controller leader"), "controller leader")
        }
        _ => {
            let nodes = cluster.running();
            let node = rng.pick(&nodes).copied();
            (node.expect("a running node"), "any node")
        }
    }
}

async fn strike(cluster: &ComposeCluster, strike: Strike, node: u64) {
    match strike {
        Strike::Kill => cluster.kill(node).await,
        Strike::Stop => cluster.stop(node, STOP_GRACE).await,
        Strike::Pause => cluster.pause(node).await,
        Strike::Disconnect => cluster.disconnect(node).await,
    }
    .expect("the fault is done");
}

async fn undo(cluster: &ComposeCluster, strike: Strike, node: u64) {
    match strike {
        Strike::Kill | Strike::Stop => cluster.start(node).await,
        Strike::Pause => cluster.unpause(node).await,
        Strike::Disconnect => cluster.connect(node).await,
    }
    .expect("the fault is undone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_faults_across_containers_lose_no_acknowledged_write() {
    let seed = seed_from_env("SPOOL_SYSTEM_SEED");
    let rounds = env_u64("SPOOL_SYSTEM_ROUNDS", 5);
    // Printed first: a failing run shows it with its output.
    eprintln!("nemesis: seed {seed}, {rounds} rounds (replay: SPOOL_SYSTEM_SEED={seed})");
    let Some((cluster, _, load)) = loaded("random_faults", TOPIC).await else {
        return;
    };
    let mut rng = Rng::new(seed);
    let every_partition: Vec<u32> = (0..PARTITIONS).collect();
    for round in 0..rounds {
        let (victim, role) = choose_victim(&cluster, &mut rng).await;
        let fault = *rng.pick(&STRIKES).expect("a strike");
        strike(&cluster, fault, victim).await;
        let struck_at = Instant::now();
        // The two others go on: every partition acknowledges again...
        next_acks(&load, &every_partition).await;
        let window = struck_at.elapsed();
        // ...and then some more, so that faults last for different stretches of writes.
        let more = 1 + rng.below(400) as usize;
        let target = load.acked_count() + more;
        wait_for(WITHIN, "writes during the fault", || async {
            (load.acked_count() >= target).then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("seed {seed}, round {round}: {e}"));
        undo(&cluster, fault, victim).await;
        cluster.wait_serving(WITHIN).await.expect("serving again");
        next_acks(&load, &every_partition).await;
        eprintln!(
            "round {round}: {fault:?} of node {victim} ({role}); every partition acknowledged again after {window:?}, then {more} more"
        );
    }
    check(&cluster, TOPIC, load).await;
}
