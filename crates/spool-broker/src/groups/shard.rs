//! One coordinator partition led by this node: its groups in memory, and the one task
//! that changes them.
//!
//! The task first replays the partition (everything committed before this node took the
//! lead) into a `Coordinator`, then takes operations in order. It runs every operation
//! queued meanwhile, appends all their records as one write (acks=all), and answers them
//! only once that write is committed; an operation that only reads is answered after the
//! writes queued before it, so nobody reads what might still be lost. If a write fails or
//! the leadership moves, the task stops and nothing more is answered from this state: the
//! next leader rebuilds it from what was committed.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use spool_group::{
    Coordinator, CoordinatorConfig, GroupRecord, GroupState, Outcome, TopicsSnapshot,
};
use spool_log::RecordBatch;
use spool_log::batch::{BatchBuilder, BatchOptions};
use spool_raft::AckLevel;
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::BrokerError;
use crate::groups::stats::{GroupStats, RebalanceStats};
use crate::partition::Partition;

/// Operations queued for one coordinator partition; more are refused as "loading".
const QUEUE: usize = 8192;
/// Operations run and written together at most.
const OPERATIONS_PER_WRITE: usize = 2048;
/// Record bytes in one batch of the coordinator's writes, beyond which the next
/// operation starts a new batch. An operation's records always share one batch (one Raft
/// entry), so a leader failing mid-write never leaves half an operation committed.
const BATCH_BYTES: usize = 512 * 1024;
/// How long a read (an operation that writes nothing) waits for a quorum to confirm
/// that this node still leads.
const CONFIRM_WITHIN: Duration = Duration::from_secs(2);
/// How long a stopped shard stays stopped before the watcher may start another for the
/// same term.
pub(crate) const RESTART_AFTER: Duration = Duration::from_secs(1);
/// How often sessions are checked for expiry.
const EXPIRY_TICK: Duration = Duration::from_millis(250);
/// How often retention looks for expired groups, at most: a quarter of the retention when
/// that is shorter, down to a second.
const RETENTION_EVERY: Duration = Duration::from_secs(60);
/// How often the groups are published for the metrics, at most.
const STATS_EVERY: Duration = Duration::from_secs(1);
/// Bytes read at once while replaying.
const REPLAY_READ: usize = 4 * 1024 * 1024;

/// What every operation sees besides the groups.
#[derive(Debug)]
pub(crate) struct Context {
    /// Wall-clock time, for what is written down (commit times, batch timestamps).
    pub now_ms: i64,
    /// A clock that never jumps, for session and revocation deadlines.
    pub steady_ms: i64,
    pub topics: Arc<TopicsSnapshot>,
}

type Reply = Box<dyn FnOnce(Result<(), BrokerError>) + Send>;
type Job = Box<dyn FnOnce(&mut Coordinator, &Context) -> (Vec<GroupRecord>, Reply) + Send>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Phase {
    Loading,
    Active,
    /// Stopped: leadership moved, a write failed, or the log could not be replayed.
    Stopped(String, tokio::time::Instant),
}

/// A coordinator partition this node leads, at one Raft term.
pub(crate) struct Shard {
    pub index: u32,
    pub term: u64,
    jobs: mpsc::Sender<Job>,
    phase: watch::Receiver<Phase>,
    /// Per group: a counter that moves when its membership or assignments change, for
    /// heartbeats that wait for their assignment to change.
    changes: Arc<Mutex<std::collections::HashMap<String, watch::Sender<u64>>>>,
    /// The groups as the metrics show them, published by the task now and then.
    stats: Arc<Mutex<Vec<GroupStats>>>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("index", &self.index)
            .field("term", &self.term)
            .field("phase", &*self.phase.borrow())
            .finish()
    }
}

/// Where a shard's task gets what it needs from the broker.
pub(crate) trait ShardHost: Send + Sync + 'static {
    /// The cluster's topics as assignment needs them.
    fn topics(&self) -> Arc<TopicsSnapshot>;
    /// Records since the last checkpoint after which the state is written whole.
    fn checkpoint_records(&self) -> usize;
    /// Where rebalance durations are counted.
    fn rebalances(&self) -> &RebalanceStats;
    /// A timed pass over the groups (expiry, retention, metrics) is written.
    fn passed(&self);
}

impl Shard {
    /// Starts the task for `partition`, led by this node at `term`.
    pub fn start(
        partition: Arc<Partition>,
        term: u64,
        config: CoordinatorConfig,
        host: Arc<dyn ShardHost>,
    ) -> Arc<Self> {
        let (jobs, rx) = mpsc::channel(QUEUE);
        let (phase_tx, phase) = watch::channel(Phase::Loading);
        let changes = Arc::new(Mutex::new(std::collections::HashMap::new()));
        let stats = Arc::new(Mutex::new(Vec::new()));
        let shard = Arc::new(Self {
            index: partition.index,
            term,
            jobs,
            phase,
            changes: Arc::clone(&changes),
            stats: Arc::clone(&stats),
        });
        let task = Task {
            partition,
            term,
            coordinator: Coordinator::new(config),
            host,
            phase: phase_tx,
            changes,
            since_checkpoint: 0,
            checkpoint_len: 0,
            stats,
            stats_dirty: true,
            stats_published: None,
            rebalancing: std::collections::HashMap::new(),
            epochs: std::collections::HashMap::new(),
            retention_ran: None,
            incarnations: spool_group::TopicIncarnations::default(),
        };
        tokio::spawn(task.run(rx));
        shard
    }

    pub fn phase(&self) -> Phase {
        self.phase.borrow().clone()
    }

    /// Stopped, or its task is gone (it panicked).
    pub fn is_stopped(&self) -> bool {
        self.phase.has_changed().is_err() || matches!(*self.phase.borrow(), Phase::Stopped(..))
    }

    /// Whether the watcher may start another shard for this partition.
    pub fn may_restart(&self) -> bool {
        match &*self.phase.borrow() {
            Phase::Stopped(_, at) => at.elapsed() >= RESTART_AFTER,
            _ => self.phase.has_changed().is_err(),
        }
    }

    /// Runs `operation` in order with the others and answers once its records (and those
    /// of every operation before it) are committed.
    pub async fn run<T, F>(&self, group: &str, operation: F) -> Result<T, BrokerError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Coordinator, &Context) -> Result<Outcome<T>, spool_group::GroupError>
            + Send
            + 'static,
    {
        match self.phase() {
            Phase::Active | Phase::Loading => {}
            Phase::Stopped(reason, _) => {
                return Err(BrokerError::CoordinatorNotAvailable {
                    group: group.to_string(),
                    reason,
                });
            }
        }
        let (tx, rx) = oneshot::channel();
        let job: Job =
            Box::new(
                move |coordinator, context| match operation(coordinator, context) {
                    Ok(outcome) => {
                        let value = outcome.value;
                        let reply: Reply = Box::new(move |written| {
                            let _ = tx.send(written.map(|()| value));
                        });
                        (outcome.records, reply)
                    }
                    Err(error) => {
                        // A refusal stands only if the state it was judged on was still
                        // this coordinator's when the batch was written.
                        let reply: Reply = Box::new(move |written| {
                            let _ = tx.send(written.and(Err(BrokerError::Group(error))));
                        });
                        (Vec::new(), reply)
                    }
                },
            );
        self.jobs
            .try_send(job)
            .map_err(|_| BrokerError::CoordinatorLoading {
                group: group.to_string(),
            })?;
        match rx.await {
            // The write or the leadership check failed: this node may no longer lead the
            // coordinator partition, and the client should find the coordinator again.
            Ok(Err(BrokerError::Replication { .. })) | Err(_) => Err(BrokerError::NotCoordinator {
                group: group.to_string(),
            }),
            Ok(answer) => answer,
        }
    }

    /// The groups as last published for the metrics.
    pub fn stats(&self) -> Vec<GroupStats> {
        self.stats.lock().clone()
    }

    /// A watch that moves when `group`'s membership or assignments change.
    pub fn watch_group(&self, group: &str) -> watch::Receiver<u64> {
        self.changes
            .lock()
            .entry(group.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }
}

struct Task {
    partition: Arc<Partition>,
    term: u64,
    coordinator: Coordinator,
    host: Arc<dyn ShardHost>,
    phase: watch::Sender<Phase>,
    changes: Arc<Mutex<std::collections::HashMap<String, watch::Sender<u64>>>>,
    since_checkpoint: usize,
    /// Records in the last checkpoint.
    checkpoint_len: usize,
    stats: Arc<Mutex<Vec<GroupStats>>>,
    /// Something changed since the stats were last published.
    stats_dirty: bool,
    stats_published: Option<tokio::time::Instant>,
    /// Groups rebalancing, since when.
    rebalancing: std::collections::HashMap<String, tokio::time::Instant>,
    /// Each group's epoch when last seen, to tell when a new one starts a rebalance.
    epochs: std::collections::HashMap<String, i32>,
    /// When retention last ran.
    retention_ran: Option<tokio::time::Instant>,
    /// The topics seen so far: which went away, or came back as new topics.
    incarnations: spool_group::TopicIncarnations,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let stopped = match self.replay().await {
            Ok(records) => {
                tracing::info!(
                    partition = self.partition.index,
                    term = self.term,
                    records,
                    groups = self.coordinator.groups().count(),
                    start = self.partition.reader.start_offset(),
                    end = self.partition.high_watermark(),
                    "coordinator partition loaded"
                );
                self.coordinator.start_sessions(steady_ms());
                let _ = self.phase.send(Phase::Active);
                self.serve(&mut rx).await
            }
            Err(error) => {
                tracing::error!(partition = self.partition.index, %error, "coordinator partition could not be replayed; its groups are unavailable here");
                format!("the coordinator could not replay its log: {error}")
            }
        };
        let _ = self
            .phase
            .send(Phase::Stopped(stopped, tokio::time::Instant::now()));
        // Whatever is still queued is answered: not by this coordinator.
        rx.close();
        while let Ok(job) = rx.try_recv() {
            let context = Context {
                now_ms: now_ms(),
                steady_ms: steady_ms(),
                topics: self.host.topics(),
            };
            let (_, reply) = job(&mut Coordinator::default(), &context);
            reply(Err(BrokerError::Replication {
                reason: "the coordinator stopped".into(),
            }));
        }
    }

    /// Applies every committed record of the partition; returns how many.
    async fn replay(&mut self) -> Result<usize, BrokerError> {
        let mut offset = self.partition.reader.start_offset();
        let end = self.partition.high_watermark();
        let mut count = 0;
        while offset < end {
            let fetched = self.partition.read(offset, REPLAY_READ).await?;
            if fetched.batches.is_empty() {
                break;
            }
            for bytes in &fetched.batches {
                let batch = RecordBatch::new(bytes)?;
                if batch.is_control() {
                    continue;
                }
                for record in batch.records()? {
                    let record = record?;
                    if record.offset() < offset {
                        continue;
                    }
                    let key = record.key().ok_or_else(|| BrokerError::InvalidRequest {
                        reason: format!("group record at offset {} has no key", record.offset()),
                    })?;
                    let decoded = GroupRecord::decode(key, record.value()).map_err(|e| {
                        BrokerError::InvalidRequest {
                            reason: format!("group record at offset {}: {e}", record.offset()),
                        }
                    })?;
                    self.coordinator.apply(&decoded);
                    count += 1;
                }
            }
            offset = fetched.next_offset;
        }
        self.since_checkpoint = count;
        Ok(count)
    }

    /// Takes operations until leadership moves or a write fails; returns why it stopped.
    async fn serve(&mut self, rx: &mut mpsc::Receiver<Job>) -> String {
        let mut tick = tokio::time::interval(EXPIRY_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leadership = self.partition.replica.changes();
        let mut jobs: Vec<Job> = Vec::new();
        loop {
            let mut timed_pass = false;
            tokio::select! {
                job = rx.recv() => match job {
                    Some(job) => jobs.push(job),
                    None => return "the coordinator was closed".into(),
                },
                _ = tick.tick() => {
                    // Watches nobody waits on any more go (group ids come from clients).
                    self.changes.lock().retain(|_, tx| tx.receiver_count() > 0);
                    self.publish_stats();
                    jobs.push(Box::new(|c: &mut Coordinator, ctx: &Context| {
                    let outcome = c.expire(ctx.steady_ms);
                    for (group, member) in &outcome.value {
                        tracing::info!(group, member, "member removed: its session or revocation time ran out");
                    }
                    (outcome.records, Box::new(|_| {}) as Reply)
                }));
                    if let Some(job) = self.retention_job() {
                        jobs.push(job);
                    }
                    timed_pass = true;
                }
                alive = leadership.changed() => if !alive {
                    return "the partition replica stopped".into();
                },
            }
            if !self.still_leads() {
                fail(jobs.drain(..), &mut self.coordinator, &self.host);
                return "this node no longer leads the coordinator partition".into();
            }
            while jobs.len() < OPERATIONS_PER_WRITE {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            if jobs.is_empty() {
                continue;
            }
            if let Err(reason) = self.run_jobs(&mut jobs).await {
                return reason;
            }
            if timed_pass {
                self.host.passed();
            }
            if self.since_checkpoint >= self.host.checkpoint_records().max(self.checkpoint_len)
                && let Err(reason) = self.checkpoint().await
            {
                return reason;
            }
        }
    }

    /// A pass over empty groups, when one is due: every minute (or a quarter of the
    /// retention, when shorter).
    fn retention_job(&mut self) -> Option<Job> {
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
        let partition = self.partition.index;
        Some(Box::new(move |c: &mut Coordinator, ctx: &Context| {
            let outcome = c.expire_groups(ctx.now_ms, ctx.steady_ms);
            for group in &outcome.value {
                tracing::info!(
                    partition,
                    group,
                    "group removed: empty for the offsets retention period"
                );
            }
            (outcome.records, Box::new(|_| {}) as Reply)
        }))
    }

    fn still_leads(&self) -> bool {
        self.partition.replica.is_leader() && self.partition.replica.term() == self.term
    }

    async fn run_jobs(&mut self, jobs: &mut Vec<Job>) -> Result<(), String> {
        let began = tokio::time::Instant::now();
        let context = Context {
            now_ms: now_ms(),
            steady_ms: steady_ms(),
            topics: self.host.topics(),
        };
        let mut operations: Vec<Vec<GroupRecord>> = Vec::with_capacity(jobs.len() + 1);
        let mut replies: Vec<Reply> = Vec::with_capacity(jobs.len() + 1);
        // A topic deleted (or created anew) since the last batch: its offsets go first, so
        // that every commit in this batch, checked against these topics, is kept.
        let gone = self.incarnations.gone(&context.topics);
        if !gone.is_empty() {
            let dropped = self.coordinator.drop_topic_offsets(&gone);
            for (group, topic) in &dropped.value {
                tracing::info!(
                    partition = self.partition.index,
                    group,
                    topic,
                    "committed offsets of a deleted topic removed"
                );
            }
            operations.push(dropped.records);
            replies.push(Box::new(|_| {}));
        }
        for job in jobs.drain(..) {
            let (written, reply) = job(&mut self.coordinator, &context);
            operations.push(written);
            replies.push(reply);
        }
        let touched: BTreeSet<String> = operations
            .iter()
            .flatten()
            .filter(|r| !matches!(r, GroupRecord::Offset { .. }))
            .map(|r| r.group().to_string())
            .collect();
        let count: usize = operations.iter().map(Vec::len).sum();
        // The jobs may have taken a while: what they computed is written only under the
        // leadership it was computed in.
        let outcome = if !self.still_leads() {
            Err(BrokerError::NotCoordinator {
                group: String::new(),
            })
        } else if count > 0 {
            self.write(&operations, context.now_ms).await.map(drop)
        } else {
            // Nothing to write, but the answers come from this node's state: only while
            // a quorum still has it as leader.
            self.partition
                .replica
                .confirm_leadership(CONFIRM_WITHIN)
                .await
                .map_err(|e| BrokerError::Replication {
                    reason: e.to_string(),
                })
        };
        if let Err(error) = outcome {
            for reply in replies {
                reply(Err(BrokerError::Replication {
                    reason: error.to_string(),
                }));
            }
            return Err(format!("the coordinator stopped: {error}"));
        }
        self.since_checkpoint += count;
        self.stats_dirty |= count > 0;
        self.track_rebalances(&touched, began);
        // Waiters wake before the answers go out: a member's next long poll, sent once it
        // has this answer, must not be woken by the change it already knows.
        {
            let changes = self.changes.lock();
            for group in touched {
                if let Some(tx) = changes.get(&group) {
                    tx.send_modify(|n| *n += 1);
                }
            }
        }
        for reply in replies {
            reply(Ok(()));
        }
        Ok(())
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
                        self.host
                            .rebalances()
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
        *self.stats.lock() = stats;
        self.stats_dirty = false;
        self.stats_published = Some(tokio::time::Instant::now());
    }

    /// Appends `records` and waits until they are committed; returns the first offset.
    async fn write(
        &self,
        operations: &[Vec<GroupRecord>],
        now_ms: i64,
    ) -> Result<i64, BrokerError> {
        let batches = encode(operations, now_ms);
        self.partition
            .replica
            .append_in_term(batches, AckLevel::All, self.term)
            .await
            .map(|offsets| offsets.first().copied().unwrap_or(-1))
            .map_err(|e| BrokerError::Replication {
                reason: e.to_string(),
            })
    }

    /// Writes the whole state, then lets the log drop what came before it, so a replay
    /// stays short however long the groups live.
    async fn checkpoint(&mut self) -> Result<(), String> {
        // Upserts only: a checkpoint cut short by a failover is harmless, so it may span
        // several batches.
        // One record per "operation", so batches are cut by size (a group's state can be
        // far larger than one batch may be).
        let records: Vec<Vec<GroupRecord>> = self
            .coordinator
            .snapshot_records()
            .into_iter()
            .map(|record| vec![record])
            .collect();
        let written: usize = records.iter().map(Vec::len).sum();
        let start = self
            .write(&records, now_ms())
            .await
            .map_err(|e| format!("a coordinator checkpoint failed: {e}"))?;
        // The next checkpoint waits at least as long as this one was: writing the whole
        // state must stay a small share of what the coordinator writes.
        self.since_checkpoint = 0;
        self.checkpoint_len = written;
        if let Err(error) = self.partition.replica.compact_before(start).await {
            tracing::warn!(partition = self.partition.index, %error, "coordinator log not compacted after a checkpoint");
        }
        Ok(())
    }
}

/// Answers jobs without running them: this coordinator no longer speaks for the groups.
fn fail(jobs: impl Iterator<Item = Job>, coordinator: &mut Coordinator, host: &Arc<dyn ShardHost>) {
    let context = Context {
        now_ms: now_ms(),
        steady_ms: steady_ms(),
        topics: host.topics(),
    };
    // A scratch copy runs them (their replies need an outcome), and is thrown away.
    let mut scratch = Coordinator::new(*coordinator.config());
    for job in jobs {
        let (_, reply) = job(&mut scratch, &context);
        reply(Err(BrokerError::Replication {
            reason: "the coordinator partition lost its leader".into(),
        }));
    }
}

/// The operations' records as Kafka batches: each operation whole in one batch, and a new
/// batch started once one holds `BATCH_BYTES`.
fn encode(operations: &[Vec<GroupRecord>], now_ms: i64) -> Vec<Bytes> {
    let mut batches = Vec::new();
    let mut builder = BatchBuilder::new(BatchOptions::default());
    let (mut key, mut value) = (Vec::new(), Vec::new());
    for operation in operations.iter().filter(|op| !op.is_empty()) {
        if builder.size() >= BATCH_BYTES {
            let full = std::mem::replace(&mut builder, BatchBuilder::new(BatchOptions::default()));
            batches.push(full.finish());
        }
        for record in operation {
            key.clear();
            value.clear();
            let has_value = record.encode_into(&mut key, &mut value);
            builder.append(
                now_ms,
                Some(&key),
                has_value.then_some(value.as_slice()),
                &[],
            );
        }
    }
    if !builder.is_empty() {
        batches.push(builder.finish());
    }
    batches
}

/// ms on a clock that never jumps (since the first call in this process): deadlines held
/// in memory only, never compared across nodes or restarts.
pub(crate) fn steady_ms() -> i64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = START.get_or_init(std::time::Instant::now);
    i64::try_from(start.elapsed().as_millis()).unwrap_or(i64::MAX)
}

pub(crate) fn now_ms() -> i64 {
    crate::broker::now_ms()
}
