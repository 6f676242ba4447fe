//! Quiet groups and node liveness (after TiKV's hibernating regions).
//!
//! Every Raft group keeps timers: a leader heartbeats, followers count down to an
//! election. With thousands of partitions per node, idle groups would spend a core on
//! that. So a leader whose group has been idle for a while, with every follower caught
//! up, asks the followers to quiesce, and once they all have, stops its own timers too.
//! Failure detection moves to the nodes: each node pings each peer a few times a second
//! (one call per pair of nodes, whatever the number of groups).
//!
//! - A write, a membership change or a leadership transfer wakes a quiet leader, which
//!   heartbeats at once; any message from the leader wakes a quiet follower.
//! - A peer that stops answering pings wakes every quiet follower whose leader it hosts:
//!   their timers resume, their leader's lease is long gone, and they elect at once (with
//!   a random delay each, so that they do not split the votes). While it stays silent, its
//!   groups here stay awake: a follower refuses to quiesce for a leader it cannot reach,
//!   and any that went quiet anyway is woken again. A node can be silent one way only (a
//!   stopping node closes its listener but still heartbeats through its own connections);
//!   if its groups went quiet again, its real death later would go unnoticed.
//! - A peer that comes back, or restarts, wakes every quiet leader of a group it is in,
//!   so that it learns its leaders and catches up.
//!
//! Raft's safety does not depend on any of this: votes still need a majority. Only the
//! failure detector moved.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use spool_proto::v1 as pb;
use tokio::time::Instant;

use crate::network::{PeerPool, Verdict};
use crate::node::RaftNode;
use crate::replica::PartitionReplica;
use crate::types::{GroupId, NodeId};

/// How often a node pings each peer.
const PING_EVERY: Duration = Duration::from_millis(200);
const PING_TIMEOUT: Duration = Duration::from_millis(400);
/// How often leaders look for groups to quiesce.
const QUIESCE_CHECK_EVERY: Duration = Duration::from_secs(1);
/// While a peer stays silent, how often its quiet groups here are looked for again.
const REWAKE_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct PeerState {
    last_ok: Instant,
    boot_id: Option<u64>,
    down: bool,
    /// When its quiet groups here were last woken.
    woken_at: Instant,
}

#[derive(Debug, Default)]
pub(crate) struct Liveness {
    peers: Mutex<HashMap<NodeId, PeerState>>,
}

impl Liveness {
    pub fn is_down(&self, node: NodeId) -> bool {
        self.peers.lock().get(&node).is_some_and(|p| p.down)
    }
}

/// Starts the ping and quiesce loops of a node; they end with the node.
pub(crate) fn start(node: &Arc<RaftNode>) -> Vec<tokio::task::JoinHandle<()>> {
    let weak = Arc::downgrade(node);
    let pings = tokio::spawn(ping_loop(weak.clone()));
    let quiesce = tokio::spawn(quiesce_loop(weak));
    vec![pings, quiesce]
}

async fn ping_loop(node: Weak<RaftNode>) {
    let mut every = tokio::time::interval(PING_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(node) = node.upgrade() else { return };
        let peers = node.peer_addresses();
        let pings = peers.into_iter().map(|(peer, addr)| {
            let pool = Arc::clone(node.pool());
            let local = node.node_id();
            async move { (peer, ping(&pool, local, peer, &addr).await) }
        });
        let answers = futures_util::future::join_all(pings).await;
        for (peer, answer) in answers {
            observe(&node, peer, answer);
        }
    }
}

async fn ping(pool: &PeerPool, local: NodeId, peer: NodeId, addr: &str) -> Option<u64> {
    if pool.faults().verdict(peer) == Verdict::Drop {
        return None;
    }
    let mut client = pool.peer(peer, addr).ok()?.client.clone();
    let mut request = tonic::Request::new(pb::RaftPingRequest {
        from: local,
        target: peer,
    });
    request.set_timeout(PING_TIMEOUT);
    let response = client.ping(request).await.ok()?.into_inner();
    (response.node_id == peer).then_some(response.boot_id)
}

fn observe(node: &RaftNode, peer: NodeId, answer: Option<u64>) {
    let now = Instant::now();
    let down_after = Duration::from_millis(node.timing().election_min_ms);
    let mut wake_leaders = false;
    let mut wake_followers = false;
    let mut first_silence = false;
    {
        let mut peers = node.liveness().peers.lock();
        let state = peers.entry(peer).or_insert(PeerState {
            last_ok: now,
            boot_id: None,
            down: false,
            woken_at: now,
        });
        match answer {
            Some(boot_id) => {
                let restarted = state.boot_id.is_some_and(|b| b != boot_id);
                wake_leaders = restarted || state.down;
                state.last_ok = now;
                state.boot_id = Some(boot_id);
                state.down = false;
            }
            None => {
                let silent = now.duration_since(state.last_ok) >= down_after;
                if silent && (!state.down || now.duration_since(state.woken_at) >= REWAKE_EVERY) {
                    first_silence = !state.down;
                    state.down = true;
                    state.woken_at = now;
                    wake_followers = true;
                }
            }
        }
    }
    if wake_leaders {
        for replica in node.replicas() {
            if replica.is_quiet() && replica.is_leader() && replica.has_member(peer) {
                tracing::debug!(group = replica.group(), peer, "peer back: waking the group");
                replica.wake();
            }
        }
    }
    if wake_followers {
        if first_silence {
            tracing::info!(peer, "peer stopped answering: waking the groups it leads");
        }
        for replica in node.replicas() {
            if replica.is_quiet() && replica.leader().node == Some(peer) {
                let replica = Arc::clone(&replica);
                // Spread the elections so that the groups do not split their votes.
                let delay = Duration::from_millis(jitter(replica.group()) % 300);
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    replica.wake();
                });
            }
        }
    }
}

fn jitter(seed: u64) -> u64 {
    let mut x = seed ^ 0x9e37_79b9_7f4a_7c15 ^ (Instant::now().elapsed().subsec_nanos() as u64);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^ (x >> 33)
}

async fn quiesce_loop(node: Weak<RaftNode>) {
    let mut every = tokio::time::interval(QUIESCE_CHECK_EVERY);
    loop {
        every.tick().await;
        let Some(node) = node.upgrade() else { return };
        let Some(after) = node.timing().quiesce_after_ms else {
            continue;
        };
        // Per follower node: the groups to ask, with their leader terms.
        let mut asks: BTreeMap<NodeId, Vec<(Arc<PartitionReplica>, u64)>> = BTreeMap::new();
        let mut candidates = Vec::new();
        for replica in node.replicas() {
            if replica.is_quiet() || replica.idle_ms() < after {
                continue;
            }
            let Some((term, followers)) = quiescible(&replica) else {
                continue;
            };
            if followers.iter().any(|f| node.liveness().is_down(*f)) {
                continue;
            }
            for follower in &followers {
                asks.entry(*follower)
                    .or_default()
                    .push((Arc::clone(&replica), term));
            }
            candidates.push((replica, followers.len()));
        }
        if candidates.is_empty() {
            continue;
        }
        let mut agreed: HashMap<GroupId, usize> = HashMap::new();
        let addresses = node.peer_addresses();
        for (follower, groups) in asks {
            let Some(addr) = addresses.get(&follower) else {
                continue;
            };
            let request = pb::RaftQuiesceRequest {
                target: follower,
                leader: node.node_id(),
                groups: groups
                    .iter()
                    .map(|(r, term)| pb::RaftQuiesceGroup {
                        group: r.group(),
                        term: *term,
                    })
                    .collect(),
            };
            if node.pool().faults().verdict(follower) == Verdict::Drop {
                continue;
            }
            let Ok(peer) = node.pool().peer(follower, addr) else {
                continue;
            };
            let mut client = peer.client.clone();
            let mut call = tonic::Request::new(request);
            call.set_timeout(PING_TIMEOUT);
            if let Ok(response) = client.quiesce(call).await {
                for group in response.into_inner().quiesced {
                    *agreed.entry(group).or_default() += 1;
                }
            }
        }
        for (replica, followers) in candidates {
            // Quiet only if nothing happened meanwhile and every follower agreed.
            if agreed.get(&replica.group()).copied().unwrap_or(0) == followers
                && replica.idle_ms() >= after
                && quiescible(&replica).is_some()
            {
                replica.quiesce();
            }
        }
    }
}

/// For a leader whose followers hold everything and whose membership is settled: its
/// term and the followers.
fn quiescible(replica: &PartitionReplica) -> Option<(u64, Vec<NodeId>)> {
    use openraft::async_runtime::WatchReceiver;
    let metrics = replica.raft().metrics().borrow_watched().clone();
    if metrics.state != openraft::ServerState::Leader {
        return None;
    }
    let last = metrics.last_log_index?;
    let committed = metrics.cluster_committed.map(|c| c.index)?;
    if committed != last
        || metrics.membership_config.log_id() != metrics.committed_membership_config.log_id()
    {
        return None;
    }
    let replication = metrics.replication.as_ref()?;
    let mut followers = Vec::new();
    for (node, matched) in replication {
        if *node == metrics.id {
            continue;
        }
        if matched.map(|m| m.index) != Some(last) {
            return None;
        }
        followers.push(*node);
    }
    Some((metrics.current_term, followers))
}
