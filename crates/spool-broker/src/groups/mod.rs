//! Consumer group coordination on this node.
//!
//! Groups live in the internal topic `__consumer_offsets`, created on first use. The
//! coordinator of group G is the leader of partition murmur2(G) mod N of that topic: the
//! node leading it runs a `Shard` (its groups in memory, changed by one task that writes
//! every change through the partition's Raft group before answering). A watcher starts a
//! shard when this node takes the lead of such a partition and drops it when the lead
//! moves; the new leader replays the partition and carries on.

mod api;
mod shard;
mod stats;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use spool_group::{CoordinatorConfig, TopicInfo, TopicsSnapshot};

use crate::broker::Broker;
use crate::error::BrokerError;

pub use api::{GroupDescription, GroupListing, MemberDescription, OffsetEntry};
pub(crate) use shard::Shard;
pub use stats::{GroupStats, REBALANCE_BUCKETS, RebalanceSnapshot};

/// The internal topic holding consumer groups and their offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// How often the watcher looks for coordinator partitions this node started or stopped
/// leading (besides every metadata change).
const WATCH_EVERY: Duration = Duration::from_millis(100);

/// How long a request waits for a coordinator that is being elected or loaded before it
/// is answered with a retriable error: long enough for an election, short enough that a
/// client's own deadline is not reached first.
pub(crate) const COORDINATOR_WAIT: Duration = Duration::from_secs(5);

/// How groups are coordinated on this node.
#[derive(Debug, Clone)]
pub struct GroupOptions {
    /// Partitions of `__consumer_offsets` when it is created (it never changes after).
    pub offsets_topic_partitions: u32,
    /// Its replication factor; 0 for three, or fewer when fewer brokers are live.
    pub offsets_topic_replication_factor: u32,
    pub coordinator: CoordinatorConfig,
    /// Records written after which a coordinator writes its whole state and lets the log
    /// drop what came before.
    pub checkpoint_records: usize,
}

impl Default for GroupOptions {
    fn default() -> Self {
        Self {
            offsets_topic_partitions: 16,
            offsets_topic_replication_factor: 0,
            coordinator: CoordinatorConfig::default(),
            checkpoint_records: 100_000,
        }
    }
}

/// This node's coordinator partitions and what they need from the broker.
#[derive(Debug, Default)]
pub(crate) struct Groups {
    shards: Mutex<HashMap<u32, Arc<Shard>>>,
    /// The topics as assignment sees them, rebuilt when the metadata changes.
    topics: Mutex<(i64, Arc<TopicsSnapshot>)>,
    rebalances: Arc<stats::RebalanceStats>,
    /// Bumped whenever a shard starts or is dropped, and after every pass that makes local
    /// replicas match the metadata: wakes requests waiting for their coordinator.
    changes: tokio::sync::watch::Sender<u64>,
    /// Bumped after each timed pass a shard makes over its groups (session expiry,
    /// retention, metrics), once what the pass wrote is committed.
    passes: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Groups {
    pub(crate) fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// What a shard's task reads from the broker; holds it weakly so that a shard never
/// keeps a stopped broker alive.
struct Host {
    broker: Weak<Broker>,
    checkpoint_records: usize,
    rebalances: Arc<stats::RebalanceStats>,
    passes: Arc<tokio::sync::watch::Sender<u64>>,
}

impl shard::ShardHost for Host {
    fn topics(&self) -> Arc<TopicsSnapshot> {
        match self.broker.upgrade() {
            Some(broker) => broker.topics_snapshot(),
            None => Arc::new(TopicsSnapshot::new()),
        }
    }

    fn checkpoint_records(&self) -> usize {
        self.checkpoint_records
    }

    fn rebalances(&self) -> &stats::RebalanceStats {
        &self.rebalances
    }

    fn passed(&self) {
        self.passes.send_modify(|n| *n = n.wrapping_add(1));
    }
}

impl Broker {
    /// The groups this node coordinates, as last published by their shards (at most a
    /// second old).
    pub fn group_stats(&self) -> Vec<GroupStats> {
        let shards: Vec<Arc<Shard>> = self.groups.shards.lock().values().cloned().collect();
        shards.iter().flat_map(|s| s.stats()).collect()
    }

    /// Moves after each timed pass a coordinator shard here makes over its groups (session
    /// expiry, offsets retention, the groups published for the metrics), once what the
    /// pass wrote is committed: to wait for time-driven work without polling.
    pub fn coordinator_passes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.groups.passes.subscribe()
    }

    /// Rebalances of groups coordinated here, and how long they took.
    pub fn rebalance_stats(&self) -> RebalanceSnapshot {
        self.groups.rebalances.snapshot()
    }

    /// The topics as the assignors see them: partition counts and replica racks.
    pub(crate) fn topics_snapshot(&self) -> Arc<TopicsSnapshot> {
        let metadata = self.controller.current();
        let mut cached = self.groups.topics.lock();
        if cached.0 == metadata.offset && metadata.offset != 0 {
            return Arc::clone(&cached.1);
        }
        let mut snapshot = TopicsSnapshot::new();
        for topic in metadata.topics.values() {
            let racks = topic
                .partitions
                .iter()
                .map(|p| {
                    p.target()
                        .iter()
                        .filter_map(|r| metadata.brokers.get(&r.broker)?.rack.clone())
                        .collect::<BTreeSet<String>>()
                })
                .collect::<Vec<_>>();
            let racks = if racks.iter().all(BTreeSet::is_empty) {
                Vec::new()
            } else {
                racks
            };
            snapshot.insert(
                topic.name.clone(),
                TopicInfo {
                    partitions: topic.partitions.len() as u32,
                    racks,
                },
            );
            snapshot.set_id(topic.name.clone(), topic.id.clone());
        }
        snapshot.set_version(u64::try_from(metadata.offset).unwrap_or(0));
        let snapshot = Arc::new(snapshot);
        *cached = (metadata.offset, Arc::clone(&snapshot));
        snapshot
    }

    /// The coordinator partition of `group`, if `__consumer_offsets` exists.
    pub(crate) fn coordinator_partition(&self, group: &str) -> Option<u32> {
        let topics = self.topics.read();
        let n = topics.get(OFFSETS_TOPIC)?.record.partitions.len() as u32;
        (n > 0).then(|| spool_types::partition_for_key(group.as_bytes(), n))
    }

    /// The running shard that coordinates `group` here, or why there is none. Waits (at
    /// most `COORDINATOR_WAIT`) while the answer may still become yes: this node leads the
    /// group's partition but has not started its shard, the partition is electing a
    /// leader, or the metadata has the partition and this node has not opened it yet.
    pub(crate) async fn shard_for(&self, group: &str) -> Result<Arc<Shard>, BrokerError> {
        let deadline = tokio::time::Instant::now() + COORDINATOR_WAIT;
        let mut changes = self.groups.changes.subscribe();
        loop {
            // Watches first, then the look: a change in between wakes the wait.
            changes.borrow_and_update();
            let partition = self
                .coordinator_partition(group)
                .and_then(|index| self.partition(OFFSETS_TOPIC, index).ok());
            let replica_changes = partition.as_ref().map(|p| p.replica.changes());
            let error = match self.running_shard(group) {
                Ok(shard) => return Ok(shard),
                Err(Pending::Wait(error)) => error,
                Err(Pending::No(error)) => return Err(error),
            };
            let woke = tokio::time::timeout_at(deadline, async {
                tokio::select! {
                    () = replica_changed(replica_changes) => {}
                    Ok(()) = changes.changed() => {}
                }
            })
            .await;
            if woke.is_err() {
                return Err(error);
            }
            // Start the shard now rather than at the watcher's next turn.
            if partition.is_some_and(|p| p.replica.leads_and_applied_own_term()) {
                self.watch_coordinators();
            }
        }
    }

    fn running_shard(&self, group: &str) -> Result<Arc<Shard>, Pending> {
        let not_available = |reason: String| BrokerError::CoordinatorNotAvailable {
            group: group.to_string(),
            reason,
        };
        let Some(index) = self.coordinator_partition(group) else {
            let error = not_available(format!("{OFFSETS_TOPIC} does not exist yet"));
            return Err(
                if self.controller.current().topics.contains_key(OFFSETS_TOPIC) {
                    Pending::Wait(error)
                } else {
                    Pending::No(error)
                },
            );
        };
        if let Some(shard) = self.groups.shards.lock().get(&index)
            && !shard.is_stopped()
        {
            return Ok(Arc::clone(shard));
        }
        let Ok(partition) = self.partition(OFFSETS_TOPIC, index) else {
            return Err(Pending::No(BrokerError::NotCoordinator {
                group: group.to_string(),
            }));
        };
        if partition.replica.is_leader() {
            let error = BrokerError::CoordinatorLoading {
                group: group.to_string(),
            };
            Err(Pending::Wait(error))
        } else if partition.replica.leader().node.is_none() {
            let error = not_available(format!("{OFFSETS_TOPIC}-{index} has no leader yet"));
            Err(Pending::Wait(error))
        } else {
            Err(Pending::No(BrokerError::NotCoordinator {
                group: group.to_string(),
            }))
        }
    }

    /// Starts shards for the coordinator partitions this node leads (once it has applied
    /// an entry of its own term: everything committed before is then in the log it
    /// replays) and drops those it no longer leads.
    pub(crate) fn watch_coordinators(&self) {
        let local: BTreeMap<u32, Arc<crate::partition::Partition>> = self
            .topics
            .read()
            .get(OFFSETS_TOPIC)
            .map(|t| {
                t.partitions
                    .iter()
                    .flatten()
                    .map(|p| (p.index, Arc::clone(p)))
                    .collect()
            })
            .unwrap_or_default();
        let mut shards = self.groups.shards.lock();
        let before = shards.len();
        shards.retain(|index, shard| {
            let leads = local
                .get(index)
                .is_some_and(|p| p.replica.is_leader() && p.replica.term() == shard.term);
            // A shard that stopped while this node still leads (a write or a leadership
            // check failed) is replaced after a pause, not in a tight loop.
            let keep = leads && !(shard.is_stopped() && shard.may_restart());
            if !keep {
                tracing::info!(
                    partition = index,
                    term = shard.term,
                    "coordinator partition handed over"
                );
            }
            keep
        });
        let mut changed = shards.len() != before;
        for (index, partition) in local {
            if shards.contains_key(&index) || !partition.replica.leads_and_applied_own_term() {
                continue;
            }
            let term = partition.replica.term();
            let host = Arc::new(Host {
                broker: self.this.clone(),
                checkpoint_records: self.options.groups.checkpoint_records,
                rebalances: Arc::clone(&self.groups.rebalances),
                passes: Arc::clone(&self.groups.passes),
            });
            let shard = Shard::start(partition, term, self.options.groups.coordinator, host);
            shards.insert(index, shard);
            changed = true;
        }
        drop(shards);
        if changed {
            self.groups.changed();
        }
    }

    /// Creates `__consumer_offsets` if it does not exist yet.
    pub(crate) async fn ensure_offsets_topic(&self) -> Result<(), BrokerError> {
        if self.topics.read().contains_key(OFFSETS_TOPIC) {
            return Ok(());
        }
        let options = &self.options.groups;
        let configs = BTreeMap::from([
            // Group state must outlive any retention: it is kept short by checkpoints.
            ("retention.ms".to_string(), "-1".to_string()),
            ("retention.bytes".to_string(), "-1".to_string()),
        ]);
        match self
            .create_any_topic(
                OFFSETS_TOPIC,
                options.offsets_topic_partitions.max(1),
                options.offsets_topic_replication_factor,
                configs,
                Vec::new(),
                false,
            )
            .await
        {
            Ok(()) | Err(BrokerError::TopicExists { .. }) => Ok(()),
            Err(error) if error.code() == spool_types::ErrorCode::TopicAlreadyExists => Ok(()),
            Err(error) => Err(error),
        }
    }
}

/// Why no shard answers yet, and whether waiting may change that.
enum Pending {
    /// Worth waiting for: the partition's changes (when it is here) and shards starting
    /// and stopping may change the answer.
    Wait(BrokerError),
    No(BrokerError),
}

/// Returns at the replica's next change; never when there is no replica or it stopped.
pub(crate) async fn replica_changed(changes: Option<spool_raft::ReplicaChanges>) {
    if let Some(mut changes) = changes
        && changes.changed().await
    {
        return;
    }
    std::future::pending().await
}

/// Runs the watcher until the broker goes away.
pub(crate) async fn watch(broker: Weak<Broker>) {
    loop {
        let Some(strong) = broker.upgrade() else {
            return;
        };
        if *strong.closing.borrow() {
            return;
        }
        strong.watch_coordinators();
        let mut metadata = strong.controller.state();
        drop(strong);
        tokio::select! {
            _ = metadata.changed() => {}
            () = tokio::time::sleep(WATCH_EVERY) => {}
        }
    }
}
