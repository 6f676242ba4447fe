//! What the coordinator forgets: committed offsets of topics that were deleted (or deleted
//! and created again), and groups left without members for the retention period (Kafka's
//! `offsets.retention.minutes`, counted from when the group became empty, as in KIP-211).

use std::collections::{BTreeSet, HashMap};

use crate::coordinator::{Coordinator, Outcome, Tx};
use crate::records::GroupRecord;
use crate::topics::TopicsSnapshot;

/// The topics a coordinator has seen, by name, with their ids: tells which ones went away
/// or came back as a new topic. Only what it saw present can be seen gone, so an
/// incomplete first look (a node still catching up with the metadata) removes nothing.
#[derive(Debug, Default)]
pub struct TopicIncarnations {
    seen: HashMap<String, Option<String>>,
    version: u64,
}

impl TopicIncarnations {
    /// Topics seen before and now absent, or present under a new id. Snapshots must come
    /// from one node's metadata, whose versions only grow.
    pub fn gone(&mut self, topics: &TopicsSnapshot) -> BTreeSet<String> {
        let mut gone = BTreeSet::new();
        if topics.version() == 0 || topics.version() == self.version {
            return gone;
        }
        self.version = topics.version();
        self.seen.retain(|name, id| match topics.get(name) {
            None => {
                gone.insert(name.clone());
                false
            }
            Some(_) => {
                let now = topics.id(name).map(str::to_string);
                if id.is_some() && now.is_some() && *id != now {
                    gone.insert(name.clone());
                }
                *id = now;
                true
            }
        });
        for name in topics.names() {
            if !self.seen.contains_key(name) {
                self.seen
                    .insert(name.to_string(), topics.id(name).map(str::to_string));
            }
        }
        gone
    }
}

impl Coordinator {
    /// Removes every group's committed offsets of `topics` (deleted, or created anew).
    pub fn drop_topic_offsets(
        &mut self,
        topics: &BTreeSet<String>,
    ) -> Outcome<Vec<(String, String)>> {
        let mut stale: Vec<(String, String, u32)> = Vec::new();
        let mut dropped = BTreeSet::new();
        for group in self.groups.values() {
            for (topic, partition) in group.offsets.keys() {
                if topics.contains(topic) {
                    stale.push((group.id.clone(), topic.clone(), *partition));
                    dropped.insert((group.id.clone(), topic.clone()));
                }
            }
        }
        let mut tx = Tx::new(self);
        for (group, topic, partition) in stale {
            tx.write(GroupRecord::Offset {
                group,
                topic,
                partition,
                value: None,
            });
        }
        tx.finish(dropped.into_iter().collect())
    }

    /// Removes the groups that have had no members for the retention period (measured on
    /// `steady_ms`, this coordinator's monotonic clock) and no commit for as long (by
    /// `now_ms`, the wall clock commits are stamped with).
    ///
    /// When a group emptied is not persisted: after a failover the period starts again,
    /// so offsets may live longer than the retention, never shorter.
    pub fn expire_groups(&mut self, now_ms: i64, steady_ms: i64) -> Outcome<Vec<String>> {
        let retention = self.config.offsets_retention_ms;
        let groups = &self.groups;
        self.empty_since
            .retain(|id, _| groups.get(id).is_some_and(|g| g.members.is_empty()));
        let mut expired = Vec::new();
        for group in self.groups.values() {
            if !group.members.is_empty() {
                continue;
            }
            let since = *self
                .empty_since
                .entry(group.id.clone())
                .or_insert(steady_ms);
            let last_commit = group.offsets.values().map(|v| v.commit_ms).max();
            if retention >= 0
                && steady_ms.saturating_sub(since) >= retention
                && last_commit.is_none_or(|at| now_ms.saturating_sub(at) >= retention)
            {
                expired.push(group.id.clone());
            }
        }
        let mut tx = Tx::new(self);
        for group in &expired {
            tx.delete_group(group);
        }
        let outcome = tx.finish(expired);
        for group in &outcome.value {
            self.empty_since.remove(group);
        }
        outcome
    }
}
