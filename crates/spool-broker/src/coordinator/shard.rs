//! One coordinator partition led by this node: its state in memory, and the one task that
//! changes it.
//!
//! The task first replays the partition (everything committed before this node took the
//! lead) into its `Machine`, then takes operations in order. It runs every operation
//! queued meanwhile, appends all their records as one write (acks=all), and answers them
//! only once that write is committed; an operation that only reads is answered after the
//! writes queued before it, so nobody reads what might still be lost. If a write fails or
//! the leadership moves, the task stops and nothing more is answered from this state: the
//! next leader rebuilds it from what was committed.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use spool_group::TopicsSnapshot;
use spool_log::RecordBatch;
use spool_log::batch::{BatchBuilder, BatchOptions};
use spool_raft::AckLevel;
use tokio::sync::{mpsc, oneshot, watch};

use super::{Framing, Machine};
use crate::error::BrokerError;
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
/// How often the machine's timed pass runs.
const TICK: Duration = Duration::from_millis(250);
/// Bytes read at once while replaying.
const REPLAY_READ: usize = 4 * 1024 * 1024;

/// What every operation sees besides the state.
#[derive(Debug)]
pub(crate) struct Context {
    /// Wall-clock time, for what is written down (commit times, batch timestamps).
    pub now_ms: i64,
    /// A clock that never jumps, for session and revocation deadlines.
    pub steady_ms: i64,
    pub topics: Arc<TopicsSnapshot>,
    /// The coordinator partition's replica: what its log already holds beyond what the
    /// state keeps (a producer's epochs, which checkpoints do not carry).
    pub replica: Arc<spool_raft::PartitionReplica>,
}

pub(crate) type Reply = Box<dyn FnOnce(Result<(), BrokerError>) + Send>;
/// An operation: runs on the state, gives the records to write and who to answer once
/// they are committed.
pub(crate) type Job<M> = Box<
    dyn FnOnce(&mut <M as Machine>::State, &Context) -> (Vec<<M as Machine>::Record>, Reply) + Send,
>;

/// Where a machine queues operations of its own (work it started that must end in a
/// write, such as a transaction's completion).
pub(crate) struct Queue<M: Machine> {
    jobs: mpsc::Sender<Job<M>>,
}

impl<M: Machine> Clone for Queue<M> {
    fn clone(&self) -> Self {
        Self {
            jobs: self.jobs.clone(),
        }
    }
}

impl<M: Machine> Queue<M> {
    /// Queues `job`, waiting for room; false once the shard has stopped.
    pub async fn push_wait(&self, job: Job<M>) -> bool {
        self.jobs.send(job).await.is_ok()
    }

    /// The shard stopped: nothing queued now will run.
    pub fn is_closed(&self) -> bool {
        self.jobs.is_closed()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Phase {
    Loading,
    Active,
    /// Stopped: leadership moved, a write failed, or the log could not be replayed.
    Stopped(String, tokio::time::Instant),
}

/// A coordinator partition this node leads, at one Raft term.
pub(crate) struct Shard<M: Machine> {
    pub index: u32,
    pub term: u64,
    jobs: mpsc::Sender<Job<M>>,
    phase: watch::Receiver<Phase>,
    /// What the machine shares with the request handlers.
    pub shared: M::Shared,
}

impl<M: Machine> std::fmt::Debug for Shard<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("kind", &M::KEY)
            .field("index", &self.index)
            .field("term", &self.term)
            .field("phase", &*self.phase.borrow())
            .finish()
    }
}

/// Where a shard's task gets what it needs from the broker.
pub(crate) trait ShardHost: Send + Sync + 'static {
    /// The cluster's topics, as operations see them.
    fn topics(&self) -> Arc<TopicsSnapshot>;
    /// Records since the last checkpoint after which the state is written whole.
    fn checkpoint_records(&self) -> usize;
    /// A timed pass over the state is written.
    fn passed(&self);
}

impl<M: Machine> Shard<M> {
    /// Starts the task for `partition`, led by this node at `term`.
    pub fn start(
        partition: Arc<Partition>,
        term: u64,
        machine: M,
        host: Arc<dyn ShardHost>,
    ) -> Arc<Self> {
        let (jobs, rx) = mpsc::channel(QUEUE);
        let (phase_tx, phase) = watch::channel(Phase::Loading);
        let shard = Arc::new(Self {
            index: partition.index,
            term,
            jobs: jobs.clone(),
            phase,
            shared: machine.shared(),
        });
        let task = Task {
            partition,
            term,
            machine,
            host,
            phase: phase_tx,
            queue: Queue { jobs },
            since_checkpoint: 0,
            checkpoint_len: 0,
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

    /// Runs `operation` (on behalf of `key`) in order with the others and answers once
    /// its records (and those of every operation before it) are committed.
    pub async fn run<T, F>(&self, key: &str, operation: F) -> Result<T, BrokerError>
    where
        T: Send + 'static,
        F: FnOnce(&mut M::State, &Context) -> Result<(Vec<M::Record>, T), BrokerError>
            + Send
            + 'static,
    {
        match self.phase() {
            Phase::Active | Phase::Loading => {}
            Phase::Stopped(reason, _) => {
                return Err(BrokerError::CoordinatorNotAvailable {
                    key: M::describe(key),
                    reason,
                });
            }
        }
        let (tx, rx) = oneshot::channel();
        let job: Job<M> = Box::new(move |state, context| match operation(state, context) {
            Ok((records, value)) => {
                let reply: Reply = Box::new(move |written| {
                    let _ = tx.send(written.map(|()| value));
                });
                (records, reply)
            }
            Err(error) => {
                // A refusal stands only if the state it was judged on was still this
                // coordinator's when the batch was written.
                let reply: Reply = Box::new(move |written| {
                    let _ = tx.send(written.and(Err(error)));
                });
                (Vec::new(), reply)
            }
        });
        self.jobs
            .try_send(job)
            .map_err(|_| BrokerError::CoordinatorLoading {
                key: M::describe(key),
            })?;
        match rx.await {
            // The write or the leadership check failed: this node may no longer lead the
            // coordinator partition, and the client should find the coordinator again.
            Ok(Err(BrokerError::Replication { .. })) | Err(_) => Err(BrokerError::NotCoordinator {
                key: M::describe(key),
            }),
            Ok(answer) => answer,
        }
    }
}

struct Task<M: Machine> {
    partition: Arc<Partition>,
    term: u64,
    machine: M,
    host: Arc<dyn ShardHost>,
    phase: watch::Sender<Phase>,
    /// The shard's own queue, for the machine's follow-up work.
    queue: Queue<M>,
    since_checkpoint: usize,
    /// Records in the last checkpoint.
    checkpoint_len: usize,
}

impl<M: Machine> Task<M> {
    fn context(&self) -> Context {
        Context {
            now_ms: now_ms(),
            steady_ms: steady_ms(),
            topics: self.host.topics(),
            replica: Arc::clone(&self.partition.replica),
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Job<M>>) {
        let stopped = match self.replay().await {
            Ok(records) => {
                tracing::info!(
                    kind = M::KEY,
                    partition = self.partition.index,
                    term = self.term,
                    records,
                    start = self.partition.reader.start_offset(),
                    end = self.partition.high_watermark(),
                    "coordinator partition loaded"
                );
                self.machine.loaded(&self.queue);
                let _ = self.phase.send(Phase::Active);
                self.serve(&mut rx).await
            }
            Err(error) => {
                tracing::error!(kind = M::KEY, partition = self.partition.index, %error, "coordinator partition could not be replayed; what it coordinates is unavailable here");
                format!("the coordinator could not replay its log: {error}")
            }
        };
        let _ = self
            .phase
            .send(Phase::Stopped(stopped, tokio::time::Instant::now()));
        // Whatever is still queued is answered: not by this coordinator.
        rx.close();
        let mut rest = Vec::new();
        while let Ok(job) = rx.try_recv() {
            rest.push(job);
        }
        self.fail(rest, "the coordinator stopped");
    }

    /// Applies every committed record of the partition; returns how many.
    async fn replay(&mut self) -> Result<usize, BrokerError> {
        let mut offset = self.partition.reader.start_offset();
        let end = self.partition.high_watermark();
        let mut count = 0;
        while offset < end {
            let fetched = self
                .partition
                .read(
                    offset,
                    REPLAY_READ,
                    spool_types::IsolationLevel::ReadUncommitted,
                )
                .await?;
            if fetched.batches.is_empty() {
                break;
            }
            for bytes in &fetched.batches {
                let batch = RecordBatch::new(bytes)?;
                if batch.last_offset() < offset {
                    continue;
                }
                let bad = |at: i64, reason: String| BrokerError::InvalidRequest {
                    reason: format!("{} record at offset {at}: {reason}", M::KEY),
                };
                // A control record of a kind this version does not know says nothing here.
                let Some(framing) = Framing::of(&batch) else {
                    continue;
                };
                if let Framing::Marker { .. } = framing {
                    let decoded = M::decode_framed(framing, None, None)
                        .map_err(|e| bad(batch.base_offset(), e))?;
                    if let Some(decoded) = decoded {
                        self.machine.apply(&decoded);
                        count += 1;
                    }
                    continue;
                }
                for record in batch.records()? {
                    let record = record?;
                    if record.offset() < offset {
                        continue;
                    }
                    let decoded = M::decode_framed(framing, record.key(), record.value())
                        .map_err(|e| bad(record.offset(), e))?;
                    if let Some(decoded) = decoded {
                        self.machine.apply(&decoded);
                        count += 1;
                    }
                }
            }
            offset = fetched.next_offset;
        }
        self.since_checkpoint = count;
        Ok(count)
    }

    /// Takes operations until leadership moves or a write fails; returns why it stopped.
    async fn serve(&mut self, rx: &mut mpsc::Receiver<Job<M>>) -> String {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leadership = self.partition.replica.changes();
        let mut jobs: Vec<Job<M>> = Vec::new();
        loop {
            let mut timed_pass = false;
            tokio::select! {
                job = rx.recv() => match job {
                    Some(job) => jobs.push(job),
                    None => return "the coordinator was closed".into(),
                },
                _ = tick.tick() => {
                    jobs.extend(self.machine.tick());
                    timed_pass = true;
                }
                alive = leadership.changed() => if !alive {
                    return "the partition replica stopped".into();
                },
            }
            if !self.still_leads() {
                self.fail(jobs, "the coordinator partition lost its leader");
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

    fn still_leads(&self) -> bool {
        self.partition.replica.is_leader() && self.partition.replica.term() == self.term
    }

    async fn run_jobs(&mut self, jobs: &mut Vec<Job<M>>) -> Result<(), String> {
        let began = tokio::time::Instant::now();
        let context = self.context();
        let mut operations: Vec<Vec<M::Record>> = Vec::with_capacity(jobs.len() + 1);
        let mut replies: Vec<Reply> = Vec::with_capacity(jobs.len() + 1);
        // What the machine writes first, so that every operation below is judged after it.
        let prelude = self.machine.prelude(&context);
        if !prelude.is_empty() {
            operations.push(prelude);
            replies.push(Box::new(|_| {}));
        }
        for job in jobs.drain(..) {
            let (written, reply) = job(self.machine.state(), &context);
            operations.push(written);
            replies.push(reply);
        }
        let count: usize = operations.iter().map(Vec::len).sum();
        // The jobs may have taken a while: what they computed is written only under the
        // leadership it was computed in.
        let outcome = if !self.still_leads() {
            Err(BrokerError::NotCoordinator { key: String::new() })
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
        // Before the answers go out: a waiter woken by the change must not be woken again
        // by a change it already knows.
        self.machine.written(&operations, began, &self.queue);
        for reply in replies {
            reply(Ok(()));
        }
        Ok(())
    }

    /// Appends `records` and waits until they are committed; returns the first offset.
    /// (Borrows nothing of the task across the wait: the machine need not be `Sync`.)
    fn write(
        &self,
        operations: &[Vec<M::Record>],
        now_ms: i64,
    ) -> impl std::future::Future<Output = Result<i64, BrokerError>> + Send + 'static {
        let batches = encode::<M>(operations, now_ms);
        let replica = Arc::clone(&self.partition.replica);
        let term = self.term;
        async move {
            replica
                .append_in_term(batches, AckLevel::All, term)
                .await
                .map(|offsets| offsets.first().copied().unwrap_or(-1))
                .map_err(|e| BrokerError::Replication {
                    reason: e.to_string(),
                })
        }
    }

    /// Writes the whole state, then lets the log drop what came before it, so a replay
    /// stays short however long the state lives.
    async fn checkpoint(&mut self) -> Result<(), String> {
        // Upserts only: a checkpoint cut short by a failover is harmless, so it may span
        // several batches. One record per "operation", so batches are cut by size (the
        // state of one key can be far larger than one batch may be).
        let records: Vec<Vec<M::Record>> = self
            .machine
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

    /// Answers jobs without running them on the state: this coordinator no longer speaks
    /// for it. A scratch state runs them (their replies need an outcome) and is dropped.
    fn fail(&self, jobs: Vec<Job<M>>, reason: &str) {
        let context = self.context();
        let mut scratch = self.machine.scratch();
        for job in jobs {
            let (_, reply) = job(&mut scratch, &context);
            reply(Err(BrokerError::Replication {
                reason: reason.to_string(),
            }));
        }
    }
}

/// The operations' records as Kafka batches: each operation whole in one batch, and a new
/// batch started once one holds `BATCH_BYTES`.
fn encode<M: Machine>(operations: &[Vec<M::Record>], now_ms: i64) -> Vec<Bytes> {
    let mut batches = Vec::new();
    let mut builder = BatchBuilder::new(BatchOptions::default());
    let (mut key, mut value) = (Vec::new(), Vec::new());
    for operation in operations.iter().filter(|op| !op.is_empty()) {
        let framing = M::framing(&operation[0]);
        debug_assert!(operation.iter().all(|r| M::framing(r) == framing));
        if builder.size() >= BATCH_BYTES || (framing != Framing::Plain && !builder.is_empty()) {
            let full = std::mem::replace(&mut builder, BatchBuilder::new(BatchOptions::default()));
            batches.push(full.finish());
        }
        match framing {
            Framing::Marker {
                producer_id,
                epoch,
                marker,
            } => {
                batches.push(spool_log::batch::control_batch(
                    producer_id,
                    epoch,
                    marker,
                    now_ms,
                ));
                continue;
            }
            Framing::Transactional { producer_id, epoch } => {
                // A batch of its own, under the producer's id and epoch.
                builder = BatchBuilder::new(BatchOptions {
                    producer_id,
                    producer_epoch: epoch,
                    transactional: true,
                    ..BatchOptions::default()
                });
            }
            Framing::Plain => {}
        }
        for record in operation {
            key.clear();
            value.clear();
            let has_value = M::encode(record, &mut key, &mut value);
            builder.append(
                now_ms,
                Some(&key),
                has_value.then_some(value.as_slice()),
                &[],
            );
        }
        if framing != Framing::Plain {
            let done = std::mem::replace(&mut builder, BatchBuilder::new(BatchOptions::default()));
            batches.push(done.finish());
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
