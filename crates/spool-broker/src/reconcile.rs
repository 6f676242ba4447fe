//! Makes this node's replicas match the metadata: opens the replicas placed here (a
//! founding replica starts the group with its founders; a later one joins empty, as a
//! learner), closes and deletes those no longer placed here, applies config changes, and
//! on partition leaders carries out pending moves. It runs on every metadata change and
//! once a second, so a step that failed is tried again.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use spool_controller::{ClusterState, LeaderReport, LeaderSource, ReplicaRef, TopicRecord};
use spool_raft::ReplicaSpec;
use tokio::sync::watch;

use crate::broker::{Broker, TopicState};
use crate::partition::Partition;
use crate::topic_config::TopicConfig;

const RETRY: Duration = Duration::from_secs(1);
/// Replicas of one topic opened at the same time.
const OPEN_AT_ONCE: usize = 32;

pub(crate) async fn run(broker: Weak<Broker>, mut metadata: watch::Receiver<Arc<ClusterState>>) {
    loop {
        let state = metadata.borrow_and_update().clone();
        {
            let Some(broker) = broker.upgrade() else {
                return;
            };
            broker.reconcile(&state).await;
            // Requests waiting for a coordinator look again at the replicas now here.
            broker.groups.coordinators.changed();
            broker.transactions.coordinators.changed();
        }
        tokio::select! {
            changed = metadata.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

impl Broker {
    fn me(&self) -> ReplicaRef {
        ReplicaRef {
            broker: self.options.node_id,
            incarnation: self.identity.lock().incarnation,
        }
    }

    /// One pass: local replicas made to match `state`.
    pub(crate) async fn reconcile(&self, state: &ClusterState) {
        let _turn = self.reconciling.lock().await;
        if *self.closing.borrow() {
            return;
        }
        // Raft reaches each node at its registered cluster address, even in groups whose
        // membership recorded another (a node that moved, or a cluster upgraded from one
        // listener to two).
        self.raft
            .set_peer_addresses(state.brokers.values().map(|b| (b.id, b.address.clone())));
        // Deleting data on the word of stale metadata could lose a replica that a newer
        // record placed here: removals wait until this node has caught up.
        let current = {
            let agent = self.agent.borrow();
            agent.registered && state.offset >= agent.controller_offset
        };
        let old: BTreeMap<String, Arc<TopicState>> = self.topics.read().clone();
        for (name, topic) in &old {
            let gone = state
                .topics
                .get(name)
                .is_none_or(|t| t.id != topic.record.id);
            if gone && (current || state.topics.contains_key(name)) {
                for partition in topic.partitions.iter().flatten() {
                    self.close_replica(partition).await;
                }
                self.topics.write().remove(name);
            }
        }
        for record in state.topics.values() {
            let existing = self.topics.read().get(&record.name).cloned();
            match self.reconcile_topic(state, record, existing, current).await {
                Some(topic) => {
                    self.topics
                        .write()
                        .insert(record.name.clone(), Arc::new(topic));
                }
                None => continue,
            }
        }
        self.start_moves(state);
    }

    async fn reconcile_topic(
        &self,
        state: &ClusterState,
        record: &TopicRecord,
        existing: Option<Arc<TopicState>>,
        current: bool,
    ) -> Option<TopicState> {
        let config = match TopicConfig::resolve(&self.options.topic_defaults, &record.configs) {
            Ok(config) => config,
            Err(error) => {
                tracing::error!(topic = %record.name, %error, "topic configs do not apply here");
                return None;
            }
        };
        let me = self.me();
        let config = &config;
        // Each partition's step, in order; replicas to open are opened several at a time
        // (their files, Raft state and first elections share syncs), so that a topic of
        // thousands of partitions takes seconds rather than minutes.
        let steps = record.partitions.iter().enumerate().map(|(index, p)| {
            let local = existing
                .as_ref()
                .filter(|t| t.record.id == record.id)
                .and_then(|t| t.partitions.get(index).cloned().flatten())
                .filter(|local| local.replica.group() == p.group);
            let placed_here = p.has(me);
            let reconfigure = existing.as_ref().is_some_and(|t| &t.config != config);
            async move {
                match (local, placed_here) {
                    (Some(local), true) => {
                        if reconfigure {
                            self.apply_config(&local, config);
                        }
                        Some(local)
                    }
                    (Some(local), false) if current => {
                        self.close_replica(&local).await;
                        None
                    }
                    (Some(local), false) => Some(local),
                    (None, true) => self.open_replica(state, record, index as u32, config).await,
                    (None, false) => None,
                }
            }
        });
        // Made first: a stream over the closure would not be `Send` for every lifetime.
        let steps: Vec<_> = steps.collect();
        let partitions: Vec<Option<Arc<Partition>>> = futures_util::stream::iter(steps)
            .buffered(OPEN_AT_ONCE)
            .collect()
            .await;
        Some(TopicState {
            record: record.clone(),
            config: *config,
            partitions,
        })
    }

    fn apply_config(&self, partition: &Partition, config: &TopicConfig) {
        if let Err(error) = partition
            .replica
            .set_log_config(config.log_config(self.options.flush))
        {
            tracing::warn!(topic = %partition.topic, partition = partition.index, %error, "could not apply topic configs");
        }
        *partition.retention.lock() = config.retention();
    }

    async fn open_replica(
        &self,
        state: &ClusterState,
        record: &TopicRecord,
        index: u32,
        config: &TopicConfig,
    ) -> Option<Arc<Partition>> {
        let p = &record.partitions[index as usize];
        let dir = self.partition_dir(&record.name, index);
        // A directory naming its group is ours exactly when the group matches (one
        // whose Raft state was lost is rebuilt, not deleted); an older one without the
        // name is ours when the node's Raft state knows the group.
        let stale = dir.exists()
            && spool_raft::group_of_dir(&dir).map_or_else(
                || !self.raft.known_groups().contains(&p.group),
                |group| group != p.group,
            );
        if stale {
            // Left by a topic of the same name that is gone: not ours to reuse.
            tracing::warn!(dir = %dir.display(), "removing a stale partition directory");
            let _ = std::fs::remove_dir_all(&dir);
        }
        let initial_members = if p.founders.contains(&self.me()) {
            p.founders
                .iter()
                .filter_map(|r| Some((r.broker, state.address_of(r.broker)?.to_string())))
                .collect()
        } else {
            BTreeMap::new()
        };
        let preferred = p.preferred_leader() == Some(self.options.node_id);
        let replica = match self
            .raft
            .create_replica(ReplicaSpec {
                group: p.group,
                dir,
                log_config: config.log_config(self.options.flush),
                initial_members,
            })
            .await
        {
            Ok(replica) => replica,
            Err(error) => {
                tracing::warn!(topic = %record.name, partition = index, %error, "could not open a replica");
                return None;
            }
        };
        if preferred && !replica.is_leader() {
            // The preferred leader stands at once instead of waiting out a timeout.
            replica.campaign();
        }
        Some(Arc::new(Partition::new(
            record.name.clone(),
            index,
            replica,
            config.retention(),
        )))
    }

    async fn close_replica(&self, partition: &Partition) {
        tracing::info!(topic = %partition.topic, partition = partition.index, "removing this node's replica");
        if let Err(error) = self
            .raft
            .remove_replica(partition.replica.group(), true)
            .await
        {
            tracing::error!(topic = %partition.topic, partition = partition.index, dir = %partition.replica.dir().display(), %error, "could not delete a replica's data: it stays on disk");
        }
    }

    /// Starts carrying out pending moves of partitions led here.
    fn start_moves(&self, state: &ClusterState) {
        let topics = self.topics.read();
        for (name, topic) in topics.iter() {
            for (index, local) in topic.partitions.iter().enumerate() {
                let Some(local) = local else { continue };
                let Some(record) = state
                    .topics
                    .get(name)
                    .and_then(|t| t.partitions.get(index))
                    .filter(|p| p.is_reassigning() && p.group == local.replica.group())
                else {
                    continue;
                };
                if !local.replica.is_leader() || !self.moving.lock().insert(record.group) {
                    continue;
                }
                let Some(broker) = self.this.upgrade() else {
                    return;
                };
                let (name, record) = (name.clone(), record.clone());
                tokio::spawn(async move {
                    if let Err(error) = broker.carry_out_move(&name, index as u32, &record).await {
                        tracing::info!(topic = %name, partition = index, %error, "move not finished; will retry");
                    }
                    broker.moving.lock().remove(&record.group);
                });
            }
        }
    }
}

impl LeaderSource for Broker {
    fn leader_reports(&self, state: &ClusterState) -> Vec<LeaderReport> {
        let topics = self.topics.read();
        let mut reports = Vec::new();
        for topic in topics.values() {
            for (index, local) in topic.partitions.iter().enumerate() {
                let Some(local) = local else { continue };
                if !local.replica.is_leader() {
                    continue;
                }
                let term = local.replica.term();
                let mut in_sync = local.replica.in_sync_voters();
                in_sync.sort_unstable();
                let known = state
                    .topics
                    .get(&topic.record.name)
                    .and_then(|t| t.partitions.get(index))
                    .is_some_and(|p| {
                        p.leader == Some(self.options.node_id)
                            && p.leader_term == term
                            && p.in_sync == in_sync
                    });
                if !known {
                    reports.push(LeaderReport {
                        topic: topic.record.name.clone(),
                        partition: index as u32,
                        group: local.replica.group(),
                        leader: self.options.node_id,
                        term,
                        in_sync,
                    });
                }
            }
        }
        reports
    }
}
