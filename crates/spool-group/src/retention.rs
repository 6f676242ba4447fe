//! What the coordinator forgets: committed offsets of topics that were deleted, and groups
//! left without members for the retention period (Kafka's `offsets.retention.minutes`,
//! counted from when the group became empty, as in KIP-211).

use crate::coordinator::{Coordinator, Outcome, Tx};
use crate::records::GroupRecord;
use crate::topics::TopicsSnapshot;

/// What one pass removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expired {
    /// (group, topic) pairs whose offsets went because the topic no longer exists.
    pub deleted_topics: Vec<(String, String)>,
    /// Groups removed after being empty for the retention period.
    pub groups: Vec<String>,
}

impl Coordinator {
    /// One retention pass at `now_ms`. `topics` is given only when it is known to be
    /// current: offsets are dropped for a missing topic only on the word of complete
    /// metadata, never of a node still catching up.
    ///
    /// A group's empty time is not persisted: after a failover it counts from the first
    /// pass of the new coordinator, so offsets may live longer than the retention, never
    /// shorter.
    pub fn expire_offsets(
        &mut self,
        now_ms: i64,
        topics: Option<&TopicsSnapshot>,
    ) -> Outcome<Expired> {
        let retention = self.config.offsets_retention_ms;
        let mut expired = Expired::default();
        let mut stale_offsets: Vec<(String, String, u32)> = Vec::new();
        for group in self.groups.values() {
            if group.members.is_empty() {
                let since = *self.empty_since.entry(group.id.clone()).or_insert(now_ms);
                let last_commit = group.offsets.values().map(|v| v.commit_ms).max();
                let idle = |from: i64| now_ms.saturating_sub(from) >= retention;
                if retention >= 0 && idle(since) && last_commit.is_none_or(idle) {
                    expired.groups.push(group.id.clone());
                    continue;
                }
            } else {
                self.empty_since.remove(&group.id);
            }
            let Some(topics) = topics else { continue };
            let mut last_topic: Option<&str> = None;
            for (topic, partition) in group.offsets.keys() {
                if topics.get(topic).is_some() {
                    continue;
                }
                if last_topic != Some(topic.as_str()) {
                    expired
                        .deleted_topics
                        .push((group.id.clone(), topic.clone()));
                    last_topic = Some(topic.as_str());
                }
                stale_offsets.push((group.id.clone(), topic.clone(), *partition));
            }
        }
        let mut tx = Tx::new(self);
        for (group, topic, partition) in stale_offsets {
            tx.write(GroupRecord::Offset {
                group,
                topic,
                partition,
                value: None,
            });
        }
        for group in &expired.groups {
            tx.delete_group(group);
        }
        let outcome = tx.finish(expired);
        for group in &outcome.value.groups {
            self.empty_since.remove(group);
        }
        outcome
    }
}
