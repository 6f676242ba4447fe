//! Opening a group's storage: its log, log store and state machine, consistent with
//! each other and with the node's state record.

use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use spool_log::{Log, LogConfig, LogReader};

use crate::error::ReplicaError;
use crate::flusher::{Flusher, SharedLog};
use crate::log_store::{AppliedProducers, GroupShared, PartitionLogStore};
use crate::producers::aborted::{AbortedIndex, sync_files};
use crate::producers::{ProducerTable, files};
use crate::state_machine::{PartitionStateMachine, ProducerFiles};
use crate::state_store::NodeStateStore;
use crate::types::{GroupId, log_id};

/// A group's storage, ready to hand to `Raft::new`.
#[derive(Debug)]
pub struct GroupStorage {
    pub log_store: PartitionLogStore,
    pub state_machine: PartitionStateMachine,
    /// Reads records for fetches (bounded by the high watermark).
    pub reader: LogReader,
    pub(crate) log: SharedLog,
    pub(crate) shared: Arc<GroupShared>,
}

/// Opens (recovering, or creating) the log in `dir` and the group's Raft storage on it.
pub fn open_group_storage(
    group: GroupId,
    dir: &Path,
    config: LogConfig,
    store: NodeStateStore,
    flusher: Arc<Flusher>,
    producer_expiry_ms: i64,
) -> Result<GroupStorage, ReplicaError> {
    let log = Log::open(dir, config)?;
    let report = log.recovery_report();
    if report.truncated_tail.is_some() || !report.rebuilt_indexes.is_empty() {
        tracing::warn!(group, dir = %dir.display(), ?report, "recovered partition log");
    }
    let reader = log.reader();
    let bounds = reader.bounds();
    let last_log_id = if bounds.next_index > bounds.first_index {
        Some(log_id(bounds.last_term, bounds.next_index - 1))
    } else {
        (bounds.first_index > 0).then(|| log_id(bounds.prev_term, bounds.first_index - 1))
    };
    let shared = Arc::new(GroupShared::default());
    if let Some(record) = store.get(group) {
        *shared.vote.lock() = record.vote;
    }
    let state_machine = PartitionStateMachine::restore(
        group,
        store.clone(),
        Arc::clone(&shared),
        last_log_id,
        bounds.start_offset,
        ProducerFiles {
            dir: dir.to_path_buf(),
            reader: reader.clone(),
            expiry_ms: producer_expiry_ms,
        },
    );
    restore_producers(dir, &reader, &shared, state_machine.applied_index())?;
    state_machine.publish_last_stable();
    let log: SharedLog = Arc::new(Mutex::new(log));
    let log_store =
        PartitionLogStore::new(group, Arc::clone(&log), Arc::clone(&shared), store, flusher);
    Ok(GroupStorage {
        log_store,
        state_machine,
        reader,
        log,
        shared,
    })
}

/// Entries replayed at a start beyond which the table is written down at once.
const REPLAY_SNAPSHOT_ENTRIES: u64 = 10_000;

/// Rebuilds the producer tables: at the applied point from the newest snapshot at or
/// before it and the entries after that, then at the log's end from the entries after
/// the applied point. Producers whose batches retention removed are left out, as a
/// replica that never saw them would leave them out.
fn restore_producers(
    dir: &Path,
    reader: &LogReader,
    shared: &GroupShared,
    applied: Option<u64>,
) -> Result<(), ReplicaError> {
    let mut aborted = AbortedIndex::load(dir).map_err(|e| ReplicaError::StateFile {
        path: dir.to_path_buf(),
        reason: format!("aborted-transaction index: {e}"),
    })?;
    // A damaged index may miss an abort a snapshot covers: the whole log is replayed.
    let rebuild = std::mem::take(&mut aborted.damaged);
    // A snapshot older than the retained log would skip the entries retention removed
    // after it (a transaction's marker among them): the retained log is replayed whole.
    let first_index = reader.bounds().first_index;
    let snapshot = applied
        .filter(|_| !rebuild)
        .and_then(|at| files::load_snapshot(dir, at))
        .filter(|(at, _)| at + 1 >= first_index);
    let (mut table, from) = match snapshot {
        Some((at, table)) => (table, at + 1),
        None => (ProducerTable::default(), 0),
    };
    let applied_end = applied.map_or(0, |at| at + 1);
    files::replay(reader, &mut table, from, applied_end, |ended| {
        aborted.push(ended, reader);
    })?;
    let start = reader.start_offset();
    table.remove_below(start);
    aborted.remove_below(start);
    // A long replay is not repeated at the next start.
    if let Some(at) = applied
        && at.saturating_sub(from) >= REPLAY_SNAPSHOT_ENTRIES
        && !aborted.damaged
    {
        let written = sync_files(&aborted.take_unsynced())
            .and_then(|()| files::write_snapshot(dir, at, &files::encode_snapshot(at, &table)));
        if let Err(error) = written {
            tracing::warn!(dir = %dir.display(), %error, "could not write a producer snapshot");
        }
    }
    let mut at_end = table.clone();
    files::replay(reader, &mut at_end, applied_end, u64::MAX, |_| {})?;
    *shared.applied_producers.lock() = AppliedProducers {
        index: applied,
        table,
        aborted,
        since_snapshot: 0,
    };
    *shared.producers.lock() = at_end;
    Ok(())
}
