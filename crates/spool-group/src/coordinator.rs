//! The groups of one coordinator partition, the records that change them, and what can be
//! read from them. Operations live beside it: `heartbeat` (membership and assignment) and
//! `offsets` (commits, resets, deletion).

use std::collections::{BTreeMap, HashMap};

use regex::Regex;

use crate::assignor::AssignorKind;
use crate::error::GroupError;
use crate::group::{ConsumerGroup, GroupState};
use crate::member::MemberState;
use crate::records::{GroupRecord, OffsetValue};
use crate::topics::TopicsSnapshot;

/// Longest group, member or instance id, rack or client id, in bytes.
pub const MAX_ID_BYTES: usize = 255;
/// Longest offset commit metadata, in bytes (Kafka's default).
pub const MAX_METADATA_BYTES: usize = 4096;
/// Longest subscription pattern, in bytes.
pub const MAX_PATTERN_BYTES: usize = 1024;
/// Most topics one member may name.
pub const MAX_SUBSCRIBED_TOPICS: usize = 10_000;
/// Most bytes of topic names one member may subscribe to: a member's record stays small
/// enough to write, replay and checkpoint.
pub const MAX_SUBSCRIBED_BYTES: usize = 256 * 1024;
/// Memory one compiled subscription pattern may take.
const PATTERN_PROGRAM_BYTES: usize = 64 * 1024;
/// Compiled patterns kept; the cache starts over beyond.
const MAX_CACHED_PATTERNS: usize = 1024;

/// Settings every group has unless it sets its own (`GroupSettings`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoordinatorConfig {
    /// A member that sends no heartbeat for this long is removed and its partitions move.
    pub session_timeout_ms: i32,
    /// How often members heartbeat. Heartbeats are answered at once when the member's
    /// assignment changes, so this bounds detection of nothing but a member's death.
    pub heartbeat_interval_ms: i32,
    /// Members one group may have.
    pub max_members: usize,
    /// The assignor of a group whose members name none.
    pub default_assignor: AssignorKind,
    /// A group without members keeps its committed offsets this long after it empties
    /// and after its last commit (Kafka's `offsets.retention.minutes`); -1: forever.
    pub offsets_retention_ms: i64,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 5_000,
            max_members: 10_000,
            default_assignor: AssignorKind::Uniform,
            offsets_retention_ms: 7 * 24 * 60 * 60 * 1000,
        }
    }
}

/// What an operation did: the records to persist (already applied here) and its answer.
/// The caller appends the records, in order, before it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome<T> {
    pub records: Vec<GroupRecord>,
    pub value: T,
}

/// The groups whose coordinator partition this is.
#[derive(Debug, Default)]
pub struct Coordinator {
    pub(crate) config: CoordinatorConfig,
    pub(crate) groups: BTreeMap<String, ConsumerGroup>,
    /// Changes applied to each group, so waiting heartbeats can tell that something moved.
    versions: HashMap<String, u64>,
    patterns: HashMap<String, Regex>,
    /// Each group's subscribed topics, resolved against the topics at a version, for the
    /// subscriptions at a version: most heartbeats change neither.
    resolved: HashMap<String, Resolved>,
    /// When each group without members was first seen empty (not persisted).
    pub(crate) empty_since: HashMap<String, i64>,
}

/// Subscribed topics per member.
pub(crate) type Subscribed = BTreeMap<String, std::collections::BTreeSet<String>>;

#[derive(Debug)]
struct Resolved {
    topics_version: u64,
    subscriptions_version: u64,
    subscribed: std::sync::Arc<Subscribed>,
}

impl Coordinator {
    pub fn new(config: CoordinatorConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }

    /// Applies a stored record (replay) or one an operation produced.
    pub fn apply(&mut self, record: &GroupRecord) {
        let id = record.group();
        *self.versions.entry(id.to_string()).or_default() += 1;
        if let GroupRecord::Group { value: None, .. } = record {
            self.groups.remove(id);
            self.versions.remove(id);
            self.resolved.remove(id);
            return;
        }
        self.groups
            .entry(id.to_string())
            .or_insert_with(|| ConsumerGroup::new(id))
            .apply(record);
    }

    /// After a replay: every member gets a full session from `now_ms`, as if it had just
    /// heartbeated (deadlines are not persisted; a member that is gone is removed one
    /// session later).
    pub fn start_sessions(&mut self, now_ms: i64) {
        for group in self.groups.values_mut() {
            let session = session_timeout(&self.config, group);
            for member in group.members.values_mut() {
                member.session_deadline_ms = now_ms.saturating_add(i64::from(session));
                member.revoke_deadline_ms =
                    (member.current.state == MemberState::UnrevokedPartitions).then(|| {
                        now_ms.saturating_add(i64::from(member.subscription.rebalance_timeout_ms))
                    });
            }
        }
    }

    pub fn group(&self, id: &str) -> Option<&ConsumerGroup> {
        self.groups.get(id)
    }

    pub fn groups(&self) -> impl Iterator<Item = &ConsumerGroup> + '_ {
        self.groups.values()
    }

    /// How many changes `group` has seen (0 if none): a heartbeat that waits for its
    /// assignment to change waits for this to move.
    pub fn version(&self, group: &str) -> u64 {
        self.versions.get(group).copied().unwrap_or(0)
    }

    /// Every record needed to rebuild all groups from nothing (a checkpoint).
    pub fn snapshot_records(&self) -> Vec<GroupRecord> {
        self.groups
            .values()
            .flat_map(ConsumerGroup::snapshot_records)
            .collect()
    }

    /// Committed offsets of `group`: of the given partitions, or all of them.
    pub fn committed(
        &self,
        group: &str,
        partitions: Option<&[(String, u32)]>,
    ) -> Vec<((String, u32), Option<OffsetValue>)> {
        let Some(g) = self.groups.get(group) else {
            return partitions
                .unwrap_or_default()
                .iter()
                .map(|key| (key.clone(), None))
                .collect();
        };
        match partitions {
            Some(keys) => keys
                .iter()
                .map(|key| (key.clone(), g.offsets.get(key).cloned()))
                .collect(),
            None => g
                .offsets
                .iter()
                .map(|(key, value)| (key.clone(), Some(value.clone())))
                .collect(),
        }
    }

    /// Groups with their state and member count.
    pub fn list(&self) -> Vec<(String, GroupState, usize)> {
        self.groups
            .values()
            .map(|g| (g.id.clone(), g.state(), g.members.len()))
            .collect()
    }

    /// Removes members whose session or revocation time ran out by `now_ms`; their
    /// partitions are free to move.
    pub fn expire(&mut self, now_ms: i64) -> Outcome<Vec<(String, String)>> {
        let mut expired = Vec::new();
        for group in self.groups.values() {
            for member in group.members.values() {
                let revoke_late = member.current.state == MemberState::UnrevokedPartitions
                    && member.revoke_deadline_ms.is_some_and(|d| d <= now_ms);
                if member.session_deadline_ms <= now_ms || revoke_late {
                    expired.push((group.id.clone(), member.id.clone()));
                }
            }
        }
        let mut tx = Tx::new(self);
        for (group, member) in &expired {
            tx.remove_member(group, member);
        }
        tx.finish(expired)
    }

    /// The compiled form of a subscription pattern (cached).
    pub(crate) fn pattern(&mut self, pattern: &str) -> Result<&Regex, GroupError> {
        if !self.patterns.contains_key(pattern) {
            // Anchored like Kafka's: the whole topic name must match. Compiled programs
            // are kept small, so that many members' patterns cannot take the memory.
            let regex = regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
                .size_limit(PATTERN_PROGRAM_BYTES)
                .dfa_size_limit(PATTERN_PROGRAM_BYTES)
                .build()
                .map_err(|e| {
                    GroupError::InvalidRequest(format!("bad subscription pattern: {e}"))
                })?;
            if self.patterns.len() >= MAX_CACHED_PATTERNS {
                self.patterns.clear();
            }
            self.patterns.insert(pattern.to_string(), regex);
        }
        self.patterns
            .get(pattern)
            .ok_or_else(|| GroupError::InvalidRequest("bad subscription pattern".into()))
    }

    /// The existing topics a group's members subscribe to, by name or pattern.
    pub(crate) fn subscribed_topics(
        &mut self,
        group: &str,
        topics: &TopicsSnapshot,
    ) -> std::sync::Arc<Subscribed> {
        let Some(g) = self.groups.get(group) else {
            return std::sync::Arc::default();
        };
        let subscriptions_version = g.subscriptions_version;
        if let Some(cached) = self.resolved.get(group)
            && topics.version() != 0
            && cached.topics_version == topics.version()
            && cached.subscriptions_version == subscriptions_version
        {
            return std::sync::Arc::clone(&cached.subscribed);
        }
        let subscriptions: Vec<(String, Vec<String>, Option<String>)> = g
            .members
            .values()
            .map(|m| {
                (
                    m.id.clone(),
                    m.subscription.topics.clone(),
                    m.subscription.pattern.clone(),
                )
            })
            .collect();
        let mut out = Subscribed::new();
        for (member, names, pattern) in subscriptions {
            let mut set: std::collections::BTreeSet<String> = names
                .into_iter()
                .filter(|name| topics.get(name).is_some())
                .collect();
            if let Some(pattern) = pattern
                && let Ok(regex) = self.pattern(&pattern)
            {
                set.extend(
                    topics
                        .names()
                        .filter(|name| !name.starts_with("__") && regex.is_match(name))
                        .map(str::to_string),
                );
            }
            out.insert(member, set);
        }
        let subscribed = std::sync::Arc::new(out);
        self.resolved.insert(
            group.to_string(),
            Resolved {
                topics_version: topics.version(),
                subscriptions_version,
                subscribed: std::sync::Arc::clone(&subscribed),
            },
        );
        subscribed
    }
}

impl Coordinator {
    /// A group's session timeout and heartbeat interval in ms: its own, else the node's.
    pub fn timeouts_of(&self, group: &ConsumerGroup) -> (i32, i32) {
        (
            session_timeout(&self.config, group),
            heartbeat_interval(&self.config, group),
        )
    }
}

pub(crate) fn session_timeout(config: &CoordinatorConfig, group: &ConsumerGroup) -> i32 {
    group
        .settings
        .session_timeout_ms
        .unwrap_or(config.session_timeout_ms)
}

pub(crate) fn heartbeat_interval(config: &CoordinatorConfig, group: &ConsumerGroup) -> i32 {
    group
        .settings
        .heartbeat_interval_ms
        .unwrap_or(config.heartbeat_interval_ms)
}

/// Records of one operation: each is applied as it is written, so later steps of the
/// operation see earlier ones, exactly as a replay will.
pub(crate) struct Tx<'a> {
    pub coordinator: &'a mut Coordinator,
    records: Vec<GroupRecord>,
}

impl<'a> Tx<'a> {
    pub fn new(coordinator: &'a mut Coordinator) -> Self {
        Self {
            coordinator,
            records: Vec::new(),
        }
    }

    pub fn write(&mut self, record: GroupRecord) {
        self.coordinator.apply(&record);
        self.records.push(record);
    }

    pub fn finish<T>(self, value: T) -> Outcome<T> {
        Outcome {
            records: self.records,
            value,
        }
    }

    pub fn group(&self, id: &str) -> Option<&ConsumerGroup> {
        self.coordinator.groups.get(id)
    }

    /// Deletes a group without members: tombstones for every key first, so that
    /// compaction can drop the group entirely.
    pub fn delete_group(&mut self, group: &str) {
        let Some(g) = self.group(group) else { return };
        let keys: Vec<(String, u32)> = g.offsets.keys().cloned().collect();
        for (topic, partition) in keys {
            self.write(GroupRecord::Offset {
                group: group.to_string(),
                topic,
                partition,
                value: None,
            });
        }
        self.write(GroupRecord::Settings {
            group: group.to_string(),
            value: None,
        });
        self.write(GroupRecord::Group {
            group: group.to_string(),
            value: None,
        });
    }

    /// Removes a member: its current assignment, its target and its subscription, then a
    /// new group epoch so the others are reassigned.
    pub fn remove_member(&mut self, group: &str, member: &str) {
        let Some(g) = self.group(group) else { return };
        if !g.members.contains_key(member) {
            return;
        }
        let (epoch, digest) = (g.epoch, g.metadata_digest);
        let id = || group.to_string();
        self.write(GroupRecord::Current {
            group: id(),
            member: member.to_string(),
            value: None,
        });
        self.write(GroupRecord::Target {
            group: id(),
            member: member.to_string(),
            value: None,
        });
        self.write(GroupRecord::Member {
            group: id(),
            member: member.to_string(),
            value: None,
        });
        self.write(GroupRecord::Group {
            group: id(),
            value: Some(crate::records::GroupValue {
                // Saturates rather than wraps: heartbeats refuse an exhausted epoch.
                epoch: epoch.saturating_add(1),
                metadata_digest: digest,
            }),
        });
    }
}

/// Checks an id: not empty, at most `MAX_ID_BYTES`, no control characters.
pub(crate) fn check_id(what: &'static str, id: &str) -> Result<(), GroupError> {
    if id.is_empty() {
        return Err(GroupError::InvalidRequest(format!("{what} is empty")));
    }
    if id.len() > MAX_ID_BYTES {
        return Err(GroupError::InvalidRequest(format!(
            "{what} is {} bytes; at most {MAX_ID_BYTES}",
            id.len()
        )));
    }
    if id.chars().any(char::is_control) {
        return Err(GroupError::InvalidRequest(format!(
            "{what} holds a control character"
        )));
    }
    Ok(())
}

/// Checks a group id: not empty, at most `MAX_ID_BYTES`, no control characters.
pub fn check_group_id(id: &str) -> Result<(), GroupError> {
    if id.is_empty() {
        return Err(GroupError::InvalidGroupId("empty"));
    }
    if id.len() > MAX_ID_BYTES {
        return Err(GroupError::InvalidGroupId("longer than 255 bytes"));
    }
    if id.chars().any(char::is_control) {
        return Err(GroupError::InvalidGroupId("holds a control character"));
    }
    Ok(())
}
