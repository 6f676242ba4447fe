//! A consumer group's state as its records describe it, and how each record changes it.

use std::collections::{BTreeMap, HashMap};

use crate::assignment::Assignment;
use crate::member::{CurrentAssignment, MemberState};
use crate::records::{CurrentValue, GroupRecord, GroupSettings, MemberValue, OffsetValue};

/// Member epoch of a static member that left saying it will come back (`-2` on the wire):
/// it keeps its partitions until its session expires.
pub const STATIC_LEFT_EPOCH: i32 = -2;
/// Member epoch that asks to leave (`-1`).
pub const LEAVE_EPOCH: i32 = -1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub subscription: MemberValue,
    pub current: CurrentAssignment,
    /// When the member is removed unless it heartbeats (not persisted: a coordinator that
    /// takes over gives every member a full session).
    pub session_deadline_ms: i64,
    /// When a member that must revoke partitions is removed unless it has.
    pub revoke_deadline_ms: Option<i64>,
}

impl Member {
    fn new(id: &str) -> Self {
        Self {
            id: id.to_string(),
            subscription: MemberValue::default(),
            current: CurrentAssignment::default(),
            session_deadline_ms: i64::MAX,
            revoke_deadline_ms: None,
        }
    }

    pub fn has_left_statically(&self) -> bool {
        self.current.epoch == STATIC_LEFT_EPOCH
    }
}

/// The state a group is in, as `describe` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members (it may still hold committed offsets).
    Empty,
    /// Membership changed and the target assignment is not computed yet.
    Assigning,
    /// Some member has not reached the target assignment.
    Reconciling,
    Stable,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "empty",
            GroupState::Assigning => "assigning",
            GroupState::Reconciling => "reconciling",
            GroupState::Stable => "stable",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConsumerGroup {
    pub id: String,
    /// Bumped by every change to membership, subscriptions or subscribed topics.
    pub epoch: i32,
    pub metadata_digest: u64,
    /// The epoch the target assignment was computed for.
    pub target_epoch: i32,
    pub targets: BTreeMap<String, Assignment>,
    pub members: BTreeMap<String, Member>,
    pub offsets: BTreeMap<(String, u32), OffsetValue>,
    pub settings: GroupSettings,
    /// Who holds each partition (assigned or revoking), derived from the members.
    owners: HashMap<(String, u32), String>,
    /// Member id of each static instance id, derived from the members.
    instances: HashMap<String, String>,
    /// Moves with every subscription record (runtime only: a cache key).
    pub(crate) subscriptions_version: u64,
}

impl ConsumerGroup {
    pub fn new(id: &str) -> Self {
        Self {
            id: id.to_string(),
            ..Self::default()
        }
    }

    pub fn state(&self) -> GroupState {
        if self.members.is_empty() {
            GroupState::Empty
        } else if self.epoch > self.target_epoch {
            GroupState::Assigning
        } else if self.members.values().any(|m| {
            m.current.epoch != self.target_epoch && !m.has_left_statically()
                || m.current.state != MemberState::Stable
        }) {
            GroupState::Reconciling
        } else {
            GroupState::Stable
        }
    }

    /// The member holding `(topic, partition)`, if any.
    pub fn owner_of(&self, topic: &str, partition: u32) -> Option<&str> {
        self.owners
            .get(&(topic.to_string(), partition))
            .map(String::as_str)
    }

    /// The member holding a static instance id.
    pub fn member_of_instance(&self, instance: &str) -> Option<&str> {
        self.instances.get(instance).map(String::as_str)
    }

    pub fn target_of(&self, member: &str) -> Assignment {
        self.targets.get(member).cloned().unwrap_or_default()
    }

    /// Applies one record of this group.
    pub(crate) fn apply(&mut self, record: &GroupRecord) {
        match record {
            GroupRecord::Offset {
                topic,
                partition,
                value,
                ..
            } => {
                let key = (topic.clone(), *partition);
                match value {
                    Some(v) => {
                        self.offsets.insert(key, v.clone());
                    }
                    None => {
                        self.offsets.remove(&key);
                    }
                }
            }
            GroupRecord::Group { value, .. } => {
                if let Some(v) = value {
                    self.epoch = v.epoch;
                    self.metadata_digest = v.metadata_digest;
                }
            }
            GroupRecord::Member { member, value, .. } => {
                self.subscriptions_version += 1;
                self.apply_member(member, value.as_ref());
            }
            GroupRecord::Target { member, value, .. } => match value {
                Some(v) => {
                    self.targets.insert(member.clone(), v.clone());
                }
                None => {
                    self.targets.remove(member);
                }
            },
            GroupRecord::TargetEpoch { value, .. } => {
                self.target_epoch = value.unwrap_or(0);
            }
            GroupRecord::Current { member, value, .. } => {
                let next =
                    value
                        .as_ref()
                        .map_or_else(CurrentAssignment::default, |v| CurrentAssignment {
                            epoch: v.epoch,
                            previous_epoch: v.previous_epoch,
                            state: v.state,
                            assigned: v.assigned.clone(),
                            revoking: v.revoking.clone(),
                        });
                let entry = self
                    .members
                    .entry(member.clone())
                    .or_insert_with(|| Member::new(member));
                let old = std::mem::replace(&mut entry.current, next);
                let next = entry.current.clone();
                self.release(&old, member);
                for (topic, partition) in next.assigned.iter().chain(next.revoking.iter()) {
                    self.owners
                        .insert((topic.to_string(), partition), member.clone());
                }
            }
            GroupRecord::Settings { value, .. } => {
                self.settings = value.unwrap_or_default();
            }
        }
    }

    fn apply_member(&mut self, member: &str, value: Option<&MemberValue>) {
        match value {
            Some(v) => {
                let entry = self
                    .members
                    .entry(member.to_string())
                    .or_insert_with(|| Member::new(member));
                if let Some(old) = &entry.subscription.instance_id {
                    self.instances.remove(old);
                }
                entry.subscription = v.clone();
                if let Some(instance) = &v.instance_id {
                    self.instances.insert(instance.clone(), member.to_string());
                }
            }
            None => {
                if let Some(old) = self.members.remove(member) {
                    self.release(&old.current, member);
                    if let Some(instance) = &old.subscription.instance_id
                        && self.instances.get(instance).map(String::as_str) == Some(member)
                    {
                        self.instances.remove(instance);
                    }
                }
            }
        }
    }

    /// Forgets that `member` holds what `current` lists (only where it still does).
    fn release(&mut self, current: &CurrentAssignment, member: &str) {
        for (topic, partition) in current.assigned.iter().chain(current.revoking.iter()) {
            let key = (topic.to_string(), partition);
            if self.owners.get(&key).is_some_and(|m| m == member) {
                self.owners.remove(&key);
            }
        }
    }

    /// Every record needed to rebuild this group from nothing.
    pub fn snapshot_records(&self) -> Vec<GroupRecord> {
        let group = || self.id.clone();
        let mut out = Vec::new();
        if self.settings != GroupSettings::default() {
            out.push(GroupRecord::Settings {
                group: group(),
                value: Some(self.settings),
            });
        }
        for ((topic, partition), value) in &self.offsets {
            out.push(GroupRecord::Offset {
                group: group(),
                topic: topic.clone(),
                partition: *partition,
                value: Some(value.clone()),
            });
        }
        if self.epoch > 0 || !self.members.is_empty() {
            out.push(GroupRecord::Group {
                group: group(),
                value: Some(crate::records::GroupValue {
                    epoch: self.epoch,
                    metadata_digest: self.metadata_digest,
                }),
            });
        }
        for member in self.members.values() {
            out.push(GroupRecord::Member {
                group: group(),
                member: member.id.clone(),
                value: Some(member.subscription.clone()),
            });
            out.push(GroupRecord::Current {
                group: group(),
                member: member.id.clone(),
                value: Some(current_value(&member.current)),
            });
        }
        for (member, target) in &self.targets {
            out.push(GroupRecord::Target {
                group: group(),
                member: member.clone(),
                value: Some(target.clone()),
            });
        }
        if self.target_epoch > 0 {
            out.push(GroupRecord::TargetEpoch {
                group: group(),
                value: Some(self.target_epoch),
            });
        }
        out
    }

    /// Whether the persisted parts of two groups agree (runtime deadlines aside).
    pub fn same_persisted_state(&self, other: &ConsumerGroup) -> bool {
        let members_agree = self.members.len() == other.members.len()
            && self.members.iter().zip(other.members.iter()).all(|(a, b)| {
                a.0 == b.0 && a.1.subscription == b.1.subscription && a.1.current == b.1.current
            });
        members_agree
            && self.epoch == other.epoch
            && self.metadata_digest == other.metadata_digest
            && self.target_epoch == other.target_epoch
            && self.targets == other.targets
            && self.offsets == other.offsets
            && self.settings == other.settings
            && self.owners == other.owners
            && self.instances == other.instances
    }
}

pub(crate) fn current_value(current: &CurrentAssignment) -> CurrentValue {
    CurrentValue {
        epoch: current.epoch,
        previous_epoch: current.previous_epoch,
        state: current.state,
        assigned: current.assigned.clone(),
        revoking: current.revoking.clone(),
    }
}
