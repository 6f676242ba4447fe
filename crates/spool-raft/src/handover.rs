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
    /// node leads to its most caught-up reachable follower (the next one if it does not
    /// take over within a second); returns once none is led here
    /// or `within` has passed. Raft decides as always: the follower is elected only with
    /// a log at least as long as the leader's, and the leader proposes nothing meanwhile.
    /// Nodes for which `unwilling` holds (stopping too, say) are not asked.
    pub async fn hand_over_leadership(
        &self,
        within: Duration,
        unwilling: &(dyn Fn(NodeId) -> bool + Sync),
    ) -> HandOver {
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
            .map(|replica| hand_over(Arc::clone(replica), self.liveness(), unwilling));
        let _ = tokio::time::timeout(within, futures_util::future::join_all(transfers)).await;
        let kept = leading.iter().filter(|r| r.is_leader()).count();
        HandOver { led, kept }
    }
}

/// How long a follower asked to take over has before the next is asked: a transfer
/// takes a round trip or two, and one the follower turns down (it is stopping too, or
/// rebuilding) is never reported to the leader, which meanwhile neither heartbeats nor
/// takes writes.
const TAKE_OVER_WITHIN: Duration = Duration::from_secs(1);

async fn hand_over(
    replica: Arc<PartitionReplica>,
    liveness: &Liveness,
    unwilling: &(dyn Fn(NodeId) -> bool + Sync),
) {
    for to in successors(&replica, liveness)
        .into_iter()
        .filter(|id| !unwilling(*id))
    {
        let mut changes = replica.changes();
        if let Err(error) = replica.transfer_leader(to).await {
            tracing::debug!(group = replica.group(), to, %error, "could not hand the group over");
            return;
        }
        let taken = tokio::time::timeout(TAKE_OVER_WITHIN, async {
            while replica.is_leader() && changes.changed().await {}
        })
        .await;
        if taken.is_ok() || !replica.is_leader() {
            return;
        }
        tracing::debug!(
            group = replica.group(),
            to,
            "the follower did not take over; asking the next"
        );
    }
}

/// The reachable voters, those holding the most of the leader's log first.
fn successors(replica: &PartitionReplica, liveness: &Liveness) -> Vec<NodeId> {
    let metrics = replica.raft().metrics().borrow_watched().clone();
    if metrics.state != ServerState::Leader {
        return Vec::new();
    }
    let Some(replication) = metrics.replication.as_ref() else {
        return Vec::new();
    };
    let mut voters: Vec<(Option<u64>, NodeId)> = metrics
        .membership_config
        .membership()
        .voter_ids()
        .filter(|id| *id != metrics.id && !liveness.is_down(*id))
        .map(|id| (replication.get(&id).cloned().flatten().map(|m| m.index), id))
        .collect();
    voters.sort_unstable_by(|a, b| b.cmp(a));
    voters.into_iter().map(|(_, id)| id).collect()
}
