//! Replicas whose durable Raft state can no longer be trusted: a log that went back (a
//! lost directory, a cut damaged tail, entries gone that it had seen committed), or a
//! log whose vote and commit point were lost with the node's state file.
//!
//! Such a replica must not vote as if it still had what it lost: an empty or short log
//! grants votes its real log would have refused, and can elect a leader missing committed
//! entries; a forgotten vote can be cast twice in one term. So it withholds its votes and
//! does not campaign until it follows a leader and has applied an entry of that leader's
//! term: that leader has committed every entry committed before it, and so does this
//! replica then. A group whose only voter is this node has no one to rebuild from; it
//! goes on with what its log holds, with an error in the log.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

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

/// What is known about a replica before its group starts.
pub(crate) struct Opened<'a> {
    pub record: Option<&'a GroupRecord>,
    /// The log directory existed before it was opened.
    pub had_directory: bool,
    pub bounds: LogBounds,
    pub recovery: &'a RecoveryReport,
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

/// Waits until the replica follows a leader and has applied an entry of that leader's
/// term, then lets it vote and campaign again.
pub(crate) async fn release_when_caught_up(replica: Arc<PartitionReplica>) {
    let mut metrics = replica.raft().metrics();
    loop {
        let caught_up = {
            let m = metrics.borrow_watched();
            m.state == ServerState::Follower
                && m.current_leader.is_some_and(|l| l != replica.node_id())
                && m.last_applied
                    .is_some_and(|applied| term_of(&applied) == m.current_term)
        };
        if caught_up {
            break;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
    let path = replica.dir().join(MARKER);
    if let Err(error) =
        std::fs::remove_file(&path).and_then(|()| std::fs::File::open(replica.dir())?.sync_all())
    {
        tracing::warn!(group = replica.group(), %error, "could not remove the rebuild marker");
    }
    replica.rebuilding.store(false, Ordering::Release);
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
        // A record created for a new group, before it ever voted or committed.
        let fresh = GroupRecord::default();
        assert_eq!(damage(&opened(Some(&fresh), false, 0, &report)), None);
    }
}
