//! The cluster's metadata: what every node rebuilds by applying the metadata log. Pure
//! data and a deterministic `apply`; the leader checks commands before it writes them,
//! so a record that no longer fits (a topic deleted meanwhile) is skipped the same way on
//! every node.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::records::MetadataRecord;

/// A broker id.
pub type BrokerId = u64;

/// One life of a broker's data directory: a wiped directory starts a new incarnation,
/// whose replicas are rebuilt from the others instead of being trusted.
pub type Incarnation = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaRef {
    pub broker: BrokerId,
    pub incarnation: Incarnation,
}

/// Fields a later version adds are skipped when read (not refused), so that a node can be
/// rolled back after a newer one registered: a broker's record is what other nodes learn of
/// it, and each new listener or attribute lands here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRecord {
    pub id: BrokerId,
    pub incarnation: Incarnation,
    /// host:port of the broker's cluster listener: Raft, the controller, ReplicaAdmin.
    pub address: String,
    /// host:port clients reach it at; empty in records written before the two listeners
    /// were apart, when it was `address`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_address: String,
    /// host:port of its external client listener, for clients outside the nodes' own
    /// network (Kafka's advertised listeners).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack: Option<String>,
    /// Its lease lapsed: it gets no new replicas and no leadership until it registers
    /// again.
    pub fenced: bool,
    /// Being drained: its replicas are moving elsewhere and it gets no new ones.
    #[serde(default)]
    pub draining: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionRecord {
    /// The partition's Raft group, unique in the cluster and never reused.
    pub group: u64,
    /// The replicas, the preferred leader first. During a reassignment this holds the
    /// old and new replicas alike.
    pub replicas: Vec<ReplicaRef>,
    /// The replicas the group was created with, which start it with this membership;
    /// empty once the group has changed membership (a replica opened later joins as a
    /// learner).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub founders: Vec<ReplicaRef>,
    /// Replicas being added by a reassignment (also in `replicas`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adding: Vec<ReplicaRef>,
    /// Replicas being removed by a reassignment (still in `replicas`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removing: Vec<ReplicaRef>,
    /// The leader last reported, and its Raft term.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<BrokerId>,
    #[serde(default)]
    pub leader_term: u64,
    /// Voters holding every committed entry, as the leader last reported them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub in_sync: Vec<BrokerId>,
    /// Replicas this partition keeps, when an operator's reassignment made it differ
    /// from the topic's replication factor (0: the topic's).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub replication_factor: u32,
    /// Brokers whose replica of an earlier incarnation was removed: the new replica goes
    /// back to them first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rebuild: Vec<BrokerId>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl PartitionRecord {
    pub fn preferred_leader(&self) -> Option<BrokerId> {
        self.target().first().map(|r| r.broker)
    }

    /// The replicas once any reassignment completes.
    pub fn target(&self) -> Vec<ReplicaRef> {
        self.replicas
            .iter()
            .filter(|r| !self.removing.contains(r))
            .copied()
            .collect()
    }

    pub fn brokers(&self) -> Vec<BrokerId> {
        self.replicas.iter().map(|r| r.broker).collect()
    }

    pub fn is_reassigning(&self) -> bool {
        !self.adding.is_empty() || !self.removing.is_empty()
    }

    pub fn has(&self, replica: ReplicaRef) -> bool {
        self.replicas.contains(&replica)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicRecord {
    pub name: String,
    /// Distinguishes the topic from an earlier one of the same name.
    pub id: String,
    pub replication_factor: u32,
    pub configs: BTreeMap<String, String>,
    pub partitions: Vec<PartitionRecord>,
}

/// A leader a broker reported for a partition it leads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaderReport {
    pub topic: String,
    pub partition: u32,
    pub group: u64,
    pub leader: BrokerId,
    pub term: u64,
    #[serde(default)]
    pub in_sync: Vec<BrokerId>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterState {
    /// Set once, by the first controller leader.
    pub cluster_id: String,
    /// Written as a list: each record holds its id, and a checkpoint, read through the
    /// record enum's tag, could not turn JSON object keys back into numbers.
    #[serde(with = "brokers_as_list")]
    pub brokers: BTreeMap<BrokerId, BrokerRecord>,
    pub topics: BTreeMap<String, TopicRecord>,
    /// The next Raft group id a partition gets (0 is the controller's own group).
    pub next_group: u64,
    /// The first producer id not yet given to any broker.
    #[serde(default)]
    pub next_producer_id: i64,
    /// The block of producer ids each broker was given last.
    #[serde(default, with = "producer_blocks_as_list")]
    pub producer_id_blocks: BTreeMap<BrokerId, ProducerIdBlock>,
    /// The offset after the last record applied: the metadata epoch clients see.
    #[serde(skip)]
    pub offset: i64,
}

impl BrokerRecord {
    /// The address clients reach this broker at.
    pub fn client_address(&self) -> &str {
        if self.client_address.is_empty() {
            &self.address
        } else {
            &self.client_address
        }
    }
}

impl ClusterState {
    /// Applies one record. Records the leader wrote against an older state may no longer
    /// fit; they are skipped, identically on every node.
    pub fn apply(&mut self, record: &MetadataRecord) {
        match record {
            MetadataRecord::Checkpoint { state } => {
                let offset = self.offset;
                *self = (**state).clone();
                self.offset = offset;
            }
            MetadataRecord::InitCluster { cluster_id } => {
                if self.cluster_id.is_empty() {
                    self.cluster_id = cluster_id.clone();
                    self.next_group = self.next_group.max(1);
                }
            }
            MetadataRecord::RegisterBroker { broker } => {
                self.brokers.insert(broker.id, broker.clone());
            }
            MetadataRecord::FenceBroker { id, incarnation } => {
                if let Some(b) = self.brokers.get_mut(id)
                    && b.incarnation == *incarnation
                {
                    b.fenced = true;
                }
            }
            MetadataRecord::SetDraining { id, draining } => {
                if let Some(b) = self.brokers.get_mut(id) {
                    b.draining = *draining;
                }
            }
            MetadataRecord::UnregisterBroker { id } => {
                self.brokers.remove(id);
            }
            MetadataRecord::CreateTopic { topic } => {
                if !self.topics.contains_key(&topic.name) {
                    self.bump_groups(&topic.partitions);
                    self.topics.insert(topic.name.clone(), topic.clone());
                }
            }
            MetadataRecord::DeleteTopic { name, id } => {
                if self.topics.get(name).is_some_and(|t| &t.id == id) {
                    self.topics.remove(name);
                }
            }
            MetadataRecord::SetTopicConfigs { name, id, configs } => {
                if let Some(t) = self.topic_mut(name, id) {
                    t.configs = configs.clone();
                }
            }
            MetadataRecord::AddPartitions {
                name,
                id,
                partitions,
            } => {
                let Some(t) = self.topics.get_mut(name).filter(|t| &t.id == id) else {
                    return;
                };
                t.partitions.extend(partitions.iter().cloned());
                self.bump_groups(partitions);
            }
            MetadataRecord::Reassign {
                topic,
                partition,
                group,
                replicas,
                adding,
                removing,
                repair,
            } => {
                let current: BTreeMap<BrokerId, Incarnation> = self
                    .brokers
                    .values()
                    .map(|b| (b.id, b.incarnation))
                    .collect();
                if let Some(p) = self.partition_mut(topic, *partition, *group) {
                    p.replicas = replicas.clone();
                    p.adding = adding.clone();
                    p.removing = removing.clone();
                    p.founders.clear();
                    if !repair {
                        p.replication_factor = p.target().len() as u32;
                    }
                    for stale in removing {
                        if current
                            .get(&stale.broker)
                            .is_some_and(|i| *i != stale.incarnation)
                            && !p.rebuild.contains(&stale.broker)
                        {
                            p.rebuild.push(stale.broker);
                        }
                    }
                    p.rebuild.retain(|b| !adding.iter().any(|a| a.broker == *b));
                }
            }
            MetadataRecord::CompleteReassignment {
                topic,
                partition,
                group,
            } => {
                if let Some(p) = self.partition_mut(topic, *partition, *group) {
                    p.replicas = p.target();
                    p.adding.clear();
                    p.removing.clear();
                }
            }
            MetadataRecord::SetLeaders { leaders } => {
                for report in leaders {
                    if let Some(p) =
                        self.partition_mut(&report.topic, report.partition, report.group)
                        && report.term >= p.leader_term
                    {
                        p.leader = Some(report.leader);
                        p.leader_term = report.term;
                        p.in_sync = report.in_sync.clone();
                    }
                }
            }
            MetadataRecord::AllocateProducerIds {
                broker,
                first,
                count,
                request,
            } => {
                // A block decided against an older state would overlap one given since.
                if *first >= self.next_producer_id && *count > 0 {
                    self.next_producer_id = first + count;
                    self.producer_id_blocks.insert(
                        *broker,
                        ProducerIdBlock {
                            first: *first,
                            count: *count,
                            request: *request,
                        },
                    );
                }
            }
        }
    }

    fn bump_groups(&mut self, partitions: &[PartitionRecord]) {
        if let Some(top) = partitions.iter().map(|p| p.group).max() {
            self.next_group = self.next_group.max(top + 1);
        }
    }

    fn topic_mut(&mut self, name: &str, id: &str) -> Option<&mut TopicRecord> {
        self.topics.get_mut(name).filter(|t| t.id == id)
    }

    fn partition_mut(
        &mut self,
        topic: &str,
        partition: u32,
        group: u64,
    ) -> Option<&mut PartitionRecord> {
        self.topics
            .get_mut(topic)?
            .partitions
            .get_mut(partition as usize)
            .filter(|p| p.group == group)
    }

    /// Brokers that take new replicas and leadership.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerRecord> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    /// The current replica reference of a broker.
    pub fn replica_ref(&self, broker: BrokerId) -> Option<ReplicaRef> {
        self.brokers.get(&broker).map(|b| ReplicaRef {
            broker,
            incarnation: b.incarnation,
        })
    }

    pub fn address_of(&self, broker: BrokerId) -> Option<&str> {
        self.brokers.get(&broker).map(|b| b.address.as_str())
    }

    /// The address clients reach a broker at.
    pub fn client_address_of(&self, broker: BrokerId) -> Option<&str> {
        self.brokers.get(&broker).map(BrokerRecord::client_address)
    }

    /// The address clients of the external listener reach `broker` at, if it has one.
    pub fn external_address_of(&self, broker: BrokerId) -> Option<&str> {
        self.brokers.get(&broker)?.external_address.as_deref()
    }

    /// Every partition, with its topic.
    pub fn partitions(&self) -> impl Iterator<Item = (&TopicRecord, u32, &PartitionRecord)> {
        self.topics.values().flat_map(|t| {
            t.partitions
                .iter()
                .enumerate()
                .map(move |(i, p)| (t, i as u32, p))
        })
    }

    /// Replicas and preferred leaderships per broker (live or not).
    pub fn load(&self) -> BTreeMap<BrokerId, BrokerLoad> {
        let mut load: BTreeMap<BrokerId, BrokerLoad> = self
            .brokers
            .keys()
            .map(|id| (*id, BrokerLoad::default()))
            .collect();
        for (_, _, p) in self.partitions() {
            let target = p.target();
            for (i, r) in target.iter().enumerate() {
                let entry = load.entry(r.broker).or_default();
                entry.replicas += 1;
                if i == 0 {
                    entry.preferred += 1;
                }
            }
            if let Some(leader) = p.leader {
                load.entry(leader).or_default().leaders += 1;
            }
        }
        load
    }

    /// Brokers named by some partition's replicas.
    pub fn brokers_in_use(&self) -> BTreeSet<BrokerId> {
        self.partitions()
            .flat_map(|(_, _, p)| p.replicas.iter().map(|r| r.broker))
            .collect()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BrokerLoad {
    pub replicas: u32,
    /// Partitions whose preferred leader it is.
    pub preferred: u32,
    /// Partitions it leads, as reported.
    pub leaders: u32,
}

mod brokers_as_list {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer};

    use super::{BrokerId, BrokerRecord};

    pub fn serialize<S: Serializer>(
        brokers: &BTreeMap<BrokerId, BrokerRecord>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(brokers.values())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<BrokerId, BrokerRecord>, D::Error> {
        let list = Vec::<BrokerRecord>::deserialize(deserializer)?;
        Ok(list.into_iter().map(|b| (b.id, b)).collect())
    }
}

/// Producer ids `[first, first + count)`, given to one broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerIdBlock {
    pub first: i64,
    pub count: i64,
    /// The tag of the request it answered.
    pub request: u64,
}

/// Producer id blocks as a list of (broker, block): JSON object keys are strings, which
/// a checkpoint read through the record enum's tag could not turn back into numbers.
mod producer_blocks_as_list {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{BrokerId, ProducerIdBlock};

    pub fn serialize<S: Serializer>(
        blocks: &BTreeMap<BrokerId, ProducerIdBlock>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let list: Vec<(BrokerId, ProducerIdBlock)> =
            blocks.iter().map(|(id, block)| (*id, *block)).collect();
        list.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<BrokerId, ProducerIdBlock>, D::Error> {
        let list = Vec::<(BrokerId, ProducerIdBlock)>::deserialize(deserializer)?;
        Ok(list.into_iter().collect())
    }
}
