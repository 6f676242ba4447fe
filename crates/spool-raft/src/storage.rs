//! Opening a group's storage: its log, log store and state machine, consistent with
//! each other and with the node's state record.

use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use spool_log::{Log, LogConfig, LogReader};

use crate::error::ReplicaError;
use crate::flusher::{Flusher, SharedLog};
use crate::log_store::{GroupShared, PartitionLogStore};
use crate::state_machine::PartitionStateMachine;
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
}

/// Opens (recovering, or creating) the log in `dir` and the group's Raft storage on it.
pub fn open_group_storage(
    group: GroupId,
    dir: &Path,
    config: LogConfig,
    store: NodeStateStore,
    flusher: Arc<Flusher>,
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
    );
    let log: SharedLog = Arc::new(Mutex::new(log));
    let log_store = PartitionLogStore::new(group, Arc::clone(&log), shared, store, flusher);
    Ok(GroupStorage {
        log_store,
        state_machine,
        reader,
        log,
    })
}
