//! A partition replica: a Raft group member and its log, behind the interface the broker
//! writes through (`append` answering with the assigned offset, a watch on the high
//! watermark, `NotLeader` with the leader's address as an ordinary answer).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, ServerState};
use parking_lot::Mutex;
use spool_log::{LogConfig, LogReader, RetentionPolicy};
use tokio::sync::watch;

use crate::error::ReplicaError;
use crate::flusher::SharedLog;
use crate::state_machine::SnapshotTarget;
use crate::types::{GroupId, NodeId, Raft, log_id};

/// A voter this many entries behind the commit point still counts as in sync: replication
/// under load is always a little behind.
const IN_SYNC_SLACK: u64 = 1000;

/// When a produce is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckLevel {
    /// Once the leader has appended the batches.
    Leader,
    /// Once a majority holds them durably (committed).
    All,
}

/// The leader as a replica knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderHint {
    pub node: Option<NodeId>,
    pub address: Option<String>,
}

#[derive(Debug)]
pub struct PartitionReplica {
    pub(crate) group: GroupId,
    pub(crate) node_id: NodeId,
    pub(crate) raft: Raft,
    pub(crate) reader: LogReader,
    pub(crate) high_watermark: watch::Receiver<i64>,
    pub(crate) last_stable: watch::Receiver<i64>,
    pub(crate) shared: Arc<crate::log_store::GroupShared>,
    pub(crate) log: SharedLog,
    pub(crate) snapshot_target: Arc<Mutex<Option<SnapshotTarget>>>,
    pub(crate) dir: PathBuf,
    /// Timers stopped: an idle group, see `liveness`.
    pub(crate) quiet: watch::Sender<bool>,
    /// When a client last wrote or changed the group (ms on the node's clock).
    pub(crate) last_activity_ms: AtomicU64,
    pub(crate) clock: Instant,
    /// The log syncs on a timer (`FlushPolicy::Interval`): the node's ticker visits it.
    pub(crate) interval_flush: std::sync::atomic::AtomicBool,
    /// Lost durable Raft state and has not caught up yet: no votes, no campaigns.
    pub(crate) gate: crate::rebuild::RebuildGate,
    /// Stays out of elections for good (see `abstain`).
    pub(crate) abstaining: std::sync::atomic::AtomicBool,
}

impl PartitionReplica {
    fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    /// Records client activity and wakes the group if it was quiet.
    pub(crate) fn touch(&self) {
        self.last_activity_ms
            .store(self.now_ms(), Ordering::Relaxed);
        self.wake();
    }

    /// ms since the last client activity.
    pub(crate) fn idle_ms(&self) -> u64 {
        self.now_ms()
            .saturating_sub(self.last_activity_ms.load(Ordering::Relaxed))
    }

    pub fn is_quiet(&self) -> bool {
        *self.quiet.borrow()
    }

    /// Watches whether the group is quiet.
    pub fn quiet_changes(&self) -> watch::Receiver<bool> {
        self.quiet.subscribe()
    }

    /// Restarts the group's timers; a leader also heartbeats at once, so that followers
    /// wake and its lease is renewed before the writes that woke it.
    pub(crate) fn wake(&self) {
        if self.quiet.send_replace(false) {
            self.raft.runtime_config().tick(true);
            if self.is_leader() {
                let raft = self.raft.clone();
                tokio::spawn(async move {
                    let _ = raft.trigger().heartbeat().await;
                });
            }
        }
    }

    /// Stops the group's timers: no heartbeats, no election timeouts.
    pub(crate) fn quiesce(&self) {
        if !self.quiet.send_replace(true) {
            self.raft.runtime_config().tick(false);
        }
    }

    pub fn group(&self) -> GroupId {
        self.group
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Reads committed and uncommitted records alike: bound reads by the high watermark.
    pub fn reader(&self) -> &LogReader {
        &self.reader
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The offset after the last committed record; wakes fetches as it moves.
    pub fn high_watermark(&self) -> watch::Receiver<i64> {
        self.high_watermark.clone()
    }

    /// The last stable offset: the high watermark, or the first offset of the oldest
    /// transaction still open below it. read_committed readers stop here.
    pub fn last_stable(&self) -> watch::Receiver<i64> {
        self.last_stable.clone()
    }

    /// The aborted transactions whose records reach into `[from, upper)`, as (producer
    /// id, first offset), oldest first.
    pub fn aborted_transactions(&self, from: i64, upper: i64) -> Vec<(i64, i64)> {
        self.shared
            .applied_producers
            .lock()
            .aborted
            .overlapping(from, upper)
    }

    /// A producer's newest epoch and the newest coordinator epoch that marked it, at the
    /// log's end: what the leader checks an append of its batches against.
    pub fn producer_epochs(&self, producer_id: i64) -> Option<(i16, i32)> {
        self.shared
            .producers
            .lock()
            .get(producer_id)
            .map(|s| (s.epoch, s.coordinator_epoch))
    }

    /// A producer's newest epoch as of the applied (committed) point.
    pub fn applied_producer_epoch(&self, producer_id: i64) -> Option<i16> {
        self.shared
            .applied_producers
            .lock()
            .table
            .get(producer_id)
            .map(|s| s.epoch)
    }

    /// The transactions open at the applied point, as (first offset, producer id, epoch),
    /// oldest first.
    pub fn open_transactions(&self) -> Vec<(i64, i64, i16)> {
        let applied = self.shared.applied_producers.lock();
        applied
            .table
            .open_transactions()
            .map(|(first, id)| (first, id, applied.table.get(id).map_or(-1, |s| s.epoch)))
            .collect()
    }

    /// The group's current Raft term as this replica knows it.
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow_watched().current_term
    }

    /// Leads, and has applied an entry of its own term: everything committed before it
    /// took over is applied.
    pub fn leads_and_applied_own_term(&self) -> bool {
        self.with_metrics(|m| {
            m.state == ServerState::Leader
                && m.last_applied
                    .is_some_and(|id| crate::types::term_of(&id) == m.current_term)
        })
    }

    /// Reads the group's Raft metrics in place: a clone of them (maps of members and
    /// replication progress) costs more than most of what is read from them, and some of
    /// these are read for every group of the node several times a second.
    fn with_metrics<R>(&self, read: impl FnOnce(&crate::types::RaftMetrics) -> R) -> R {
        let metrics = self.raft.metrics();
        let current = metrics.borrow_watched();
        read(&current)
    }

    /// Wakes on any change of the replica's Raft state (role, term, leader, progress)
    /// after this call: take it before looking at the state, then wait.
    pub fn changes(&self) -> ReplicaChanges {
        let mut metrics = self.raft.metrics();
        // A clone carries its source's idea of what was seen, which is nothing for
        // openraft's own receiver: without this, the first wait would return at once.
        drop(metrics.borrow_and_update());
        ReplicaChanges(metrics)
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow_watched().state == ServerState::Leader
    }

    pub fn leader(&self) -> LeaderHint {
        self.with_metrics(|metrics| {
            let node = metrics.current_leader;
            let address = node.and_then(|id| {
                metrics
                    .membership_config
                    .membership()
                    .get_node(&id)
                    .map(|n| n.addr.clone())
            });
            LeaderHint { node, address }
        })
    }

    /// Every member's address, by node id.
    pub fn member_addresses(&self) -> BTreeMap<NodeId, String> {
        let mut addresses = BTreeMap::new();
        self.add_member_addresses(&mut addresses);
        addresses
    }

    /// Adds the members this map does not name yet, with their addresses.
    pub(crate) fn add_member_addresses(&self, addresses: &mut BTreeMap<NodeId, String>) {
        self.with_metrics(|metrics| {
            for (id, node) in metrics.membership_config.membership().nodes() {
                addresses.entry(*id).or_insert_with(|| node.addr.clone());
            }
        });
    }

    /// Whether `node` is a member (voter or learner) of the group.
    pub fn has_member(&self, node: NodeId) -> bool {
        self.with_metrics(|metrics| {
            metrics
                .membership_config
                .membership()
                .get_node(&node)
                .is_some()
        })
    }

    /// The current voters and learners.
    pub fn members(&self) -> (BTreeSet<NodeId>, BTreeSet<NodeId>) {
        self.with_metrics(|metrics| {
            let membership = metrics.membership_config.membership();
            (
                membership.voter_ids().collect(),
                membership.learner_ids().collect(),
            )
        })
    }

    /// Voters holding every committed entry, as the leader sees them (a follower, which
    /// cannot tell, names every voter).
    pub fn in_sync_voters(&self) -> Vec<NodeId> {
        self.with_metrics(|metrics| self.in_sync_voters_of(metrics))
    }

    fn in_sync_voters_of(&self, metrics: &crate::types::RaftMetrics) -> Vec<NodeId> {
        let voters: Vec<NodeId> = metrics.membership_config.membership().voter_ids().collect();
        let Some(matched) = metrics.replication.as_ref() else {
            return voters;
        };
        let committed = metrics.cluster_committed.map_or(0, |c| c.index);
        voters
            .into_iter()
            .filter(|id| {
                *id == self.node_id
                    || matched
                        .get(id)
                        .and_then(|m| m.as_ref())
                        .is_some_and(|m| m.index + IN_SYNC_SLACK >= committed)
            })
            .collect()
    }

    fn not_leader(&self, leader: Option<NodeId>, node: Option<BasicNode>) -> ReplicaError {
        ReplicaError::NotLeader {
            group: self.group,
            leader,
            leader_address: node.map(|n| n.addr),
        }
    }

    pub(crate) fn write_error(
        &self,
        error: ClientWriteError<crate::types::PartitionRaft>,
    ) -> ReplicaError {
        match error {
            ClientWriteError::ForwardToLeader(f) => self.not_leader(f.leader_id, f.leader_node),
            ClientWriteError::ChangeMembershipError(e) => ReplicaError::Membership(e.to_string()),
            // Truncated by a new leader: the write did not happen here.
            ClientWriteError::LogEntryDiscarded(_) => {
                let hint = self.leader();
                ReplicaError::NotLeader {
                    group: self.group,
                    leader: hint.node,
                    leader_address: hint.address,
                }
            }
            other => ReplicaError::Raft(other.to_string()),
        }
    }

    /// Confirms with a quorum that this replica still leads (a read index round), so
    /// that what it answers from state it built as leader is not stale: a leader cut off
    /// from the others must not keep answering. Errs if it does not lead.
    pub async fn confirm_leadership(&self, within: Duration) -> Result<(), ReplicaError> {
        self.touch();
        let confirmed = tokio::time::timeout(
            within,
            self.raft
                .ensure_linearizable(openraft::raft::ReadPolicy::ReadIndex),
        )
        .await;
        match confirmed {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(ReplicaError::Raft(error.to_string())),
            Err(_) => Err(ReplicaError::Raft(
                "no quorum confirmed the leadership in time".into(),
            )),
        }
    }

    /// Adds a node as a learner; with `wait`, returns once it has caught up.
    pub async fn add_learner(
        &self,
        node: NodeId,
        address: String,
        wait: bool,
    ) -> Result<(), ReplicaError> {
        self.touch();
        self.raft
            .add_learner(node, BasicNode { addr: address }, wait)
            .await
            .map(drop)
            .map_err(|e| self.membership_error(e))
    }

    /// Makes `voters` the voters (joint consensus); learners not named stay learners.
    pub async fn change_voters(&self, voters: BTreeSet<NodeId>) -> Result<(), ReplicaError> {
        self.touch();
        self.raft
            .change_membership(ChangeMembers::ReplaceAllVoters(voters), true)
            .await
            .map(drop)
            .map_err(|e| self.membership_error(e))
    }

    /// Removes nodes from the group altogether (voters must be removed first).
    pub async fn remove_nodes(&self, nodes: BTreeSet<NodeId>) -> Result<(), ReplicaError> {
        self.touch();
        self.raft
            .change_membership(ChangeMembers::RemoveNodes(nodes), false)
            .await
            .map(drop)
            .map_err(|e| self.membership_error(e))
    }

    fn membership_error(
        &self,
        error: RaftError<
            crate::types::PartitionRaft,
            ClientWriteError<crate::types::PartitionRaft>,
        >,
    ) -> ReplicaError {
        match error {
            RaftError::APIError(e) => self.write_error(e),
            RaftError::Fatal(f) => ReplicaError::Raft(f.to_string()),
        }
    }

    /// Creates the group with these voters, if this replica has no membership yet (a
    /// group whose first voters decide when to start it). `false`: it had one already.
    pub async fn initialize(&self, members: &Members) -> Result<bool, ReplicaError> {
        let raft_error = |e: &dyn std::fmt::Display| ReplicaError::Raft(e.to_string());
        if self
            .raft
            .is_initialized()
            .await
            .map_err(|e| raft_error(&e))?
        {
            return Ok(false);
        }
        let members: BTreeMap<NodeId, BasicNode> = members
            .iter()
            .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
            .collect();
        match self.raft.initialize(members).await {
            Ok(()) => Ok(true),
            // Entries arrived from a leader meanwhile: the group exists.
            Err(RaftError::APIError(_)) => Ok(false),
            Err(RaftError::Fatal(f)) => Err(raft_error(&f)),
        }
    }

    /// Stops (or restarts) this replica's election timeouts: it will not campaign.
    pub fn set_elect(&self, enabled: bool) {
        if enabled && self.may_not_lead() {
            return;
        }
        self.raft.runtime_config().elect(enabled);
    }

    /// Where this replica's log stands: its last entry, the commit point it knows, and
    /// the last entry applied (Raft indexes).
    pub fn progress(&self) -> RaftProgress {
        self.with_metrics(|m| RaftProgress {
            last_log_index: m.last_log_index,
            committed: m.cluster_committed.map(|id| id.index),
            applied: m.last_applied.map(|id| id.index),
            purged: m.purged.map(|id| id.index),
        })
    }

    /// Lost durable Raft state (a wiped directory or state file, a log that went back)
    /// and has not caught up with a leader yet: it neither votes nor campaigns.
    pub fn is_rebuilding(&self) -> bool {
        self.gate.is_active()
    }

    /// Keeps this replica from leading until it is reopened: it does not campaign and
    /// refuses leadership transfers, but still votes (its log is sound; a node that can
    /// no longer apply the group's records must only not lead it).
    pub fn abstain(&self) {
        self.abstaining.store(true, Ordering::Release);
        self.raft.runtime_config().elect(false);
    }

    /// Withholds its vote: rebuilding.
    pub fn withholds_votes(&self) -> bool {
        self.is_rebuilding()
    }

    /// May not stand for election: rebuilding, or abstaining.
    pub fn may_not_lead(&self) -> bool {
        self.is_rebuilding() || self.abstaining.load(Ordering::Acquire)
    }

    /// Starts an election now instead of waiting for a timeout (a new group's preferred
    /// leader). Raft decides as always: a replica behind the others is not elected. A
    /// rebuilding replica does not.
    pub fn campaign(&self) {
        if self.may_not_lead() {
            return;
        }
        let raft = self.raft.clone();
        tokio::spawn(async move {
            let _ = raft.trigger().elect(false).await;
        });
    }

    /// Asks the leader to hand leadership to `to`.
    pub async fn transfer_leader(&self, to: NodeId) -> Result<(), ReplicaError> {
        self.touch();
        self.raft
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(|e| ReplicaError::Raft(e.to_string()))
    }

    pub fn set_log_config(&self, config: LogConfig) -> Result<(), ReplicaError> {
        self.interval_flush.store(
            matches!(config.flush, spool_log::FlushPolicy::Interval(_)),
            Ordering::Relaxed,
        );
        self.log.lock().set_config(config)?;
        Ok(())
    }

    /// Cuts the log where retention allows: a snapshot at the last entry before the first
    /// retained segment, then a purge up to it. Only the leader decides; followers purge
    /// when the leader's snapshot reaches them or by their own retention pass.
    pub async fn apply_retention(
        &self,
        policy: &RetentionPolicy,
        now_ms: i64,
    ) -> Result<bool, ReplicaError> {
        let cut = {
            let log = self.log.lock();
            log.retention_point(policy, now_ms)
                .and_then(|offset| Some((offset, log.index_of_segment_at(offset)?)))
        };
        self.cut_before(cut).await
    }

    /// Removes the whole segments before the one holding the record at `offset`, once
    /// that record is applied: the log then starts at most one segment before it. A state
    /// machine built on the log (the controller's) calls this after writing its whole
    /// state at `offset`, so that the log stays bounded.
    pub async fn compact_before(&self, offset: i64) -> Result<bool, ReplicaError> {
        let cut = self.log.lock().cut_keeping(offset);
        self.cut_before(cut).await
    }

    /// Snapshots at the entry before the segment starting at `(base_offset, base_index)`
    /// and purges up to it, if that entry is applied.
    async fn cut_before(&self, segment: Option<(i64, u64)>) -> Result<bool, ReplicaError> {
        let Some(target) = segment.and_then(|(offset, index)| self.snapshot_target(offset, index))
        else {
            return Ok(false);
        };
        *self.snapshot_target.lock() = Some(target);
        let trigger = self.raft.trigger();
        trigger
            .snapshot()
            .await
            .map_err(|e| ReplicaError::Raft(e.to_string()))?;
        trigger
            .purge_log(target.last_log_id.index)
            .await
            .map_err(|e| ReplicaError::Raft(e.to_string()))?;
        Ok(true)
    }

    /// The entry just before the segment starting at `(base_offset, base_index)`, if it is
    /// applied already.
    fn snapshot_target(&self, base_offset: i64, base_index: u64) -> Option<SnapshotTarget> {
        let last_index = base_index.checked_sub(1)?;
        let term = self
            .reader
            .read_entries(last_index, last_index + 1, 1)
            .ok()?
            .first()
            .map(|e| e.header.term)?;
        let applied = self.raft.metrics().borrow_watched().last_applied;
        let target = log_id(term, last_index);
        (Some(target) <= applied).then_some(SnapshotTarget {
            last_log_id: target,
            next_offset: base_offset,
        })
    }
}

/// See [`PartitionReplica::changes`].
pub struct ReplicaChanges(
    openraft::type_config::alias::WatchReceiverOf<
        crate::types::PartitionRaft,
        openraft::RaftMetrics<crate::types::PartitionRaft>,
    >,
);

impl std::fmt::Debug for ReplicaChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplicaChanges")
    }
}

impl ReplicaChanges {
    /// Waits for the next change; `false` once the replica has stopped.
    pub async fn changed(&mut self) -> bool {
        self.0.changed().await.is_ok()
    }
}

/// See [`PartitionReplica::progress`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RaftProgress {
    pub last_log_index: Option<u64>,
    pub committed: Option<u64>,
    pub applied: Option<u64>,
    pub purged: Option<u64>,
}

/// Who is in a group when it is created.
pub type Members = BTreeMap<NodeId, String>;
