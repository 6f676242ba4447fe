//! The coordinator machinery that consumer groups and transactions share.
//!
//! What a kind of coordinator keeps lives in an internal topic. The coordinator of key K
//! is the leader of partition murmur2(K) mod N of that topic: the node leading it runs a
//! `Shard` (the state in memory, changed by one task that writes every change through
//! the partition's Raft group before answering). A watcher starts a shard when this node
//! takes the lead of such a partition and drops it when the lead moves; the new leader
//! replays the partition and carries on. A `Machine` is what one kind keeps and how its
//! records are written and replayed.

pub(crate) mod shard;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::broker::Broker;
use crate::error::BrokerError;
pub(crate) use shard::{Context, Job, Queue, Reply, Shard, ShardHost};

/// How long a request waits for a coordinator that is being elected or loaded before it
/// is answered with a retriable error: long enough for an election, short enough that a
/// client's own deadline is not reached first.
pub(crate) const COORDINATOR_WAIT: Duration = Duration::from_secs(5);

/// How a record is written to a coordinator's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    Plain,
    /// Inside a producer's transaction: a transactional batch under its id and epoch,
    /// which the transaction's marker later commits or aborts.
    Transactional {
        producer_id: i64,
        epoch: i16,
    },
    /// A transaction's commit or abort marker: a control batch, nothing else.
    Marker {
        producer_id: i64,
        epoch: i16,
        marker: spool_log::batch::ControlMarker,
    },
}

impl Framing {
    /// How a stored batch was framed.
    pub(crate) fn of(batch: &spool_log::RecordBatch<'_>) -> Option<Self> {
        let (producer_id, epoch) = (batch.producer_id(), batch.producer_epoch());
        if batch.is_control() {
            let marker = spool_log::batch::ControlMarker::of(batch)?;
            return Some(Framing::Marker {
                producer_id,
                epoch,
                marker,
            });
        }
        Some(if batch.is_transactional() && producer_id >= 0 {
            Framing::Transactional { producer_id, epoch }
        } else {
            Framing::Plain
        })
    }
}

/// One kind of coordinated state: what a shard's task holds, replays and writes.
pub(crate) trait Machine: Send + Sized + 'static {
    /// What operations run on.
    type State: Send + 'static;
    type Record: Send + Sync + 'static;
    /// What the request handlers share with the running machine.
    type Shared: Send + Sync + 'static;
    /// What a key names, for messages: "group", "transactional id".
    const KEY: &'static str;
    /// The internal topic the state lives in.
    const TOPIC: &'static str;

    /// `key` as messages name it.
    fn describe(key: &str) -> String {
        format!("{} {key:?}", Self::KEY)
    }
    fn state(&mut self) -> &mut Self::State;
    /// A throwaway state, to answer operations this coordinator no longer runs.
    fn scratch(&self) -> Self::State;
    fn shared(&self) -> Self::Shared;
    fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Self::Record, String>;
    /// A record read back from a batch framed so; `None` to skip it. By default markers
    /// are skipped and records decoded whatever their framing.
    fn decode_framed(
        framing: Framing,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<Option<Self::Record>, String> {
        match (framing, key) {
            (Framing::Marker { .. }, _) => Ok(None),
            (_, Some(key)) => Self::decode(key, value).map(Some),
            (_, None) => Err("no key".into()),
        }
    }
    /// How `record` is written (every record of one operation is framed alike).
    fn framing(_record: &Self::Record) -> Framing {
        Framing::Plain
    }
    /// Writes the record's key and value; false for a tombstone (no value).
    fn encode(record: &Self::Record, key: &mut Vec<u8>, value: &mut Vec<u8>) -> bool;
    fn apply(&mut self, record: &Self::Record);
    /// The whole state as records (a checkpoint).
    fn snapshot_records(&self) -> Vec<Self::Record>;
    /// The log is replayed; operations come next.
    fn loaded(&mut self, _queue: &Queue<Self>) {}
    /// Operations of a timed pass (every quarter second).
    fn tick(&mut self) -> Vec<Job<Self>> {
        Vec::new()
    }
    /// Records to write before the operations of a write, judged first.
    fn prelude(&mut self, _context: &Context) -> Vec<Self::Record> {
        Vec::new()
    }
    /// The operations' records are committed (their answers go out next).
    fn written(
        &mut self,
        _operations: &[Vec<Self::Record>],
        _began: tokio::time::Instant,
        _queue: &Queue<Self>,
    ) {
    }
}

/// This node's coordinator partitions of one kind.
pub(crate) struct Coordinators<M: Machine> {
    pub(crate) shards: Mutex<HashMap<u32, Arc<Shard<M>>>>,
    /// Bumped whenever a shard starts or is dropped, and after every pass that makes local
    /// replicas match the metadata: wakes requests waiting for their coordinator.
    pub(crate) changes: tokio::sync::watch::Sender<u64>,
    /// Bumped after each timed pass a shard makes, once what the pass wrote is committed.
    pub(crate) passes: Arc<tokio::sync::watch::Sender<u64>>,
}

impl<M: Machine> Default for Coordinators<M> {
    fn default() -> Self {
        Self {
            shards: Mutex::new(HashMap::new()),
            changes: tokio::sync::watch::Sender::new(0),
            passes: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }
}

impl<M: Machine> std::fmt::Debug for Coordinators<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinators")
            .field("kind", &M::KEY)
            .field("shards", &self.shards.lock().len())
            .finish()
    }
}

impl<M: Machine> Coordinators<M> {
    pub(crate) fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The running shards.
    pub(crate) fn running(&self) -> Vec<Arc<Shard<M>>> {
        self.shards.lock().values().cloned().collect()
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

impl Broker {
    /// The partition of `M::TOPIC` that coordinates `key`, if the topic exists.
    pub(crate) fn coordinator_partition<M: Machine>(&self, key: &str) -> Option<u32> {
        let topics = self.topics.read();
        let n = topics.get(M::TOPIC)?.record.partitions.len() as u32;
        (n > 0).then(|| spool_types::partition_for_key(key.as_bytes(), n))
    }

    /// The running shard that coordinates `key` here, or why there is none. Waits (at
    /// most `COORDINATOR_WAIT`) while the answer may still become yes: this node leads the
    /// key's partition but has not started its shard, the partition is electing a leader,
    /// or the metadata has the partition and this node has not opened it yet.
    pub(crate) async fn shard_for<M: Machine>(
        &self,
        coordinators: &Coordinators<M>,
        key: &str,
        start: impl Fn(u64) -> M,
    ) -> Result<Arc<Shard<M>>, BrokerError> {
        let deadline = tokio::time::Instant::now() + COORDINATOR_WAIT;
        let mut changes = coordinators.changes.subscribe();
        loop {
            // Watches first, then the look: a change in between wakes the wait.
            changes.borrow_and_update();
            let partition = self
                .coordinator_partition::<M>(key)
                .and_then(|index| self.partition(M::TOPIC, index).ok());
            let replica_changes = partition.as_ref().map(|p| p.replica.changes());
            let error = match self.running_shard(coordinators, key) {
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
                self.watch_shards(coordinators, &start);
            }
        }
    }

    fn running_shard<M: Machine>(
        &self,
        coordinators: &Coordinators<M>,
        key: &str,
    ) -> Result<Arc<Shard<M>>, Pending> {
        let not_available = |reason: String| BrokerError::CoordinatorNotAvailable {
            key: M::describe(key),
            reason,
        };
        let Some(index) = self.coordinator_partition::<M>(key) else {
            let error = not_available(format!("{} does not exist yet", M::TOPIC));
            return Err(if self.controller.current().topics.contains_key(M::TOPIC) {
                Pending::Wait(error)
            } else {
                Pending::No(error)
            });
        };
        if let Some(shard) = coordinators.shards.lock().get(&index)
            && !shard.is_stopped()
        {
            return Ok(Arc::clone(shard));
        }
        let Ok(partition) = self.partition(M::TOPIC, index) else {
            return Err(Pending::No(BrokerError::NotCoordinator {
                key: M::describe(key),
            }));
        };
        if partition.replica.is_leader() {
            let error = BrokerError::CoordinatorLoading {
                key: M::describe(key),
            };
            Err(Pending::Wait(error))
        } else if partition.replica.leader().node.is_none() {
            let error = not_available(format!("{}-{index} has no leader yet", M::TOPIC));
            Err(Pending::Wait(error))
        } else {
            Err(Pending::No(BrokerError::NotCoordinator {
                key: M::describe(key),
            }))
        }
    }

    /// Starts shards for the coordinator partitions this node leads (once it has applied
    /// an entry of its own term: everything committed before is then in the log it
    /// replays) and drops those it no longer leads.
    pub(crate) fn watch_shards<M: Machine>(
        &self,
        coordinators: &Coordinators<M>,
        start: &impl Fn(u64) -> M,
    ) {
        let local: BTreeMap<u32, Arc<crate::partition::Partition>> = self
            .topics
            .read()
            .get(M::TOPIC)
            .map(|t| {
                t.partitions
                    .iter()
                    .flatten()
                    .map(|p| (p.index, Arc::clone(p)))
                    .collect()
            })
            .unwrap_or_default();
        let mut shards = coordinators.shards.lock();
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
                    kind = M::KEY,
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
                passes: Arc::clone(&coordinators.passes),
            });
            let shard = Shard::start(partition, term, start(term), host);
            shards.insert(index, shard);
            changed = true;
        }
        drop(shards);
        if changed {
            coordinators.changed();
        }
    }

    /// The node coordinating `key` and its client address. Waits (at most
    /// `COORDINATOR_WAIT`) while the key's partition has no leader yet.
    pub(crate) async fn find_coordinator_of<M: Machine>(
        &self,
        coordinators: &Coordinators<M>,
        key: &str,
    ) -> Result<(u64, String), BrokerError> {
        let deadline = tokio::time::Instant::now() + COORDINATOR_WAIT;
        let mut metadata = self.controller.state();
        let mut local = coordinators.changes.subscribe();
        loop {
            // Watches first, then the look: a change in between wakes the wait.
            metadata.borrow_and_update();
            local.borrow_and_update();
            let replica_changes = self
                .coordinator_partition::<M>(key)
                .and_then(|index| self.partition(M::TOPIC, index).ok())
                .map(|p| p.replica.changes());
            let error = match self.coordinator_now::<M>(key) {
                Ok(found) => return Ok(found),
                Err(error) => error,
            };
            let woke = tokio::time::timeout_at(deadline, async {
                tokio::select! {
                    Ok(()) = metadata.changed() => {}
                    Ok(()) = local.changed() => {}
                    () = replica_changed(replica_changes) => {}
                }
            })
            .await;
            if woke.is_err() {
                return Err(error);
            }
        }
    }

    fn coordinator_now<M: Machine>(&self, key: &str) -> Result<(u64, String), BrokerError> {
        let index = self.coordinator_partition::<M>(key).ok_or_else(|| {
            BrokerError::CoordinatorNotAvailable {
                key: M::describe(key),
                reason: format!("{} is not in this node's metadata yet", M::TOPIC),
            }
        })?;
        let info = self.describe_topic(M::TOPIC)?;
        let partition = info.partitions.get(index as usize);
        match partition.and_then(|p| Some((p.leader?, p.leader_address.clone()?))) {
            Some(found) => Ok(found),
            None => Err(BrokerError::CoordinatorNotAvailable {
                key: M::describe(key),
                reason: format!("{}-{index} has no leader yet", M::TOPIC),
            }),
        }
    }

    /// Creates the internal topic `topic` if it does not exist yet.
    pub(crate) async fn ensure_internal_topic(
        &self,
        topic: &str,
        partitions: u32,
        replication_factor: u32,
    ) -> Result<(), BrokerError> {
        if self.topics.read().contains_key(topic) {
            return Ok(());
        }
        let configs = BTreeMap::from([
            // Coordinator state must outlive any retention: it is kept short by checkpoints.
            ("retention.ms".to_string(), "-1".to_string()),
            ("retention.bytes".to_string(), "-1".to_string()),
        ]);
        match self
            .create_any_topic(
                topic,
                partitions.max(1),
                replication_factor,
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

/// What a shard's task reads from the broker; holds it weakly so that a shard never
/// keeps a stopped broker alive.
struct Host {
    broker: std::sync::Weak<Broker>,
    checkpoint_records: usize,
    passes: Arc<tokio::sync::watch::Sender<u64>>,
}

impl ShardHost for Host {
    fn topics(&self) -> Arc<spool_group::TopicsSnapshot> {
        match self.broker.upgrade() {
            Some(broker) => broker.topics_snapshot(),
            None => Arc::new(spool_group::TopicsSnapshot::new()),
        }
    }

    fn checkpoint_records(&self) -> usize {
        self.checkpoint_records
    }

    fn passed(&self) {
        self.passes.send_modify(|n| *n = n.wrapping_add(1));
    }
}
