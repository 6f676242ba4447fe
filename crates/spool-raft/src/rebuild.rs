//! Replicas whose durable Raft state can no longer be trusted: a log that went back (a
//! lost directory, a cut damaged tail, entries gone that it had seen committed), or a
//! log whose vote and commit point were lost with the node's state file.
//!
//! Such a replica must not vote as if it still had what it lost: an empty or short log
//! grants votes its real log would have refused, and can elect a leader missing committed
//! entries; a forgotten vote can be cast twice in one term. So it withholds its votes and
//! does not campaign until it has caught up: it follows a leader of its current term, has
//! applied an entry of that term, and has applied up to the commit index that leader
//! reported when first heard from after the loss (which covers every entry committed with
//! this replica's lost acknowledgement) and up to the commit point it had recorded itself.
//! A group whose only voter is this node has no one to rebuild from; it goes on with what
//! its log holds, with an error in the log.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;
use spool_log::{Corruption, LogBounds, RecoveryReport};

use crate::error::ReplicaError;
use crate::replica::PartitionReplica;
use crate::state_store::GroupRecord;
use crate::types::{LogId, term_of};

/// Left in a replica's directory while it rebuilds, so that a restart meanwhile keeps it
/// gated: the loss it was detected by is no longer visible then.
const MARKER: &str = "raft.rebuilding";

/// Why a replica's state is suspect, for the operator's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Damage {
    /// The node's state file has no record of a group whose log holds entries.
    StateLost,
    /// The group's record exists but its log directory did not.
    DirectoryLost,
    /// The log ends before entries this replica had seen committed or applied.
    LogWentBack { last: Option<u64>, known: u64 },
    /// Recovery cut a damaged (not torn) frame off the tail: it may have been acknowledged.
    TailDamageCut,
    /// It was rebuilding when the node stopped.
    Unfinished,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::StateLost => f.write_str(
                "the node's Raft state file holds no vote or commit point for it, but its log \
                 holds entries (the state file was lost or replaced)",
            ),
            Damage::DirectoryLost => {
                f.write_str("its log directory is gone, but the node's Raft state knows it")
            }
            Damage::LogWentBack {
                last: Some(last),
                known,
            } => write!(
                f,
                "its log ends at index {last}, before index {known} it had seen committed"
            ),
            Damage::LogWentBack { last: None, known } => {
                write!(
                    f,
                    "its log is empty, but it had seen index {known} committed"
                )
            }
            Damage::TailDamageCut => f.write_str(
                "recovery cut a damaged frame off its log's tail, which may have been \
                 acknowledged",
            ),
            Damage::Unfinished => f.write_str("it had not finished rebuilding when it stopped"),
        }
    }
}

impl Damage {
    /// Entries the replica had seen committed, if it knows: it must hold them again.
    pub(crate) fn floor(&self) -> u64 {
        match self {
            Damage::LogWentBack { known, .. } => *known,
            _ => 0,
        }
    }
}

/// Whether a replica rebuilds, and how far it must get.
#[derive(Debug, Default)]
pub(crate) struct RebuildGate {
    active: AtomicBool,
    /// The first commit index heard from a leader of the newest term seen: (term, index).
    target: Mutex<Option<(u64, u64)>>,
    /// Wakes the release task when the target changes.
    target_changed: tokio::sync::Notify,
    floor: u64,
}

impl RebuildGate {
    pub(crate) fn new(active: bool, floor: u64) -> Self {
        Self {
            active: AtomicBool::new(active),
            target: Mutex::new(None),
            target_changed: tokio::sync::Notify::new(),
            floor,
        }
    }

    pub(crate) fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// A leader of `term` said its log is committed up to `index`. Only the first word of
    /// each newer term counts: the target must not run ahead forever under load.
    pub(crate) fn observe_leader_commit(&self, term: u64, index: u64) {
        if !self.is_active() {
            return;
        }
        let mut target = self.target.lock();
        if target.is_none_or(|(seen, _)| term > seen) {
            *target = Some((term, index));
            self.target_changed.notify_one();
        }
    }

    /// Caught up, given the replica's current term and last applied entry.
    fn caught_up(&self, current_term: u64, applied: Option<LogId>) -> bool {
        let Some(applied) = applied else {
            return false;
        };
        let Some((term, index)) = *self.target.lock() else {
            return false;
        };
        term == current_term
            && term_of(&applied) == current_term
            && applied.index >= index.max(self.floor)
    }
}

/// What is known about a replica before its group starts.
pub(crate) struct Opened<'a> {
    pub record: Option<&'a GroupRecord>,
    /// The log directory existed before it was opened.
    pub had_directory: bool,
    pub bounds: LogBounds,
    pub recovery: &'a RecoveryReport,
    /// Appends are acknowledged only once fsynced (`FlushPolicy::Always`). Otherwise a
    /// crash may take a tail the replica acknowledged, by the policy's own terms, and a
    /// log that ends early is no sign of damage.
    pub fsync_acknowledged: bool,
}

/// Whether the replica lost durable Raft state it had, and how.
pub(crate) fn damage(opened: &Opened<'_>) -> Option<Damage> {
    let holds_entries = opened.bounds.next_index > 0;
    let Some(record) = opened.record else {
        return holds_entries.then_some(Damage::StateLost);
    };
    let knew_something =
        record.vote.is_some() || record.committed.is_some() || record.applied.is_some();
    if !opened.had_directory && knew_something {
        return Some(Damage::DirectoryLost);
    }
    let known = [record.committed, record.applied]
        .into_iter()
        .flatten()
        .map(|id: LogId| id.index)
        .max();
    let last = opened.bounds.next_index.checked_sub(1);
    if !opened.fsync_acknowledged {
        return None;
    }
    if let Some(known) = known
        && last.is_none_or(|last| last < known)
    {
        return Some(Damage::LogWentBack { last, known });
    }
    let damaged_tail = opened
        .recovery
        .truncated_tail
        .as_ref()
        .is_some_and(|cut| !matches!(cut.reason, Corruption::Truncated { .. }));
    damaged_tail.then_some(Damage::TailDamageCut)
}

/// Names the group a replica directory belongs to, so that a directory left by a deleted
/// topic is told from one whose Raft state was lost.
const GROUP_FILE: &str = "raft.group";

/// The group whose replica lives in `dir`, if the directory says.
pub fn group_of_dir(dir: &Path) -> Option<crate::types::GroupId> {
    std::fs::read_to_string(dir.join(GROUP_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Writes the group file of a replica directory, or checks the one there.
pub(crate) fn claim_dir(dir: &Path, group: crate::types::GroupId) -> Result<(), ReplicaError> {
    let path = dir.join(GROUP_FILE);
    match group_of_dir(dir) {
        Some(found) if found == group => Ok(()),
        Some(found) => Err(ReplicaError::StateFile {
            path,
            reason: format!("this directory holds group {found}, not group {group}"),
        }),
        None => std::fs::write(&path, format!("{group}\n"))
            .and_then(|()| std::fs::File::open(&path)?.sync_all())
            .and_then(|()| std::fs::File::open(dir)?.sync_all())
            .map_err(|e| marker_error(path, &e)),
    }
}

/// A rebuild left unfinished by the node's last stop.
pub(crate) fn unfinished(dir: &Path) -> Option<Damage> {
    dir.join(MARKER).exists().then_some(Damage::Unfinished)
}

fn marker_error(path: PathBuf, error: &std::io::Error) -> ReplicaError {
    ReplicaError::StateFile {
        path,
        reason: error.to_string(),
    }
}

/// Marks the replica as rebuilding, durably.
pub(crate) fn write_marker(dir: &Path) -> Result<(), ReplicaError> {
    let path = dir.join(MARKER);
    std::fs::write(&path, b"")
        .and_then(|()| std::fs::File::open(dir)?.sync_all())
        .map_err(|e| marker_error(path, &e))
}

/// Removes the rebuild marker, durably.
pub(crate) fn remove_marker(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(dir.join(MARKER)) {
        Ok(()) => std::fs::File::open(dir)?.sync_all(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Waits until the replica has caught up (see the module's doc), then lets it vote and
/// campaign again.
pub(crate) async fn release_when_caught_up(replica: Arc<PartitionReplica>) {
    let mut metrics = replica.raft().metrics();
    loop {
        let caught_up = {
            let m = metrics.borrow_watched();
            m.state == ServerState::Follower
                && m.current_leader.is_some_and(|l| l != replica.node_id())
                && replica.gate.caught_up(m.current_term, m.last_applied)
        };
        if caught_up {
            break;
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            () = replica.gate.target_changed.notified() => {}
        }
    }
    if let Err(error) = remove_marker(replica.dir()) {
        tracing::warn!(group = replica.group(), %error, "could not remove the rebuild marker");
    }
    replica.gate.active.store(false, Ordering::Release);
    replica.set_elect(true);
    tracing::info!(
        group = replica.group(),
        "this replica has caught up with its leader: it votes again"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::log_id;

    fn bounds(next_index: u64) -> LogBounds {
        LogBounds {
            first_index: 0,
            prev_term: 0,
            next_index,
            last_term: 1,
            start_offset: 0,
            next_offset: 0,
        }
    }

    fn opened<'a>(
        record: Option<&'a GroupRecord>,
        had_directory: bool,
        next_index: u64,
        recovery: &'a RecoveryReport,
    ) -> Opened<'a> {
        Opened {
            record,
            had_directory,
            bounds: bounds(next_index),
            recovery,
            fsync_acknowledged: true,
        }
    }

    #[test]
    fn each_kind_of_loss_is_told_apart_from_a_healthy_or_new_replica() {
        let report = RecoveryReport::default();
        let record = GroupRecord {
            committed: Some(log_id(2, 9)),
            applied: Some(log_id(2, 8)),
            ..GroupRecord::default()
        };
        // New: nothing recorded, nothing logged.
        assert_eq!(damage(&opened(None, false, 0, &report)), None);
        // Healthy: the log holds what was committed.
        assert_eq!(damage(&opened(Some(&record), true, 10, &report)), None);
        assert_eq!(
            damage(&opened(None, true, 10, &report)),
            Some(Damage::StateLost)
        );
        assert_eq!(
            damage(&opened(Some(&record), false, 0, &report)),
            Some(Damage::DirectoryLost)
        );
        assert_eq!(
            damage(&opened(Some(&record), true, 5, &report)),
            Some(Damage::LogWentBack {
                last: Some(4),
                known: 9
            })
        );
        // Under a flush policy that acknowledges before fsync, a short log after a crash
        // is what the policy allows.
        let mut relaxed = opened(Some(&record), true, 5, &report);
        relaxed.fsync_acknowledged = false;
        assert_eq!(damage(&relaxed), None);
        // A record created for a new group, before it ever voted or committed.
        let fresh = GroupRecord::default();
        assert_eq!(damage(&opened(Some(&fresh), false, 0, &report)), None);
    }
}

#[cfg(test)]
mod gate_tests {
    use super::*;
    use crate::types::log_id;

    #[test]
    fn the_gate_opens_only_at_the_commit_point_the_current_leader_first_reported() {
        let gate = RebuildGate::new(true, 0);
        // Nothing heard from a leader yet.
        assert!(!gate.caught_up(3, Some(log_id(3, 500))));
        gate.observe_leader_commit(3, 100);
        // Later words of the same leader do not move the target.
        gate.observe_leader_commit(3, 400);
        // Applied an entry of the current term, but below what the leader had committed.
        assert!(!gate.caught_up(3, Some(log_id(3, 60))));
        assert!(gate.caught_up(3, Some(log_id(3, 100))));
        // A newer term's leader resets the target; its term must be the replica's.
        gate.observe_leader_commit(4, 150);
        assert!(!gate.caught_up(3, Some(log_id(3, 200))));
        assert!(!gate.caught_up(4, Some(log_id(4, 120))));
        assert!(gate.caught_up(4, Some(log_id(4, 150))));
        // The replica's own recorded commit point is a floor.
        let floored = RebuildGate::new(true, 300);
        floored.observe_leader_commit(4, 150);
        assert!(!floored.caught_up(4, Some(log_id(4, 299))));
        assert!(floored.caught_up(4, Some(log_id(4, 300))));
    }
}
