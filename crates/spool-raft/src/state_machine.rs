//! The partition's state machine is tiny: the applied log id, the membership, and the
//! Kafka offset after the last applied entry (which is the high watermark: entries are
//! applied once committed). Records themselves stay in the log.
//!
//! Snapshots are taken only where retention cuts the log (`snapshot_target`), never at
//! the applied point: a snapshot lets openraft purge the log up to it, and a lagging
//! follower installs it (start offset and membership) and then receives the retained
//! entries by AppendEntries.

use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use openraft::storage::{ApplyResponder, EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use parking_lot::Mutex;
use spool_log::RecordBatch;
use tokio::sync::watch;

use crate::error::io_error;
use crate::log_store::GroupShared;
use crate::producers::BatchIdentity;
use crate::state_store::{GroupRecord, NodeStateStore, SnapshotRecord};
use crate::types::{GroupId, LogId, PartitionRaft, Produced, SnapshotMeta, StoredMembership};

/// Bytes of data applied between two snapshots of the producer table: what a restart
/// replays at most.
const PRODUCER_SNAPSHOT_BYTES: u64 = 64 * 1024 * 1024;

/// The data of a snapshot beyond its meta: where the retained log's offsets start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TinySnapshot {
    pub next_offset: i64,
}

pub type PartitionSnapshot = openraft::Snapshot<
    openraft::type_config::alias::CommittedLeaderIdOf<PartitionRaft>,
    u64,
    openraft::BasicNode,
    TinySnapshot,
>;

/// Where the next snapshot is to be taken: the entry just before the first retained
/// segment, and the offset after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotTarget {
    pub last_log_id: LogId,
    pub next_offset: i64,
}

#[derive(Debug)]
pub struct PartitionStateMachine {
    group: GroupId,
    store: NodeStateStore,
    shared: Arc<GroupShared>,
    applied: Option<LogId>,
    /// Memberships applied since the snapshot, oldest first.
    memberships: Vec<StoredMembership>,
    next_offset: i64,
    high_watermark: watch::Sender<i64>,
    /// The last stable offset: the high watermark, or the first offset of the oldest
    /// transaction still open below it.
    last_stable: watch::Sender<i64>,
    /// Where aborted transactions' markers are looked up (for their index files).
    reader: spool_log::LogReader,
    pub(crate) snapshot_target: Arc<Mutex<Option<SnapshotTarget>>>,
    /// Producers to answer once the high watermark covers their entries (reused).
    answers: Answers,
    /// The partition's directory, where producer snapshots go.
    dir: std::path::PathBuf,
    /// Producers idle this long (by their newest record's timestamp) are forgotten.
    producer_expiry_ms: i64,
    /// When idle producers were last looked for.
    producers_expired: std::time::Instant,
}

/// Where a partition's producer state lives beside its segments, and how long an idle
/// producer is kept.
#[derive(Debug)]
pub(crate) struct ProducerFiles {
    pub dir: std::path::PathBuf,
    pub reader: spool_log::LogReader,
    pub expiry_ms: i64,
}

#[derive(Default)]
struct Answers(Vec<(ApplyResponder<PartitionRaft>, Produced)>);

impl std::fmt::Debug for Answers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Answers({})", self.0.len())
    }
}

impl PartitionStateMachine {
    /// Restores the state from the node's record. `last_log_id` is where the group's log
    /// ends: an applied point past it (an unsynced tail lost in a crash) falls back to the
    /// snapshot, and openraft re-applies from there.
    pub(crate) fn restore(
        group: GroupId,
        store: NodeStateStore,
        shared: Arc<GroupShared>,
        last_log_id: Option<LogId>,
        log_start_offset: i64,
        files: ProducerFiles,
    ) -> Self {
        let ProducerFiles {
            dir,
            reader,
            expiry_ms: producer_expiry_ms,
        } = files;
        let record = store.get(group).unwrap_or_default();
        if let Some(snapshot) = &record.snapshot
            && let Some(last) = snapshot.last_log_id
        {
            *shared.snapshot_end.lock() = Some((last, snapshot.next_offset));
        }
        let (applied, memberships, next_offset) = if record.applied <= last_log_id {
            (record.applied, record.memberships, record.next_offset)
        } else {
            tracing::warn!(
                group,
                "applied state is past the end of the log; re-applying from the snapshot"
            );
            match &record.snapshot {
                Some(s) => (s.last_log_id, Vec::new(), s.next_offset),
                None => (None, Vec::new(), log_start_offset),
            }
        };
        let next_offset = if applied.is_none() {
            log_start_offset
        } else {
            next_offset
        };
        Self {
            group,
            store,
            shared,
            applied,
            memberships,
            next_offset,
            high_watermark: watch::Sender::new(next_offset),
            last_stable: watch::Sender::new(next_offset),
            reader,
            snapshot_target: Arc::new(Mutex::new(None)),
            answers: Answers::default(),
            dir,
            producer_expiry_ms,
            producers_expired: std::time::Instant::now(),
        }
    }

    /// The Raft index of the last applied entry.
    pub(crate) fn applied_index(&self) -> Option<u64> {
        self.applied.map(|id| id.index)
    }

    /// Watches the offset after the last applied (so committed) record.
    pub fn high_watermark(&self) -> watch::Receiver<i64> {
        self.high_watermark.subscribe()
    }

    /// Watches the last stable offset: what read_committed readers read up to.
    pub fn last_stable(&self) -> watch::Receiver<i64> {
        self.last_stable.subscribe()
    }

    /// Publishes the last stable offset as of the applied point.
    pub(crate) fn publish_last_stable(&self) {
        let first_open = self.shared.applied_producers.lock().table.first_unstable();
        let stable = first_open.map_or(self.next_offset, |f| f.min(self.next_offset));
        self.last_stable.send_if_modified(|now| {
            let moved = *now != stable;
            *now = stable;
            moved
        });
    }

    fn snapshot_record(&self) -> Option<SnapshotRecord> {
        self.store.get(self.group).and_then(|r| r.snapshot)
    }

    fn current_membership(&self) -> StoredMembership {
        match self.memberships.last() {
            Some(m) => m.clone(),
            None => self
                .snapshot_record()
                .map(|s| s.membership)
                .unwrap_or_default(),
        }
    }

    /// The membership in effect at `at`.
    fn membership_at(&self, at: &LogId) -> StoredMembership {
        self.memberships
            .iter()
            .rev()
            .find(|m| m.log_id().as_ref() <= Some(at))
            .cloned()
            .or_else(|| self.snapshot_record().map(|s| s.membership))
            .unwrap_or_default()
    }

    /// Forgets producers idle past the expiry (looked for at most every tenth of it, and
    /// only while entries are applied: an idle partition's table costs nothing), and
    /// writes the producer table beside the segments once enough has been applied since
    /// the last time (off this task: a snapshot is a shortcut for restarts, not state).
    fn maintain_producers(&mut self, applied_bytes: u64) {
        let mut producers = self.shared.applied_producers.lock();
        let every = std::time::Duration::from_millis((self.producer_expiry_ms / 10).max(1) as u64);
        if self.producers_expired.elapsed() >= every {
            self.producers_expired = std::time::Instant::now();
            let now = wall_clock_ms();
            let expired = producers.table.expire(now, self.producer_expiry_ms);
            self.shared
                .producers
                .lock()
                .expire(now, self.producer_expiry_ms);
            if expired > 0 {
                tracing::debug!(group = self.group, expired, "idle producers expired");
            }
        }
        producers.since_snapshot += applied_bytes;
        if producers.since_snapshot < PRODUCER_SNAPSHOT_BYTES {
            return;
        }
        producers.since_snapshot = 0;
        let Some(index) = producers.index else { return };
        if producers.aborted.damaged {
            return;
        }
        let bytes = crate::producers::files::encode_snapshot(index, &producers.table);
        // The aborts the snapshot covers are on disk before it is.
        let unsynced = producers.aborted.take_unsynced();
        drop(producers);
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            let written = crate::producers::aborted::sync_files(&unsynced)
                .and_then(|()| crate::producers::files::write_snapshot(&dir, index, &bytes));
            if let Err(error) = written {
                tracing::warn!(dir = %dir.display(), %error, "could not write a producer snapshot");
            }
        });
    }

    fn save_lazily(&self) {
        let (applied, memberships, next_offset) =
            (self.applied, self.memberships.clone(), self.next_offset);
        self.store.update(self.group, |r| {
            r.applied = applied;
            r.memberships = memberships;
            r.next_offset = next_offset;
        });
    }
}

impl RaftStateMachine<PartitionRaft> for PartitionStateMachine {
    type SnapshotData = TinySnapshot;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), std::io::Error> {
        Ok((self.applied, self.current_membership()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), std::io::Error>
    where
        S: Stream<Item = Result<EntryResponder<PartitionRaft>, std::io::Error>>
            + Unpin
            + OptionalSend,
    {
        let mut applied_bytes = 0u64;
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let base_offset = match &entry.payload {
                EntryPayload::Normal(data) => {
                    let (base, next) = data
                        .offsets
                        .or_else(|| RecordBatch::peek_offsets(&data.batch))
                        .ok_or_else(|| io_error("a data entry holds no batch header"))?;
                    self.next_offset = next;
                    applied_bytes += data.batch.len() as u64;
                    // The batch was checked when stored: its header is enough here.
                    let identity = RecordBatch::new_without_crc(&data.batch)
                        .ok()
                        .and_then(|batch| BatchIdentity::of(&batch));
                    let mut producers = self.shared.applied_producers.lock();
                    if let Some(identity) = identity
                        && let Some(ended) = producers.table.record(&identity, base, next - 1)
                    {
                        producers.aborted.push(ended, &self.reader);
                    }
                    producers.index = Some(entry.log_id.index);
                    base
                }
                EntryPayload::Blank => self.next_offset,
                EntryPayload::Membership(m) => {
                    self.memberships
                        .push(StoredMembership::new(Some(entry.log_id), m.clone()));
                    self.next_offset
                }
            };
            if !matches!(entry.payload, EntryPayload::Normal(_)) {
                self.shared.applied_producers.lock().index = Some(entry.log_id.index);
            }
            self.applied = Some(entry.log_id);
            if let Some(responder) = responder {
                self.answers.0.push((responder, Produced { base_offset }));
            }
        }
        self.maintain_producers(applied_bytes);
        // Memberships the snapshot covers are no longer needed, except the last of them.
        if let Some((snap, _)) = *self.shared.snapshot_end.lock() {
            let covered = self
                .memberships
                .iter()
                .filter(|m| m.log_id().as_ref() <= Some(&snap))
                .count();
            if covered > 1 {
                self.memberships.drain(..covered - 1);
            }
        }
        if let Some(applied) = self.applied {
            self.shared.recent.lock().trim_through(applied.index);
        }
        // Published before any producer hears back: an answered record is readable. The
        // stable offset first: whoever sees the high watermark move sees it moved too
        // (both are applied, so committed, offsets).
        self.publish_last_stable();
        self.high_watermark.send_replace(self.next_offset);
        for (responder, produced) in self.answers.0.drain(..) {
            responder.send(produced);
        }
        self.save_lazily();
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let target = self.snapshot_target.lock().take();
        let (last_log_id, membership, next_offset) = match target {
            Some(t) if Some(t.last_log_id) <= self.applied => (
                Some(t.last_log_id),
                self.membership_at(&t.last_log_id),
                t.next_offset,
            ),
            _ => (self.applied, self.current_membership(), self.next_offset),
        };
        SnapshotBuilder {
            group: self.group,
            store: self.store.clone(),
            shared: Arc::clone(&self.shared),
            record: SnapshotRecord {
                last_log_id,
                membership,
                next_offset,
            },
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: TinySnapshot,
    ) -> Result<(), std::io::Error> {
        let record = SnapshotRecord {
            last_log_id: meta.last_log_id,
            membership: meta.last_membership.clone(),
            next_offset: snapshot.next_offset,
        };
        self.applied = meta.last_log_id;
        self.memberships.clear();
        self.next_offset = snapshot.next_offset;
        // The log restarts after the snapshot, and the table with it: what this replica
        // knew before is not what the retained log says (a transaction it saw open may
        // have ended in entries retention removed). The entries after the snapshot,
        // applied next, rebuild it as every replica that holds them does.
        {
            let mut producers = self.shared.applied_producers.lock();
            producers.index = meta.last_log_id.map(|id| id.index);
            producers.table = crate::producers::ProducerTable::default();
            producers.aborted.remove_below(i64::MAX);
        }
        let saved = record.clone();
        self.store
            .update_durable(self.group, |r: &mut GroupRecord| {
                r.snapshot = Some(saved);
                r.applied = meta.last_log_id;
                r.memberships.clear();
                r.next_offset = snapshot.next_offset;
            })
            .await?;
        if let Some(last) = meta.last_log_id {
            *self.shared.snapshot_end.lock() = Some((last, snapshot.next_offset));
        }
        self.publish_last_stable();
        self.high_watermark.send_replace(self.next_offset);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<PartitionSnapshot>, std::io::Error> {
        Ok(self.snapshot_record().map(to_snapshot))
    }
}

fn to_snapshot(record: SnapshotRecord) -> PartitionSnapshot {
    openraft::Snapshot {
        meta: SnapshotMeta {
            last_log_id: record.last_log_id,
            last_membership: record.membership,
        },
        snapshot: TinySnapshot {
            next_offset: record.next_offset,
        },
    }
}

/// Builds the tiny snapshot chosen when the builder was made and records it durably.
#[derive(Debug)]
pub struct SnapshotBuilder {
    group: GroupId,
    store: NodeStateStore,
    shared: Arc<GroupShared>,
    record: SnapshotRecord,
}

impl RaftSnapshotBuilder<PartitionRaft> for SnapshotBuilder {
    type SnapshotData = TinySnapshot;

    async fn build_snapshot(&mut self) -> Result<PartitionSnapshot, std::io::Error> {
        let record = self.record.clone();
        let current = self.store.get(self.group).and_then(|r| r.snapshot);
        // Snapshots only move forward; an older target keeps the current one.
        if let Some(current) = current
            && current.last_log_id > record.last_log_id
        {
            return Ok(to_snapshot(current));
        }
        let saved = record.clone();
        self.store
            .update_durable(self.group, |r| r.snapshot = Some(saved))
            .await?;
        if let Some(last) = record.last_log_id {
            *self.shared.snapshot_end.lock() = Some((last, record.next_offset));
        }
        Ok(to_snapshot(record))
    }
}

fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
