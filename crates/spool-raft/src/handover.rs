//! Controlled shutdown: a stopping node hands every group it leads to a caught-up
//! follower before it closes its listener (as a Kafka broker does). Clients then wait a
//! round trip for the new leader instead of an election timeout after the node is gone,
//! and no group is left led by a node that is about to vanish.

use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;

use crate::liveness::Liveness;
use crate::node::RaftNode;
use crate::replica::PartitionReplica;
use crate::types::NodeId;

/// What a hand-over achieved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandOver {
    /// Groups this node led when it began.
    pub led: usize,
    /// Groups it still led when it gave up: no follower could take them (a group of one,
    /// followers down or refusing) or time ran out.
    pub kept: usize,
}

impl RaftNode {
    /// Stops every replica here from standing for election, then hands each group this
    /// node leads to its most caught-up reachable follower; returns once none is led here
    /// or `within` has passed. Raft decides as always: the follower is elected only with
    /// a log at least as long as the leader's, and the leader proposes nothing meanwhile.
    pub async fn hand_over_leadership(&self, within: Duration) -> HandOver {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Release);
        let replicas = self.replicas();
        let mut leading = Vec::new();
        for replica in replicas {
            replica.abstain();
            if replica.is_leader() {
                leading.push(replica);
            }
        }
        let led = leading.len();
        let transfers = leading
            .iter()
            .map(|replica| hand_over(Arc::clone(replica), self.liveness()));
        let _ = tokio::time::timeout(within, futures_util::future::join_all(transfers)).await;
        let kept = leading.iter().filter(|r| r.is_leader()).count();
        HandOver { led, kept }
    }
}

async fn hand_over(replica: Arc<PartitionReplica>, liveness: &Liveness) {
    let Some(to) = successor(&replica, liveness) else {
        return;
    };
    let mut changes = replica.changes();
    if let Err(error) = replica.transfer_leader(to).await {
        tracing::debug!(group = replica.group(), to, %error, "could not hand the group over");
        return;
    }
    while replica.is_leader() && changes.changed().await {}
}

/// The reachable follower that holds the most of the leader's log.
fn successor(replica: &PartitionReplica, liveness: &Liveness) -> Option<NodeId> {
    let metrics = replica.raft().metrics().borrow_watched().clone();
    if metrics.state != ServerState::Leader {
        return None;
    }
    let voters: Vec<NodeId> = metrics
        .membership_config
        .membership()
        .voter_ids()
        .filter(|id| *id != metrics.id && !liveness.is_down(*id))
        .collect();
    let replication = metrics.replication.as_ref()?;
    voters
        .into_iter()
        .max_by_key(|id| replication.get(id).cloned().flatten().map(|m| m.index))
}
