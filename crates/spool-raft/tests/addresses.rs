//! A group whose membership recorded an address where a node no longer listens still
//! works once the node's current address is known: Raft messages go where the cluster's
//! metadata says the node is.

mod common;

use common::*;
use spool_raft::AckLevel;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_follows_the_address_book_over_the_membership() {
    let root = tempfile::tempdir().expect("tempdir");
    let (nodes, real) = start_nodes(root.path(), 3).await;
    // The membership names node 3 at a port nobody listens on.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let stale = dead.local_addr().expect("addr").to_string();
    drop(dead);
    let mut recorded = real.clone();
    recorded.insert(3, stale);
    for node in &nodes {
        node.node.set_peer_addresses(real.clone());
    }
    let mut replicas = Vec::new();
    for node in &nodes {
        let replica = node.open_replica(5, &recorded).await;
        // Node 3 must be reached by the others, so it does not lead.
        if node.id == 3 {
            replica.set_elect(false);
        }
        replicas.push(replica);
    }
    let leader = leader_of(&replicas).await;
    let end = leader
        .append(vec![batch("a", 4)], AckLevel::All)
        .await
        .expect("write")[0]
        + 4;
    // Node 3, reachable only through the book, has every record.
    let third = replicas.iter().find(|r| r.node_id() == 3).expect("node 3");
    wait_high_watermark(third, end, "node 3 to have every record").await;
    for node in nodes {
        node.stop().await;
    }
}
