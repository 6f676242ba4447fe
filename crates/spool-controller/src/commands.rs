//! What the controller leader decides: each command reads the applied state, checks the
//! request against it, and writes records. Commands run one at a time (`decide`).

use std::collections::BTreeMap;
use std::time::Instant;

use spool_types::TopicName;

use crate::controller::Controller;
use crate::error::ControllerError;
use crate::placement::{Candidate, place_partitions};
use crate::records::MetadataRecord;
use crate::state::{
    BrokerId, BrokerRecord, ClusterState, Incarnation, LeaderReport, PartitionRecord, ReplicaRef,
    TopicRecord,
};

/// A topic to create.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    /// 0 takes the default.
    pub partitions: u32,
    /// 0 takes the default.
    pub replication_factor: u32,
    pub configs: BTreeMap<String, String>,
    /// Replicas per partition, the preferred leader first; empty to let the controller
    /// place them.
    pub assignments: Vec<Vec<BrokerId>>,
    pub validate_only: bool,
}

/// A change to the metadata, as any node takes it and the leader carries it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    CreateTopic(NewTopic),
    DeleteTopic {
        name: String,
    },
    SetTopicConfigs {
        name: String,
        configs: BTreeMap<String, String>,
    },
    CreatePartitions {
        name: String,
        total: u32,
    },
    Reassign {
        topic: String,
        partition: u32,
        replicas: Vec<BrokerId>,
    },
    Drain {
        broker: BrokerId,
        drain: bool,
    },
    CompleteReassignment {
        topic: String,
        partition: u32,
        group: u64,
    },
    /// A block of `count` producer ids for `broker`.
    AllocateProducerIds {
        broker: BrokerId,
        count: i64,
        /// A tag the broker picks, to know the recorded block for its own.
        request: u64,
    },
}

/// Most producer ids one block holds.
pub const MAX_PRODUCER_ID_BLOCK: i64 = 1_000_000;

/// A broker asking to join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub broker: BrokerId,
    pub incarnation: Incarnation,
    /// Its cluster listener's address.
    pub address: String,
    /// Its client listener's address.
    pub client_address: String,
    /// Its external client listener's address, if it has one.
    pub external_address: Option<String>,
    pub rack: Option<String>,
}

/// What a heartbeat is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatReply {
    /// Register again: unknown, fenced, or another incarnation is registered.
    pub register: bool,
    pub metadata_offset: i64,
}

impl Controller {
    /// Carries out a command on this node, which must lead the controller.
    pub async fn execute_local(&self, command: Command) -> Result<i64, ControllerError> {
        let _turn = self.decide.lock().await;
        let state = self.ready_to_decide().await?;
        let records = match command {
            Command::CreateTopic(topic) => {
                let validate_only = topic.validate_only;
                let record = self.new_topic(&state, topic)?;
                if validate_only {
                    return Ok(state.offset);
                }
                vec![MetadataRecord::CreateTopic { topic: record }]
            }
            Command::DeleteTopic { name } => {
                let topic = known_topic(&state, &name)?;
                vec![MetadataRecord::DeleteTopic {
                    name,
                    id: topic.id.clone(),
                }]
            }
            Command::SetTopicConfigs { name, configs } => {
                let topic = known_topic(&state, &name)?;
                (self.options.validate_configs)(&configs)
                    .map_err(|reason| ControllerError::InvalidConfig { reason })?;
                vec![MetadataRecord::SetTopicConfigs {
                    name,
                    id: topic.id.clone(),
                    configs,
                }]
            }
            Command::CreatePartitions { name, total } => {
                vec![self.more_partitions(&state, &name, total)?]
            }
            Command::Reassign {
                topic,
                partition,
                replicas,
            } => match reassignment(&state, &topic, partition, &replicas)? {
                Some(record) => vec![record],
                None => return Ok(state.offset),
            },
            Command::Drain { broker, drain } => {
                if !state.brokers.contains_key(&broker) {
                    return Err(ControllerError::BrokerNotAvailable { id: broker });
                }
                if drain {
                    self.check_drain(&state, broker)?;
                }
                vec![MetadataRecord::SetDraining {
                    id: broker,
                    draining: drain,
                }]
            }
            Command::CompleteReassignment {
                topic,
                partition,
                group,
            } => {
                let p = known_partition(&state, &topic, partition)?;
                if p.group != group || !p.is_reassigning() {
                    return Ok(state.offset);
                }
                vec![MetadataRecord::CompleteReassignment {
                    topic,
                    partition,
                    group,
                }]
            }
            Command::AllocateProducerIds {
                broker,
                count,
                request,
            } => {
                if !(1..=MAX_PRODUCER_ID_BLOCK).contains(&count) {
                    return Err(ControllerError::InvalidRequest {
                        reason: format!(
                            "a producer id block holds 1 to {MAX_PRODUCER_ID_BLOCK} ids, not {count}"
                        ),
                    });
                }
                vec![MetadataRecord::AllocateProducerIds {
                    broker,
                    first: state.next_producer_id,
                    count,
                    request,
                }]
            }
        };
        self.propose(records).await
    }

    /// Registers a broker (a new one, a new incarnation of one, or a fenced one back).
    pub async fn register_local(&self, registration: Registration) -> Result<i64, ControllerError> {
        let _turn = self.decide.lock().await;
        let state = self.ready_to_decide().await?;
        let lease_live = self.lease_live(registration.broker);
        if let Some(existing) = state.brokers.get(&registration.broker) {
            if existing.incarnation != registration.incarnation && !existing.fenced && lease_live {
                return Err(ControllerError::BrokerIdInUse {
                    id: registration.broker,
                    address: existing.address.clone(),
                });
            }
            let unchanged = existing.incarnation == registration.incarnation
                && !existing.fenced
                && existing.address == registration.address
                && existing.client_address == registration.client_address
                && existing.external_address == registration.external_address
                && existing.rack == registration.rack;
            if unchanged {
                self.renew_lease(registration.broker);
                return Ok(state.offset);
            }
        }
        let draining = state
            .brokers
            .get(&registration.broker)
            .is_some_and(|b| b.incarnation == registration.incarnation && b.draining);
        let offset = self
            .propose(vec![MetadataRecord::RegisterBroker {
                broker: BrokerRecord {
                    id: registration.broker,
                    incarnation: registration.incarnation,
                    address: registration.address,
                    client_address: registration.client_address,
                    external_address: registration.external_address,
                    rack: registration.rack,
                    fenced: false,
                    draining,
                },
            }])
            .await?;
        self.renew_lease(registration.broker);
        tracing::info!(
            broker = registration.broker,
            incarnation = registration.incarnation,
            "broker registered"
        );
        Ok(offset)
    }

    /// Renews a broker's lease and records leaders it reports.
    pub async fn heartbeat_local(
        &self,
        broker: BrokerId,
        incarnation: Incarnation,
        reports: Vec<LeaderReport>,
        stopping: bool,
    ) -> Result<HeartbeatReply, ControllerError> {
        if !self.is_leader() {
            return Err(self.not_controller());
        }
        let state = self.current();
        let registered = state
            .brokers
            .get(&broker)
            .is_some_and(|b| b.incarnation == incarnation && !b.fenced);
        if stopping {
            // Its lease ends: the next round fences it, and no leadership is handed to it.
            // (A restart keeps the incarnation: a late word from the stopped process can
            // fence the new one, which then registers again within a heartbeat.)
            if registered {
                self.leases.lock().renewed.remove(&broker);
            }
            return Ok(HeartbeatReply {
                register: false,
                metadata_offset: state.offset,
            });
        }
        if !registered {
            return Ok(HeartbeatReply {
                register: true,
                metadata_offset: state.offset,
            });
        }
        self.renew_lease(broker);
        let news: Vec<LeaderReport> = reports
            .into_iter()
            .filter(|r| r.leader == broker && is_news(&state, r))
            .collect();
        let metadata_offset = if news.is_empty() {
            state.offset
        } else {
            let _turn = self.decide.lock().await;
            self.ready_to_decide().await?;
            self.propose(vec![MetadataRecord::SetLeaders { leaders: news }])
                .await?
        };
        Ok(HeartbeatReply {
            register: false,
            metadata_offset,
        })
    }

    pub(crate) fn renew_lease(&self, broker: BrokerId) {
        self.leases.lock().renewed.insert(broker, Instant::now());
    }

    pub(crate) fn lease_live(&self, broker: BrokerId) -> bool {
        self.leases
            .lock()
            .renewed
            .get(&broker)
            .is_some_and(|at| at.elapsed() < self.options.session_timeout)
    }

    /// Brokers that may take new replicas: live and not draining.
    pub(crate) fn candidates(&self, state: &ClusterState) -> Vec<Candidate> {
        state
            .live_brokers()
            .filter(|b| !b.draining)
            .map(|b| Candidate {
                id: b.id,
                rack: b.rack.clone(),
            })
            .collect()
    }

    fn new_topic(
        &self,
        state: &ClusterState,
        topic: NewTopic,
    ) -> Result<TopicRecord, ControllerError> {
        let name = TopicName::new(&topic.name)
            .map_err(|e| ControllerError::InvalidTopic {
                reason: e.to_string(),
            })?
            .as_str()
            .to_string();
        if state.topics.contains_key(&name) {
            return Err(ControllerError::TopicExists { topic: name });
        }
        (self.options.validate_configs)(&topic.configs)
            .map_err(|reason| ControllerError::InvalidConfig { reason })?;
        let defaults = self.options.topic_defaults;
        let candidates = self.candidates(state);
        let placed = if topic.assignments.is_empty() {
            let partitions = if topic.partitions == 0 {
                defaults.partitions
            } else {
                topic.partitions
            };
            self.check_partition_count(partitions)?;
            let replication_factor = match (topic.replication_factor, defaults.replication_factor) {
                (0, 0) => (candidates.len() as u32).clamp(1, 3),
                (0, d) => d,
                (r, _) => r,
            };
            place_partitions(
                &candidates,
                &mut state.load(),
                partitions,
                replication_factor,
            )?
        } else {
            check_assignments(state, &topic.assignments)?;
            self.check_partition_count(topic.assignments.len() as u32)?;
            topic.assignments.clone()
        };
        self.check_broker_capacity(state, &placed)?;
        let replication_factor = placed.first().map_or(1, |r| r.len() as u32);
        let partitions = self.partition_records(state, state.next_group.max(1), &placed);
        Ok(TopicRecord {
            name,
            id: random_id(),
            replication_factor,
            configs: topic.configs,
            partitions,
        })
    }

    fn partition_records(
        &self,
        state: &ClusterState,
        first_group: u64,
        placed: &[Vec<BrokerId>],
    ) -> Vec<PartitionRecord> {
        placed
            .iter()
            .enumerate()
            .map(|(i, brokers)| {
                let replicas: Vec<ReplicaRef> = brokers
                    .iter()
                    .filter_map(|b| state.replica_ref(*b))
                    .collect();
                PartitionRecord {
                    group: first_group + i as u64,
                    founders: replicas.clone(),
                    replicas,
                    adding: Vec::new(),
                    removing: Vec::new(),
                    leader: None,
                    leader_term: 0,
                    in_sync: Vec::new(),
                    replication_factor: 0,
                    rebuild: Vec::new(),
                }
            })
            .collect()
    }

    /// Refuses a drain that could not finish: some partition on the broker would have no
    /// other broker to move to.
    fn check_drain(&self, state: &ClusterState, broker: BrokerId) -> Result<(), ControllerError> {
        let candidates: Vec<Candidate> = self
            .candidates(state)
            .into_iter()
            .filter(|c| c.id != broker)
            .collect();
        let stuck = state
            .partitions()
            .filter(|(_, _, p)| p.target().iter().any(|r| r.broker == broker))
            .filter(|(_, _, p)| {
                let brokers = p.brokers();
                !candidates.iter().any(|c| !brokers.contains(&c.id))
            })
            .count();
        if stuck > 0 {
            return Err(ControllerError::InvalidRequest {
                reason: format!(
                    "broker {broker} cannot be drained: {stuck} of its partitions have no other \
                     live broker to move to (add a broker, or lower their replication)"
                ),
            });
        }
        Ok(())
    }

    /// Refuses new replicas that would put more than `max_replicas_per_broker` on a broker.
    fn check_broker_capacity(
        &self,
        state: &ClusterState,
        placed: &[Vec<BrokerId>],
    ) -> Result<(), ControllerError> {
        let max = self.options.topic_defaults.max_replicas_per_broker;
        let mut load = state.load();
        for broker in placed.iter().flatten() {
            load.entry(*broker).or_default().replicas += 1;
        }
        // Only brokers taking new replicas: one already past the limit (after moves, or a
        // lowered limit) must not block what goes elsewhere.
        let taking: std::collections::BTreeSet<BrokerId> =
            placed.iter().flatten().copied().collect();
        match load
            .iter()
            .find(|(id, l)| taking.contains(id) && l.replicas > max)
        {
            Some((broker, l)) => Err(ControllerError::InvalidPartitions {
                requested: placed.len() as u32,
                reason: format!(
                    "broker {broker} would hold {} partition replicas; a broker holds at most \
                     {max} (max_replicas_per_broker)",
                    l.replicas
                ),
            }),
            None => Ok(()),
        }
    }

    fn check_partition_count(&self, count: u32) -> Result<(), ControllerError> {
        let max = self.options.topic_defaults.max_partitions;
        if count == 0 || count > max {
            return Err(ControllerError::InvalidPartitions {
                requested: count,
                reason: format!("a topic has between 1 and {max} partitions"),
            });
        }
        Ok(())
    }

    fn more_partitions(
        &self,
        state: &ClusterState,
        name: &str,
        total: u32,
    ) -> Result<MetadataRecord, ControllerError> {
        let topic = known_topic(state, name)?;
        let current = topic.partitions.len() as u32;
        if total <= current {
            return Err(ControllerError::InvalidPartitions {
                requested: total,
                reason: format!("the topic has {current} already; partitions can only be added"),
            });
        }
        self.check_partition_count(total)?;
        let placed = place_partitions(
            &self.candidates(state),
            &mut state.load(),
            total - current,
            topic.replication_factor,
        )?;
        self.check_broker_capacity(state, &placed)?;
        Ok(MetadataRecord::AddPartitions {
            name: name.to_string(),
            id: topic.id.clone(),
            partitions: self.partition_records(state, state.next_group.max(1), &placed),
        })
    }
}

/// Whether a report tells the controller something it does not know.
fn is_news(state: &ClusterState, report: &LeaderReport) -> bool {
    let Some(p) = state
        .topics
        .get(&report.topic)
        .and_then(|t| t.partitions.get(report.partition as usize))
        .filter(|p| p.group == report.group)
    else {
        return false;
    };
    report.term > p.leader_term
        || (report.term == p.leader_term
            && (p.leader != Some(report.leader) || p.in_sync != report.in_sync))
}

fn known_topic<'a>(
    state: &'a ClusterState,
    name: &str,
) -> Result<&'a TopicRecord, ControllerError> {
    state
        .topics
        .get(name)
        .ok_or_else(|| ControllerError::UnknownTopic {
            topic: name.to_string(),
        })
}

fn known_partition<'a>(
    state: &'a ClusterState,
    topic: &str,
    partition: u32,
) -> Result<&'a PartitionRecord, ControllerError> {
    known_topic(state, topic)?
        .partitions
        .get(partition as usize)
        .ok_or_else(|| ControllerError::UnknownPartition {
            topic: topic.to_string(),
            partition,
        })
}

fn check_assignments(
    state: &ClusterState,
    assignments: &[Vec<BrokerId>],
) -> Result<(), ControllerError> {
    let width = assignments.first().map_or(0, Vec::len);
    for replicas in assignments {
        check_replicas(state, replicas)?;
        if replicas.len() != width {
            return Err(ControllerError::InvalidRequest {
                reason: "every partition of a topic needs the same number of replicas".into(),
            });
        }
    }
    Ok(())
}

fn check_replicas(state: &ClusterState, replicas: &[BrokerId]) -> Result<(), ControllerError> {
    if replicas.is_empty() {
        return Err(ControllerError::InvalidRequest {
            reason: "a partition needs at least one replica".into(),
        });
    }
    let mut seen = std::collections::BTreeSet::new();
    for id in replicas {
        if !seen.insert(id) {
            return Err(ControllerError::InvalidRequest {
                reason: format!("broker {id} is named twice"),
            });
        }
        if state.brokers.get(id).is_none_or(|b| b.fenced) {
            return Err(ControllerError::BrokerNotAvailable { id: *id });
        }
    }
    Ok(())
}

/// The record that moves a partition to `brokers` (or `None` if it is there already).
/// A replica of a broker's earlier incarnation is kept as it is: the repair pass
/// replaces it.
pub(crate) fn reassignment(
    state: &ClusterState,
    topic: &str,
    partition: u32,
    brokers: &[BrokerId],
) -> Result<Option<MetadataRecord>, ControllerError> {
    let current = known_partition(state, topic, partition)?;
    check_replicas(state, brokers)?;
    if current.is_reassigning() {
        return Err(ControllerError::InvalidRequest {
            reason: format!("{topic}-{partition} is being moved already; wait for it to finish"),
        });
    }
    let target: Vec<ReplicaRef> = brokers
        .iter()
        .filter_map(|b| {
            current
                .replicas
                .iter()
                .find(|r| r.broker == *b)
                .copied()
                .or_else(|| state.replica_ref(*b))
        })
        .collect();
    if target == current.replicas {
        return Ok(None);
    }
    let adding: Vec<ReplicaRef> = target
        .iter()
        .filter(|r| !current.replicas.contains(r))
        .copied()
        .collect();
    let removing: Vec<ReplicaRef> = current
        .replicas
        .iter()
        .filter(|r| !target.contains(r))
        .copied()
        .collect();
    let mut replicas = target;
    replicas.extend(removing.iter().copied());
    Ok(Some(MetadataRecord::Reassign {
        topic: topic.to_string(),
        partition,
        group: current.group,
        replicas,
        adding,
        removing,
        repair: false,
    }))
}

/// 128 random bits as hex, from the standard library's OS-seeded hasher keys.
pub fn random_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let state = std::collections::hash_map::RandomState::new();
    let mut a = state.build_hasher();
    a.write_u64(1);
    let mut b = state.build_hasher();
    b.write_u64(2);
    format!("{:016x}{:016x}", a.finish(), b.finish())
}
