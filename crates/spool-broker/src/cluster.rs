//! The cluster as operators see it: brokers, the controller leader, and how partitions
//! and leadership spread over brokers.

use crate::broker::Broker;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSummary {
    pub cluster_id: String,
    pub controller_leader: Option<u64>,
    pub controller_voters: Vec<u64>,
    pub brokers: Vec<BrokerSummary>,
    pub metadata_epoch: u64,
    /// Partitions with fewer in-sync replicas than replicas.
    pub under_replicated: u32,
    /// Partitions being moved.
    pub moving: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerSummary {
    pub id: u64,
    pub address: String,
    pub rack: Option<String>,
    pub fenced: bool,
    pub draining: bool,
    pub replicas: u32,
    pub leaders: u32,
}

impl Broker {
    pub fn cluster_summary(&self) -> ClusterSummary {
        let state = self.controller.current();
        let load = state.load();
        let mut under_replicated = 0;
        let mut moving = 0;
        for (_, _, p) in state.partitions() {
            if p.is_reassigning() {
                moving += 1;
            }
            if p.leader.is_none() || p.in_sync.len() < p.target().len() {
                under_replicated += 1;
            }
        }
        ClusterSummary {
            cluster_id: state.cluster_id.clone(),
            controller_leader: self.controller.leader().map(|(id, _)| id),
            controller_voters: self.options.controller_voters.keys().copied().collect(),
            brokers: state
                .brokers
                .values()
                .map(|b| {
                    let l = load.get(&b.id).copied().unwrap_or_default();
                    BrokerSummary {
                        id: b.id,
                        address: b.client_address().to_string(),
                        rack: b.rack.clone(),
                        fenced: b.fenced,
                        draining: b.draining,
                        replicas: l.replicas,
                        leaders: l.leaders,
                    }
                })
                .collect(),
            metadata_epoch: state.offset.max(0) as u64,
            under_replicated,
            moving,
        }
    }
}
