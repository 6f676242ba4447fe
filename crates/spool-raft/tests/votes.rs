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
    let replicas = open_everywhere(&nodes, 1, &members).await;
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
    assert_eq!(offset, [3]);
    for node in nodes.into_iter().flatten() {
        node.stop().await;
    }
}

/// Cuts every link between `node` and the other nodes of `1..=count`, both ways (on the
/// running ones).
fn isolate(nodes: &[Option<TestNode>], node: u64, count: u64) {
    for other in nodes.iter().flatten() {
        if other.id != node {
            other.node.faults().cut(node);
        } else {
            for peer in (1..=count).filter(|p| *p != node) {
                other.node.faults().cut(peer);
            }
        }
    }
}

/// The acknowledged entry E is on the leader and one follower only (the other lags, cut
/// off). That follower loses its log directory and restarts; the leader dies. The lagging
/// replica, missing E, must not be elected with the empty log's vote: the wiped replica
/// withholds its vote until it has caught up. Once the old leader is back, E survives and
/// the wiped replica votes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_lost_its_log_withholds_its_vote_until_it_has_caught_up() {
    let root = tempfile::tempdir().expect("tempdir");
    let (nodes, members) = start_nodes(root.path(), 3).await;
    let replicas = open_everywhere(&nodes, 2, &members).await;
    let leader = leader_of(&replicas).await;
    let l = leader.node_id();
    let followers: Vec<u64> = nodes.iter().map(|n| n.id).filter(|id| *id != l).collect();
    let (lagging, wiped) = (followers[0], followers[1]);
    leader
        .append(vec![batch("a", 2)], AckLevel::All)
        .await
        .expect("first write");
    let mut nodes: Vec<Option<TestNode>> = nodes.into_iter().map(Some).collect();
    let at = |id: u64| (id - 1) as usize;
    nodes[at(l)]
        .as_ref()
        .expect("leader")
        .node
        .faults()
        .cut(lagging);
    nodes[at(lagging)]
        .as_ref()
        .expect("lagging")
        .node
        .faults()
        .cut(l);
    let end = leader
        .append(vec![batch("e", 5)], AckLevel::All)
        .await
        .expect("E, committed on the leader and one follower")[0]
        + 5;

    // The follower holding E loses its partition directory and restarts; the leader is
    // cut off from everyone (as good as dead) before it comes back.
    let (id, dir, addr) = nodes[at(wiped)].take().expect("wiped").stop().await;
    std::fs::remove_dir_all(dir.join("g2")).expect("wipe the partition directory");
    isolate(&nodes, l, 3);
    let restarted = restart(id, dir, &addr).await;
    restarted.node.faults().cut(l);
    let rebuilt = restarted.open_replica(2, &members).await;
    nodes[at(wiped)] = Some(restarted);
    assert!(
        rebuilt.is_rebuilding(),
        "a wiped replica must rebuild before it votes"
    );

    let lagging_replica = replicas[at(lagging)].clone();
    let survivors = vec![lagging_replica.clone(), rebuilt.clone()];
    assert!(
        !elected_within(&survivors, Duration::from_secs(4)).await,
        "a replica missing acknowledged records was elected with a wiped replica's vote"
    );

    // The old leader comes back: it is elected, E is committed everywhere, and the wiped
    // replica, caught up, votes again.
    for node in nodes.iter().flatten() {
        node.node.faults().heal_all();
    }
    let everyone = vec![leader.clone(), lagging_replica, rebuilt.clone()];
    // The old leader may still believe it leads until it hears of a newer term.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let next = loop {
        let new_leader = leader_of(&everyone).await;
        match new_leader.append(vec![batch("f", 1)], AckLevel::All).await {
            Ok(offset) => break offset,
            Err(spool_raft::ReplicaError::NotLeader { .. })
                if tokio::time::Instant::now() < deadline =>
            {
                let mut changes = new_leader.changes();
                let _ = tokio::time::timeout_at(deadline, changes.changed()).await;
            }
            Err(error) => panic!("a write after the leader came back: {error}"),
        }
    };
    assert_eq!(next, [end], "E was lost");
    wait_rebuilt(&everyone, &rebuilt).await;
    wait_high_watermark(&rebuilt, end + 1, "the rebuilt replica to have E").await;
    assert!(!rebuilt.dir().join("raft.rebuilding").exists());
    for node in nodes.into_iter().flatten() {
        node.stop().await;
    }
}
