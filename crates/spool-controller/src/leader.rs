//! The controller leader's standing duties, a few times a second: name the cluster,
//! fence brokers whose lease lapsed, add brokers to the metadata group as learners,
//! repair replicas of wiped brokers, move replicas off draining brokers, write
//! checkpoints of the metadata, and hand leadership back to preferred leaders, a few
//! partitions at a time.

use std::sync::Weak;
use std::time::{Duration, Instant};

use crate::commands::random_id;
use crate::controller::Controller;
use crate::error::ControllerError;
use crate::placement::{Candidate, replacement};
use crate::records::MetadataRecord;
use crate::state::{ClusterState, ReplicaRef};

const TICK: Duration = Duration::from_millis(250);
/// Partitions moving at once, cluster-wide.
const MAX_MOVES: usize = 16;
/// Leadership transfers asked for per rebalancing round.
const TRANSFERS_PER_ROUND: usize = 16;
const REBALANCE_EVERY: Duration = Duration::from_secs(1);

pub(crate) async fn run(controller: Weak<Controller>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_rebalance = Instant::now();
    loop {
        tick.tick().await;
        let Some(controller) = controller.upgrade() else {
            return;
        };
        if !controller.is_leader() {
            controller.leases.lock().term = None;
            continue;
        }
        if let Err(error) = controller.lead_once().await {
            tracing::debug!(%error, "controller duties deferred");
        }
        if last_rebalance.elapsed() >= REBALANCE_EVERY {
            last_rebalance = Instant::now();
            controller.rebalance_leaders().await;
        }
    }
}

impl Controller {
    async fn lead_once(&self) -> Result<(), ControllerError> {
        let state = {
            let _turn = self.decide.lock().await;
            let state = self.ready_to_decide().await?;
            self.start_leases(&state);
            let mut records = Vec::new();
            if state.cluster_id.is_empty() {
                records.push(MetadataRecord::InitCluster {
                    cluster_id: random_id(),
                });
            }
            for broker in state.brokers.values().filter(|b| !b.fenced) {
                if !self.lease_live(broker.id) {
                    tracing::warn!(broker = broker.id, "broker lease lapsed; fencing it");
                    records.push(MetadataRecord::FenceBroker {
                        id: broker.id,
                        incarnation: broker.incarnation,
                    });
                }
            }
            records.extend(plan_moves(&state, &self.candidates(&state)));
            if records.is_empty() {
                self.checkpoint_if_due(&state).await?;
                state
            } else {
                self.propose(records).await?;
                self.current()
            }
        };
        self.add_learners(&state).await;
        Ok(())
    }

    /// Writes the whole state as a checkpoint once enough records follow the last one, so
    /// that every node can remove the log before it. Only when nothing is in flight: the
    /// checkpoint must hold every record written before it.
    async fn checkpoint_if_due(&self, state: &ClusterState) -> Result<(), ControllerError> {
        let due = self
            .progress
            .lock()
            .checkpoint_due(self.options.checkpoint_bytes);
        if !due || state.offset != self.replica.reader().next_offset() {
            return Ok(());
        }
        self.propose(vec![MetadataRecord::Checkpoint {
            state: Box::new(state.clone()),
        }])
        .await?;
        tracing::info!(offset = state.offset, "metadata checkpoint written");
        Ok(())
    }

    /// A new leader gives every broker a full lease: it cannot know when they last
    /// heartbeated to its predecessor.
    fn start_leases(&self, state: &ClusterState) {
        let term = self.replica.term();
        let mut leases = self.leases.lock();
        if leases.term != Some(term) {
            leases.term = Some(term);
            let now = Instant::now();
            leases.renewed = state.brokers.keys().map(|id| (*id, now)).collect();
        }
    }

    /// Every registered broker follows the metadata log: those that are not voters join
    /// as learners.
    async fn add_learners(&self, state: &ClusterState) {
        let (voters, learners) = self.replica.members();
        for broker in state.live_brokers() {
            if voters.contains(&broker.id) || learners.contains(&broker.id) {
                continue;
            }
            if let Err(error) = self
                .replica
                .add_learner(broker.id, broker.address.clone(), false)
                .await
            {
                tracing::debug!(broker = broker.id, %error, "could not add a metadata learner");
                return;
            }
        }
    }

    /// Asks leaders of partitions whose preferred leader is live and in sync to hand
    /// leadership back, a few at a time.
    async fn rebalance_leaders(&self) {
        let state = self.current();
        let mut asked = 0;
        for (topic, partition, p) in state.partitions() {
            if asked >= TRANSFERS_PER_ROUND {
                break;
            }
            let (Some(leader), Some(preferred)) = (p.leader, p.preferred_leader()) else {
                continue;
            };
            if leader == preferred || p.is_reassigning() || !p.in_sync.contains(&preferred) {
                continue;
            }
            let preferred_live = state.brokers.get(&preferred).is_some_and(|b| !b.fenced)
                && self.lease_live(preferred);
            let Some(address) = state.address_of(leader) else {
                continue;
            };
            if !preferred_live {
                continue;
            }
            asked += 1;
            if let Err(error) = self
                .peers
                .transfer_leader(address, &topic.name, partition, preferred)
                .await
            {
                tracing::debug!(topic = %topic.name, partition, %error, "leadership transfer not taken");
            }
        }
    }
}

/// Replica moves to start now: replace replicas of a broker's earlier incarnation, bring
/// partitions back to their replication factor, and move replicas off draining brokers,
/// at most `MAX_MOVES` partitions moving at once.
pub(crate) fn plan_moves(state: &ClusterState, candidates: &[Candidate]) -> Vec<MetadataRecord> {
    let mut moving = state
        .partitions()
        .filter(|(_, _, p)| p.is_reassigning())
        .count();
    let mut load = state.load();
    let mut records = Vec::new();
    for (topic, partition, p) in state.partitions() {
        if moving >= MAX_MOVES {
            break;
        }
        if p.is_reassigning() {
            continue;
        }
        let reassign = |replicas: Vec<ReplicaRef>, adding: Vec<ReplicaRef>, removing| {
            MetadataRecord::Reassign {
                topic: topic.name.clone(),
                partition,
                group: p.group,
                replicas,
                adding,
                removing,
                repair: true,
            }
        };
        // A wiped broker's old replicas go first; the group then counts one short and
        // gets a new replica below, on a later pass.
        let stale: Vec<ReplicaRef> = p
            .replicas
            .iter()
            .filter(|r| state.replica_ref(r.broker) != Some(**r))
            .copied()
            .collect();
        if !stale.is_empty() {
            if stale.len() < p.replicas.len() {
                records.push(reassign(p.replicas.clone(), Vec::new(), stale));
                moving += 1;
            }
            continue;
        }
        let brokers = p.brokers();
        let wanted = match p.replication_factor {
            0 => topic.replication_factor,
            n => n,
        };
        if (brokers.len() as u32) < wanted {
            // A wiped broker gets its replica back; otherwise the least loaded one.
            let back = p
                .rebuild
                .iter()
                .find(|b| !brokers.contains(b) && candidates.iter().any(|c| c.id == **b))
                .copied();
            if let Some(new) = back
                .or_else(|| replacement(candidates, &load, &brokers, u64::MAX))
                .and_then(|b| state.replica_ref(b))
            {
                load.entry(new.broker).or_default().replicas += 1;
                let mut replicas = p.replicas.clone();
                replicas.push(new);
                records.push(reassign(replicas, vec![new], Vec::new()));
                moving += 1;
            }
            continue;
        }
        let draining = p
            .replicas
            .iter()
            .find(|r| state.brokers.get(&r.broker).is_some_and(|b| b.draining))
            .copied();
        if let Some(leaving) = draining {
            let staying: Vec<u64> = brokers
                .iter()
                .copied()
                .filter(|b| *b != leaving.broker)
                .collect();
            if let Some(new) = replacement(candidates, &load, &staying, leaving.broker)
                .and_then(|b| state.replica_ref(b))
            {
                load.entry(new.broker).or_default().replicas += 1;
                // The newcomer takes the leaver's place, preferred leadership included.
                let mut replicas: Vec<ReplicaRef> = p
                    .replicas
                    .iter()
                    .map(|r| if *r == leaving { new } else { *r })
                    .collect();
                replicas.push(leaving);
                records.push(reassign(replicas, vec![new], vec![leaving]));
                moving += 1;
            }
        }
    }
    records
}
