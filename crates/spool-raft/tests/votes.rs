//! A replica that withholds its votes (one rebuilding a lost log) cannot help elect a
//! leader; once it votes again, it can.

mod common;

use std::time::Duration;

use common::*;
use spool_raft::AckLevel;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_withholding_votes_elects_no_one_until_it_votes_again() {
    let root = tempfile::tempdir().expect("tempdir");
    let (nodes, members) = start_nodes(root.path(), 3).await;
    let mut replicas = Vec::new();
    for node in &nodes {
        replicas.push(node.open_replica(1, &members).await);
    }
    let leader = leader_of(&replicas).await;
    leader
        .append(vec![batch("a", 3)], AckLevel::All)
        .await
        .expect("write");

    let gated = replicas
        .iter()
        .position(|r| !r.is_leader())
        .expect("a follower");
    nodes[gated].node.withhold_votes(1, true);
    replicas[gated].set_elect(false);
    let leader_at = replicas
        .iter()
        .position(|r| r.is_leader())
        .expect("the leader");
    let mut nodes: Vec<_> = nodes.into_iter().map(Some).collect();
    let mut replicas: Vec<_> = replicas.into_iter().map(Some).collect();
    replicas[leader_at] = None;
    nodes[leader_at].take().expect("leader node").stop().await;
    let survivors: Vec<_> = replicas.iter().flatten().cloned().collect();

    // The other survivor campaigns, but one vote (its own) of three elects no one. Several
    // election timeouts pass with no leader.
    let elected = tokio::time::timeout(
        Duration::from_secs(4),
        wait_for(&survivors, Duration::from_secs(60), "a leader", || {
            survivors.iter().find(|r| r.is_leader()).cloned()
        }),
    )
    .await;
    assert!(
        elected.is_err(),
        "a leader was elected with a withheld vote"
    );

    // Votes again: a leader is elected, and the committed records are all there.
    nodes[gated]
        .as_ref()
        .expect("gated node")
        .node
        .withhold_votes(1, false);
    survivors[0].set_elect(true);
    survivors[1].set_elect(true);
    let leader = leader_of(&survivors).await;
    let offset = leader
        .append(vec![batch("b", 1)], AckLevel::All)
        .await
        .expect("write after the election");
    assert_eq!(offset, 3);
    for node in nodes.into_iter().flatten() {
        node.stop().await;
    }
}
