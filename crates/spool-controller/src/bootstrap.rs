//! How a controller voter with no metadata log of its own joins the group.
//!
//! The first start of a cluster and a voter whose data directory was wiped look the same
//! from inside the node: an empty log. Creating the group (openraft `initialize`) is right
//! for the first and dangerous for the second, and so is voting at once: the wiped voter's
//! empty log would grant votes its lost log would have refused, and could help elect a
//! leader missing committed metadata. So such a voter starts with its votes withheld and
//! its election timer off, and asks the other voters where their logs stand:
//!
//! - none has a log beyond the first membership, and a majority answered (itself
//!   included): the cluster is new, and it creates the group as every first voter does;
//! - one has a log: the group exists. It waits for the leader to replicate the log to it
//!   (openraft starts over with a follower whose log went back), up to the commit point
//!   the ready leader gave, and only then votes.
//!
//! A marker file beside the log keeps the voter in this state across a crash until it is
//! done.

use std::sync::Weak;
use std::time::Duration;

use spool_raft::RaftNode;

use crate::controller::{Controller, METADATA_GROUP};
use crate::error::ControllerError;

/// Time between two rounds of asking the other voters.
const ASK_EVERY: Duration = Duration::from_millis(200);
/// A voter still joining after this long says why it waits.
const SAY_WAITING_AFTER: Duration = Duration::from_secs(5);
/// How long one voter gets to answer.
const ANSWER_WAIT: Duration = Duration::from_secs(1);

/// Where a voter's replica of the metadata log stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct VoterStatus {
    /// Entries beyond the first membership: the group has had a leader.
    pub has_log: bool,
    /// On the leader, once it has applied an entry of its own term: the commit index.
    pub leader_committed: Option<u64>,
}

impl Controller {
    /// This node's answer to a starting voter.
    pub(crate) fn voter_status(&self) -> VoterStatus {
        let progress = self.replica.progress();
        VoterStatus {
            has_log: progress.last_log_index.is_some_and(|i| i >= 1) || progress.purged.is_some(),
            leader_committed: if self.replica.leads_and_applied_own_term() {
                progress.committed
            } else {
                None
            },
        }
    }
}

/// How a joining voter came to vote.
enum Joined {
    /// No voter had a log: a new cluster.
    Created,
    /// Its log was rebuilt from the leader's.
    Rebuilt,
}

/// The marker whose presence means the voter has not finished joining.
pub(crate) fn marker_path(controller_dir: &std::path::Path) -> std::path::PathBuf {
    controller_dir.with_extension("joining")
}

pub(crate) fn write_marker(controller_dir: &std::path::Path) -> Result<(), ControllerError> {
    let path = marker_path(controller_dir);
    let io = |e: std::io::Error| ControllerError::Storage {
        reason: format!("{}: {e}", path.display()),
    };
    let file = std::fs::File::create(&path).map_err(io)?;
    file.sync_all().map_err(io)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    Ok(())
}

/// Runs until the voter votes: the group created, or its log rebuilt.
pub(crate) async fn join(controller: Weak<Controller>, raft: Weak<RaftNode>) {
    let started = tokio::time::Instant::now();
    let mut said_waiting = false;
    loop {
        let Some(controller) = controller.upgrade() else {
            return;
        };
        match controller.join_round().await {
            Ok(Some(joined)) => {
                if let Some(raft) = raft.upgrade() {
                    raft.withhold_votes(METADATA_GROUP, false);
                }
                controller.replica.set_elect(true);
                let marker = marker_path(&controller.options.dir);
                if let Err(error) = std::fs::remove_file(&marker) {
                    tracing::warn!(%error, path = %marker.display(), "could not remove the marker");
                }
                controller.voting.send_replace(true);
                match joined {
                    Joined::Created => tracing::debug!("the metadata group starts here"),
                    Joined::Rebuilt => {
                        tracing::info!("metadata log rebuilt from the other voters; voting again")
                    }
                }
                return;
            }
            Ok(None) => {}
            Err(error) => tracing::debug!(%error, "controller voter still joining"),
        }
        if !said_waiting && started.elapsed() >= SAY_WAITING_AFTER {
            said_waiting = true;
            tracing::info!(
                voters = ?controller.options.voters.keys().collect::<Vec<_>>(),
                "waiting for the other controller voters: the metadata group starts once a \
                 majority answer, or this voter rebuilds its log once a leader is known"
            );
        }
        drop(controller);
        tokio::time::sleep(ASK_EVERY).await;
    }
}

impl Controller {
    /// One round: asks every other voter, then creates the group, or waits for the log up
    /// to the leader's commit point. `Some` once the voter may vote.
    async fn join_round(&self) -> Result<Option<Joined>, ControllerError> {
        let me = self.options.broker_id;
        let asks = self.options.voters.iter().filter(|(id, _)| **id != me).map(
            |(_, address)| async move {
                tokio::time::timeout(ANSWER_WAIT, self.peers.voter_status(address, me))
                    .await
                    .ok()
                    .and_then(Result::ok)
            },
        );
        let answers: Vec<VoterStatus> = futures_util::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect();
        if answers.iter().any(|a| a.has_log) {
            let Some(committed) = answers.iter().find_map(|a| a.leader_committed) else {
                return Ok(None);
            };
            let rebuilt = self.wait_applied_index(committed).await?;
            return Ok(rebuilt.then_some(Joined::Rebuilt));
        }
        let majority = self.options.voters.len() / 2 + 1;
        if answers.len() + 1 < majority {
            return Ok(None);
        }
        self.replica.initialize(&self.options.voters).await?;
        Ok(Some(Joined::Created))
    }

    /// Waits a while for this replica to apply the entry at `index`.
    async fn wait_applied_index(&self, index: u64) -> Result<bool, ControllerError> {
        let mut changes = self.replica.changes();
        let deadline = tokio::time::Instant::now() + ANSWER_WAIT * 5;
        loop {
            if self.replica.progress().applied.is_some_and(|a| a >= index) {
                return Ok(true);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(true) => {}
                Ok(false) => return Err(ControllerError::ShuttingDown),
                Err(_) => return Ok(false),
            }
        }
    }
}

/// Whether this voter must join through `join`: it is one of several voters and has no
/// metadata log, or had not finished joining when it last stopped.
pub(crate) fn must_join(controller_dir: &std::path::Path, voters: usize) -> bool {
    voters > 1 && (!controller_dir.exists() || marker_path(controller_dir).exists())
}
