//! Consumer groups as a coordinator machine: the `spool_group::Coordinator` of one
//! partition of `__consumer_offsets`, plus what the broker keeps beside it (waiters on
//! group changes, the groups published for the metrics, rebalance durations, session
//! expiry and offsets retention).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use spool_group::{Coordinator, CoordinatorConfig, GroupError, GroupRecord, GroupState, Outcome};
use tokio::sync::watch;

use super::OFFSETS_TOPIC;
use super::stats::{GroupStats, RebalanceStats};
use crate::coordinator::{Context, Framing, Job, Machine, Queue, Reply, Shard, shard::steady_ms};
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
    /// Moves whenever a transaction's marker is written here (its offsets took effect or
    /// were dropped): offset fetches waiting on pending offsets look again.
    pub markers: watch::Sender<u64>,
}

/// What the group machine writes: a group record, an offset committed inside a
/// producer's transaction, or a transaction's marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GroupEntry {
    Plain(GroupRecord),
    Transactional {
        producer_id: i64,
        epoch: i16,
        record: GroupRecord,
    },
    Marker {
        producer_id: i64,
        epoch: i16,
        marker: spool_log::batch::ControlMarker,
    },
}

fn plain(records: Vec<GroupRecord>) -> Vec<GroupEntry> {
    records.into_iter().map(GroupEntry::Plain).collect()
}

/// The groups, and the offsets committed inside transactions that have not ended.
#[derive(Debug, Default)]
pub(crate) struct GroupsState {
    pub coordinator: Coordinator,
    /// Per producer: the epoch and the offset records of its open transaction, applied
    /// when its commit marker is written here and dropped at an abort.
    pending: BTreeMap<i64, (i16, Vec<GroupRecord>)>,
    /// Per producer: the newest epoch and coordinator epoch its batches and markers
    /// written or replayed here carried. The partition refuses older ones; they are
    /// refused here first (against these and the partition's own table, which knows what
    /// a checkpoint let the log drop), so that a zombie's request is answered with an
    /// error instead of failing the write and stopping the coordinator.
    producers: HashMap<i64, (i16, i32)>,
}

impl GroupsState {
    fn new(config: CoordinatorConfig) -> Self {
        Self {
            coordinator: Coordinator::new(config),
            ..Self::default()
        }
    }

    /// What an entry does, written or replayed.
    fn apply(&mut self, entry: &GroupEntry) {
        match entry {
            GroupEntry::Plain(record) => self.coordinator.apply(record),
            GroupEntry::Transactional {
                producer_id,
                epoch,
                record,
            } => {
                self.raise(*producer_id, *epoch, -1);
                let pending = self
                    .pending
                    .entry(*producer_id)
                    .or_insert_with(|| (*epoch, Vec::new()));
                pending.0 = *epoch;
                pending.1.push(record.clone());
            }
            GroupEntry::Marker {
                producer_id,
                epoch,
                marker,
            } => {
                self.raise(*producer_id, *epoch, marker.coordinator_epoch);
                if let Some((_, records)) = self.pending.remove(producer_id)
                    && marker.commit
                {
                    for record in &records {
                        self.coordinator.apply(record);
                    }
                }
            }
        }
    }

    /// Whether an open transaction holds offsets of `group` (for these partitions, or any).
    pub(crate) fn has_pending(&self, group: &str, partitions: Option<&[(String, u32)]>) -> bool {
        self.pending
            .values()
            .flat_map(|(_, records)| records)
            .any(|r| match r {
                GroupRecord::Offset {
                    group: g,
                    topic,
                    partition,
                    ..
                } => {
                    g == group
                        && partitions.is_none_or(|keys| {
                            keys.iter().any(|(t, p)| t == topic && p == partition)
                        })
                }
                _ => false,
            })
    }

    fn raise(&mut self, producer_id: i64, epoch: i16, coordinator_epoch: i32) {
        let known = self.producers.entry(producer_id).or_insert((epoch, -1));
        known.0 = known.0.max(epoch);
        known.1 = known.1.max(coordinator_epoch);
    }

    /// The newest (epoch, coordinator epoch) of a producer, here or in the partition.
    fn known_epochs(&self, producer_id: i64, context: &Context) -> Option<(i16, i32)> {
        let here = self.producers.get(&producer_id).copied();
        let logged = context.replica.producer_epochs(producer_id);
        match (here, logged) {
            (Some(a), Some(b)) => Some((a.0.max(b.0), a.1.max(b.1))),
            (a, b) => a.or(b),
        }
    }

    /// Refuses a producer epoch older than one written here.
    fn check_producer(
        &self,
        producer_id: i64,
        epoch: i16,
        context: &Context,
    ) -> Result<(), BrokerError> {
        match self.known_epochs(producer_id, context) {
            Some((current, _)) if epoch < current => {
                Err(BrokerError::Txn(spool_txn::TxnError::Fenced {
                    id: String::new(),
                    producer_id,
                    epoch,
                    current,
                }))
            }
            _ => Ok(()),
        }
    }

    /// Offsets committed inside `producer_id`'s transaction: checked, then kept until the
    /// transaction ends.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn stage_offsets(
        &mut self,
        producer_id: i64,
        epoch: i16,
        group: &str,
        member: &str,
        member_epoch: i32,
        commits: &[spool_group::OffsetCommit],
        context: &Context,
    ) -> Result<Vec<GroupEntry>, BrokerError> {
        if producer_id < 0 || epoch < 0 {
            return Err(BrokerError::InvalidRequest {
                reason: format!("producer {producer_id} at epoch {epoch} is not a producer"),
            });
        }
        self.check_producer(producer_id, epoch, context)?;
        let records = self.coordinator.transactional_offsets(
            group,
            member,
            member_epoch,
            commits,
            context.now_ms,
            &context.topics,
        )?;
        let entries: Vec<GroupEntry> = records
            .into_iter()
            .map(|record| GroupEntry::Transactional {
                producer_id,
                epoch,
                record,
            })
            .collect();
        for entry in &entries {
            self.apply(entry);
        }
        Ok(entries)
    }

    /// A transaction's marker written through this coordinator: its offsets take effect
    /// (commit) or are dropped (abort). A late copy of a marker already written (`bumped`:
    /// see `write_local_markers`) writes nothing.
    pub(crate) fn end_transaction(
        &mut self,
        producer_id: i64,
        epoch: i16,
        marker: spool_log::batch::ControlMarker,
        bumped: bool,
        context: &Context,
    ) -> Result<Vec<GroupEntry>, BrokerError> {
        // Only what is committed counts: this state and the partition's applied table.
        let committed = self
            .producers
            .get(&producer_id)
            .map(|(known, _)| *known)
            .max(context.replica.applied_producer_epoch(producer_id));
        if bumped && committed.is_some_and(|known| known >= epoch) {
            return Ok(Vec::new());
        }
        self.check_producer(producer_id, epoch, context)?;
        if let Some((_, coordinator_epoch)) = self.known_epochs(producer_id, context)
            && marker.coordinator_epoch >= 0
            && marker.coordinator_epoch < coordinator_epoch
        {
            return Err(BrokerError::NotCoordinator {
                key: format!("producer {producer_id}"),
            });
        }
        let entry = GroupEntry::Marker {
            producer_id,
            epoch,
            marker,
        };
        self.apply(&entry);
        Ok(vec![entry])
    }
}

pub(crate) struct GroupMachine {
    state: GroupsState,
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
            state: GroupsState::new(config),
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
        let retention = self.state.coordinator.config().offsets_retention_ms;
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
        Some(Box::new(move |s: &mut GroupsState, ctx: &Context| {
            let outcome = s.coordinator.expire_groups(ctx.now_ms, ctx.steady_ms);
            for group in &outcome.value {
                tracing::info!(
                    group,
                    "group removed: empty for the offsets retention period"
                );
            }
            (plain(outcome.records), Box::new(|_| {}) as Reply)
        }))
    }

    /// A new group epoch (or leaving `stable`) starts a rebalance; reaching `stable` again
    /// ends it. `began` is when the operations that changed the groups started.
    fn track_rebalances(&mut self, touched: &BTreeSet<String>, began: tokio::time::Instant) {
        let now = tokio::time::Instant::now();
        for group in touched {
            let found = self
                .state
                .coordinator
                .group(group)
                .map(|g| (g.state(), g.epoch));
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
            .state
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
    type State = GroupsState;
    type Record = GroupEntry;
    type Shared = Arc<GroupsShared>;
    const KEY: &'static str = "group";
    const TOPIC: &'static str = OFFSETS_TOPIC;

    fn state(&mut self) -> &mut GroupsState {
        &mut self.state
    }

    fn scratch(&self) -> GroupsState {
        GroupsState::new(*self.state.coordinator.config())
    }

    fn shared(&self) -> Arc<GroupsShared> {
        Arc::clone(&self.shared)
    }

    fn decode(key: &[u8], value: Option<&[u8]>) -> Result<GroupEntry, String> {
        GroupRecord::decode(key, value)
            .map(GroupEntry::Plain)
            .map_err(|e| e.to_string())
    }

    fn decode_framed(
        framing: Framing,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<Option<GroupEntry>, String> {
        let record = || {
            let key = key.ok_or_else(|| "no key".to_string())?;
            GroupRecord::decode(key, value).map_err(|e| e.to_string())
        };
        Ok(Some(match framing {
            Framing::Plain => GroupEntry::Plain(record()?),
            Framing::Transactional { producer_id, epoch } => GroupEntry::Transactional {
                producer_id,
                epoch,
                record: record()?,
            },
            Framing::Marker {
                producer_id,
                epoch,
                marker,
            } => GroupEntry::Marker {
                producer_id,
                epoch,
                marker,
            },
        }))
    }

    fn framing(entry: &GroupEntry) -> Framing {
        match entry {
            GroupEntry::Plain(_) => Framing::Plain,
            GroupEntry::Transactional {
                producer_id, epoch, ..
            } => Framing::Transactional {
                producer_id: *producer_id,
                epoch: *epoch,
            },
            GroupEntry::Marker {
                producer_id,
                epoch,
                marker,
            } => Framing::Marker {
                producer_id: *producer_id,
                epoch: *epoch,
                marker: *marker,
            },
        }
    }

    fn encode(entry: &GroupEntry, key: &mut Vec<u8>, value: &mut Vec<u8>) -> bool {
        match entry {
            GroupEntry::Plain(record) | GroupEntry::Transactional { record, .. } => {
                record.encode_into(key, value)
            }
            // Written as a control batch, never as a record.
            GroupEntry::Marker { .. } => false,
        }
    }

    fn apply(&mut self, entry: &GroupEntry) {
        self.state.apply(entry);
    }

    fn snapshot_records(&self) -> Vec<GroupEntry> {
        let mut entries = plain(self.state.coordinator.snapshot_records());
        // Offsets of transactions still open are written again under their producer,
        // so that what the checkpoint lets the log drop does not take them along.
        for (producer_id, (epoch, records)) in &self.state.pending {
            entries.extend(records.iter().map(|record| GroupEntry::Transactional {
                producer_id: *producer_id,
                epoch: *epoch,
                record: record.clone(),
            }));
        }
        entries
    }

    fn loaded(&mut self, _queue: &Queue<Self>) {
        tracing::info!(
            groups = self.state.coordinator.groups().count(),
            "consumer groups loaded"
        );
        self.state.coordinator.start_sessions(steady_ms());
    }

    fn tick(&mut self) -> Vec<Job<Self>> {
        // Watches nobody waits on any more go (group ids come from clients).
        self.shared
            .changes
            .lock()
            .retain(|_, tx| tx.receiver_count() > 0);
        self.publish_stats();
        let mut jobs: Vec<Job<Self>> = vec![Box::new(|s: &mut GroupsState, ctx: &Context| {
            let outcome = s.coordinator.expire(ctx.steady_ms);
            for (group, member) in &outcome.value {
                tracing::info!(
                    group,
                    member,
                    "member removed: its session or revocation time ran out"
                );
            }
            (plain(outcome.records), Box::new(|_| {}) as Reply)
        })];
        jobs.extend(self.retention_job());
        jobs
    }

    fn prelude(&mut self, context: &Context) -> Vec<GroupEntry> {
        // A topic deleted (or created anew) since the last write: its offsets go first, so
        // that every commit in this write, checked against these topics, is kept.
        let gone = self.incarnations.gone(&context.topics);
        if gone.is_empty() {
            return Vec::new();
        }
        let dropped = self.state.coordinator.drop_topic_offsets(&gone);
        for (group, topic) in &dropped.value {
            tracing::info!(group, topic, "committed offsets of a deleted topic removed");
        }
        plain(dropped.records)
    }

    fn written(
        &mut self,
        operations: &[Vec<GroupEntry>],
        began: tokio::time::Instant,
        _queue: &Queue<Self>,
    ) {
        let touched: BTreeSet<String> = operations
            .iter()
            .flatten()
            .filter_map(|e| match e {
                GroupEntry::Plain(r) if !matches!(r, GroupRecord::Offset { .. }) => {
                    Some(r.group().to_string())
                }
                _ => None,
            })
            .collect();
        self.stats_dirty |= operations.iter().any(|op| !op.is_empty());
        self.track_rebalances(&touched, began);
        if operations
            .iter()
            .flatten()
            .any(|e| matches!(e, GroupEntry::Marker { .. }))
        {
            self.shared.markers.send_modify(|n| *n = n.wrapping_add(1));
        }
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
        self.run(group, move |s, ctx| {
            operation(&mut s.coordinator, ctx)
                .map(|o| (plain(o.records), o.value))
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
