//! Committed offsets: commits fenced by member epoch, resets of empty groups, deletion,
//! and per-group settings.

use crate::coordinator::{Coordinator, MAX_METADATA_BYTES, Outcome, Tx, check_group_id};
use crate::error::GroupError;
use crate::records::{GroupRecord, GroupSettings, OffsetValue};
use crate::topics::TopicsSnapshot;

/// One partition's offset to commit: the next record to process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommit {
    pub topic: String,
    pub partition: u32,
    pub offset: i64,
    /// The leader epoch of the last processed record, or -1.
    pub leader_epoch: i32,
    pub metadata: String,
}

/// Member epoch of a commit from outside the group's membership (a consumer that assigns
/// itself partitions), allowed only while the group has no members.
pub const NO_MEMBER_EPOCH: i32 = -1;

impl Coordinator {
    /// Commits offsets for `member` at `epoch` (or, with an empty member id and epoch -1,
    /// for a group without members). All or nothing: one bad partition refuses the request.
    pub fn commit_offsets(
        &mut self,
        group: &str,
        member: &str,
        epoch: i32,
        commits: &[OffsetCommit],
        now_ms: i64,
        topics: &TopicsSnapshot,
    ) -> Result<Outcome<()>, GroupError> {
        self.check_commit(group, member, epoch, commits, topics)?;
        let mut tx = Tx::new(self);
        write_offsets(&mut tx, group, commits, now_ms);
        Ok(tx.finish(()))
    }

    /// The records of a commit made inside a producer's transaction, checked as
    /// `commit_offsets` checks its own but not applied: they take effect when the
    /// transaction commits (the caller keeps them until its marker).
    pub fn transactional_offsets(
        &self,
        group: &str,
        member: &str,
        epoch: i32,
        commits: &[OffsetCommit],
        now_ms: i64,
        topics: &TopicsSnapshot,
    ) -> Result<Vec<GroupRecord>, GroupError> {
        self.check_commit(group, member, epoch, commits, topics)?;
        Ok(commits
            .iter()
            .map(|commit| offset_record(group, commit, now_ms))
            .collect())
    }

    /// Whether `member` at `epoch` may commit `commits` to `group`.
    fn check_commit(
        &self,
        group: &str,
        member: &str,
        epoch: i32,
        commits: &[OffsetCommit],
        topics: &TopicsSnapshot,
    ) -> Result<(), GroupError> {
        check_group_id(group)?;
        check_commits(commits, topics)?;
        let existing = self.groups.get(group);
        let unknown = || GroupError::UnknownMemberId {
            group: group.to_string(),
            member: member.to_string(),
        };
        if member.is_empty() {
            if epoch != NO_MEMBER_EPOCH || existing.is_some_and(|g| !g.members.is_empty()) {
                return Err(unknown());
            }
        } else {
            let holder = &existing
                .and_then(|g| g.members.get(member))
                .ok_or_else(unknown)?
                .current;
            let current = holder.epoch;
            if epoch < current {
                return Err(GroupError::StaleMemberEpoch {
                    given: epoch,
                    current,
                });
            }
            if epoch > current {
                return Err(GroupError::FencedMemberEpoch {
                    given: epoch,
                    current,
                });
            }
            // A member commits only what it holds: a commit delayed past the partition's
            // hand-over (sent again at the member's new epoch) must not set back the
            // progress of its next owner.
            if let Some(c) = commits
                .iter()
                .find(|c| !holder.holds(&c.topic, c.partition))
            {
                return Err(GroupError::NotAssigned {
                    member: member.to_string(),
                    topic: c.topic.clone(),
                    partition: c.partition,
                });
            }
        }
        Ok(())
    }

    /// Sets the committed offsets of a group without members (an operator's reset).
    pub fn reset_offsets(
        &mut self,
        group: &str,
        offsets: &[OffsetCommit],
        now_ms: i64,
        topics: &TopicsSnapshot,
    ) -> Result<Outcome<()>, GroupError> {
        check_group_id(group)?;
        check_commits(offsets, topics)?;
        if let Some(g) = self.groups.get(group)
            && !g.members.is_empty()
        {
            return Err(GroupError::NonEmptyGroup {
                group: group.to_string(),
                members: g.members.len(),
            });
        }
        let mut tx = Tx::new(self);
        write_offsets(&mut tx, group, offsets, now_ms);
        Ok(tx.finish(()))
    }

    /// Deletes a group without members, offsets and all.
    pub fn delete_group(&mut self, group: &str) -> Result<Outcome<()>, GroupError> {
        check_group_id(group)?;
        let g = self
            .groups
            .get(group)
            .ok_or_else(|| GroupError::GroupIdNotFound(group.to_string()))?;
        if !g.members.is_empty() {
            return Err(GroupError::NonEmptyGroup {
                group: group.to_string(),
                members: g.members.len(),
            });
        }
        let mut tx = Tx::new(self);
        tx.delete_group(group);
        Ok(tx.finish(()))
    }

    /// Sets a group's own session timeout and heartbeat interval (`None`: the node's).
    pub fn set_settings(
        &mut self,
        group: &str,
        settings: GroupSettings,
    ) -> Result<Outcome<()>, GroupError> {
        check_group_id(group)?;
        let session = settings
            .session_timeout_ms
            .unwrap_or(self.config.session_timeout_ms);
        let interval = settings
            .heartbeat_interval_ms
            .unwrap_or(self.config.heartbeat_interval_ms);
        if !(1_000..=3_600_000).contains(&session) {
            return Err(GroupError::InvalidRequest(format!(
                "session timeout {session} ms: between 1000 and 3600000"
            )));
        }
        if interval < 100 || interval >= session {
            return Err(GroupError::InvalidRequest(format!(
                "heartbeat interval {interval} ms: at least 100 and below the session timeout"
            )));
        }
        let mut tx = Tx::new(self);
        tx.write(GroupRecord::Settings {
            group: group.to_string(),
            value: Some(settings),
        });
        Ok(tx.finish(()))
    }
}

fn check_commits(commits: &[OffsetCommit], topics: &TopicsSnapshot) -> Result<(), GroupError> {
    for commit in commits {
        if !topics.partition_exists(&commit.topic, commit.partition) {
            return Err(GroupError::UnknownTopicOrPartition {
                topic: commit.topic.clone(),
                partition: commit.partition,
            });
        }
        if commit.offset < 0 {
            return Err(GroupError::InvalidRequest(format!(
                "offset {} for {}/{} is negative",
                commit.offset, commit.topic, commit.partition
            )));
        }
        if commit.metadata.len() > MAX_METADATA_BYTES {
            return Err(GroupError::OffsetMetadataTooLarge {
                len: commit.metadata.len(),
                max: MAX_METADATA_BYTES,
            });
        }
    }
    Ok(())
}

fn write_offsets(tx: &mut Tx<'_>, group: &str, commits: &[OffsetCommit], now_ms: i64) {
    for commit in commits {
        tx.write(offset_record(group, commit, now_ms));
    }
}

fn offset_record(group: &str, commit: &OffsetCommit, now_ms: i64) -> GroupRecord {
    GroupRecord::Offset {
        group: group.to_string(),
        topic: commit.topic.clone(),
        partition: commit.partition,
        value: Some(OffsetValue {
            offset: commit.offset,
            leader_epoch: commit.leader_epoch,
            metadata: commit.metadata.clone(),
            commit_ms: now_ms,
        }),
    }
}
