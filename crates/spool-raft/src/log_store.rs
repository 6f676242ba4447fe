//! openraft's log storage, implemented directly on a partition's spool-log: a Raft entry
//! is one frame, a data entry's payload the record batch itself. Kafka offsets are given
//! out by the log as entries are appended and given back when they are truncated, so
//! every replica numbers records alike; blank and membership entries take none.
//!
//! spool-log deletes whole segments only, so a purge records a logical start (the last
//! purged log id) below which nothing is returned, and deletes the segments it covers
//! entirely. Vote and commit progress live in the node's state store.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{EntryPayload, OptionalSend};
use parking_lot::Mutex;
use spool_log::{FlushPolicy, FrameKind, LogReader, RecordBatch, StoredEntry};

use crate::codec::{decode_membership, encode_membership};
use crate::error::io_error;
use crate::flusher::{Flusher, SharedLog};
use crate::producers::{BatchIdentity, ProducerTable, Verdict};
use crate::state_store::NodeStateStore;
use crate::types::{
    Appended, Entry, GroupId, LogId, PartitionRaft, ProduceBatch, Vote, log_id, term_of,
};

/// Most payload bytes one replication read returns.
const MAX_READ_BYTES: usize = 4 * 1024 * 1024;

/// What the log store, its readers and the state machine of one group share.
#[derive(Debug, Default)]
pub(crate) struct GroupShared {
    pub vote: Mutex<Option<Vote>>,
    /// The logical start: entries up to this id are gone even if their segment is not.
    pub purged: Mutex<Option<LogId>>,
    /// The last installed or built snapshot: (last log id, Kafka offset after it), so that
    /// a purge past the log's end can restart the log at the right offset.
    pub snapshot_end: Mutex<Option<(LogId, i64)>>,
    /// Set when entries were appended to an empty log past its start: the start is then
    /// where the log began, not a purge.
    pub began_at: Mutex<Option<u64>>,
    /// Entries appended but not yet applied, as they were appended: replication and apply
    /// read them from memory instead of the disk.
    pub recent: Mutex<RecentEntries>,
    /// The producer table at the log's end: what the leader checks its own batches
    /// against (lock order: the log, then this).
    pub producers: Mutex<ProducerTable>,
    /// The producer table at the applied point.
    pub applied_producers: Mutex<AppliedProducers>,
}

/// The producer table as of the last applied entry.
#[derive(Debug, Default)]
pub(crate) struct AppliedProducers {
    pub index: Option<u64>,
    pub table: ProducerTable,
    /// The transactions aborted in the retained log.
    pub aborted: crate::producers::aborted::AbortedIndex,
    /// Bytes of data entries applied since the last snapshot of the table.
    pub since_snapshot: u64,
}

/// Most bytes of payload the recent-entries cache of one group holds.
const RECENT_MAX_BYTES: usize = 8 * 1024 * 1024;

/// Consecutive entries at the end of the log, oldest first.
#[derive(Debug, Default)]
pub(crate) struct RecentEntries {
    entries: std::collections::VecDeque<Entry>,
    bytes: usize,
}

fn payload_len(entry: &Entry) -> usize {
    match &entry.payload {
        EntryPayload::Normal(data) => data.batch.len(),
        _ => 0,
    }
}

impl RecentEntries {
    fn push(&mut self, entry: Entry) {
        if self
            .entries
            .back()
            .is_some_and(|last| last.log_id.index + 1 != entry.log_id.index)
        {
            self.clear();
        }
        self.bytes += payload_len(&entry);
        self.entries.push_back(entry);
        while self.bytes > RECENT_MAX_BYTES {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some(first) = self.entries.pop_front() {
            self.bytes -= payload_len(&first);
        }
    }

    /// Forgets entries up to `index` (applied, or purged).
    pub fn trim_through(&mut self, index: u64) {
        while self
            .entries
            .front()
            .is_some_and(|e| e.log_id.index <= index)
        {
            self.pop_front();
        }
    }

    /// Forgets entries from `index` on (truncated).
    fn truncate_from(&mut self, index: u64) {
        while self.entries.back().is_some_and(|e| e.log_id.index >= index) {
            if let Some(last) = self.entries.pop_back() {
                self.bytes -= payload_len(&last);
            }
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Entries `[from, to)` if all of them are here, within `max_bytes` (at least one).
    fn get(&self, from: u64, to: u64, max_bytes: usize) -> Option<Vec<Entry>> {
        let first = self.entries.front()?.log_id.index;
        let last = self.entries.back()?.log_id.index;
        if from < first || to > last + 1 || from >= to {
            return None;
        }
        let mut out = Vec::with_capacity((to - from) as usize);
        let mut bytes = 0;
        for entry in self
            .entries
            .range((from - first) as usize..(to - first) as usize)
        {
            let len = payload_len(entry);
            if !out.is_empty() && bytes + len > max_bytes {
                break;
            }
            bytes += len;
            out.push(entry.clone());
        }
        Some(out)
    }
}

/// The write side of a group's log, owned by its Raft core.
#[derive(Debug)]
pub struct PartitionLogStore {
    group: GroupId,
    log: SharedLog,
    reader: PartitionLogReader,
    shared: Arc<GroupShared>,
    store: NodeStateStore,
    flusher: Arc<Flusher>,
}

/// A read handle on a group's log; openraft holds several.
#[derive(Debug, Clone)]
pub struct PartitionLogReader {
    reader: LogReader,
    shared: Arc<GroupShared>,
}

impl PartitionLogStore {
    pub(crate) fn new(
        group: GroupId,
        log: SharedLog,
        shared: Arc<GroupShared>,
        store: NodeStateStore,
        flusher: Arc<Flusher>,
    ) -> Self {
        let reader = PartitionLogReader {
            reader: log.lock().reader(),
            shared: Arc::clone(&shared),
        };
        Self {
            group,
            log,
            reader,
            shared,
            store,
            flusher,
        }
    }
}

impl PartitionLogStore {
    /// Decides, under the log's lock, what becomes of each data entry about to be
    /// appended at `next_offset`, and records the stored idempotent batches in the
    /// producer table. Only this leader's own batches are checked.
    fn judge(
        &self,
        mut next_offset: i64,
        batches: &[RecordBatch<'_>],
        producers: &[Option<(BatchIdentity, bool)>],
    ) -> Vec<Verdict> {
        let mut table = self.shared.producers.lock();
        batches
            .iter()
            .zip(producers)
            .map(|(batch, producer)| {
                let verdict = match producer {
                    Some((identity, true)) => table.check(identity),
                    _ => Verdict::Append,
                };
                if verdict == Verdict::Append {
                    let count = i64::from(batch.offset_count());
                    if let Some((identity, _)) = producer {
                        // Aborts are indexed once applied, not at the log's end.
                        let _ = table.record(identity, next_offset, next_offset + count - 1);
                    }
                    next_offset += count;
                }
                verdict
            })
            .collect()
    }

    /// After a truncation: the table at the log's end is the applied one plus the
    /// entries the log still holds after the applied point (committed entries are never
    /// truncated, so the applied point is below the cut).
    fn rebuild_producers(&self, log: &spool_log::Log) -> Result<(), std::io::Error> {
        let (from, mut table) = {
            let applied = self.shared.applied_producers.lock();
            (applied.index.map_or(0, |i| i + 1), applied.table.clone())
        };
        let reader = log.reader();
        crate::producers::files::replay(&reader, &mut table, from, u64::MAX, |_| {})
            .map_err(io_error)?;
        *self.shared.producers.lock() = table;
        Ok(())
    }
}

impl PartitionLogReader {
    /// The last purged and the last stored log ids.
    fn state(&self) -> (Option<LogId>, Option<LogId>) {
        let bounds = self.reader.bounds();
        let began_here = *self.shared.began_at.lock() == Some(bounds.first_index);
        let physical_purged = (bounds.first_index > 0 && !began_here)
            .then(|| log_id(bounds.prev_term, bounds.first_index - 1));
        let purged = (*self.shared.purged.lock()).max(physical_purged);
        let last = if bounds.next_index > bounds.first_index {
            Some(log_id(bounds.last_term, bounds.next_index - 1))
        } else {
            physical_purged
        };
        (purged, last.max(purged))
    }

    /// The stored entries with indexes in `[from, to)` that are not purged.
    fn read(&self, from: u64, to: u64, max_bytes: usize) -> Result<Vec<Entry>, std::io::Error> {
        let bounds = self.reader.bounds();
        let logical_start = self.shared.purged.lock().map_or(0, |p| p.index + 1);
        let from = from.max(bounds.first_index).max(logical_start);
        let to = to.min(bounds.next_index);
        if from >= to {
            return Ok(Vec::new());
        }
        if let Some(entries) = self.shared.recent.lock().get(from, to, max_bytes) {
            return Ok(entries);
        }
        let stored = self
            .reader
            .read_entries(from, to, max_bytes)
            .map_err(io_error)?;
        let mut out = Vec::with_capacity(stored.len());
        for entry in stored {
            out.push(to_raft_entry(entry)?);
        }
        Ok(out)
    }
}

fn to_raft_entry(stored: StoredEntry) -> Result<Entry, std::io::Error> {
    let id = log_id(stored.header.term, stored.header.index);
    let payload = match stored.header.kind {
        FrameKind::Data => EntryPayload::Normal(ProduceBatch {
            batch: stored.payload,
            notice: None,
            offsets: Some((stored.header.base_offset, stored.header.next_offset())),
            verified: false,
        }),
        FrameKind::Blank => EntryPayload::Blank,
        FrameKind::Membership => {
            EntryPayload::Membership(decode_membership(&stored.payload).map_err(io_error)?)
        }
    };
    Ok(openraft::Entry {
        log_id: id,
        payload,
    })
}

fn bounds_of(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let from = match range.start_bound() {
        Bound::Included(i) => *i,
        Bound::Excluded(i) => i.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let to = match range.end_bound() {
        Bound::Included(i) => i.saturating_add(1),
        Bound::Excluded(i) => *i,
        Bound::Unbounded => u64::MAX,
    };
    (from, to)
}

impl RaftLogReader<PartitionRaft> for PartitionLogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, std::io::Error> {
        let (from, to) = bounds_of(&range);
        self.read(from, to, usize::MAX)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, std::io::Error> {
        Ok(*self.shared.vote.lock())
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, std::io::Error> {
        self.read(start, end, MAX_READ_BYTES)
    }
}

impl RaftLogStorage<PartitionRaft> for PartitionLogStore {
    type LogReader = PartitionLogReader;

    async fn get_log_state(&mut self) -> Result<LogState<PartitionRaft>, std::io::Error> {
        let (last_purged_log_id, last_log_id) = self.reader.state();
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.reader.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), std::io::Error> {
        let vote = *vote;
        self.store
            .update_durable(self.group, |r| r.vote = Some(vote))
            .await?;
        *self.shared.vote.lock() = Some(vote);
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), std::io::Error> {
        self.store.update(self.group, |r| r.committed = committed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, std::io::Error> {
        let committed = self.store.get(self.group).and_then(|r| r.committed);
        // A log that lost an unsynced tail (flush=os) cannot claim more than it holds.
        let (_, last) = self.reader.state();
        Ok(committed.min(last))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<PartitionRaft>,
    ) -> Result<(), std::io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let memberships: Vec<Vec<u8>> = entries
            .iter()
            .filter_map(|e| match &e.payload {
                EntryPayload::Membership(m) => Some(encode_membership(m)),
                _ => None,
            })
            .collect();
        let mut batches = Vec::with_capacity(entries.len());
        // Per data entry: its producer, and whether this leader is to check its sequence
        // (its own writes carry a notice; replicated entries were decided by their leader).
        let mut producers: Vec<Option<(BatchIdentity, bool)>> = Vec::with_capacity(entries.len());
        for entry in &entries {
            if let EntryPayload::Normal(data) = &entry.payload {
                let batch = if data.verified {
                    RecordBatch::new_without_crc(&data.batch)
                } else {
                    RecordBatch::new(&data.batch)
                };
                let batch = batch.map_err(io_error)?;
                producers.push(BatchIdentity::of(&batch).map(|id| (id, data.notice.is_some())));
                batches.push(batch);
            }
        }
        let frame_bytes: u64 = batches
            .iter()
            .map(|b| b.as_bytes().len())
            .chain(memberships.iter().map(Vec::len))
            .map(|len| len as u64)
            .sum::<u64>()
            + (entries.len() as u64) * spool_log::frame::FRAME_HEADER_LEN as u64;
        let mut log = self.log.lock();
        let write = |log: &mut spool_log::Log| {
            if let Some(first) = entries.first()
                && log.first_index() == log.next_index()
                && first.log_id.index > log.next_index()
            {
                // An empty log may begin anywhere; nothing before it is lost.
                let next_offset = log.next_offset();
                log.reset(first.log_id.index, next_offset, 0)
                    .map_err(io_error)?;
                *self.shared.began_at.lock() = Some(first.log_id.index);
            }
            let verdicts = self.judge(log.next_offset(), &batches, &producers);
            let mut batch_views = batches.iter().zip(&verdicts);
            let mut membership_bytes = memberships.iter();
            let to_store = entries.iter().map(|entry| spool_log::Entry {
                term: term_of(&entry.log_id),
                index: entry.log_id.index,
                payload: match &entry.payload {
                    EntryPayload::Normal(_) => match batch_views.next() {
                        Some((batch, Verdict::Append)) => spool_log::EntryPayload::Data(*batch),
                        // A retry the log holds, or a refused batch: a blank entry.
                        Some(_) | None => spool_log::EntryPayload::Blank,
                    },
                    EntryPayload::Blank => spool_log::EntryPayload::Blank,
                    EntryPayload::Membership(_) => match membership_bytes.next() {
                        Some(bytes) => spool_log::EntryPayload::Membership(bytes),
                        None => spool_log::EntryPayload::Blank,
                    },
                },
            });
            let appended = log.append(to_store).map_err(io_error)?;
            let counts: Vec<i64> = batches
                .iter()
                .map(|b| i64::from(b.offset_count()))
                .collect();
            Ok::<_, std::io::Error>((appended.first_offset, counts, verdicts))
        };
        // Writes to the page cache stay on this task: they are quick, and handing the
        // worker over for each would cost more than it saves. One that may roll the
        // segment (an fsync) is done with the worker handed over.
        let (first_offset, counts, verdicts) = if log.may_roll(frame_bytes) {
            // A roll seals the segment with an fsync under the log's lock, which the flusher
            // then waits on for every other log too. Sync first with the lock let go (only
            // this task appends, so the end cannot move meanwhile): the roll's own fsync
            // then finds little left to write. The segments stay listed as unsynced: a
            // flush of earlier appends running meanwhile must sync them itself, not take
            // this job's word for it before the fsync is done.
            let job = log.begin_sync_ahead().map_err(io_error)?;
            drop(log);
            let outcome = blocking(|| job.run());
            log = self.log.lock();
            log.finish_sync(&job, &outcome).map_err(io_error)?;
            outcome.map_err(io_error)?;
            blocking(|| write(&mut log))?
        } else {
            write(&mut log)?
        };
        // Still under the log's lock: the cache never lags what the log holds.
        drop(batches);
        let mut recent = self.shared.recent.lock();
        for entry in stored_entries(entries, counts, verdicts, first_offset) {
            recent.push(entry);
        }
        drop(recent);
        let flush = log.config().flush;
        drop(log);
        match flush {
            FlushPolicy::Always => self.flusher.flush(Arc::clone(&self.log), callback),
            FlushPolicy::Interval(_) | FlushPolicy::Os => callback.io_completed(Ok(())),
        }
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), std::io::Error> {
        blocking(|| {
            let mut log = self.log.lock();
            let first_removed = match last_log_id {
                Some(id) => id.index + 1,
                None => log.first_index(),
            };
            if first_removed < log.next_index() {
                self.shared.recent.lock().truncate_from(first_removed);
                log.truncate_from(first_removed).map_err(io_error)?;
                self.rebuild_producers(&log)?;
            }
            Ok(())
        })
    }

    async fn purge(&mut self, upto: LogId) -> Result<(), std::io::Error> {
        self.shared.recent.lock().trim_through(upto.index);
        blocking(|| -> Result<(), std::io::Error> {
            let mut log = self.log.lock();
            if upto.index >= log.next_index() {
                // Purging past the end (a snapshot installed beyond this log): start afresh
                // right after it, at the offset the snapshot ends at.
                let next_offset = match *self.shared.snapshot_end.lock() {
                    Some((id, offset)) if id == upto => offset,
                    _ => log.next_offset(),
                };
                log.reset(upto.index + 1, next_offset, term_of(&upto))
                    .map_err(io_error)?;
                // Whatever the log held is gone, an uncommitted tail of another term too:
                // the table at its end is the applied one.
                let applied = self.shared.applied_producers.lock().table.clone();
                *self.shared.producers.lock() = applied;
            } else {
                log.purge_through_index(upto.index).map_err(io_error)?;
            }
            // Producers whose batches are all gone leave the tables.
            let start = log.start_offset();
            self.shared.producers.lock().remove_below(start);
            let mut applied = self.shared.applied_producers.lock();
            applied.table.remove_below(start);
            applied.aborted.remove_below(start);
            Ok(())
        })?;
        let mut purged = self.shared.purged.lock();
        if Some(upto) > *purged {
            *purged = Some(upto);
        }
        Ok(())
    }
}

/// Runs file work (writes, a segment roll's fsync, truncation, deletion) without holding
/// up an async worker: on a multi-threaded runtime the worker hands its other tasks over
/// while this one blocks. (A current-thread runtime, as in some tests, runs it in place.)
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// Tells local producers (acks=1) where their batches went, and returns the entries as
/// stored (offsets known, notices gone) for the recent-entries cache.
fn stored_entries(
    entries: Vec<Entry>,
    counts: Vec<i64>,
    verdicts: Vec<Verdict>,
    first_offset: i64,
) -> impl Iterator<Item = Entry> {
    let mut offset = first_offset;
    let mut counts = counts.into_iter().zip(verdicts);
    entries.into_iter().map(move |mut entry| {
        if let EntryPayload::Normal(data) = &mut entry.payload {
            let (count, verdict) = counts.next().unwrap_or((0, Verdict::Append));
            let base_offset = match verdict {
                Verdict::Append => offset,
                Verdict::Duplicate { base_offset } => base_offset,
                Verdict::Refused(_) => -1,
            };
            if let Some(notice) = data.notice.take() {
                notice.fire(Appended {
                    index: entry.log_id.index,
                    base_offset,
                    verdict,
                });
            }
            if verdict != Verdict::Append {
                // Stored blank: so it is replicated and applied.
                entry.payload = EntryPayload::Blank;
                return entry;
            }
            let next = offset + count;
            data.offsets = Some((offset, next));
            offset = next;
        }
        entry
    })
}
