//! Consumer groups as a coordinator machine: the `spool_group::Coordinator` of one
//! partition of `__consumer_offsets`, plus what the broker keeps beside it (waiters on
//! group changes, the groups published for the metrics, rebalance durations, session
//! expiry and offsets retention).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use spool_group::{Coordinator, CoordinatorConfig, GroupError, GroupRecord, GroupState, Outcome};
use tokio::sync::watch;

use super::OFFSETS_TOPIC;
use super::stats::{GroupStats, RebalanceStats};
use crate::coordinator::{Context, Job, Machine, Queue, Reply, Shard, shard::steady_ms};
use crate::error::BrokerError;

/// How often retention looks for expired groups, at most: a quarter of the retention when
/// that is shorter, down to a second.
const RETENTION_EVERY: Duration = Duration::from_secs(60);
/// How often the groups are published for the metrics, at most.
const STATS_EVERY: Duration = Duration::from_secs(1);

/// What the request handlers share with a running group machine.
#[derive(Debug, Default)]
pub(crate) struct GroupsShared {
    /// Per group: a counter that moves when its membership or assignments change, for
    /// heartbeats that wait for their assignment to change.
    changes: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// The groups as the metrics show them, published by the task now and then.
    stats: Mutex<Vec<GroupStats>>,
}

pub(crate) struct GroupMachine {
    coordinator: Coordinator,
    shared: Arc<GroupsShared>,
    rebalances: Arc<RebalanceStats>,
    /// Something changed since the stats were last published.
    stats_dirty: bool,
    stats_published: Option<tokio::time::Instant>,
    /// Groups rebalancing, since when.
    rebalancing: HashMap<String, tokio::time::Instant>,
    /// Each group's epoch when last seen, to tell when a new one starts a rebalance.
    epochs: HashMap<String, i32>,
    /// When retention last ran.
    retention_ran: Option<tokio::time::Instant>,
    /// The topics seen so far: which went away, or came back as new topics.
    incarnations: spool_group::TopicIncarnations,
}

impl GroupMachine {
    pub(crate) fn new(config: CoordinatorConfig, rebalances: Arc<RebalanceStats>) -> Self {
        Self {
            coordinator: Coordinator::new(config),
            shared: Arc::default(),
            rebalances,
            stats_dirty: true,
            stats_published: None,
            rebalancing: HashMap::new(),
            epochs: HashMap::new(),
            retention_ran: None,
            incarnations: spool_group::TopicIncarnations::default(),
        }
    }

    /// A pass over empty groups, when one is due: every minute (or a quarter of the
    /// retention, when shorter).
    fn retention_job(&mut self) -> Option<Job<Self>> {
        let now = tokio::time::Instant::now();
        let retention = self.coordinator.config().offsets_retention_ms;
        let every = match u64::try_from(retention) {
            Ok(ms) => Duration::from_millis(ms / 4).clamp(Duration::from_secs(1), RETENTION_EVERY),
            // Kept forever: nothing to look for.
            Err(_) => return None,
        };
        if self
            .retention_ran
            .is_some_and(|at| now.duration_since(at) < every)
        {
            return None;
        }
        self.retention_ran = Some(now);
        Some(Box::new(move |c: &mut Coordinator, ctx: &Context| {
            let outcome = c.expire_groups(ctx.now_ms, ctx.steady_ms);
            for group in &outcome.value {
                tracing::info!(
                    group,
                    "group removed: empty for the offsets retention period"
                );
            }
            (outcome.records, Box::new(|_| {}) as Reply)
        }))
    }

    /// A new group epoch (or leaving `stable`) starts a rebalance; reaching `stable` again
    /// ends it. `began` is when the operations that changed the groups started.
    fn track_rebalances(&mut self, touched: &BTreeSet<String>, began: tokio::time::Instant) {
        let now = tokio::time::Instant::now();
        for group in touched {
            let found = self.coordinator.group(group).map(|g| (g.state(), g.epoch));
            if let Some((_, epoch)) = found
                && self.epochs.insert(group.clone(), epoch) != Some(epoch)
            {
                self.rebalancing.entry(group.clone()).or_insert(began);
            }
            match found.map(|(state, _)| state) {
                Some(GroupState::Stable) => {
                    if let Some(started) = self.rebalancing.remove(group) {
                        self.rebalances
                            .observe(now.duration_since(started).as_secs_f64());
                    }
                }
                Some(GroupState::Assigning | GroupState::Reconciling) => {
                    self.rebalancing.entry(group.clone()).or_insert(now);
                }
                Some(GroupState::Empty) => {
                    self.rebalancing.remove(group);
                }
                None => {
                    self.rebalancing.remove(group);
                    self.epochs.remove(group);
                }
            }
        }
    }

    /// Publishes the groups for the metrics, at most once a second and only if changed.
    fn publish_stats(&mut self) {
        let due = self
            .stats_published
            .is_none_or(|at| at.elapsed() >= STATS_EVERY);
        if !self.stats_dirty || !due {
            return;
        }
        let stats = self
            .coordinator
            .groups()
            .map(|g| GroupStats {
                group: g.id.clone(),
                state: g.state().name(),
                members: g.members.len(),
                epoch: g.epoch,
                committed: g
                    .offsets
                    .iter()
                    .map(|((topic, partition), v)| (topic.clone(), *partition, v.offset))
                    .collect(),
            })
            .collect();
        *self.shared.stats.lock() = stats;
        self.stats_dirty = false;
        self.stats_published = Some(tokio::time::Instant::now());
    }
}

impl Machine for GroupMachine {
    type State = Coordinator;
    type Record = GroupRecord;
    type Shared = Arc<GroupsShared>;
    const KEY: &'static str = "group";
    const TOPIC: &'static str = OFFSETS_TOPIC;

    fn state(&mut self) -> &mut Coordinator {
        &mut self.coordinator
    }

    fn scratch(&self) -> Coordinator {
        Coordinator::new(*self.coordinator.config())
    }

    fn shared(&self) -> Arc<GroupsShared> {
        Arc::clone(&self.shared)
    }

    fn decode(key: &[u8], value: Option<&[u8]>) -> Result<GroupRecord, String> {
        GroupRecord::decode(key, value).map_err(|e| e.to_string())
    }

    fn encode(record: &GroupRecord, key: &mut Vec<u8>, value: &mut Vec<u8>) -> bool {
        record.encode_into(key, value)
    }

    fn apply(&mut self, record: &GroupRecord) {
        self.coordinator.apply(record);
    }

    fn snapshot_records(&self) -> Vec<GroupRecord> {
        self.coordinator.snapshot_records()
    }

    fn loaded(&mut self, _queue: &Queue<Self>) {
        tracing::info!(
            groups = self.coordinator.groups().count(),
            "consumer groups loaded"
        );
        self.coordinator.start_sessions(steady_ms());
    }

    fn tick(&mut self) -> Vec<Job<Self>> {
        // Watches nobody waits on any more go (group ids come from clients).
        self.shared
            .changes
            .lock()
            .retain(|_, tx| tx.receiver_count() > 0);
        self.publish_stats();
        let mut jobs: Vec<Job<Self>> = vec![Box::new(|c: &mut Coordinator, ctx: &Context| {
            let outcome = c.expire(ctx.steady_ms);
            for (group, member) in &outcome.value {
                tracing::info!(
                    group,
                    member,
                    "member removed: its session or revocation time ran out"
                );
            }
            (outcome.records, Box::new(|_| {}) as Reply)
        })];
        jobs.extend(self.retention_job());
        jobs
    }

    fn prelude(&mut self, context: &Context) -> Vec<GroupRecord> {
        // A topic deleted (or created anew) since the last write: its offsets go first, so
        // that every commit in this write, checked against these topics, is kept.
        let gone = self.incarnations.gone(&context.topics);
        if gone.is_empty() {
            return Vec::new();
        }
        let dropped = self.coordinator.drop_topic_offsets(&gone);
        for (group, topic) in &dropped.value {
            tracing::info!(group, topic, "committed offsets of a deleted topic removed");
        }
        dropped.records
    }

    fn written(
        &mut self,
        operations: &[Vec<GroupRecord>],
        began: tokio::time::Instant,
        _queue: &Queue<Self>,
    ) {
        let touched: BTreeSet<String> = operations
            .iter()
            .flatten()
            .filter(|r| !matches!(r, GroupRecord::Offset { .. }))
            .map(|r| r.group().to_string())
            .collect();
        self.stats_dirty |= operations.iter().any(|op| !op.is_empty());
        self.track_rebalances(&touched, began);
        // Waiters wake before the answers go out: a member's next long poll, sent once it
        // has this answer, must not be woken by the change it already knows.
        let changes = self.shared.changes.lock();
        for group in touched {
            if let Some(tx) = changes.get(&group) {
                tx.send_modify(|n| *n += 1);
            }
        }
    }
}

impl Shard<GroupMachine> {
    /// Runs a group operation in order with the others; see `Shard::run`.
    pub(crate) async fn run_group<T, F>(&self, group: &str, operation: F) -> Result<T, BrokerError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Coordinator, &Context) -> Result<Outcome<T>, GroupError> + Send + 'static,
    {
        self.run(group, move |c, ctx| {
            operation(c, ctx)
                .map(|o| (o.records, o.value))
                .map_err(BrokerError::Group)
        })
        .await
    }

    /// The groups as last published for the metrics.
    pub(crate) fn stats(&self) -> Vec<GroupStats> {
        self.shared.stats.lock().clone()
    }

    /// A watch that moves when `group`'s membership or assignments change.
    pub(crate) fn watch_group(&self, group: &str) -> watch::Receiver<u64> {
        self.shared
            .changes
            .lock()
            .entry(group.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }
}
