//! Consumer group coordination on this node.
//!
//! Groups live in the internal topic `__consumer_offsets`, created on first use, and are
//! coordinated by the shared coordinator machinery (see `crate::coordinator`): the
//! coordinator of group G is the leader of partition murmur2(G) mod N of that topic.

mod api;
mod machine;
mod stats;

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use spool_group::{CoordinatorConfig, TopicInfo, TopicsSnapshot};

use crate::broker::Broker;
use crate::coordinator::{Coordinators, Shard};
use crate::error::BrokerError;

pub use api::{GroupDescription, GroupListing, MemberDescription, OffsetEntry};
pub(crate) use machine::GroupMachine;
pub use stats::{GroupStats, REBALANCE_BUCKETS, RebalanceSnapshot};

/// The internal topic holding consumer groups and their offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// How often the watcher looks for coordinator partitions this node started or stopped
/// leading (besides every metadata change).
const WATCH_EVERY: Duration = Duration::from_millis(100);

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

/// This node's group coordinator partitions and what they need from the broker.
#[derive(Debug, Default)]
pub(crate) struct Groups {
    pub(crate) coordinators: Coordinators<GroupMachine>,
    /// The topics as assignment sees them, rebuilt when the metadata changes.
    topics: Mutex<(i64, Arc<TopicsSnapshot>)>,
    rebalances: Arc<stats::RebalanceStats>,
}

impl Broker {
    /// The groups this node coordinates, as last published by their shards (at most a
    /// second old).
    pub fn group_stats(&self) -> Vec<GroupStats> {
        let shards = self.groups.coordinators.running();
        shards.iter().flat_map(|s| s.stats()).collect()
    }

    /// Moves after each timed pass a coordinator shard here makes over its groups (session
    /// expiry, offsets retention, the groups published for the metrics), once what the
    /// pass wrote is committed: to wait for time-driven work without polling.
    pub fn coordinator_passes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.groups.coordinators.passes.subscribe()
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

    /// A new group machine, for a shard this node starts.
    fn group_machine(&self) -> GroupMachine {
        GroupMachine::new(
            self.options.groups.coordinator,
            Arc::clone(&self.groups.rebalances),
        )
    }

    /// The running shard that coordinates `group` here (see `Broker::shard_for`).
    pub(crate) async fn group_shard(
        &self,
        group: &str,
    ) -> Result<Arc<Shard<GroupMachine>>, BrokerError> {
        self.shard_for(&self.groups.coordinators, group, |_| self.group_machine())
            .await
    }

    /// Starts and stops this node's coordinator shards to match what it leads.
    pub(crate) fn watch_coordinators(&self) {
        self.watch_shards(&self.groups.coordinators, &|_| self.group_machine());
        self.watch_transaction_shards();
    }

    /// Creates `__consumer_offsets` if it does not exist yet.
    pub(crate) async fn ensure_offsets_topic(&self) -> Result<(), BrokerError> {
        let options = &self.options.groups;
        self.ensure_internal_topic(
            OFFSETS_TOPIC,
            options.offsets_topic_partitions,
            options.offsets_topic_replication_factor,
        )
        .await
    }
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
